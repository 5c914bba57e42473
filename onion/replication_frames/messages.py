"""The rules every message taken from a peer keeps (push, handover, pulled page).

Design note
-----------
:func:`check_message`: the owner key, the hash recomputed, the times against the
receiver's clock, the namespace's longest TTL, and outside the inbox and the room
namespace the owner's proof (:func:`veil.onion.rpc.verify_store_proof`).
"""

from __future__ import annotations

from veil.onion import crypto, rpc
from veil.onion.capability import ChainCache, RevocationLookup
from veil.onion.errors import InvalidId, ProtocolError
from veil.onion.keys import OwnerId, owner_of_key
from veil.onion.replica import ReplicaMessage

from .format import CLOCK_SKEW_MS

__all__ = ["check_message"]


def _account(key: bytes) -> OwnerId | None:
    # owner_of_key caches: the point check costs tens of microseconds and a batch often
    # repeats accounts; the answer is a pure function of the key.
    try:
        return owner_of_key(key)
    except InvalidId:
        return None


def check_message(
    m: ReplicaMessage,
    *,
    now_ms: int,
    skew_ms: int = CLOCK_SKEW_MS,
    is_revoked: RevocationLookup | None = None,
    chains: ChainCache | None = None,
) -> OwnerId:
    """The message's owner (an account or a group), if the message keeps the protocol's rules; else
    :class:`ProtocolError` (or its :class:`Unauthorized` for a proof that fails).

    The account key must be a valid X25519 key, the hash must be
    :func:`veil.onion.rpc.message_hash` of (account, namespace, data), the first-stored time no
    later than our clock (plus the skew), and the expiry no further than the longest TTL
    of the namespace from now (plus the skew), since an ``expire`` may have moved it.
    An expiry already past is allowed here (the store skips such a message). Outside the
    inbox the message must carry its owner's proof, which must verify and allow the
    expiry (:func:`veil.onion.rpc.verify_store_proof`); an inbox message carries none.
    A proof by a delegated key is checked with its chain at its signed time, against the
    receiver's revocations (``is_revoked``) and with its cache of verified chains.
    """
    account = _account(m.account)
    if account is None:
        raise ProtocolError("message owner is not a valid account or group key")
    if not crypto.ct_equal(rpc.message_hash(account, m.namespace, m.data), m.hash):
        raise ProtocolError("message hash does not match its account, namespace and data")
    if m.timestamp_ms > now_ms + skew_ms:
        raise ProtocolError("message stored in the future")
    if m.expiry_ms > now_ms + rpc.max_ttl_ms(m.namespace) + skew_ms:
        raise ProtocolError(f"message expiry beyond the longest TTL of namespace {m.namespace}")
    rpc.verify_store_proof(
        account, m.namespace, m.hash, m.expiry_ms, m.proof, is_revoked=is_revoked, chains=chains
    )
    return account
