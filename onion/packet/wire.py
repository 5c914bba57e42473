"""The onion packet's wire layout, and the primitives both sides of it share.

Design note
-----------
Wire format (all hops, all links)::

    packet = version (1) | alpha (32) | gamma (16) | beta (MAX_HOPS * BLOCK) | body (class)

* ``alpha`` is an X25519 public key made for this hop only (the KEM variant of Sphinx,
  as in Katzenpost's KEM Sphinx and Outfox): the hop computes ``s = X25519(onion_sk,
  alpha)``, its one scalar multiplication, and derives every key below from ``s``,
  ``alpha`` and its own onion key. The next hop's ``alpha`` travels inside this hop's
  routing block, so there is no blinding step.
* ``gamma`` is a 16-byte BLAKE2b MAC over ``beta`` and the body's size class, checked
  before anything else.
* ``beta`` holds MAX_HOPS routing blocks of BLOCK bytes, encrypted with a ChaCha20
  keystream. A hop decrypts ``beta || 0^BLOCK`` with its stream, reads the first block,
  and passes the rest on; the sender computes the refilled tail in advance (Sphinx's
  filler), so every hop sees a header of the same size and the next MAC still holds.
* ``body`` is one of the SIZE_CLASSES. The destination's layer is an AEAD
  (ChaCha20-Poly1305) of the length-framed, zero-padded payload; each relay removes one
  ChaCha20 layer. A changed body bit is caught at the latest by the destination.

A routing block is ``cmd (1) | timestamp seconds (8)`` then, for RELAY, ``next node id
(32) | address family (1) | address (16) | port (2) | next alpha (32) | next gamma
(16)``; the rest is zero (and invisible under the stream). Each hop sees only its own
timestamp, rounded to a second by the sender, and enforces its own window; the replay
tag is derived from ``s``, so a replayed packet gives the same tag.

Known limit: a relay's body layer is a stream cipher, not a wide-block cipher (Sphinx's
LIONESS), so a first hop that flips body bits and colludes with the destination could
see that the destination's AEAD failed. Requests here are for storage nodes, which see
only an account ID; a wide-block body is the fix if that ever matters.

Both sides (:mod:`~veil.onion.packet.hop`, :mod:`~veil.onion.packet.sender`) use the
private names below: the layout's offsets, the key schedule (``_keys`` and its three KDF
labels), framing, the body's AEAD and address packing. They are the package's own: no
module outside :mod:`veil.onion.packet` imports them.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import struct

from .. import crypto
from ..errors import IntegrityError, InvalidValue, MalformedPacket, TooLarge

VERSION = 1
MAX_HOPS = 6  # up to 5 relays and the destination
BLOCK = 112
BETA_LEN = MAX_HOPS * BLOCK
ALPHA_LEN = 32
GAMMA_LEN = 16
HEADER_LEN = 1 + ALPHA_LEN + GAMMA_LEN + BETA_LEN
#: Body sizes. A packet (and a reply) is exactly one of these plus its header.
SIZE_CLASSES: tuple[int, ...] = (2048, 16384, 131072)
MAX_PACKET_LEN = HEADER_LEN + SIZE_CLASSES[-1]
MAX_REPLY_LEN = SIZE_CLASSES[-1]

_TAG = crypto.AEAD_TAG_BYTES
_FRAME = 4  # payload length prefix inside the AEAD
#: The largest request payload a packet can carry.
MAX_PAYLOAD = SIZE_CLASSES[-1] - _TAG - _FRAME
_NONCE = crypto.XNONCE_BYTES
_REPLY_OVERHEAD = _NONCE + _TAG + 1 + _FRAME  # nonce, tag, kind byte, length
#: The largest reply payload (a destination's answer) a reply can carry.
MAX_REPLY_PAYLOAD = SIZE_CLASSES[-1] - _REPLY_OVERHEAD

CMD_RELAY = 1
CMD_DELIVER = 2
_PACKET_LENGTHS = frozenset(HEADER_LEN + c for c in SIZE_CLASSES)
_REPLY_LENGTHS = frozenset(SIZE_CLASSES)

_KDF_HEADER = b"veil-sphinx-hdr1"  # mac key | hop stream key
_KDF_BODY = b"veil-sphinx-bdy1"  # the destination's body AEAD key
_KDF_REPLY = b"veil-sphinx-rpl1"  # reply stream key | reply seal key

_BLOCK_HEAD = struct.Struct(">BQ")
_RELAY_BLOCK = struct.Struct(">BQ32sB16sH32s16s")
assert _RELAY_BLOCK.size <= BLOCK
_ZERO_BLOCK = bytes(BLOCK)
_REPLAY_TAG_LEN = 16
# A hop's keystream: routing blocks plus refill | replay tag | the relay's body layer.
_ROUTE_LEN = BETA_LEN + BLOCK
_BODY_OFFSET = _ROUTE_LEN + _REPLAY_TAG_LEN
_ZERO_TAIL = bytes(BLOCK + _REPLAY_TAG_LEN)
_ZERO_NONCE = bytes(12)

_REPLY_OK = 0
_REPLY_ERROR = 1


def _keys(secret: bytes, purpose: bytes, context: bytes) -> tuple[bytes, bytes]:
    k = crypto.kdf(secret, purpose, 64, context)
    return k[:32], k[32:]


def size_class_for(length: int, overhead: int = _TAG + _FRAME) -> int:
    """The smallest size class that holds ``length`` payload bytes plus ``overhead``."""
    need = length + overhead
    for c in SIZE_CLASSES:
        if need <= c:
            return c
    raise TooLarge(
        f"payload of {length} bytes exceeds the largest packet ({SIZE_CLASSES[-1] - overhead})"
    )


def _class_tag(size: int) -> bytes:
    return size.to_bytes(4, "big")


def _frame(kind: int | None, payload: bytes, size: int) -> bytes:
    """Length-framed ``payload`` zero-padded to ``size`` bytes."""
    head = (
        struct.pack(">I", len(payload)) if kind is None else struct.pack(">BI", kind, len(payload))
    )
    return head + payload + bytes(size - len(head) - len(payload))


def _unframe(plain: bytes, with_kind: bool) -> tuple[int, bytes]:
    if with_kind:
        kind, n = struct.unpack_from(">BI", plain)
        start = 5
    else:
        kind, (n,) = 0, struct.unpack_from(">I", plain)
        start = 4
    if n > len(plain) - start:
        raise MalformedPacket("frame length exceeds its container")
    return kind, plain[start : start + n]


def _aead_seal(key: bytes, plain: bytes) -> bytes:
    # A key used once per packet: the zero nonce is sound (see crypto.stream_xor).
    return crypto.sodium.crypto_aead_chacha20poly1305_ietf_encrypt(plain, None, _ZERO_NONCE, key)


def _aead_open(key: bytes, sealed: bytes) -> bytes:
    out = crypto.ffi.new("unsigned char[]", len(sealed))
    outlen = crypto.ffi.new("unsigned long long *")
    rc = crypto.lib.crypto_aead_chacha20poly1305_ietf_decrypt(
        out, outlen, crypto.ffi.NULL, sealed, len(sealed), crypto.ffi.NULL, 0, _ZERO_NONCE, key
    )
    if rc != 0:
        raise IntegrityError("authentication failed")
    return crypto.ffi.buffer(out, outlen[0])[:]


@functools.lru_cache(maxsize=1024)
def _pack_address(host: str, port: int) -> tuple[int, bytes]:
    # Cached: a client builds every packet through the same few consensus addresses,
    # and parsing one with ipaddress is a tenth of a prepared 4-hop build.
    try:
        ip = ipaddress.ip_address(host)
    except ValueError as exc:
        raise InvalidValue(f"hop address must be an IP literal, got {host!r}") from exc
    if not 0 < port < 65536:
        raise InvalidValue(f"bad port {port}")
    if ip.version == 4:
        return 4, ip.packed + bytes(12)
    return 6, ip.packed


_V4_TAIL = bytes(12)


def _unpack_address(family: int, raw: bytes) -> str:
    # socket.inet_ntop is a pure conversion (no I/O) and several times faster than
    # ipaddress on the hot path.
    if family == 4 and raw[4:] == _V4_TAIL:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    if family == 6:
        return socket.inet_ntop(socket.AF_INET6, raw)
    raise MalformedPacket("bad next-hop address")
