"""What a node does with one onion packet: relay it, or deliver it to the storage RPC.

Design note
-----------
:class:`OnionHandler` turns a packet (the body of ``POST /onion``) into the bytes of
its reply. The cryptography is :func:`veil.onion.packet.process_packet`'s; this module adds
the node's policy around it:

1. A packet that fails before a reply context exists (bad length, version or MAC: the
   previous hop sent those bytes, so the refusal tells it nothing new) is refused with
   the typed :class:`~veil.onion.errors.PacketError`; the HTTP layer answers 400 with its
   status. Nothing else about such a packet is trusted, so nothing else is said.
2. The timestamp window and the replay cache (:class:`veil.onion.replay.ReplayCache`) with
   the node's clock. A packet outside the window gets a layered ``clock_skew`` error
   whose message is ``node time <ms>``, so the client learns this hop's clock and can
   retry; a replay gets ``replayed``; a full cache ``rate_limited``.
3. Next hop policy: once the node holds a consensus (:mod:`veil.node.network_view`), it relays only
   to a next hop that the consensus lists, at its listed address; any other gets a
   layered ``bad_gateway`` "next hop not in consensus" (a relay must not be a proxy to
   arbitrary addresses). Standalone or before the first consensus, every hop is allowed.
4. Relay: send the processed packet to the next hop (:class:`PacketForwarder`: a
   multiplexed link per peer, node/link/, or ``POST /onion`` to a node that has no
   link) with ``hop_timeout``, and add this hop's layer to its reply.
   Unreachable, timed out, a non-200 answer, or a reply that is not a size class: the
   client gets a layered error originated here (``bad_gateway``, ``timeout``,
   ``rate_limited`` or ``unavailable``), never a hang and never a bare HTTP error.
5. Deliver: the payload goes to the storage service (:class:`StorageHandler`), whose
   reply is sealed to the client; a storage call that takes longer than
   ``deliver_timeout`` gives a layered ``timeout`` error from this hop instead.
6. A body that does not authenticate (:class:`~veil.onion.packet.BadBody`: a hop on the
   way changed it) gets the destination's layered ``bad_request`` error, after the
   checks of step 2, in the smallest size class as most replies are; counted in
   ``veil_onion_rejected_total{reason="BadBody"}``. Never a plain 400: the relay before
   this node saw the header pass, and a refusal on its link would tell it that it was
   next to the destination (a relay's answers are always layered replies).

Why fixed timeouts (see also :mod:`veil.node.config`): a hop must not learn its position on
the path, so it cannot shrink its budget by position, and the packet carries no deadline.
``deliver_timeout < hop_timeout`` lets the destination's own error reach the client
before the relays give up, and the guard, which starts first, answers within about
``hop_timeout`` whatever happens further on.

Answering a replayed or stale packet with a layered error is safe: a replayed packet
yields the same reply keys, but every sealed reply carries a fresh random nonce
(onion/packet/), and a relay's XOR layer is applied only to packets that passed the
replay check.

Cancellation: :meth:`OnionHandler.handle` holds no state that outlives it except the
replay tag, which is recorded before any await (so a cancelled relay does not make its
packet replayable). If cancelled while waiting for the next hop or the store, nothing is
answered (the HTTP layer decides what the client gets).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import trio

from veil.onion.errors import (
    HopTimeout,
    NetworkError,
    PacketError,
    RateLimited,
    ReplayedPacket,
    StalePacket,
)
from veil.onion.keys import NodeKeys
from veil.onion.packet import (
    MAX_REPLY_PAYLOAD,
    SIZE_CLASSES,
    BadBody,
    Deliver,
    Relay,
    ReplyContext,
    process_packet,
)
from veil.onion.replay import ReplayCache

from .logging import log_event
from .metrics import NodeMetrics

__all__ = ["OnionHandler", "PacketForwarder", "StorageHandler"]

log = logging.getLogger("veil.node.onion")

_REPLY_SIZES = frozenset(SIZE_CLASSES)


class StorageHandler(Protocol):
    """The storage RPC (node/service.py): CBOR request in, CBOR reply out, never raises."""

    async def handle(self, request: bytes, *, source: str | None = None) -> bytes: ...


class PacketForwarder(Protocol):
    """Sends a packet to the next node (node/link/): the exchange bounded by ``timeout``.

    Returns the next hop's ``(status, body)`` (200: its reply). Raises HopUnreachable or
    HopTimeout (NetworkError), or RateLimited when too many packets already wait for
    that peer.
    """

    async def forward(
        self, host: str, port: int, packet: bytes, *, timeout: float
    ) -> tuple[int, bytes]: ...


class OnionHandler:
    """Processes packets for one node; see the module docstring."""

    def __init__(
        self,
        keys: NodeKeys,
        *,
        storage: StorageHandler,
        forwarder: PacketForwarder,
        replay: ReplayCache,
        clock: Callable[[], int],
        metrics: NodeMetrics,
        hop_timeout: float,
        deliver_timeout: float,
        next_hop_allowed: Callable[[bytes, str, int], bool] | None = None,
    ) -> None:
        """``next_hop_allowed(node_id, host, port)`` says whether a packet may be relayed
        there (None: anywhere)."""
        self.next_hop_allowed = next_hop_allowed
        self._secret = keys.onion_secret
        self._public = keys.onion_public
        self.storage = storage
        self.forwarder = forwarder
        self.replay = replay
        self.clock = clock
        self.metrics = metrics
        self.hop_timeout = hop_timeout
        self.deliver_timeout = deliver_timeout

    async def handle(self, packet: bytes, *, source: str | None = None) -> bytes:
        """The reply to ``packet`` (a size class of bytes, for the previous hop).

        ``source`` names the previous hop (its address or link) for the storage
        service's per-source limits; None: unknown. The caller should hold no reference
        to ``packet`` while this runs: it is dropped once processed, so that a long-poll
        waiting here holds its request at its real size, not the packet's size class.

        Raises :class:`~veil.onion.errors.PacketError` (MalformedPacket, IntegrityError) when
        the packet fails before a reply is possible (its header). Every later failure,
        a body that does not authenticate included, is a layered error reply. See the
        module docstring for cancellation.
        """
        try:
            result = process_packet(packet, self._secret, self._public)
        except PacketError as exc:
            self.metrics.count(self.metrics.onion_rejected, type(exc).__name__)
            raise
        # Up to 128 KiB whatever the request's size (the sender picks the class); a
        # relay sends result.packet, a destination needs only result.payload.
        del packet
        reply = result.reply
        now = self.clock()
        try:
            self.replay.check(result.replay_tag, result.timestamp_ms, now)
        except StalePacket:
            self.metrics.count(self.metrics.replay_rejections, "stale")
            return reply.error("clock_skew", f"node time {now}")
        except ReplayedPacket:
            self.metrics.count(self.metrics.replay_rejections, "replayed")
            return reply.error("replayed", "packet already seen")
        except RateLimited:
            self.metrics.count(self.metrics.replay_rejections, "full")
            return reply.error("rate_limited", "replay cache full, try again later")
        if type(result) is Relay:
            return await self._relay(result)
        if type(result) is Deliver:
            payload = result.payload
            del result
            return await self._deliver(payload, reply, source)
        assert type(result) is BadBody
        self.metrics.count(self.metrics.onion_rejected, "BadBody")
        return result.answer()

    async def _relay(self, relay: Relay) -> bytes:
        reply = relay.reply
        allowed = self.next_hop_allowed
        if allowed is not None and not allowed(
            relay.next_node_id, relay.next_host, relay.next_port
        ):
            self.metrics.count(self.metrics.relay_failures, "not_in_consensus")
            return reply.error("bad_gateway", "next hop not in consensus")
        # The forwarder bounds the whole exchange by ``timeout`` (opening a link,
        # sending, reading) and raises HopTimeout: no scope of our own on this hot path.
        try:
            status, body = await self.forwarder.forward(
                relay.next_host, relay.next_port, relay.packet, timeout=self.hop_timeout
            )
        except HopTimeout:
            return self._relay_failed(reply, "timeout", "next hop did not answer in time")
        except NetworkError:
            return self._relay_failed(reply, "bad_gateway", "next hop unreachable")
        except RateLimited:
            return self._relay_failed(
                reply, "rate_limited", "this hop is over capacity towards the next, slow down"
            )
        if status == 200 and len(body) in _REPLY_SIZES:
            self.metrics.relayed.inc()
            return reply.wrap(body)
        return self._bad_answer(reply, status)

    def _relay_failed(self, reply: ReplyContext, status: str, message: str) -> bytes:
        reason = {"bad_gateway": "unreachable", "timeout": "timeout"}.get(status, "busy")
        self.metrics.count(self.metrics.relay_failures, reason)
        log_event(log, logging.DEBUG, "relay_failed", reason=reason)
        return reply.error(status, message)

    def _bad_answer(self, reply: ReplyContext, status: int) -> bytes:
        if status == 200:
            self.metrics.count(self.metrics.relay_failures, "bad_reply")
            return reply.error("bad_gateway", "next hop sent a malformed reply")
        self.metrics.count(self.metrics.relay_failures, "bad_status")
        if status == 429:
            return reply.error("rate_limited", "next hop is rate limiting, slow down")
        if status == 503:
            return reply.error("unavailable", "next hop is unavailable")
        return reply.error("bad_gateway", f"next hop answered HTTP {status}")

    async def _deliver(self, payload: bytes, reply: ReplyContext, source: str | None) -> bytes:
        with trio.move_on_after(self.deliver_timeout) as deadline:
            try:
                response = await self.storage.handle(payload, source=source)
            except Exception:
                # The service promises never to raise for bad input: this is a bug.
                log.exception("storage_failed")
                return reply.error("internal", "the storage service failed")
        if deadline.cancelled_caught:
            return reply.error("timeout", "storage did not answer in time")
        self.metrics.delivered.inc()
        if len(response) > MAX_REPLY_PAYLOAD:
            log_event(log, logging.ERROR, "reply_too_large", size=len(response))
            return reply.error("internal", "the reply is too large for a packet")
        return reply.seal(response)
