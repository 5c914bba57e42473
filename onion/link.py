"""The node-to-node link: many onion exchanges multiplexed on one connection, sans-IO.

Design note
===========

A relay forwards every packet to the next node. As one HTTP/1.1 exchange per packet, that
costs a request head to build and parse, a response head to build and parse, and a
send and a receive (with a wake-up each) per packet on every link, and only one packet
is in flight per connection. Profiles of a relay put that at about 40 % of its CPU. A
*link* is one long-lived connection between two nodes that carries many exchanges at
once, each a *stream* named by a number, in small binary frames; a busy link carries a
batch of frames in each send and each receive.

A link begins as HTTP/1.1 on the node's ordinary port (so nodes keep one port and one
listener), with an upgrade, as WebSocket does::

    GET /link HTTP/1.1            ->   HTTP/1.1 101 Switching Protocols
    Connection: Upgrade                Connection: Upgrade
    Upgrade: veil-link/3               Upgrade: veil-link/3
    Veil-Link-Proof: <hex>

A node that does not speak the link answers anything else (an older node: 404; a node
of an earlier link version, ``veil-link/1`` or ``/2``: 426) and the caller falls back to
``POST /onion`` (or the replication request's own ``POST /replicate...``). The proof says
which listed node opens the link (see "who opens a link", below); a node in a network
refuses an upgrade without a valid one (403). After the 101 both sides send frames, and
only frames. The side that asked (the *client*) sends requests; the other (the *server*)
answers each request exactly once.

A frame is a 12-byte head and a payload::

    kind    u8    what the frame is (below)
    flags   u8    0 (reserved: a frame with any other value is refused)
    status  u16   a response's HTTP-style status: 200 = the payload is the answer;
                  anything else = the payload is a short UTF-8 explanation. 0 in requests.
    stream  u32   the request's number, chosen by the client; its response carries it
    length  u32   the payload's length

    kind 1  request: an onion packet               at most max_request (a packet of the
                                                   largest size class)
    kind 2  response to any request                200: at most MAX_RESPONSE_LEN (the
                                                   larger of an onion reply and a sealed
                                                   replication answer, both 128 KiB);
                                                   else at most MAX_ERROR_LEN
    kind 3  request: a replication push frame      at most MAX_REPLICATION_REQUEST
    kind 4  request: a replication pull frame        (veil.onion.replication_frames.
    kind 5  request: a replication forward frame      MAX_FRAME, 128 KiB)

Kinds 3-5 (``veil-link/3``) carry node/replication's sealed frames, which went as one
``POST /replicate``, ``/replicate/pull`` or ``/replicate/forward`` each (about 0.4 ms of
h11 per exchange, both sides, measured under ``bench load``); the kind names the
route, so the frame's bytes are exactly the POST's body and the answer exactly its
response's. The kind is in the head, not in the payload, so its limit is checked on
the head like the others and a server dispatches without parsing. A ``veil-link/2``
peer would break its framing on kind 3 (an unknown kind closes the link, and with it
every onion packet in flight), hence the new token: /2 and /3 peers answer each
other's upgrade 426 and talk HTTP, as /1 and /2 did.

All integers are big-endian. Limits are checked on the head, before the payload is
read: a request's payload is at most the limit of its kind (and at most the reader's
``max_payload``), a response's at most ``max_payload``. Anything else (an unknown
kind, a set reserved field, a response where a request is due or the other way round,
a payload over its limit) is a :class:`LinkProtocolError`, after which the connection
is closed: framing cannot resynchronise. A replication payload within its limit that
is not a valid sealed frame is not a framing error: the handler refuses it with a typed
status, and the link goes on. Whether a stream number is in use, and how many may be
open at once, is the business of the I/O layer (:mod:`veil.node.link`), not of this
module.

This module is bytes in, frames out (:class:`FrameReader`) and frames in, bytes out
(:func:`encode_request`, :func:`encode_replication_request`, :func:`encode_response`); it
does no I/O, as h11 does none.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from . import crypto
from .errors import BadSignature, InvalidKey, ProtocolError
from .keys import NodeKeys
from .packet import MAX_PACKET_LEN, MAX_REPLY_LEN
from .replication_frames import MAX_FRAME

__all__ = [
    "HEAD_LEN",
    "MAX_ERROR_LEN",
    "MAX_REPLICATION_REPLY",
    "MAX_REPLICATION_REQUEST",
    "MAX_RESPONSE_LEN",
    "MAX_STREAM_ID",
    "NONCE_LEN",
    "OPEN_DOMAIN",
    "PROOF_HEADER",
    "PROOF_LEN",
    "PROOF_TEXT_LEN",
    "PROOF_WINDOW_MS",
    "REPLICATE_FORWARD",
    "REPLICATE_PULL",
    "REPLICATE_PUSH",
    "REPLICATION_KINDS",
    "REQUEST",
    "REQUEST_KINDS",
    "RESPONSE",
    "UPGRADE_PATH",
    "UPGRADE_TOKEN",
    "Frame",
    "FrameReader",
    "LinkProof",
    "LinkProofError",
    "LinkProtocolError",
    "encode_replication_request",
    "encode_request",
    "encode_response",
    "make_link_proof",
    "parse_link_proof",
    "verify_link_proof",
]

#: The path and the ``Upgrade`` token of the HTTP/1.1 handshake that opens a link. /2:
#: the opener proves its identity (/1 had no proof). /3: replication requests (kinds 3-5),
#: which a /2 peer's reader would refuse as unknown kinds, closing the link. Either side of
#: a pair of versions answers the other's token 426, and the opener falls back to HTTP.
UPGRADE_PATH: Final = "/link"
UPGRADE_TOKEN: Final = b"veil-link/3"

#: Frame kinds (see the module note).
REQUEST: Final = 1
RESPONSE: Final = 2
REPLICATE_PUSH: Final = 3
REPLICATE_PULL: Final = 4
REPLICATE_FORWARD: Final = 5
REPLICATION_KINDS: Final = frozenset({REPLICATE_PUSH, REPLICATE_PULL, REPLICATE_FORWARD})
#: Every kind a server reads.
REQUEST_KINDS: Final = frozenset({REQUEST}) | REPLICATION_KINDS

_HEAD = struct.Struct(">BBHII")
_KINDS: Final = REQUEST_KINDS | {RESPONSE}
HEAD_LEN: Final = _HEAD.size  # 12
MAX_STREAM_ID: Final = 0xFFFF_FFFF
#: The longest explanation a non-200 response may carry.
MAX_ERROR_LEN: Final = 1024
#: A replication request's payload (a sealed frame of the largest class) and its answer's.
MAX_REPLICATION_REQUEST: Final = MAX_FRAME
MAX_REPLICATION_REPLY: Final = MAX_FRAME
#: The longest 200 response's payload, whatever its request's kind. A client reads every
#: response with one limit (a response does not say its request's kind); both answers are
#: 128 KiB today, so that limit is each one's own. Should they part, responses need kinds.
MAX_RESPONSE_LEN: Final = max(MAX_REPLY_LEN, MAX_REPLICATION_REPLY)


class LinkProtocolError(ProtocolError):
    """The peer broke the link's framing; the connection must be closed."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame: ``kind`` (:data:`REQUEST`, :data:`RESPONSE` or one of
    :data:`REPLICATION_KINDS`), its stream, its status (0 in requests), its payload."""

    kind: int
    stream: int
    status: int
    payload: bytes


def encode_request(stream: int, packet: bytes) -> bytes:
    """The frame that asks the peer to handle onion ``packet`` as ``stream``.

    Raises ValueError for a stream number out of range or a packet over
    :data:`veil.onion.packet.MAX_PACKET_LEN` (a caller's bug: the peer would refuse it).
    """
    if not 0 <= stream <= MAX_STREAM_ID:
        raise ValueError(f"stream {stream} out of range")
    if len(packet) > MAX_PACKET_LEN:
        raise ValueError(f"packet of {len(packet)} bytes is over {MAX_PACKET_LEN}")
    return _HEAD.pack(REQUEST, 0, 0, stream, len(packet)) + packet


def encode_replication_request(kind: int, stream: int, frame: bytes) -> bytes:
    """The frame that asks the peer to handle replication ``frame`` (a sealed push, pull
    or forward: ``kind`` is one of :data:`REPLICATION_KINDS`) as ``stream``.

    Raises ValueError for another kind, a stream number out of range or a frame over
    :data:`MAX_REPLICATION_REQUEST` (a caller's bug: the peer would refuse it).
    """
    if kind not in REPLICATION_KINDS:
        raise ValueError(f"{kind} is not a replication request kind")
    if not 0 <= stream <= MAX_STREAM_ID:
        raise ValueError(f"stream {stream} out of range")
    if len(frame) > MAX_REPLICATION_REQUEST:
        raise ValueError(f"frame of {len(frame)} bytes is over {MAX_REPLICATION_REQUEST}")
    return _HEAD.pack(kind, 0, 0, stream, len(frame)) + frame


def encode_response(stream: int, status: int, payload: bytes) -> bytes:
    """The frame that answers ``stream``: status 200 with the answer (an onion reply or a
    sealed replication answer), or an error.

    Raises ValueError for a status outside 100-599, or a payload over the limit its
    status allows (:data:`MAX_RESPONSE_LEN` for 200, :data:`MAX_ERROR_LEN` otherwise).
    """
    if not 0 <= stream <= MAX_STREAM_ID:
        raise ValueError(f"stream {stream} out of range")
    if not 100 <= status <= 599:
        raise ValueError(f"status {status} is not an HTTP status")
    limit = MAX_RESPONSE_LEN if status == 200 else MAX_ERROR_LEN
    if len(payload) > limit:
        raise ValueError(f"payload of {len(payload)} bytes is over {limit}")
    return _HEAD.pack(RESPONSE, 0, status, stream, len(payload)) + payload


class FrameReader:
    """Turns the bytes of one direction of a link into frames.

    ``expect`` is the side: a server (``REQUEST``) reads requests of every kind of
    :data:`REQUEST_KINDS`, a client (``RESPONSE``) reads :data:`RESPONSE` frames.
    ``max_payload`` bounds each payload, and a replication request's is also bounded by
    :data:`MAX_REPLICATION_REQUEST` (checked on the head, before the payload arrives),
    so the buffer holds at most one frame's head and payload beyond what
    :meth:`receive_data` was given.

    Usage: ``receive_data(chunk)`` then ``next_frame()`` until it returns None (more
    bytes needed). ``next_frame`` raises :class:`LinkProtocolError` for bytes that are
    not a valid frame; the reader is then unusable and the connection must close.
    """

    __slots__ = ("_broken", "_buf", "_expect", "_limits", "_max", "_pos")

    def __init__(self, expect: int, max_payload: int) -> None:
        if expect not in (REQUEST, RESPONSE):
            raise ValueError(f"unknown frame kind {expect}")
        if max_payload < 0:
            raise ValueError("max_payload must be >= 0")
        self._expect = expect
        self._max = max_payload
        #: The payload limit of each kind this side reads (a status 200 response's).
        self._limits: dict[int, int] = (
            {REQUEST: max_payload}
            | {k: min(max_payload, MAX_REPLICATION_REQUEST) for k in REPLICATION_KINDS}
            if expect == REQUEST
            else {RESPONSE: max_payload}
        )
        self._buf = bytearray()
        self._pos = 0
        self._broken = False

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as frames."""
        return len(self._buf) - self._pos

    def receive_data(self, data: bytes) -> None:
        """Add bytes received from the peer (in any split)."""
        if self._pos:
            # Drop what earlier frames used, at most once per chunk received.
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_frame(self) -> Frame | None:
        """The next complete frame, or None if more bytes are needed."""
        if self._broken:
            raise LinkProtocolError("the link's framing already failed")
        buf, pos = self._buf, self._pos
        if len(buf) - pos < HEAD_LEN:
            return None
        kind, flags, status, stream, length = _HEAD.unpack_from(buf, pos)
        limit = self._limits.get(kind)
        if limit is None or flags:
            self._broken = True
            if kind not in _KINDS:
                raise LinkProtocolError(f"unknown frame kind {kind}")
            if flags:
                raise LinkProtocolError(f"reserved flags {flags:#x} set")
            raise LinkProtocolError(f"unexpected frame kind {kind}")
        if kind != RESPONSE:
            if status != 0:
                self._broken = True
                raise LinkProtocolError(f"request carries a status ({status})")
        else:
            if not 100 <= status <= 599:
                self._broken = True
                raise LinkProtocolError(f"response status {status} is not an HTTP status")
            if status != 200:
                limit = min(limit, MAX_ERROR_LEN)
        if length > limit:
            self._broken = True
            raise LinkProtocolError(f"frame of {length} bytes is over the limit of {limit}")
        end = pos + HEAD_LEN + length
        if len(buf) < end:
            return None
        payload = bytes(buf[pos + HEAD_LEN : end])
        if end == len(buf):
            buf.clear()
            self._pos = 0
        else:
            self._pos = end
        return Frame(kind, stream, status, payload)


# --- who opens a link -------------------------------------------------------------------
#
# Links are for relays, and relays are listed: packets from clients never come over a
# link (clients POST /onion to their guard). So a node in a network lets only a node
# listed in its consensus open one (an unauthenticated upgrade let one address hold
# 1,019 links for their 300 s idle time, and the node answered GET /info 503 for 36 s).
# The opener proves it holds a listed identity key in the upgrade request itself, in
# one header, so the upgrade stays one round trip (a server challenge would add one):
#
#     Veil-Link-Proof: hex(opener_id 32 | time_ms u64 | nonce 16 | signature 64)
#
# The signature (the opener's Ed25519 identity key, domain :data:`OPEN_DOMAIN`) covers
# the *server's* node ID, the opener's ID, the time and the nonce: a proof copied off the
# wire opens nothing at another node, and at the same node only within the time window,
# once (the server remembers ``opener_id | nonce`` for the window). Checked once per
# link, never per packet: the relay's hot path does not change.

#: The request header that carries the proof (h11 gives header names lower-cased).
PROOF_HEADER: Final = b"veil-link-proof"
#: The signature domain of a link proof (see veil.onion.crypto.sign).
OPEN_DOMAIN: Final = b"link open/v1"
_PROOF_HEAD = struct.Struct(">32sQ16s")
NONCE_LEN: Final = 16
#: A proof's bytes, and the length of the header's text (lower-case hex).
PROOF_LEN: Final = _PROOF_HEAD.size + crypto.SIG_BYTES  # 120
PROOF_TEXT_LEN: Final = 2 * PROOF_LEN  # 240
#: How far a proof's time may be from the server's clock (ms): the window a hop already
#: allows an onion packet's stamp (onion/replay.py, 2 minutes), so that two relays whose
#: clocks relay packets to each other can also link (a 403 is no fallback).
PROOF_WINDOW_MS: Final = 120_000
_HEX_DIGITS: Final = frozenset(b"0123456789abcdef")


class LinkProofError(ProtocolError):
    """An upgrade's proof is missing, malformed, forged, stale or replayed."""


@dataclass(frozen=True, slots=True)
class LinkProof:
    """A parsed (not yet verified) proof: who claims to open the link, when, and its nonce."""

    opener_id: bytes
    time_ms: int
    nonce: bytes
    signature: bytes

    @property
    def replay_tag(self) -> bytes:
        """What the server remembers for the window to refuse the proof a second time."""
        return self.opener_id + self.nonce


def _open_message(server_id: bytes, opener_id: bytes, time_ms: int, nonce: bytes) -> bytes:
    return server_id + _PROOF_HEAD.pack(opener_id, time_ms, nonce)


def make_link_proof(
    keys: NodeKeys, server_id: bytes, time_ms: int, rng: crypto.Rng = crypto.system_rng
) -> bytes:
    """The :data:`PROOF_HEADER` value with which ``keys`` opens a link to ``server_id``.

    ``time_ms`` is the opener's clock; the nonce is fresh from ``rng``. Raises
    ValueError for a server ID that is not 32 bytes or a time out of range (a bug).
    """
    if len(server_id) != 32:
        raise ValueError("a node ID is 32 bytes")
    if not 0 <= time_ms < 2**64:
        raise ValueError(f"time {time_ms} out of range")
    opener_id = keys.identity_public
    nonce = rng(NONCE_LEN)
    signature = keys.sign(OPEN_DOMAIN, _open_message(server_id, opener_id, time_ms, nonce))
    return (_PROOF_HEAD.pack(opener_id, time_ms, nonce) + signature).hex().encode("ascii")


def parse_link_proof(value: bytes | None) -> LinkProof:
    """The proof in a :data:`PROOF_HEADER` value; :class:`LinkProofError` unless it is
    exactly :data:`PROOF_TEXT_LEN` lower-case hex digits (one spelling per proof, so the
    replay check cannot be dodged by re-spelling it). Checks no signature."""
    if value is None:
        raise LinkProofError("no link proof: only listed nodes may open a link")
    if len(value) != PROOF_TEXT_LEN or not _HEX_DIGITS.issuperset(value):
        raise LinkProofError(f"a link proof is {PROOF_TEXT_LEN} lower-case hex digits")
    raw = bytes.fromhex(value.decode("ascii"))
    opener_id, time_ms, nonce = _PROOF_HEAD.unpack_from(raw)
    return LinkProof(opener_id, time_ms, nonce, raw[_PROOF_HEAD.size :])


def verify_link_proof(
    proof: LinkProof,
    server_id: bytes,
    opener_key: bytes,
    now_ms: int,
    window_ms: int = PROOF_WINDOW_MS,
) -> None:
    """Check ``proof`` was made for ``server_id`` by ``opener_key`` (the listed identity
    key of ``proof.opener_id``) within ``window_ms`` of ``now_ms``; :class:`LinkProofError`
    if not. The caller refuses a replay (:attr:`LinkProof.replay_tag`) and an unlisted
    opener; this checks the time first (cheap), then the signature."""
    if abs(now_ms - proof.time_ms) > window_ms:
        raise LinkProofError(f"link proof time is {(proof.time_ms - now_ms) // 1000} s off")
    message = _open_message(server_id, proof.opener_id, proof.time_ms, proof.nonce)
    try:
        crypto.verify(opener_key, OPEN_DOMAIN, message, proof.signature)
    except (BadSignature, InvalidKey):
        raise LinkProofError("link proof signature does not verify") from None
