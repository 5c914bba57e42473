"""Push on store: one queue and one sender task per swarm peer, and the ack rule.

Design note
-----------
When a client's store creates a message, :meth:`PushQueues.replicate` queues it for each
other member of this node's swarm. Each peer has one *outbox* task that takes everything
queued for that peer (up to a batch of :data:`~veil.onion.replication_frames.MAX_MESSAGES`
messages or :data:`~veil.onion.replication_frames.BATCH_MAX_BYTES`) and pushes it in one
request, so concurrent stores share requests and the pushes to different peers run
concurrently. A failed push is retried by the outbox with exponential back-off
(:class:`~veil.onion.backoff.Backoff`: 0.25 s doubling, up to ``retry_max`` seconds
apart, no jitter: one sender per peer, so there is no herd to spread); after
``give_up`` seconds of failures its queue is dropped, because a peer that comes back
pulls what it missed (anti_entropy.py). Queues are bounded (``queue_messages`` and
``queue_bytes`` per peer); what does not fit is dropped and counted, for the same reason.

The ack rule: :meth:`PushQueues.replicate` returns once a push attempt to every other
member of the swarm has completed (the peer stored it, or the attempt failed), or
``ack_timeout`` has passed, whichever is first. A peer whose last push failed counts as
failed at once (the store does not wait for it) until a push to it succeeds again.

The outbox tasks run in the replicator's nursery (:attr:`PushQueues.nursery`, set while
:meth:`Replicator.run` runs); an outbox is created on demand and ended when its peer
leaves the swarm. On cancel, what is queued is dropped (peers will pull).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import trio

from veil.onion import replication_frames as wire
from veil.onion.backoff import Backoff
from veil.onion.directory import ConsensusNode
from veil.onion.errors import VeilError
from veil.onion.replica import ReplicaMessage

from ..config import ReplicationConfig
from ..errors import ReplicationRefused
from ..logging import log_event
from ..network_view import NetworkView
from .counters import ReplicationCounters

__all__ = ["PushQueues"]

log = logging.getLogger("veil.node.replication")

#: First wait before retrying a failed push (doubles up to ``retry_max``).
_FIRST_BACKOFF_S = 0.25
#: HTTP answers to a push that sending it again would not change: bad request, too
#: large, clock skew (the frame is re-made, but the clocks stay apart), wrong swarm.
#: 401 is not among them: a peer that does not list us yet will once it has the
#: consensus that does.
_PERMANENT = frozenset({400, 406, 413, 421})

#: Push one batch to a peer: :meth:`PeerRequests.push`.
Push = Callable[[ConsensusNode, Sequence[ReplicaMessage]], Awaitable[wire.PushAck]]


@dataclass(eq=False, slots=True)
class _Item:
    message: ReplicaMessage
    done: trio.Event = field(default_factory=trio.Event)


@dataclass(eq=False)
class _Outbox:
    """What is queued for one peer, and the state of its sender task."""

    peer_id: bytes
    send: trio.MemorySendChannel[_Item]
    recv: trio.MemoryReceiveChannel[_Item]
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    queued: int = 0
    queued_bytes: int = 0
    failures: int = 0
    failing_since: float = 0.0
    #: An item taken from the queue that did not fit the last batch: the next one's first.
    carry: _Item | None = None


class PushQueues:
    """The outboxes of this node's swarm peers (see the module's note)."""

    def __init__(
        self,
        *,
        view: NetworkView,
        push: Push,
        config: ReplicationConfig,
        counters: ReplicationCounters,
    ) -> None:
        self.view = view
        self._push = push
        self.config = config
        self.counters = counters
        # retry_max may be below the first wait: then every wait is retry_max.
        self._backoff = Backoff(
            first_s=min(_FIRST_BACKOFF_S, config.retry_max), max_s=config.retry_max
        )
        #: Where outbox tasks run; None while replication is not running.
        self.nursery: trio.Nursery | None = None
        self._outboxes: dict[bytes, _Outbox] = {}

    def queued(self) -> int:
        """Messages queued for swarm peers now (a gauge)."""
        return sum(o.queued for o in self._outboxes.values())

    def clear(self) -> None:
        """Forget every outbox (replication stopped: their tasks are cancelled)."""
        self._outboxes.clear()

    def keep_only(self, peer_ids: set[bytes]) -> None:
        """End the outboxes of peers that are no longer in this node's swarm."""
        for peer_id, outbox in list(self._outboxes.items()):
            if peer_id not in peer_ids:
                self._close_outbox(outbox)

    async def replicate(self, message: ReplicaMessage) -> None:
        """Queue ``message`` for every swarm peer and wait for the acks (the ack rule in
        the module's note). Never raises for the network; cancellation only ends the
        wait (the pushes go on)."""
        if self.nursery is None:
            return
        waits: list[_Item] = []
        for peer in self.view.swarm_peers():
            outbox = self._outbox(peer.node_id)
            item = _Item(message)
            if not self._offer(outbox, item):
                continue
            if outbox.failures == 0:
                waits.append(item)
        if not waits:
            return
        with trio.move_on_after(self.config.ack_timeout):
            for item in waits:
                await item.done.wait()

    def _outbox(self, peer_id: bytes) -> _Outbox:
        outbox = self._outboxes.get(peer_id)
        if outbox is None:
            send, recv = trio.open_memory_channel[_Item](math.inf)
            outbox = _Outbox(peer_id, send, recv)
            self._outboxes[peer_id] = outbox
            assert self.nursery is not None  # invariant: replicate() checked it
            self.nursery.start_soon(self._outbox_task, outbox)
        return outbox

    def _offer(self, outbox: _Outbox, item: _Item) -> bool:
        cfg = self.config
        cost = wire.batch_cost(item.message)
        if outbox.queued >= cfg.queue_messages or outbox.queued_bytes + cost > cfg.queue_bytes:
            self.counters.push_dropped += 1
            return False
        try:
            outbox.send.send_nowait(item)  # unbounded channel: the counts below bound it
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self.counters.push_dropped += 1
            return False
        outbox.queued += 1
        outbox.queued_bytes += cost
        return True

    def _take(self, outbox: _Outbox, item: _Item) -> None:
        outbox.queued -= 1
        outbox.queued_bytes -= wire.batch_cost(item.message)

    def _close_outbox(self, outbox: _Outbox) -> None:
        if self._outboxes.get(outbox.peer_id) is outbox:
            del self._outboxes[outbox.peer_id]
        outbox.scope.cancel()
        outbox.send.close()

    async def _outbox_task(self, outbox: _Outbox) -> None:
        """Push what is queued for one peer, batch after batch, until the peer leaves
        this node's swarm (or replication stops); on cancel, what is queued is dropped."""
        batch: list[_Item] = []
        try:
            with outbox.scope:
                while True:
                    if not batch:
                        if outbox.carry is not None:
                            batch.append(outbox.carry)
                            outbox.carry = None
                        else:
                            try:
                                first = await outbox.recv.receive()
                            except trio.EndOfChannel:
                                return
                            self._take(outbox, first)
                            batch.append(first)
                    self._fill(outbox, batch)
                    peer = self._swarm_peer(outbox.peer_id)
                    if peer is None:
                        return
                    if await self._push_batch(outbox, peer, batch):
                        batch = []
        finally:
            if outbox.carry is not None:
                batch.append(outbox.carry)
                outbox.carry = None
            for item in batch:
                item.done.set()
            dropped = len(batch)
            while True:
                try:
                    item = outbox.recv.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
                self._take(outbox, item)
                item.done.set()
                dropped += 1
            self.counters.push_dropped += dropped
            if self._outboxes.get(outbox.peer_id) is outbox:
                del self._outboxes[outbox.peer_id]

    def _fill(self, outbox: _Outbox, batch: list[_Item]) -> None:
        """Add queued items to ``batch`` while it stays within a push's limits."""
        size = sum(wire.batch_cost(i.message) for i in batch)
        while len(batch) < wire.MAX_MESSAGES:
            try:
                item = outbox.recv.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                return
            self._take(outbox, item)
            cost = wire.batch_cost(item.message)
            if size + cost > wire.BATCH_MAX_BYTES:
                outbox.carry = item  # the next batch starts with it
                return
            batch.append(item)
            size += cost

    async def _push_batch(self, outbox: _Outbox, peer: ConsensusNode, batch: list[_Item]) -> bool:
        """One push of ``batch``; True if done with it (acked, or dropped after
        ``give_up``), False to retry it after a backoff (already slept)."""
        try:
            ack = await self._push(peer, [item.message for item in batch])
        except ReplicationRefused as exc:
            if exc.http_code not in _PERMANENT:
                return await self._push_failed(outbox, peer, batch, exc)
            # The peer will not take this batch however often it is sent (e.g. its
            # consensus puts the accounts elsewhere): do not let it block the queue.
            self.counters.push_failures += 1
            self.counters.push_dropped += len(batch)
            log_event(log, logging.INFO, "push_refused", peer=peer.node_id_hex[:16], error=str(exc))
            for item in batch:
                item.done.set()
            return True
        except VeilError as exc:
            return await self._push_failed(outbox, peer, batch, exc)
        if outbox.failures:
            log_event(log, logging.INFO, "push_recovered", peer=peer.node_id_hex[:16])
        outbox.failures = 0
        self.counters.pushed += len(batch) - len(ack.refused)
        for item in batch:
            item.done.set()
        return True

    async def _push_failed(
        self, outbox: _Outbox, peer: ConsensusNode, batch: list[_Item], exc: VeilError
    ) -> bool:
        """After a failed push: back off (and return False to retry the batch), or drop
        it after ``give_up`` seconds of failures (True)."""
        self.counters.push_failures += 1
        now = trio.current_time()
        if outbox.failures == 0:
            outbox.failing_since = now
            log_event(log, logging.INFO, "push_failing", peer=peer.node_id_hex[:16], error=str(exc))
        outbox.failures += 1
        for item in batch:
            item.done.set()  # the attempt is over: waiting stores go on
        if now - outbox.failing_since >= self.config.give_up:
            self.counters.push_dropped += len(batch)
            log_event(log, logging.INFO, "push_gave_up", peer=peer.node_id_hex[:16])
            outbox.failing_since = now
            return True
        await trio.sleep(self._backoff.delay_s(outbox.failures))
        return False

    def _swarm_peer(self, peer_id: bytes) -> ConsensusNode | None:
        for node in self.view.swarm_peers():
            if node.node_id == peer_id:
                return node
        return None
