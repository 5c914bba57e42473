"""1:1 message envelopes: signed by the sender, sealed to the recipient, padded.

Design note
-----------
This is Session's envelope, built from libsodium primitives only. The node that stores
an envelope sees the recipient's ID (the inbox it is stored under) and a length on the
Padmé grid; it does not learn the sender, the time or the content.

Inside, the sender signs, with the signature domain ``envelope/v1``::

    signed = sender_ed25519 (32) || recipient_x25519 (32) || timestamp_ms (u64, BE) || content

The recipient's key is in the signed bytes so that a message signed for Alice cannot be
re-sealed to Bob by Alice (Bob would see a message its sender never sent him). The
fixed-size fields come first, so the concatenation is unambiguous. The inner plaintext
is the deterministic CBOR map::

    {"content": bytes, "sender": sender Ed25519 public key, "sig": signature, "ts": int}

padded with :mod:`veil.onion.padding` (0x80 then zeros) so that the whole envelope's length
is a Padmé value of at least 256 bytes. The padded plaintext is then sealed to the
recipient's X25519 key with a fresh ephemeral key::

    eph_sk        = rng(32); eph_pk = X25519(eph_sk, base)
    shared        = X25519(eph_sk, recipient_x25519)
    key || nonce  = BLAKE2b(key=shared, person="envelope/v1 key",
                            data=eph_pk || recipient_x25519, 56 bytes)  # 32 + 24
    envelope      = 0x01 || eph_pk || XChaCha20-Poly1305(key, nonce, padded,
                                                         ad = 0x01 || eph_pk)

Every ephemeral key gives a new key, so the derived nonce is never reused under a key.
This is what libsodium's ``crypto_box_seal`` does (with XSalsa20-Poly1305 and an
unkeyed hash), written out here because ``crypto_box_seal`` draws its ephemeral key
inside libsodium, where a deterministic ``rng`` cannot reach it, and the wire format
needs known-answer vectors.

Opening checks, in order, each with a typed error: the size limit (:class:`TooLarge`);
the length grid and the version byte (:class:`EnvelopeError`); the AEAD tag, which
fails for a tampered envelope and for one sealed to someone else (:class:`EnvelopeError`);
the padding and the inner CBOR (:class:`DecodeError` / :class:`SchemaError`: only a
broken or hostile sender makes those, since they are authenticated); then the signature
under the enclosed key, domain and *our own* X25519 key (:class:`BadSignature`). The
sender's account ID is derived from the key that signed, so it is verified, not claimed.

Freshness and duplicates are the caller's business: a node may hand the same envelope
out twice, and a message may legitimately be days old (TTL up to 14 days). The signed
timestamp is returned for that.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from . import crypto, padding
from .cbor import Field, Schema, encode
from .crypto import Rng, system_rng
from .errors import (
    BadSignature,
    EnvelopeError,
    IntegrityError,
    InvalidId,
    InvalidKey,
    InvalidValue,
    TooLarge,
)
from .keys import Account, AccountId, account_id_of_ed25519

__all__ = [
    "MAX_CONTENT",
    "MAX_ENVELOPE_SIZE",
    "VERSION",
    "Opened",
    "open_envelope",
    "seal",
]

VERSION: Final = 1
#: The largest envelope a node stores (DESIGN: message bodies up to 76,800 bytes).
MAX_ENVELOPE_SIZE: Final = 76_800

_SIGN_DOMAIN: Final = b"envelope/v1"
_KDF_PURPOSE: Final = b"envelope/v1 key"
_HEADER_SIZE: Final = 1 + crypto.KEY_BYTES
_OVERHEAD: Final = _HEADER_SIZE + crypto.AEAD_TAG_BYTES  # around the padded plaintext
_U64_MAX: Final = 2**64 - 1
_U64 = struct.Struct(">Q")

# The inner map costs 137 bytes besides the content, at most (a 9-byte timestamp and a
# 5-byte content head); the padding marker 1 more, the seal _OVERHEAD (49). The largest
# Padmé length within MAX_ENVELOPE_SIZE is 75,776 (76,800 itself rounds up to 77,824), so
# content of up to 75,776 - 137 - 1 - 49 bytes always fits. tests/test_envelope.py
# checks both edges.
_INNER_OVERHEAD: Final = 137
#: The largest content :func:`seal` accepts.
MAX_CONTENT: Final = 75_776 - _INNER_OVERHEAD - 1 - _OVERHEAD

_INNER = Schema(
    "envelope",
    {
        "content": Field(bytes, max_len=MAX_CONTENT),
        "sender": Field(bytes, size=32),
        "sig": Field(bytes, size=crypto.SIG_BYTES),
        "ts": Field(int, min=0, max=_U64_MAX),
    },
)


@dataclass(frozen=True, slots=True)
class Opened:
    """An opened envelope: who sent it (verified), when they say they sent it, and what."""

    sender: AccountId
    sender_ed25519: bytes
    content: bytes
    timestamp_ms: int


def _signed_message(
    sender_ed25519: bytes, recipient_x25519: bytes, timestamp_ms: int, content: bytes
) -> bytes:
    return sender_ed25519 + recipient_x25519 + _U64.pack(timestamp_ms) + content


def _key_and_nonce(shared: bytes, eph_pk: bytes, recipient_x25519: bytes) -> tuple[bytes, bytes]:
    okm = crypto.kdf(
        shared, _KDF_PURPOSE, crypto.KEY_BYTES + crypto.XNONCE_BYTES, eph_pk + recipient_x25519
    )
    return okm[: crypto.KEY_BYTES], okm[crypto.KEY_BYTES :]


def seal(
    sender: Account,
    recipient: AccountId,
    content: bytes,
    *,
    timestamp_ms: int,
    rng: Rng = system_rng,
) -> bytes:
    """Sign ``content`` as ``sender`` for ``recipient``, pad it and seal it to them.

    Raises :class:`TooLarge` for content over :data:`MAX_CONTENT` bytes and
    :class:`ValueError` for a timestamp outside 0 .. 2**64-1. ``rng`` gives the
    ephemeral key (32 bytes per call); tests pass a deterministic one.
    """
    if len(content) > MAX_CONTENT:
        raise TooLarge(f"envelope content of {len(content)} bytes is over {MAX_CONTENT}")
    if not 0 <= timestamp_ms <= _U64_MAX:
        raise InvalidValue("timestamp_ms must fit an unsigned 64-bit integer")
    content = bytes(content)
    recipient_x = recipient.x25519_public
    signature = sender.sign(
        _SIGN_DOMAIN,
        _signed_message(sender.ed25519_public, recipient_x, timestamp_ms, content),
    )
    inner = encode(
        {"content": content, "sender": sender.ed25519_public, "sig": signature, "ts": timestamp_ms}
    )
    padded = padding.pad(inner, overhead=_OVERHEAD)
    eph_sk, eph_pk = crypto.x25519_keypair(rng)
    key, nonce = _key_and_nonce(crypto.x25519(eph_sk, recipient_x), eph_pk, recipient_x)
    header = bytes((VERSION,)) + eph_pk
    return header + crypto.aead_seal(key, nonce, padded, header)


def open_envelope(recipient: Account, data: bytes, *, max_size: int = MAX_ENVELOPE_SIZE) -> Opened:
    """Open an envelope sealed to ``recipient``; see the module note for the errors.

    Every failure is a :class:`~veil.onion.errors.ProtocolError`: :class:`TooLarge`,
    :class:`EnvelopeError` (malformed, not for us, or altered), :class:`DecodeError` or
    :class:`SchemaError` (a sender that does not follow the format) and
    :class:`BadSignature` (a forged or misdirected signature).
    """
    size = len(data)
    if size > max_size:
        raise TooLarge(f"envelope of {size} bytes is over the limit of {max_size}")
    # Every envelope sealed by seal() has a Padmé length of at least 256 bytes; refusing
    # others before any cryptography also keeps senders from leaking exact lengths.
    if size < padding.MIN_PADDED_SIZE or padding.padme_length(size) != size:
        raise EnvelopeError(f"an envelope of {size} bytes is not on the padding grid")
    data = bytes(data)
    if data[0] != VERSION:
        raise EnvelopeError(f"unknown envelope version {data[0]}")
    header = data[:_HEADER_SIZE]
    eph_pk = header[1:]
    recipient_x = recipient.x25519_public
    try:
        shared = crypto.x25519(recipient.x25519_secret, eph_pk)
        key, nonce = _key_and_nonce(shared, eph_pk, recipient_x)
        padded = crypto.aead_open(key, nonce, data[_HEADER_SIZE:], header)
    except IntegrityError:
        raise EnvelopeError("envelope does not open: altered, or not sealed to us") from None
    inner_bytes = padding.unpad(padded)
    inner = _INNER.decode(inner_bytes, max_size=len(inner_bytes), canonical=True)
    sender_ed: bytes = inner["sender"]
    content: bytes = inner["content"]
    timestamp_ms: int = inner["ts"]
    # libsodium's verify accepts a key with a small-order component (A + T, T of order 8)
    # for about one signature in eight; such a key has no account ID, so refuse it here.
    if not crypto.ed25519_is_valid_point(sender_ed):
        raise BadSignature("envelope sender key is not a valid Ed25519 key")
    crypto.verify(
        sender_ed,
        _SIGN_DOMAIN,
        _signed_message(sender_ed, recipient_x, timestamp_ms, content),
        inner["sig"],
    )
    try:
        sender = account_id_of_ed25519(sender_ed)
    except (InvalidKey, InvalidId):  # not expected for a valid point; kept typed anyway
        raise BadSignature("envelope sender key has no account ID") from None
    return Opened(
        sender=sender, sender_ed25519=sender_ed, content=content, timestamp_ms=timestamp_ms
    )
