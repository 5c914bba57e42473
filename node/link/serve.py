"""The receiving side of node-to-node links: :func:`serve_link` on an upgraded connection.

Design note
-----------
Run by the HTTP server on a connection that asked for the upgrade: it reads request
frames, runs each (an onion packet with ``handle``, a replication frame, kinds 3-5 of
``veil-link/3``, with ``replicate``) on a worker task of its own (at most
``max_streams`` at once; beyond that it stops reading, so TCP pushes back on the peer),
and writes each response as its handler finishes, in any order. Workers are parked and
reused, not spawned per packet (:class:`_Workers`). ``admit`` is asked for each request
of any kind (the per-address rate limit) and a refused request is answered 429 at once.
Replication frames share ``max_streams`` with onion packets: one bound on what a peer
may have in flight. A link idle for ``idle_timeout`` is closed by a task of its own (a
deadline moved at every packet cost CPU at rest). This is the relay's hot path:
``./scripts/bench node`` measures it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable

import trio

from veil.onion.link import (
    REQUEST,
    FrameReader,
    LinkProtocolError,
    encode_response,
)
from veil.onion.packet import MAX_PACKET_LEN

from ..logging import PeerWarnings
from ..sockio import SocketIO
from .writer import _FRAMES_PER_CHECKPOINT, _RECV_BYTES, _FrameWriter, _LinkDown

__all__ = ["LinkHandler", "ReplicationHandler", "serve_link"]

log = logging.getLogger("veil.node.link")

#: Rate-limited warnings of links served without a node's own (tests, benchmarks).
_WARNINGS = PeerWarnings()

#: What :func:`serve_link` runs for each request: the onion packet in, (status, payload)
#: out. A status other than 200 carries a short explanation (at most MAX_ERROR_LEN).
LinkHandler = Callable[[bytes], Awaitable[tuple[int, bytes]]]
#: What :func:`serve_link` runs for each replication request: its kind (one of
#: veil.onion.link.REPLICATION_KINDS) and sealed frame in, (status, payload) out, as the
#: frame's ``POST /replicate...`` route would answer.
ReplicationHandler = Callable[[int, bytes], Awaitable[tuple[int, bytes]]]

_NO_REPLICATION = b"not_found: this node does not replicate"


async def serve_link(
    stream: trio.SocketStream,
    initial: bytes,
    handle: LinkHandler,
    *,
    max_streams: int,
    idle_timeout: float,
    write_timeout: float,
    admit: Callable[[], bool] = lambda: True,
    stopping: trio.Event | None = None,
    on_request: Callable[[int, int], None] | None = None,
    replicate: ReplicationHandler | None = None,
    peer: str = "",
    warnings: PeerWarnings | None = None,
) -> None:
    """Serve request frames on an upgraded connection until it ends; see the module note.

    Returns when the peer closes the link, breaks the framing (given to ``warnings``, the
    node's rate-limited log and metric, keyed by ``peer``), stays idle for
    ``idle_timeout``, or when ``stopping`` is set and the requests in flight are
    answered. ``on_request(kind, status)`` is called once per answered request
    (metrics). Replication requests go to ``replicate`` (None: each is answered 404, as
    a node without the ``/replicate`` routes would). A handler's exception is logged and
    answered 500. If cancelled, the requests in flight are cancelled too; the caller
    closes the stream either way.
    """
    reader = FrameReader(REQUEST, MAX_PACKET_LEN)
    io = SocketIO(stream)
    writer = _FrameWriter(io, write_timeout)
    state = _ServerState(max_streams)

    async def run_one(stream_id: int, kind: int, packet: bytes) -> None:
        try:
            try:
                # The handler's coroutine holds the only reference to the packet while it
                # runs, so that a long-poll waiting in it can drop its size class
                # (node/service.py): this frame keeps none.
                if kind == REQUEST:
                    pending = handle(packet)
                elif replicate is not None:
                    pending = replicate(kind, packet)
                else:
                    pending = _refuse_replication()
                del packet
                status, payload = await pending
            except Exception:
                # A bug, which a peer's packet may set off again and again: rate limited.
                (warnings or _WARNINGS).warn(
                    log, "link_handler_failed", peer, level=logging.ERROR, exc_info=True
                )
                status, payload = 500, b"internal: the node failed to handle this"
            if on_request is not None:
                on_request(kind, status)
            try:
                await writer.send(encode_response(stream_id, status, payload))
            except _LinkDown:
                read_scope.cancel()  # nobody to answer: stop reading too
        finally:
            state.finished()

    async with trio.open_nursery() as nursery:
        workers = _Workers(nursery, run_one)
        with trio.CancelScope() as read_scope:
            # The idle clock is a task of its own, not a deadline moved at every packet.
            nursery.start_soon(_close_when_idle, state, read_scope, idle_timeout)
            if stopping is not None:
                nursery.start_soon(_cancel_on, stopping, read_scope)
            try:
                reader.receive_data(initial)
                unread = 0
                while True:
                    frame = reader.next_frame()
                    if frame is None:
                        unread = 0
                        data = await io.receive_some(_RECV_BYTES)
                        if not data:
                            break
                        if not state.in_flight:
                            state.last_active = trio.current_time()
                        reader.receive_data(data)
                        continue
                    unread += 1
                    if unread % _FRAMES_PER_CHECKPOINT == 0:
                        await trio.lowlevel.checkpoint()  # see _FRAMES_PER_CHECKPOINT
                    if not admit():
                        if on_request is not None:
                            on_request(frame.kind, 429)
                        body = b"rate_limited: too many requests, slow down"
                        await writer.send(encode_response(frame.stream, 429, body))
                        continue
                    if state.in_flight >= max_streams:
                        await state.wait_for_room()  # TCP pushes back meanwhile
                    state.in_flight += 1
                    workers.submit(frame.stream, frame.kind, frame.payload)
                    frame = None  # not kept while the next read waits (see run_one)
            except LinkProtocolError as exc:
                (warnings or _WARNINGS).warn(log, "link_bad_frame", peer, error=str(exc)[:80])
            except (trio.BrokenResourceError, trio.ClosedResourceError, _LinkDown):
                pass
        if read_scope.cancelled_caught and not writer.broken:
            # Stopping, or idle: answer what is in flight (the nursery waits for it),
            # then the task watching ``stopping`` is no longer needed.
            await state.wait_idle()
        # Otherwise the peer is gone (EOF, reset, bad framing): nobody to answer.
        nursery.cancel_scope.cancel()


async def _refuse_replication() -> tuple[int, bytes]:
    return 404, _NO_REPLICATION


async def _cancel_on(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _close_when_idle(state: _ServerState, scope: trio.CancelScope, idle_s: float) -> None:
    """Cancel ``scope`` (the reading) once the link has had nothing in flight and
    nothing arriving for ``idle_s`` seconds. While requests are in flight it looks again
    every quarter of ``idle_s``, so a link is closed at most 1.25 x ``idle_s`` after its
    last answer."""
    while True:
        deadline = state.last_active + idle_s
        if trio.current_time() < deadline:
            await trio.sleep_until(deadline)
        elif state.in_flight:
            await trio.sleep(idle_s / 4)
        else:
            scope.cancel()
            return


class _Workers:
    """The tasks that run a served link's requests, kept and reused.

    Spawning a trio task per packet was about a tenth of a relay's CPU at rest; waking
    a parked one costs a reschedule. :meth:`submit` queues a request and wakes an idle
    worker, or starts one if none is idle; a worker runs queued requests until there
    are none, then parks, or ends if ``keep`` workers are parked already (so a burst's
    workers do not outlive it). The reader bounds the requests in flight
    (``max_streams``), so it bounds the workers too. All of them live in the link's
    nursery: cancelling it ends parked and running workers alike.
    """

    __slots__ = ("_idle", "_jobs", "_keep", "_nursery", "_run")

    def __init__(
        self,
        nursery: trio.Nursery,
        run: Callable[[int, int, bytes], Awaitable[None]],
        keep: int = 8,
    ) -> None:
        self._nursery = nursery
        self._run = run
        self._keep = keep
        self._jobs: deque[tuple[int, int, bytes]] = deque()
        self._idle: list[trio.lowlevel.Task] = []

    def submit(self, stream_id: int, kind: int, packet: bytes) -> None:
        self._jobs.append((stream_id, kind, packet))
        if self._idle:
            trio.lowlevel.reschedule(self._idle.pop())
        else:
            self._nursery.start_soon(self._work)

    async def _work(self) -> None:
        jobs, idle = self._jobs, self._idle
        task = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            idle.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        while True:
            while jobs:
                await self._run(*jobs.popleft())
            if len(idle) >= self._keep:
                return
            idle.append(task)
            await trio.lowlevel.wait_task_rescheduled(abort)


class _ServerState:
    """How many requests a served link has in flight, when it was last active, and who
    waits for the count to drop."""

    __slots__ = ("_lot", "in_flight", "last_active", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        #: When the link last had nothing in flight, or received bytes while it had none.
        self.last_active = trio.current_time()
        self._lot = trio.lowlevel.ParkingLot()

    def finished(self) -> None:
        self.in_flight -= 1
        if not self.in_flight:
            self.last_active = trio.current_time()
        if self._lot:
            self._lot.unpark_all()

    async def wait_for_room(self) -> None:
        while self.in_flight >= self.limit:
            await self._lot.park()

    async def wait_idle(self) -> None:
        while self.in_flight:
            await self._lot.park()
