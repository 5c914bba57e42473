"""Liveness: does a node answer as its descriptor says? The checker and its probe.

Design note
-----------
A node is worth listing only if a client's packets will work there, so the check is a
*real* request, not a TCP connect (:func:`probe_node`):

1. ``GET /info``: the node must report the descriptor's ``node_id`` and ``onion_key``
   (this catches a node restarted with other keys, or another node at the address);
2. a one-hop onion packet, built to the descriptor's onion key, carrying a storage
   ``info`` request: the node must answer it with an ``ok`` reply that opens with the
   packet's reply keys. Only a node that holds the onion secret can do that, so a
   server that copies a node's ``/info`` answer is caught.

The whole check is bounded by ``check_timeout``; the packet goes through the authority's
own :class:`~veil.node.peers.PeerPool` (bounded responses). The packet's replay tag lands in
the node's replay cache like any client's: a check is one packet a period, no more.

The checker (:class:`Liveness`) checks every registered node every ``check_period_ms``
(and at once for a new or changed descriptor), at most :data:`MAX_CONCURRENT_CHECKS` at
a time. A node is *live* while its last check succeeded and that check is recent (three
check periods plus the timeout).

Failed checks. A descriptor that has never passed a check leaves the registry after
``max_failed_checks`` failed checks in a row: it has shown nothing but a signature that
anyone can make, and kept for its lifetime (a day) it would hold a place that a real
node needs (:mod:`.registry`). A genuine node that was down then simply registers again
(it posts its descriptor until an authority accepts it and while a consensus omits it).
A node that has passed a check once is not dropped: it drops out of the votes once its
last success is older than the live window, stays registered until its descriptor
expires, and is listed again after one passing check. A node down for a restart or a
network outage thus comes back without a new registration; what it holds meanwhile is
bounded (a real node answered at that address:port with its keys, one identity per
address:port, ``max_per_source``), and a full registry evicts it for a new node.
Counted per authority run: after a restart every saved descriptor is unchecked again,
so a node that stays down through the first ``max_failed_checks`` checks leaves.

No vote before measuring. An authority votes only once its first round of checks (every
node it held when it started, checked once) has finished; until then it has *measured*
nothing (``GET /info`` says ``"measured": false``). A vote frozen earlier would list only
the nodes checked so far: right after a restart, none, and with a single authority the
consensus would then list no node and every node would refuse every account for an
interval. Tor's authorities follow the same rule (one that has not run long enough to
decide reachability does not vote on it). Without enough votes the epoch is skipped
(:mod:`.epochs`) and every authority keeps serving its latest consensus, valid for three
intervals from its start: a restart whose first round ends within that time costs the
network nothing. The round lasts as long as its slowest check: a node that refuses
connections fails at once, one that does not answer at all after ``check_timeout``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import trio

from veil.onion import rpc
from veil.onion.directory import NodeDescriptor
from veil.onion.errors import NetworkError, RateLimited, VeilError
from veil.onion.packet import Hop, build_packet

from ..logging import log_event
from ..peers import PeerPool
from .registry import Registry

__all__ = ["MAX_CONCURRENT_CHECKS", "Liveness", "probe_node"]

log = logging.getLogger("veil.authority")

#: Concurrent liveness checks.
MAX_CONCURRENT_CHECKS = 32


async def probe_node(
    pool: PeerPool, descriptor: NodeDescriptor, *, clock: Callable[[], int], timeout_s: float
) -> tuple[bool, str]:
    """Check the node of ``descriptor``: ``(True, "ok")`` or ``(False, why)``.

    Never raises for what the node does (unreachable, slow, wrong keys, garbage);
    cancellation propagates.
    """
    host, port = descriptor.host, descriptor.port
    with trio.move_on_after(timeout_s):
        try:
            status, body = await pool.get(host, port, "/info", timeout=timeout_s)
            if status != 200:
                return False, f"GET /info answered HTTP {status}"
            try:
                doc = json.loads(body)
            except (ValueError, RecursionError):  # bad UTF-8 or JSON, absurd nesting
                return False, "GET /info did not answer JSON"
            if not isinstance(doc, dict):
                return False, "GET /info did not answer a JSON object"
            if doc.get("node_id") != descriptor.node_id_hex:
                return False, "GET /info reports another node ID than the descriptor"
            if doc.get("onion_key") != descriptor.onion_key.hex():
                return False, "GET /info reports another onion key than the descriptor"
            hop = Hop(descriptor.node_id, descriptor.onion_key, host, port)
            packet, opener = build_packet([hop], rpc.make_info(), now_ms=clock())
            status, body = await pool.post(host, port, "/onion", packet, timeout=timeout_s)
            if status != 200:
                return False, f"onion info request answered HTTP {status}"
            reply = rpc.decode_reply(opener.open(body))
            if not reply.ok:
                return False, f"onion info request answered {reply.status}: {reply.error}"
            return True, "ok"
        except (NetworkError, RateLimited) as exc:
            return False, f"unreachable: {exc}"
        except VeilError as exc:  # a reply that does not open, a bad RPC reply, ...
            return False, f"bad onion reply: {type(exc).__name__}: {exc}"
    return False, f"no answer within {timeout_s:g} s"


class Liveness(Registry):
    """The checker: every node checked every period; sets the *measured* flag."""

    async def _checker(self) -> None:
        limiter = trio.CapacityLimiter(MAX_CONCURRENT_CHECKS)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._check_queued, limiter)
            while True:
                self._expire()
                async with trio.open_nursery() as round_:
                    for node_id in list(self.registry):
                        round_.start_soon(self._check, node_id, limiter)
                if not self._measured.is_set():
                    log_event(log, logging.INFO, "measured", nodes=len(self.registry))
                    self._measured.set()
                await trio.sleep(self.config.check_period_ms / 1000)

    async def _check_queued(self, limiter: trio.CapacityLimiter) -> None:
        async with trio.open_nursery() as nursery:
            async for node_id in self._checks_receive:
                nursery.start_soon(self._check, node_id, limiter)

    async def _check(self, node_id: bytes, limiter: trio.CapacityLimiter) -> None:
        async with limiter:
            reg = self.registry.get(node_id)
            if reg is None:
                return
            descriptor = reg.descriptor
            started_ms = self.clock()
            ok, reason = await self.probe(descriptor)
        reg = self.registry.get(node_id)
        if reg is None or started_ms < reg.checked_ms:
            return
        current = reg.descriptor
        if (current.onion_key, current.host, current.port) != (
            descriptor.onion_key,
            descriptor.host,
            descriptor.port,
        ):
            return  # the node changed its descriptor meanwhile; its own check decides
        was, was_reason = reg.live, reg.reason
        reg.checked_ms, reg.live, reg.reason = started_ms, ok, reason
        if ok:
            reg.last_ok_ms, reg.failures = started_ms, 0
        else:
            reg.failures += 1
            if reg.last_ok_ms == 0 and reg.failures >= self.config.max_failed_checks:
                self._remove(
                    node_id,
                    "node_dropped",
                    address=f"{descriptor.host}:{descriptor.port}",
                    failed_checks=reg.failures,
                    reason=reason,
                )
                return
        if was != ok or (not ok and reason != was_reason):  # news, not every failed check
            # A node that has answered before and stops is worth a WARNING; one that
            # never answered is anyone's forged descriptor as often as not (INFO).
            log_event(
                log,
                logging.WARNING if not ok and reg.last_ok_ms else logging.INFO,
                "node_live" if ok else "node_down",
                node=node_id.hex()[:16],
                address=f"{descriptor.host}:{descriptor.port}",
                reason=reason,
            )

    async def probe(self, descriptor: NodeDescriptor) -> tuple[bool, str]:
        """:func:`probe_node` with this authority's pool, clock and timeout."""
        assert self._pool is not None
        return await probe_node(
            self._pool, descriptor, clock=self.clock, timeout_s=self.config.check_timeout
        )
