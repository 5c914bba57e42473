"""How the session API names members and sessions: account and session IDs, as text or
parsed, and a recipients argument with or without rights.

A bad ID is the caller's error (:class:`~veil.client.errors.InvalidArgument`), raised
before anything is built or sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from veil.client.errors import InvalidArgument
from veil.onion.errors import InvalidId
from veil.onion.keys import AccountId, GroupId

RecipientsLike = Iterable[AccountId | str] | Mapping[AccountId | str, Iterable[str]]


def _account_id(value: AccountId | str) -> AccountId:
    if isinstance(value, AccountId):
        return value
    try:
        return AccountId.parse(str(value))
    except InvalidId as exc:
        raise InvalidArgument(f"not an account ID: {value!r} ({exc})") from None


def _session_id(value: GroupId | str) -> GroupId:
    if isinstance(value, GroupId):
        return value
    try:
        return GroupId.parse(str(value))
    except InvalidId as exc:
        raise InvalidArgument(f"not a session ID: {value!r} ({exc})") from None
