"""Onion packets: fixed-size, KEM-Sphinx style, with layered replies.

Design note
===========

Session's onion requests shrink at every hop and carry the reply back as one blob, so a
hop learns its position and a watcher can link the links. A veil packet keeps one size
from the first hop to the destination, and its reply is re-encrypted on every link.

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

Replies: the destination seals its reply (or an error) with an AEAD key only it and the
client share (XChaCha20-Poly1305 with a random nonce in front: see
:class:`ReplyContext`); each relay on the way back XORs its own keystream over it; a
relay that
cannot forward originates an error sealed with its own key. Replies use the same size
classes. The client knows every hop's secret, peels the layers, and learns which hop
spoke (:class:`HopError` carries its index).

Where a packet can fail, and what the previous hop sees: before the header checks (a
bad length, version or MAC) the hop has no reply key, and the previous hop, which sent
those bytes, learns nothing it did not know. After them, every failure is answered with
a layered reply, so that no link shows a bare refusal: a body that does not
authenticate at the destination (a hop on the way changed it) is :class:`BadBody`, not
an exception, and the destination answers it with :data:`BAD_BODY_STATUS` sealed like
any reply, after its window and replay checks. If the destination answered it with a
plain refusal, the relay before it, which sees a refusal on its link after it forwarded
a packet whose header was good, would learn that it was next to the destination.

Known limit: a relay's body layer is a stream cipher, not a wide-block cipher (Sphinx's
LIONESS), so a first hop that flips body bits and colludes with the destination could
see that the destination's AEAD failed. Requests here are for storage nodes, which see
only an account ID; a wide-block body is the fix if that ever matters.

This module does no I/O: :func:`build_packet` and :func:`process_packet` take bytes and
return bytes or events; the node enforces the window and the replay cache
(:mod:`veil.onion.replay`).

Why one module of about 640 lines: the format is one thing seen from two sides. The
hop (:func:`process_packet`, :class:`ReplyContext`) and the client (:func:`build_packet`,
:class:`ReplyOpener`, :class:`HopKeys`) share the private layout constants, key
schedule (``_keys`` and its three KDF labels), framing and address packing, which split
across modules would become public API that nothing else should call. Measured: of its
~635 lines, ~175 are docstrings and comments (this note ~70) and ~110 blank; the code
is ~350 lines.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from . import crypto
from .crypto import Rng, system_rng
from .errors import (
    IntegrityError,
    InvalidValue,
    MalformedPacket,
    PacketError,
    PacketMisuse,
    TooLarge,
    WireError,
)

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


# --- public types ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hop:
    """One node of a path, as the client knows it from the directory."""

    node_id: bytes  # Ed25519 identity key, 32 bytes
    onion_key: bytes  # X25519 public key, 32 bytes
    host: str  # an IPv4 or IPv6 literal
    port: int


class HopError(WireError):
    """A hop on the path answered with an error instead of the destination's reply.

    ``hop`` is its index on the path (0 is the guard; ``len(path) - 1`` the destination),
    ``status`` its wire status and ``message`` its explanation.
    """

    def __init__(self, hop: int, status: str, message: str) -> None:
        text = f"hop {hop}: {status}: {message}" if message else f"hop {hop}: {status}"
        super().__init__(text, status=status)
        self.hop = hop
        self.message = message


@dataclass(frozen=True, slots=True)
class Relay:
    """A processed packet to be forwarded: send ``packet`` to the next hop."""

    next_node_id: bytes
    next_host: str
    next_port: int
    packet: bytes
    reply: ReplyContext
    replay_tag: bytes
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class Deliver:
    """A processed packet for this node: ``payload`` is the request."""

    payload: bytes
    reply: ReplyContext
    replay_tag: bytes
    timestamp_ms: int


#: The status of the destination's answer to a :class:`BadBody`; the client reads it
#: as a :class:`HopError` from the last hop and blames the path, not a node.
BAD_BODY_STATUS = "bad_request"
BAD_BODY_MESSAGE = "packet body does not authenticate"


@dataclass(frozen=True, slots=True)
class BadBody:
    """A packet for this node whose header checked but whose body does not authenticate
    (or, authenticated, is not framed): answer it with :meth:`answer` once the window
    and the replay cache admit it, as any other packet. See the module note for why it
    is not an exception."""

    reply: ReplyContext
    replay_tag: bytes
    timestamp_ms: int

    def answer(self) -> bytes:
        """The destination's layered error reply (the smallest size class, as most
        replies are)."""
        return self.reply.error(BAD_BODY_STATUS, BAD_BODY_MESSAGE)


# --- small helpers -------------------------------------------------------------------


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


# --- the hop -------------------------------------------------------------------------


class ReplyContext:
    """What a hop keeps while a packet's reply is outstanding.

    A relay calls :meth:`wrap` on the reply from the next hop, or :meth:`error` if it
    could not get one; the destination calls :meth:`seal` with its reply payload (or
    :meth:`error`). A context answers once: a second answer, or the wrong one for the
    hop's place, raises :class:`~veil.onion.errors.PacketMisuse` (a bug in the caller).

    Why sealing takes a random nonce although the keys are per packet: a replayed packet
    yields the same keys again, and the hop may still answer it (with a "replayed"
    error); a fixed nonce would then encrypt two replies under one key and nonce, and
    whoever saw both could XOR them. A relay's XOR layer (:meth:`wrap`) is only ever
    applied to a packet that passed the replay check, so it needs no nonce.
    """

    __slots__ = ("_context", "_destination", "_rng", "_secret", "_used")

    def __init__(self, secret: bytes, context: bytes, destination: bool, rng: Rng) -> None:
        self._secret = secret
        self._context = context
        self._destination = destination
        self._rng = rng
        self._used = False

    def _take(self) -> tuple[bytes, bytes]:
        if self._used:
            raise PacketMisuse("a reply context answers once")
        self._used = True
        return _keys(self._secret, _KDF_REPLY, self._context)

    def wrap(self, reply: bytes) -> bytes:
        """Add this relay's layer to the next hop's reply."""
        if self._destination:
            raise PacketMisuse("the destination seals, it does not wrap")
        if len(reply) not in _REPLY_LENGTHS:
            raise MalformedPacket(f"reply of {len(reply)} bytes is not a size class")
        stream_key, _ = self._take()
        return crypto.stream_xor(stream_key, reply)

    def seal(self, payload: bytes) -> bytes:
        """The destination's reply, sealed to the client, padded to a size class.

        Raises :class:`TooLarge` (before using up the context) for a payload over
        :data:`MAX_REPLY_PAYLOAD`.
        """
        if not self._destination:
            raise PacketMisuse("only the destination seals a reply")
        return self._seal(_REPLY_OK, payload)

    def error(self, status: str, message: str = "") -> bytes:
        """An error reply originated here, readable by the client as a :class:`HopError`."""
        body = status.encode() + b"\x00" + message.encode("utf-8", "replace")[:512]
        return self._seal(_REPLY_ERROR, body)

    def _seal(self, kind: int, payload: bytes) -> bytes:
        size = size_class_for(len(payload), _REPLY_OVERHEAD)
        _, seal_key = self._take()
        nonce = self._rng(_NONCE)
        frame = _frame(kind, payload, size - _NONCE - _TAG)
        return nonce + crypto.aead_seal(seal_key, nonce, frame)


def _open_reply(key: bytes, sealed: bytes) -> bytes:
    return crypto.aead_open(key, sealed[:_NONCE], sealed[_NONCE:])


def process_packet(
    packet: bytes, onion_secret: bytes, onion_public: bytes, rng: Rng = system_rng
) -> Relay | Deliver | BadBody:
    """Process ``packet`` at a hop holding the X25519 onion key pair.

    Returns :class:`Relay` (forward ``.packet``, same length), :class:`Deliver`
    (``.payload`` is for this node) or :class:`BadBody` (for this node, but its body does
    not authenticate: answer with :meth:`BadBody.answer`). Raises
    :class:`MalformedPacket` for a bad length, version, routing command or next-hop
    address and :class:`IntegrityError` for a bad MAC, before acting on anything.
    The caller enforces ``timestamp_ms`` and ``replay_tag`` (see :mod:`veil.onion.replay`)
    for all three results.
    """
    n = len(packet)
    if n not in _PACKET_LENGTHS:
        raise MalformedPacket(f"packet of {n} bytes is not a valid size")
    if packet[0] != VERSION:
        raise MalformedPacket(f"unknown packet version {packet[0]}")
    alpha = packet[1:33]
    gamma = packet[33:49]
    beta = packet[49:HEADER_LEN]

    secret = crypto.x25519(onion_secret, alpha)
    context = alpha + onion_public
    mac_key, stream_key = _keys(secret, _KDF_HEADER, context)
    # The MAC also binds the body's size class, so a packet moved to another class is
    # refused by the first hop rather than by the destination.
    if not crypto.ct_equal(crypto.mac(mac_key, beta + _class_tag(n - HEADER_LEN)), gamma):
        raise IntegrityError("header MAC does not verify")

    # One keystream decrypts the routing blocks (with the refill), yields the replay
    # tag, and removes a relay's body layer: one libsodium call for the whole hop.
    body = packet[HEADER_LEN:]
    out = crypto.stream_xor(stream_key, beta + _ZERO_TAIL + body)
    cmd, ts = _BLOCK_HEAD.unpack_from(out)
    replay_tag = out[_ROUTE_LEN:_BODY_OFFSET]

    if cmd == CMD_RELAY:
        _, _, node_id, family, addr, port, next_alpha, next_gamma = _RELAY_BLOCK.unpack_from(out)
        host = _unpack_address(family, addr)
        out = b"".join(
            (
                packet[:1],
                next_alpha,
                next_gamma,
                out[BLOCK:_ROUTE_LEN],
                out[_BODY_OFFSET:],
            )
        )
        return Relay(
            node_id,
            host,
            port,
            out,
            ReplyContext(secret, context, False, rng),
            replay_tag,
            ts * 1000,
        )
    if cmd == CMD_DELIVER:
        # The destination's layer is an AEAD under a key of its own (the stream above
        # was spent on the body for nothing: a hop learns its role only from the block).
        body_key = crypto.kdf(secret, _KDF_BODY, 32, context)
        reply = ReplyContext(secret, context, True, rng)
        try:
            _, payload = _unframe(_aead_open(body_key, body), with_kind=False)
        except PacketError:  # IntegrityError, or MalformedPacket from the frame
            return BadBody(reply, replay_tag, ts * 1000)
        return Deliver(payload, reply, replay_tag, ts * 1000)
    raise MalformedPacket(f"unknown routing command {cmd}")


# --- the client ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _HopSecrets:
    reply_stream: bytes
    reply_seal: bytes


class ReplyOpener:
    """The client's keys for one packet's reply; :meth:`open` peels every layer."""

    __slots__ = ("_hops",)

    def __init__(self, hops: list[_HopSecrets]) -> None:
        self._hops = hops

    def open(self, reply: bytes) -> bytes:
        """The destination's reply payload.

        Raises :class:`HopError` if a hop (or the destination) answered with an error,
        :class:`IntegrityError` if no hop's key opens the reply, and
        :class:`MalformedPacket` for a reply that is not a size class.
        """
        if len(reply) not in _REPLY_LENGTHS:
            raise MalformedPacket(f"reply of {len(reply)} bytes is not a size class")
        # Every relay XORed its stream over the reply; XOR commutes, so peel them all
        # first for the common case (the destination answered), then fall back.
        layers = [reply]
        current = reply
        for h in self._hops[:-1]:
            current = crypto.stream_xor(h.reply_stream, current)
            layers.append(current)
        try:
            plain = _open_reply(self._hops[-1].reply_seal, layers[-1])
            origin = len(self._hops) - 1
        except IntegrityError:
            for i in range(len(self._hops) - 1):
                try:
                    plain = _open_reply(self._hops[i].reply_seal, layers[i])
                except IntegrityError:
                    continue
                origin = i
                break
            else:
                raise IntegrityError("no hop's key opens the reply") from None
        kind, payload = _unframe(plain, with_kind=True)
        if kind == _REPLY_OK and origin == len(self._hops) - 1:
            return payload
        if kind == _REPLY_ERROR:
            status, _, message = payload.partition(b"\x00")
            raise HopError(
                origin, status.decode("ascii", "replace"), message.decode("utf-8", "replace")
            )
        raise MalformedPacket("reply of an unknown kind")


class HopKeys:
    """One hop's key exchange for one future packet, done ahead of time.

    Building a packet costs two X25519 multiplications per hop (the ephemeral key and
    the shared secret), most of a 4-hop build; they depend only on the hop's onion key,
    not on the payload, the time or the rest of the path. A client can therefore do
    them while it waits for the network (:func:`prepare_hop`) and hand them to
    :func:`build_packet`. Each is single use, as the ephemeral key of a packet must be:
    using it a second time raises :class:`~veil.onion.errors.PacketMisuse`, so two
    packets can never share an ``alpha``.
    """

    __slots__ = ("_alpha", "_derived", "_secret", "_used", "onion_key")

    def __init__(self, onion_key: bytes, alpha: bytes, secret: bytes) -> None:
        self.onion_key = onion_key
        self._alpha = alpha
        self._secret = secret
        self._used = False
        # What build_packet derives from the secret for this hop, done ahead too: the
        # header and reply keys, and the keystream for the smallest size class.
        context = alpha + onion_key
        mac_key, stream_key = _keys(secret, _KDF_HEADER, context)
        reply_stream, reply_seal = _keys(secret, _KDF_REPLY, context)
        keystream = crypto.keystream(stream_key, _BODY_OFFSET + SIZE_CLASSES[0])
        self._derived: tuple[bytes, bytes, bytes, bytes, bytes] | None = (
            mac_key,
            stream_key,
            reply_stream,
            reply_seal,
            keystream,
        )

    def _take_all(self) -> tuple[bytes, bytes, tuple[bytes, bytes, bytes, bytes, bytes]]:
        if self._used or self._derived is None:
            raise PacketMisuse("prepared hop keys are single use")
        self._used = True
        taken = self._alpha, self._secret, self._derived
        self._alpha = self._secret = b""
        self._derived = None
        return taken


def prepare_hop(onion_key: bytes, rng: Rng = system_rng) -> HopKeys:
    """The X25519 work of one hop of a future packet to the node with ``onion_key``.

    Raises ValueError for a key that is not 32 bytes and :class:`IntegrityError` for a
    low-order one (as :func:`build_packet` would).
    """
    if len(onion_key) != 32:
        raise InvalidValue("hop keys are 32 bytes")
    esk, alpha = crypto.x25519_keypair(rng)
    return HopKeys(onion_key, alpha, crypto.x25519(esk, onion_key))


def build_packet(
    path: Sequence[Hop],
    payload: bytes,
    *,
    now_ms: int,
    rng: Rng = system_rng,
    size_class: int | None = None,
    prepared: Sequence[HopKeys | None] | None = None,
) -> tuple[bytes, ReplyOpener]:
    """Build a packet carrying ``payload`` along ``path`` (relays, then the destination).

    Returns the packet for ``path[0]`` and the :class:`ReplyOpener` for its reply.
    ``size_class`` forces a larger body class than the payload needs (to hide it).
    ``prepared[i]``, if given and not None, is hop ``i``'s key exchange done ahead of
    time (:func:`prepare_hop` for that hop's onion key); it is used up.
    Raises :class:`TooLarge` for a payload over :data:`MAX_PAYLOAD` and
    :class:`ValueError` for a path of the wrong length, a bad hop, or prepared keys that
    do not match the path (or were used already: :class:`PacketMisuse`).
    """
    n = len(path)
    if not 1 <= n <= MAX_HOPS:
        raise InvalidValue(f"a path has 1 to {MAX_HOPS} hops, got {n}")
    size = size_class_for(len(payload))
    if size_class is not None:
        if size_class not in SIZE_CLASSES or size_class < size:
            raise InvalidValue(f"size class {size_class} cannot hold {len(payload)} bytes")
        size = size_class
    ts = now_ms // 1000

    alphas: list[bytes] = []
    mac_keys: list[bytes] = []
    streams: list[bytes] = []
    secrets: list[_HopSecrets] = []
    if prepared is not None and len(prepared) != n:
        raise InvalidValue(f"prepared keys for {len(prepared)} hops, the path has {n}")
    for i, hop in enumerate(path):
        if len(hop.onion_key) != 32 or len(hop.node_id) != 32:
            raise InvalidValue("hop keys are 32 bytes")
        ready = prepared[i] if prepared is not None else None
        if ready is None:
            esk, alpha = crypto.x25519_keypair(rng)
            secret = crypto.x25519(esk, hop.onion_key)
            context = alpha + hop.onion_key
            mac_key, stream_key = _keys(secret, _KDF_HEADER, context)
            reply_stream, reply_seal = _keys(secret, _KDF_REPLY, context)
            stream = crypto.keystream(stream_key, _BODY_OFFSET + size)
        elif ready.onion_key != hop.onion_key:
            raise InvalidValue(f"prepared keys for hop {i} are for another onion key")
        else:
            alpha, secret, derived = ready._take_all()
            context = alpha + hop.onion_key
            mac_key, stream_key, reply_stream, reply_seal, stream = derived
            if len(stream) != _BODY_OFFSET + size:  # prepared for the smallest class
                stream = crypto.keystream(stream_key, _BODY_OFFSET + size)
        alphas.append(alpha)
        mac_keys.append(mac_key)
        streams.append(stream)
        secrets.append(_HopSecrets(reply_stream, reply_seal))
    body_key = crypto.kdf(secret, _KDF_BODY, 32, context)  # the destination's (last hop)

    # Sphinx filler: the tail that hops 0..n-2 append, as the last hop will see it.
    filler = b""
    for i in range(n - 1):
        grown = filler + _ZERO_BLOCK
        filler = crypto.xor_bytes(grown, streams[i][_ROUTE_LEN - len(grown) : _ROUTE_LEN])

    last_block = _BLOCK_HEAD.pack(CMD_DELIVER, ts).ljust(BLOCK, b"\x00")
    pad = rng(BETA_LEN - len(filler) - BLOCK)
    head = last_block + pad
    beta = crypto.xor_bytes(head, streams[n - 1][: len(head)]) + filler
    class_tag = _class_tag(size)
    gamma = crypto.mac(mac_keys[n - 1], beta + class_tag)
    for i in range(n - 2, -1, -1):
        nxt = path[i + 1]
        family, addr = _pack_address(nxt.host, nxt.port)
        block = _RELAY_BLOCK.pack(
            CMD_RELAY, ts, nxt.node_id, family, addr, nxt.port, alphas[i + 1], gamma
        ).ljust(BLOCK, b"\x00")
        beta = crypto.xor_bytes(block + beta[: BETA_LEN - BLOCK], streams[i][:BETA_LEN])
        gamma = crypto.mac(mac_keys[i], beta + class_tag)

    body = _aead_seal(body_key, _frame(None, payload, size - _TAG))
    for i in range(n - 2, -1, -1):
        body = crypto.xor_bytes(body, streams[i][_BODY_OFFSET:])

    packet = bytes((VERSION,)) + alphas[0] + gamma + beta + body
    return packet, ReplyOpener(secrets)
