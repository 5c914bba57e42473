"""What a client does with onion packets: build one along a path, open its reply.

Design note
-----------
:func:`build_packet` makes a packet for a path of :class:`Hop` (relays, then the
destination): per hop an ephemeral X25519 key and its shared secret (done ahead of time
by :func:`prepare_hop`, a single-use :class:`HopKeys`, when the client can), the routing
blocks wrapped from the last hop back with Sphinx's filler, the payload sealed for the
destination and layered with each relay's stream (:mod:`~veil.onion.packet.wire` has the
layout). It returns the :class:`ReplyOpener` that keeps every hop's reply keys: the
client knows every hop's secret, peels the layers, and learns which hop spoke (a
:class:`HopError` carries its index).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .. import crypto
from ..crypto import Rng, system_rng
from ..errors import IntegrityError, InvalidValue, MalformedPacket, PacketMisuse, WireError
from .wire import (
    _BLOCK_HEAD,
    _BODY_OFFSET,
    _KDF_BODY,
    _KDF_HEADER,
    _KDF_REPLY,
    _NONCE,
    _RELAY_BLOCK,
    _REPLY_ERROR,
    _REPLY_LENGTHS,
    _REPLY_OK,
    _ROUTE_LEN,
    _TAG,
    _ZERO_BLOCK,
    BETA_LEN,
    BLOCK,
    CMD_DELIVER,
    CMD_RELAY,
    MAX_HOPS,
    SIZE_CLASSES,
    VERSION,
    _aead_seal,
    _class_tag,
    _frame,
    _keys,
    _pack_address,
    _unframe,
    size_class_for,
)


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


def _open_reply(key: bytes, sealed: bytes) -> bytes:
    return crypto.aead_open(key, sealed[:_NONCE], sealed[_NONCE:])


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
