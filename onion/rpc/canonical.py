"""The canonical byte strings of the storage RPC: what is hashed and what is signed.

Design note
-----------
Signatures and message hashes are computed over a length-prefixed concatenation of
fields (:func:`length_prefixed`), never over CBOR: no two different field lists encode
alike, and neither side has to reproduce an encoder's choices. This module holds that
encoding and the message hash; :mod:`veil.onion.rpc.signing` builds the signed message of
each request from it.

Message hash: BLAKE2b-256 (purpose ``veil/msg-hash``) over the account key, the namespace
and the data, *not* the timestamp or TTL, so that sending the same message twice stores
it once (the node keeps the later expiry).
"""

from __future__ import annotations

from typing import Final

from .. import crypto
from ..keys import AccountId, GroupId, owner_key

MSG_HASH_PURPOSE: Final = b"veil/msg-hash"
_NS_FIELD_LEN: Final = (2).to_bytes(4, "big")  # the length prefix of a namespace field


def length_prefixed(*parts: bytes) -> bytes:
    """Length-prefixed concatenation: no two different field lists encode alike."""
    return b"".join([len(p).to_bytes(4, "big") + p for p in parts])


def namespace_bytes(namespace: int | None) -> bytes:
    """A namespace as a field: 2 bytes, signed; None ("every namespace") is empty, which
    no namespace number encodes to."""
    return b"" if namespace is None else namespace.to_bytes(2, "big", signed=True)


def message_hash(account: AccountId | GroupId, namespace: int, data: bytes) -> bytes:
    """The 32-byte hash that names (and deduplicates) a stored message."""
    # The bytes of length_prefixed(key, namespace_bytes(namespace), data), joined in one
    # go: this runs for every store a node answers. tests/test_rpc.py checks the two agree.
    key = owner_key(account)
    return crypto.hash32(
        b"".join(
            (
                len(key).to_bytes(4, "big"),
                key,
                _NS_FIELD_LEN,
                namespace.to_bytes(2, "big", signed=True),
                len(data).to_bytes(4, "big"),
                data,
            )
        ),
        MSG_HASH_PURPOSE,
    )
