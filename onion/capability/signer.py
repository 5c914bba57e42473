"""A delegated signer: a session key with the chain that lets it act for an account.

Design note
-----------
:class:`DelegatedSigner` is what the storage RPC's builders (:mod:`veil.onion.rpc.builders`)
take in place of an :class:`~veil.onion.keys.Account`: the session key signs the
request, and the request carries the chain (its ``capability`` param) so that a node can
check, with :func:`~veil.onion.capability.chains.authorize`, that the key may make that
request for the chain's owner. It holds no check of time or revocation (a node does
those, by its own clock); :meth:`DelegatedSigner.missing` answers, before anything is
built, whether the chain's resources grant a method in a namespace at all, so that a
client refuses locally what every node would refuse.

Built from a key and a chain whose audience the key is
(:class:`~veil.onion.errors.InvalidSession` otherwise). Only an account's chain signs
storage requests (a storage request names an account): :attr:`DelegatedSigner.account`
of a group's chain raises :class:`~veil.onion.errors.InvalidSession`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidSession
from ..keys import AccountId
from .chains import Chain
from .did import did_key
from .links import SessionKey
from .resources import grants, required

__all__ = ["DelegatedSigner"]


@dataclass(frozen=True, slots=True, repr=False)
class DelegatedSigner:
    """A session key and its capability chain, signing storage requests for the chain's
    owner (see the module note)."""

    key: SessionKey
    chain: Chain

    def __post_init__(self) -> None:
        if not isinstance(self.key, SessionKey) or not isinstance(self.chain, Chain):
            raise InvalidSession("a delegated signer is a SessionKey and its Chain")
        if self.key.ed25519_public != self.chain.audience:
            raise InvalidSession("the session key is not the audience of its chain")

    @property
    def account(self) -> AccountId:
        """The account the chain acts for (its first link's owner)."""
        owner = self.chain.owner
        if not isinstance(owner, AccountId):
            raise InvalidSession("this chain is a group's: it signs no account's storage requests")
        return owner

    @property
    def ed25519_public(self) -> bytes:
        """The session key's public key (a request's ``pubkey_ed25519``)."""
        return self.key.ed25519_public

    @property
    def did(self) -> str:
        return did_key(self.key.ed25519_public)

    @property
    def expires_ms(self) -> int:
        """When the chain stops working (its earliest expiry), ms since the epoch."""
        return self.chain.expires_ms

    def sign(self, domain: bytes, message: bytes) -> bytes:
        """Sign with the session key (:func:`veil.onion.crypto.sign` under ``domain``)."""
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
