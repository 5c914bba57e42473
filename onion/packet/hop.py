"""What a hop does with an onion packet: process it, then answer along the way back.

Design note
-----------
:func:`process_packet` is a hop's one call: one X25519 multiplication, the header MAC
checked before anything else, then one keystream that decrypts the routing blocks (with
the refill), yields the replay tag and removes a relay's body layer. It returns what to
do (:class:`Relay`, :class:`Deliver`, :class:`BadBody`) with the :class:`ReplyContext`
that answers it; the node enforces the window and the replay cache.

Replies: the destination seals its reply (or an error) with an AEAD key only it and the
client share (XChaCha20-Poly1305 with a random nonce in front: see
:class:`ReplyContext`); each relay on the way back XORs its own keystream over it; a
relay that cannot forward originates an error sealed with its own key. Replies use the
same size classes. The client knows every hop's secret, peels the layers, and learns
which hop spoke (:mod:`~veil.onion.packet.sender`).

Where a packet can fail, and what the previous hop sees: before the header checks (a
bad length, version or MAC) the hop has no reply key, and the previous hop, which sent
those bytes, learns nothing it did not know. After them, every failure is answered with
a layered reply, so that no link shows a bare refusal: a body that does not
authenticate at the destination (a hop on the way changed it) is :class:`BadBody`, not
an exception, and the destination answers it with :data:`BAD_BODY_STATUS` sealed like
any reply, after its window and replay checks. If the destination answered it with a
plain refusal, the relay before it, which sees a refusal on its link after it forwarded
a packet whose header was good, would learn that it was next to the destination.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import crypto
from ..crypto import Rng, system_rng
from ..errors import IntegrityError, MalformedPacket, PacketError, PacketMisuse
from .wire import (
    _BLOCK_HEAD,
    _BODY_OFFSET,
    _KDF_BODY,
    _KDF_HEADER,
    _KDF_REPLY,
    _NONCE,
    _PACKET_LENGTHS,
    _RELAY_BLOCK,
    _REPLY_ERROR,
    _REPLY_LENGTHS,
    _REPLY_OK,
    _REPLY_OVERHEAD,
    _ROUTE_LEN,
    _TAG,
    _ZERO_TAIL,
    BLOCK,
    CMD_DELIVER,
    CMD_RELAY,
    HEADER_LEN,
    VERSION,
    _aead_open,
    _class_tag,
    _frame,
    _keys,
    _unframe,
    _unpack_address,
    size_class_for,
)


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
