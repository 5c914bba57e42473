"""Hop key exchanges done ahead of time, so that a packet's build is off its critical path.

See :class:`PreparedKeys`. Cancellation: :meth:`PreparedKeys.run` is a background task
(the client runs it in its nursery); cancelling it drops a refill in flight, and
:meth:`PreparedKeys.take` then simply finds fewer prepared exchanges.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio

from veil.onion.errors import ProtocolError
from veil.onion.packet import Hop, HopKeys, prepare_hop

__all__ = ["PreparedKeys"]


#: Seconds between a take() that asks for a refill and the refill's start (PreparedKeys.run).
_REFILL_DELAY_S = 0.001


class PreparedKeys:
    """Hop key exchanges done ahead of time, by onion key (:func:`veil.onion.packet.prepare_hop`).

    Building a 4-hop packet takes about 0.6 ms here, most of it eight X25519
    multiplications that depend only on the hops' onion keys. :meth:`take` hands out
    what is ready and notes the hops whose stock fell below ``per_key / 2``; :meth:`run`
    (a background task) then tops each up to ``per_key`` in a worker thread (libsodium
    releases the GIL, so on a machine with two cores this overlaps the network wait), and
    packets through the same nodes are built without that work on their critical path.
    Each prepared exchange is used once (:class:`veil.onion.packet.HopKeys`); at most
    ``max_keys`` onion keys are kept (the least recently used one is dropped). Without
    :meth:`run`, :meth:`take` just finds nothing and packets are built as before.
    """

    def __init__(self, *, per_key: int = 8, max_keys: int = 64) -> None:
        self.per_key = per_key
        #: A node's stock is refilled when it falls below this: a handoff to the worker
        #: thread (a futex wake and a result back through trio's wakeup socket) costs
        #: about a tenth of what it saves, so it is done for several packets at once.
        self.low = max(1, per_key // 2)
        self.max_keys = max_keys
        self._ready: dict[bytes, list[HopKeys]] = {}
        self._wanted: dict[bytes, None] = {}
        self._wake = trio.Event()

    def take(self, hops: Sequence[Hop]) -> list[HopKeys | None]:
        """One prepared exchange per hop where there is one (None where not)."""
        out: list[HopKeys | None] = []
        for hop in hops:
            ready = self._ready.get(hop.onion_key)
            out.append(ready.pop() if ready else None)
            if ready is None or len(ready) < self.low:
                self._wanted[hop.onion_key] = None
        if self._wanted:
            self._wake.set()
        return out

    async def run(self) -> None:
        """Prepare what :meth:`take` asked for, until cancelled."""
        while True:
            await self._wake.wait()
            # Not at once: take() is called while a packet is built, and the next
            # checkpoint comes before that packet is sent. Handing the work to the
            # thread costs the event loop about 0.1 ms; a millisecond later the packet
            # is on its way and the loop is only waiting for the reply.
            await trio.sleep(_REFILL_DELAY_S)
            self._wake = trio.Event()
            wanted, self._wanted = list(self._wanted), {}
            need = {k: self.per_key - len(self._ready.get(k, ())) for k in wanted}
            made = await trio.to_thread.run_sync(_prepare_many, need)
            for key, keys in made.items():
                ready = self._ready.pop(key, [])  # re-inserted: most recently used last
                ready.extend(keys)
                self._ready[key] = ready
            while len(self._ready) > self.max_keys:
                del self._ready[next(iter(self._ready))]


def _prepare_many(need: dict[bytes, int]) -> dict[bytes, list[HopKeys]]:
    made: dict[bytes, list[HopKeys]] = {}
    for key, count in need.items():
        try:
            made[key] = [prepare_hop(key) for _ in range(count)]
        except (ValueError, ProtocolError):  # a bad key: build_packet will say so
            continue
    return made
