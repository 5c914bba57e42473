"""A loop's timer that can be cut short: the pull rounds and the handover scans wait on one.

Design note
-----------
Both loops run every so many seconds, and at once when a consensus changes the ring or
this node's swarm. :meth:`Wakeup.wait` returns after ``timeout_s`` or as soon as
:meth:`Wakeup.set` is called, and re-arms: a ``set`` that comes while the loop is
working makes the next wait return at once, so no change is missed.
"""

from __future__ import annotations

import trio

__all__ = ["Wakeup"]


class Wakeup:
    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        """Wake the waiting loop now, or make its next wait return at once."""
        self._event.set()

    async def wait(self, timeout_s: float) -> None:
        """Return after ``timeout_s`` seconds or once :meth:`set` is called; re-arm."""
        with trio.move_on_after(timeout_s):
            await self._event.wait()
        self._event = trio.Event()
