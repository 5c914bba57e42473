"""The registry: which nodes an authority knows, and what a new descriptor changes.

Design note
-----------
A descriptor is parsed with :func:`veil.onion.directory.parse_descriptor` at the authority's
clock; a bad one is refused with the error's status (400, 401 for a bad signature, 406
for clock trouble, 413 over the size limit). A node may replace its descriptor with a
later one (an older one is refused, 409); if its keys or address change, it counts as
unchecked until checked again. Descriptors expire unless renewed. A new or changed
descriptor is queued for the liveness checker (:mod:`.liveness`) at once; a full queue
drops it, since the checker's next round checks every node anyway.

Who may fill it. A descriptor costs nothing to make (a fresh key signs it, for any
address), so the registry admits one only within three limits, and a full registry
makes room from entries that have shown nothing:

* **One identity per address:port.** A second identity claiming an address:port held
  by another is refused (409) unless the holder is failing its checks (the node there
  answers with other keys, or not at all): a node whose keys were lost and recreated
  takes its address back at once, while a forger can never push out a live node, nor
  one still waiting for its first check (else it could evict every newcomer in turn).
* **``max_per_source`` registrations per source** (the address that POSTs, an IPv6
  /64 as one), held at once (429 beyond). Renewals and changes of a registered node
  are not new registrations and always pass; the share frees up as that source's
  entries leave. Descriptors loaded from the saved registry or learnt from a peer's
  vote have no source, and networks in ``per_source_exempt`` (by default this host,
  so that a loopback devnet of many nodes works) are not limited.
* **A full registry** (``max_descriptors``) admits a new node by evicting, in order,
  an entry that never passed a check and failed its latest, one that was posted and
  has not been checked yet, or one that passed once and is failing now; never an
  entry whose latest check passed, nor a saved or peer-learnt one awaiting its first
  check. With none to evict: 503.

Entries that never pass a check leave after ``max_failed_checks`` failed checks in a
row (:mod:`.liveness`), so a flood of dead descriptors is gone within that many check
periods, and is evictable by real nodes meanwhile.
"""

from __future__ import annotations

import logging
from contextlib import suppress

import trio

from veil.onion.directory import NodeDescriptor

from ..logging import log_event
from ..server import Response, text_response
from .state import AuthorityState, Registration, address_key

__all__ = ["Registry", "eviction_rank"]

log = logging.getLogger("veil.authority")


def eviction_rank(reg: Registration) -> int | None:
    """How readily a full registry evicts ``reg`` (lowest first), or None: never.

    0: it never passed a check and failed its latest; 1: posted and not checked yet
    (nor ever passed); 2: it passed once and is failing now. Never: its latest check
    passed, or it passed once and waits for its check at a new address or keys, or it
    came from the saved registry or a peer's vote and waits for its first check (after
    a restart those are the nodes the network had; a flood must not push them out).
    """
    if reg.live:
        return None
    if reg.last_ok_ms == 0:
        if reg.failures:
            return 0
        return 1 if reg.source is not None else None
    return 2 if reg.failures else None


class Registry(AuthorityState):
    """Registering, expiring and listing the live nodes."""

    def live_descriptors(self, at_ms: int) -> list[Registration]:
        """Registrations that are live and unexpired at ``at_ms``."""
        window_ms = 3 * self.config.check_period_ms + int(self.config.check_timeout * 1000)
        return [
            r
            for r in self.registry.values()
            if r.live and r.last_ok_ms >= at_ms - window_ms and not r.descriptor.is_expired(at_ms)
        ]

    def register(
        self, descriptor: NodeDescriptor, raw: bytes, source: str | None = None
    ) -> Response:
        """Record a parsed descriptor (see the module docstring); the HTTP answer.

        ``source`` is who posted it, for ``max_per_source``; None: not limited.
        """
        node_id = descriptor.node_id
        held = self.registry.get(node_id)
        if held is None:
            return self._register_new(descriptor, raw, source)
        if held.raw == raw:
            if not held.live:
                self._queue_check(node_id)  # the node asks again: check it now
            return text_response(200, "ok: descriptor unchanged")
        if descriptor.published_ms < held.descriptor.published_ms:
            return text_response(409, "replayed: older than the descriptor held for this node")
        old = held.descriptor
        moved = address_key(descriptor) != held.address
        if moved:
            occupant = self._occupant(descriptor, node_id)
            if occupant is not None and eviction_rank(occupant) not in (0, 2):
                return _address_taken()
            if occupant is not None:
                self._remove(occupant.descriptor.node_id, "address_taken_over")
            del self.by_address[held.address]
        held.descriptor, held.raw = descriptor, raw
        if moved:
            self.by_address[held.address] = node_id
        if (old.onion_key, old.host, old.port) != (
            descriptor.onion_key,
            descriptor.host,
            descriptor.port,
        ):
            held.live, held.reason = False, "keys or address changed"
            if held.last_ok_ms:
                # Its failures were at the old address or keys. One that never passed
                # keeps its count: else a new address each time would keep a dead
                # descriptor registered for ever.
                held.failures = 0
            self._queue_check(node_id)
        elif not held.live:
            self._queue_check(node_id)
        self._dirty = True
        return text_response(200, "ok: descriptor accepted")

    def _register_new(self, descriptor: NodeDescriptor, raw: bytes, source: str | None) -> Response:
        node_id = descriptor.node_id
        occupant = self._occupant(descriptor, node_id)
        if occupant is not None and eviction_rank(occupant) not in (0, 2):
            return _address_taken()
        if source is not None and self.per_source[source] >= self.config.max_per_source:
            return text_response(
                429, "rate_limited: this address has registered as many nodes as it may"
            )
        victim: Registration | None = None
        if occupant is None and len(self.registry) >= self.config.max_descriptors:
            victim = self._eviction_candidate()
            if victim is None:
                return text_response(
                    503, "unavailable: this authority holds as many nodes as it may"
                )
        if occupant is not None:
            self._remove(occupant.descriptor.node_id, "address_taken_over")
        if victim is not None:
            self._remove(victim.descriptor.node_id, "node_evicted")
        self._insert(Registration(descriptor, raw, source=source))
        log_event(
            log,
            logging.INFO,
            "node_registered",
            node=descriptor.node_id_hex[:16],
            address=f"{descriptor.host}:{descriptor.port}",
        )
        self._queue_check(node_id)
        self._dirty = True
        return text_response(200, "ok: descriptor accepted")

    def _occupant(self, descriptor: NodeDescriptor, node_id: bytes) -> Registration | None:
        """Another node registered at the address:port ``descriptor`` claims."""
        other = self.by_address.get(address_key(descriptor))
        return None if other is None or other == node_id else self.registry[other]

    def _eviction_candidate(self) -> Registration | None:
        """The entry a full registry evicts for a new node (see :func:`eviction_rank`):
        the lowest rank, the most failures, then the longest registered."""
        best: Registration | None = None
        best_key: tuple[int, int] | None = None
        for reg in self.registry.values():  # insertion order: the oldest wins ties
            rank = eviction_rank(reg)
            if rank is None:
                continue
            key = (rank, -reg.failures)
            if best_key is None or key < best_key:
                best, best_key = reg, key
        return best

    def _insert(self, reg: Registration) -> None:
        self.registry[reg.descriptor.node_id] = reg
        self.by_address[reg.address] = reg.descriptor.node_id
        if reg.source is not None:
            self.per_source[reg.source] += 1

    def _remove(self, node_id: bytes, event: str, **fields: object) -> None:
        """Forget a node (logged as ``event``); the registry is saved again."""
        reg = self.registry.pop(node_id)
        if self.by_address.get(reg.address) == node_id:
            del self.by_address[reg.address]
        if reg.source is not None:
            self.per_source[reg.source] -= 1
            if not self.per_source[reg.source]:
                del self.per_source[reg.source]
        self._dirty = True
        log_event(log, logging.INFO, event, node=node_id.hex()[:16], **fields)

    def _queue_check(self, node_id: bytes) -> None:
        with suppress(trio.WouldBlock):  # full: the next round checks it anyway
            self._checks_send.send_nowait(node_id)

    def _expire(self) -> None:
        now_ms = self.clock()
        for node_id, reg in list(self.registry.items()):
            if reg.descriptor.is_expired(now_ms):
                self._remove(node_id, "node_expired")


def _address_taken() -> Response:
    return text_response(409, "conflict: another node is registered at this address and port")
