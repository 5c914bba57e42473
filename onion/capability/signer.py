"""A delegated signer: a key with the chain that lets it act for an account or a group.

Design note
-----------
:class:`DelegatedSigner` is what the storage RPC's builders (:mod:`veil.onion.rpc.builders`)
take in place of an :class:`~veil.onion.keys.Account`: its key signs the request, and
the request carries the chain (its ``capability`` param) so that a node can check, with
:func:`~veil.onion.capability.chains.authorize`, that the key may make that request for
the chain's owner. It holds no check of time or revocation (a node does those, by its
own clock); :meth:`DelegatedSigner.missing` answers, before anything is built, whether
the chain's resources grant a method in a namespace at all, so that a client refuses
locally what every node would refuse.

Two kinds:

* a session key (:class:`~veil.onion.capability.links.SessionKey`) and an account's
  chain whose audience it is (issue #12's delegated keys);
* a member of an encryption session (:meth:`DelegatedSigner.for_member`): the member's
  :class:`~veil.onion.keys.Account` signs with its own Ed25519 key, and the chain is its
  membership chain, owned by the session's group ID, whose audience is the member's
  account (or its Ed25519 key). The builders then address the request to the group ID.

Built from a key and a chain the key exercises (the audience is the key, or the key maps
to the audience's account): :class:`~veil.onion.errors.InvalidSession` otherwise.
:attr:`DelegatedSigner.owner` is whom the chain acts for (an ``AccountId`` or a
``GroupId``); :attr:`DelegatedSigner.account` is kept for account chains and raises
:class:`~veil.onion.errors.InvalidSession` for a group's.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidSession
from ..keys import Account, AccountId, GroupId
from .chains import Chain
from .did import did_key
from .links import SessionKey, audience_matches
from .resources import grants, required

__all__ = ["DelegatedSigner"]


@dataclass(frozen=True, slots=True, repr=False)
class DelegatedSigner:
    """A key and its capability chain, signing storage requests for the chain's owner
    (see the module note)."""

    key: SessionKey | Account
    chain: Chain

    def __post_init__(self) -> None:
        if not isinstance(self.key, SessionKey | Account) or not isinstance(self.chain, Chain):
            raise InvalidSession("a delegated signer is a SessionKey (or Account) and its Chain")
        if not audience_matches(self.chain.audience, self.key.ed25519_public):
            raise InvalidSession("the key is not the audience of its chain")

    @classmethod
    def for_member(cls, account: Account, chain: Chain) -> DelegatedSigner:
        """A session member signing with its own account, by its membership chain
        (owned by the session's group ID); :class:`InvalidSession` for an account's
        chain or one that is not the member's."""
        if not isinstance(chain, Chain) or not isinstance(chain.owner, GroupId):
            raise InvalidSession("a member's chain is owned by a session's group ID")
        return cls(account, chain)

    @property
    def owner(self) -> AccountId | GroupId:
        """Whom the chain acts for (its first link's owner): the request's ``pubkey``."""
        return self.chain.owner

    @property
    def is_group(self) -> bool:
        return isinstance(self.chain.owner, GroupId)

    @property
    def account(self) -> AccountId:
        """The account the chain acts for (its first link's owner)."""
        owner = self.chain.owner
        if not isinstance(owner, AccountId):
            raise InvalidSession("this chain is a group's: use .owner (the group ID)")
        return owner

    @property
    def ed25519_public(self) -> bytes:
        """The signing key's public key (a request's ``pubkey_ed25519``)."""
        return self.key.ed25519_public

    @property
    def did(self) -> str:
        return did_key(self.key.ed25519_public)

    @property
    def expires_ms(self) -> int:
        """When the chain stops working (its earliest expiry), ms since the epoch."""
        return self.chain.expires_ms

    def sign(self, domain: bytes, message: bytes) -> bytes:
        """Sign with the key (:func:`veil.onion.crypto.sign` under ``domain``)."""
        return self.key.sign(domain, message)

    def missing(self, method: str, namespace: int | None) -> frozenset[str]:
        """The actions the chain lacks for a ``method`` request in ``namespace`` (None:
        every namespace, ``delete_all``); empty if the chain grants it. A method that is
        never signed (``info``, ``get_swarm``) raises
        :class:`~veil.onion.errors.InvalidResource`."""
        action, first, last = required(method, namespace)
        if grants(self.chain.resources, self.chain.owner, action, first, last):
            return frozenset()
        return frozenset({action})

    def __repr__(self) -> str:
        return f"DelegatedSigner({self.did}, {len(self.chain)} link(s), exp={self.expires_ms})"
