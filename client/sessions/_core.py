"""How the client names members to the sans-IO core (:mod:`veil.onion.group`).

Members are account IDs (``05...``) in the client's API and in the core alike (a
membership link's audience is an account: any Ed25519 key that maps to it exercises
it). These helpers are the one place that says so, so that the rest of the package
never has to know how the core spells a member.
"""

from __future__ import annotations

from typing import Any

from veil.onion.keys import Account, AccountId, account_id_of_ed25519

__all__ = ["account_of", "core_member", "core_reader"]


def core_member(account: AccountId, me: Account | None = None) -> AccountId:
    """What the core takes for the member ``account``."""
    return account


def account_of(member: Any) -> AccountId:
    """The account ID of what the core gives back for a member."""
    if isinstance(member, AccountId):
        return member
    return account_id_of_ed25519(bytes(member))


def core_reader(account: Account) -> Account:
    """The key holder :meth:`~veil.onion.group.SessionState.epoch_keys` takes."""
    return account
