"""Writing link frames, both sides: queued, sent in batches by whichever task finds the link idle.

Design note
-----------
A link carries many streams at once, and its frames must never interleave: a frame cut
in half would break the framing for everyone. :class:`_FrameWriter` has no task of its
own: the request (or response) that finds the link idle writes, and keeps writing what
other tasks queue meanwhile, so a busy link sends a batch of frames per system call. A
write the kernel takes at once is not a checkpoint (node/sockio.py); one that has to
wait is shielded from its caller's cancellation and bounded by the write timeout per
256 KiB instead. The limits both sides read with are here too.
"""

from __future__ import annotations

import trio

from ..sockio import AnySocketIO

__all__: list[str] = []  # the link package's own: pool.py and serve.py import these

#: Bytes asked for per read of a link (both sides).
_RECV_BYTES = 256 * 1024
#: A write timeout covers at most this many bytes (see _FrameWriter.send).
_WRITE_CHUNK = 256 * 1024
#: Frames handled from one read before yielding to other tasks. A read is a checkpoint,
#: and so is a write that has to wait, but a write the kernel takes at once is not
#: (node/sockio.py): one read of small frames (up to 21,000 of them in 256 KiB, each
#: answered 429, or bogus responses) must not hold the node until all are handled.
_FRAMES_PER_CHECKPOINT = 64


class _LinkDown(Exception):
    """The link broke (internal: the pool decides between retry and HopUnreachable)."""


class _FrameWriter:
    """Queues frames and sends them in batches, from whichever task finds it idle."""

    __slots__ = ("_busy", "_io", "_queue", "_timeout", "broken")

    def __init__(self, io: AnySocketIO, write_timeout: float) -> None:
        self._io = io
        self._timeout = write_timeout
        self._queue: list[bytes] = []
        self._busy = False
        self.broken = False

    async def send(self, frame: bytes) -> None:
        """Queue ``frame``; if nobody is writing, write the queue until it is empty.

        Raises _LinkDown if the link is (or becomes) broken while this task writes.
        Not a checkpoint when the kernel takes the frame at once (the usual case: see
        node/sockio.py); otherwise shielded from the caller's cancellation and bounded
        by the write timeout.
        """
        if self.broken:
            raise _LinkDown("link is closed")
        if self._busy:
            self._queue.append(frame)
            return  # the task writing now sends it with its next batch
        self._busy = True
        try:
            data: bytes = frame
            while True:
                sent = self._io.try_send(data)
                if sent < len(data):
                    await self._send_rest(memoryview(data)[sent:])
                if not self._queue:
                    return
                data = self._queue[0] if len(self._queue) == 1 else b"".join(self._queue)
                self._queue.clear()
        except (trio.BrokenResourceError, trio.ClosedResourceError, _LinkDown) as exc:
            self.broken = True
            self._queue.clear()
            raise _LinkDown(f"send failed: {exc}") from None
        finally:
            self._busy = False

    async def _send_rest(self, view: memoryview) -> None:
        """Write what the kernel did not take at once, shielded (a frame cut in half
        would break the framing for everyone). The timeout bounds each chunk, not the
        batch: a slow but moving link with a large batch queued is not a dead one."""
        for start in range(0, len(view), _WRITE_CHUNK):
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + self._timeout
                await self._io.send_all(view[start : start + _WRITE_CHUNK])
            if scope.cancelled_caught:
                raise _LinkDown("write timed out")
