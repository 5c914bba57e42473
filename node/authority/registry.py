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
"""

from __future__ import annotations

import logging
from contextlib import suppress

import trio

from veil.onion.directory import NodeDescriptor

from ..logging import log_event
from ..server import Response, text_response
from .state import AuthorityState, Registration

__all__ = ["Registry"]

log = logging.getLogger("veil.authority")


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

    def register(self, descriptor: NodeDescriptor, raw: bytes) -> Response:
        """Record a parsed descriptor (see the module docstring); the HTTP answer."""
        node_id = descriptor.node_id
        held = self.registry.get(node_id)
        if held is None:
            if len(self.registry) >= self.config.max_descriptors:
                return text_response(
                    503, "unavailable: this authority holds as many nodes as it may"
                )
            self.registry[node_id] = Registration(descriptor, raw)
            log_event(
                log,
                logging.INFO,
                "node_registered",
                node=descriptor.node_id_hex[:16],
                address=f"{descriptor.host}:{descriptor.port}",
            )
            self._queue_check(node_id)
        elif held.raw == raw:
            if not held.live:
                self._queue_check(node_id)  # the node asks again: check it now
            return text_response(200, "ok: descriptor unchanged")
        elif descriptor.published_ms < held.descriptor.published_ms:
            return text_response(409, "replayed: older than the descriptor held for this node")
        else:
            old = held.descriptor
            held.descriptor, held.raw = descriptor, raw
            if (old.onion_key, old.host, old.port) != (
                descriptor.onion_key,
                descriptor.host,
                descriptor.port,
            ):
                held.live, held.reason = False, "keys or address changed"
                self._queue_check(node_id)
            elif not held.live:
                self._queue_check(node_id)
        self._dirty = True
        return text_response(200, "ok: descriptor accepted")

    def _queue_check(self, node_id: bytes) -> None:
        with suppress(trio.WouldBlock):  # full: the next round checks it anyway
            self._checks_send.send_nowait(node_id)

    def _expire(self) -> None:
        now_ms = self.clock()
        for node_id, reg in list(self.registry.items()):
            if reg.descriptor.is_expired(now_ms):
                del self.registry[node_id]
                self._dirty = True
                log_event(log, logging.INFO, "node_expired", node=node_id.hex()[:16])
