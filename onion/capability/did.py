"""``did:key`` for Ed25519 keys: how a session key is shown to people and other tools.

Design note
-----------
A ``did:key`` (W3C CCG did:key method) of an Ed25519 key is ``did:key:z`` followed by the
base58btc (Bitcoin alphabet) encoding of the multicodec ``ed25519-pub`` varint
(``0xed 0x01``) and the 32-byte key, so every such DID starts with ``did:key:z6Mk``. The
base58 is the PyPI ``base58`` package (pure Python, the reference implementation of the
Bitcoin alphabet); tests check it against the did:key spec's vectors and a hand
computation.

DIDs never travel on veil's wire (capabilities carry raw 32-byte keys); they are for
display, the command line and interoperability. So a bad one is local misuse,
:class:`~veil.onion.errors.InvalidDid` (an ``InvalidValue``, a ``ValueError``). Parsing
is strict and bounded: the length is checked before base58 (whose decoding is quadratic
in its input) runs, and the key must be a valid point of prime order.
"""

from __future__ import annotations

from typing import Final

import base58

from .. import crypto
from ..errors import InvalidDid
from .limits import KEY_BYTES

__all__ = ["DID_KEY_PREFIX", "did_key", "parse_did_key"]

DID_KEY_PREFIX: Final = "did:key:"
#: Multicodec ``ed25519-pub`` (0xed) as an unsigned varint.
_ED25519_MULTICODEC: Final = b"\xed\x01"
#: base58btc of 34 bytes is at most 47 characters; a little room, never more.
_MAX_DID_CHARS: Final = len(DID_KEY_PREFIX) + 1 + 48


def did_key(ed25519_public: bytes) -> str:
    """The ``did:key`` of a 32-byte Ed25519 public key."""
    if not isinstance(ed25519_public, bytes) or len(ed25519_public) != KEY_BYTES:
        raise InvalidDid("an Ed25519 public key is 32 bytes")
    body = base58.b58encode(_ED25519_MULTICODEC + ed25519_public).decode("ascii")
    return DID_KEY_PREFIX + "z" + body


def parse_did_key(did: str) -> bytes:
    """The Ed25519 public key of a ``did:key``; :class:`InvalidDid` says what is wrong."""
    if not isinstance(did, str):
        raise InvalidDid("a did:key is text")
    if len(did) > _MAX_DID_CHARS:
        raise InvalidDid(f"a did:key of an Ed25519 key is at most {_MAX_DID_CHARS} characters")
    if not did.startswith(DID_KEY_PREFIX):
        raise InvalidDid(f"a did:key starts with {DID_KEY_PREFIX!r}")
    multibase = did[len(DID_KEY_PREFIX) :]
    if not multibase.startswith("z"):
        raise InvalidDid("a did:key's key is base58btc multibase (starts with 'z')")
    text = multibase[1:]
    if not text.isascii():
        raise InvalidDid("a did:key holds a character outside the base58 alphabet")
    try:
        raw = base58.b58decode(text)
    except ValueError:
        raise InvalidDid("a did:key holds a character outside the base58 alphabet") from None
    if raw[:2] != _ED25519_MULTICODEC:
        raise InvalidDid("not an Ed25519 did:key (multicodec ed25519-pub, 0xed01)")
    key = raw[2:]
    if len(key) != KEY_BYTES:
        raise InvalidDid(f"an Ed25519 did:key holds 32 key bytes, this one {len(key)}")
    if did_key(key) != did:  # one encoding per key: no leading-zero or other variants
        raise InvalidDid("a did:key not in its canonical encoding")
    if not crypto.ed25519_is_valid_point(key):
        raise InvalidDid("a did:key whose key is not a valid Ed25519 point")
    return key
