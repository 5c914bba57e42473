"""Swarm replication: push on store, anti-entropy pulls, and handover between swarms.

Design note
-----------
Every member of a swarm holds every message of the swarm's accounts (DESIGN.md,
"Network"). Three mechanisms keep it so; all node-to-node traffic is sealed and signed
frames (onion/replication_frames.py) over the node's :class:`~node.peers.PeerPool`
(persistent per-peer h11 connections):

**Push** (``POST /replicate``). When a client's store creates a message, the storage
service hands it to :meth:`Replicator.replicate` after the local commit. The message is
queued for each other member of this node's swarm. Each peer has one *outbox* task that
takes everything queued for that peer (up to a batch of
:data:`~veil.onion.replication_frames.MAX_MESSAGES` messages or
:data:`~veil.onion.replication_frames.BATCH_MAX_BYTES`) and pushes it in one request, so
concurrent stores share requests and the pushes to different peers run concurrently.
A failed push is retried by the outbox with exponential backoff (up to ``retry_max``
seconds apart); after ``give_up`` seconds of failures its queue is dropped, because a
peer that comes back pulls what it missed (below). Queues are bounded (``queue_messages``
and ``queue_bytes`` per peer); what does not fit is dropped and counted, for the same
reason.

**The ack rule.** The client's store is answered after (1) the local commit, which is
fsynced (node/store.py), and (2) a push attempt to every other member of the swarm has
completed (the peer stored it, or the attempt failed), or ``ack_timeout`` (2 s) has
passed, whichever is first. A peer whose last push failed counts as failed at once (the
store does not wait for it) until a push to it succeeds again. So an acknowledged
message is on disk here and at every member that was reachable when it was stored
(unless that member was slower than ``ack_timeout``); it is lost only if every member
that holds it fails for good before the others have pulled it. With every member up,
that means: no acknowledged message is lost when fewer than all members of the swarm
fail. A member that was down catches up from any survivor by pulling.

**Anti-entropy and joining** (``POST /replicate/pull``). Every ``sync_interval`` seconds,
and at once when this node's swarm or the swarm ring changes, the node pulls from each
swarm peer the peer's rows after a cursor (the peer's ``seq``, which is never reused),
page by page, at most ``max_pages`` pages per peer and round. The peer answers only the
rows of accounts that belong to the *asker's* swarm in its own consensus. The cursor is
kept in the store (``sync_cursors``) per peer and *scope*: the scope is this node's
swarm ID and its two ring neighbours, which fix the range of accounts the swarm holds,
so when that range changes the pulls start again from 0 (a copy already held is
deduplicated). A pull names its scope, and a peer whose consensus gives the asker
another scope refuses it (503) rather than answer from its own view: nodes adopt a new
consensus a moment apart, and an answer filtered by the peer's older view would move
the asker's cursor past rows that the asker does own. A node that was down, or that
has just joined a swarm, catches up this way.

**Deletes and expiries** (``POST /replicate/forward``). A client's delete, delete_all or
expire that succeeded here is forwarded, as the client's own signed request bytes, to
every other member of the swarm (concurrently, one attempt each, bounded by
``ack_timeout``, before the client is answered). Each member checks the client's
signature, clock and swarm itself, with the storage service's usual checks, so no node
can forge a delete; it accepts forwards only from members of its own swarm and never
forwards them again.

**Handover.** When a consensus moves accounts out of this node's swarm (a swarm split,
dissolved, or this node moved), the node walks its accounts (:meth:`MessageStore.accounts`),
and for every account that is no longer its own pushes the account's messages to every
member of the account's new swarm, page by page, and deletes its copies of a page only
after at least one of those members acknowledged them (the receiver accepts them because
the account maps to *its* swarm in *its* consensus; one that has not seen the new
consensus yet refuses, and the handover is retried). A scan runs at start, on every
consensus that changes the ring or this node's swarm, and every ``handover_interval``
seconds (which also picks up a message that arrived during a scan). A node that the
consensus does not list hands nothing over: it may just be between checks, and its old
swarm still holds the data.

**Receiving.** A push is accepted from any node listed in the consensus (a handover
comes from outside the swarm); each message must keep the protocol's rules
(:func:`~veil.onion.replication_frames.check_message`: the hash recomputed, the TTL limit), and
only messages whose account maps to this node's swarm are stored; the others are named
in the answer as refused, and a push with none of this swarm's accounts is refused
whole (``wrong_swarm``). Every refusal is a typed error that the route answers with its
4xx status; nothing from a peer can crash the node. Trust: a listed node can add
messages to the accounts of any swarm it pushes to (as in Session, whose storage
servers trust each other's pushes); it cannot read what it is not given.

Limitations: there are no tombstones. A member that misses a forwarded delete (it was
down, or the forward came after the client's signature left the clock-skew window)
keeps its copy until it expires and serves it, and an anti-entropy pull that starts
over (a change of scope) may copy such a message back to members that deleted it. A
store that only extends the expiry of a message already held is not replicated.

Structure and cancellation: :meth:`Replicator.run` owns a nursery with the consensus
follower, the anti-entropy loop, the handover loop and one outbox task per swarm peer
(created on demand, ended when the peer leaves the swarm). Cancelling ``run`` cancels
them all: queued pushes are dropped (peers will pull), a store write in flight may
still commit, and callers waiting in :meth:`Replicator.replicate` return within their
``ack_timeout``. Network failures never escape a task; they are counted and logged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import trio

from veil.onion import crypto, rpc
from veil.onion import replication_frames as wire
from veil.onion.directory import Consensus, ConsensusNode, Swarm
from veil.onion.errors import (
    ProtocolError,
    Unauthorized,
    Unavailable,
    VeilError,
    WrongSwarm,
    wire_status,
)
from veil.onion.keys import NodeKeys

from .config import ReplicationConfig
from .errors import ReplicationRefused
from .logging import log_event
from .metrics import StorageFigure
from .network_view import NetworkView
from .peers import PeerPool
from .service import StorageService
from .store import MessageStore, ReplicaMessage, ReplicaPage

__all__ = [
    "FORWARD_PATH",
    "PULL_PATH",
    "PUSH_PATH",
    "ReplicationCounters",
    "ReplicationRefused",
    "Replicator",
    "ring_position",
    "sync_scope",
]

#: What a ``replication_frames.open_*`` function returns (see Replicator._open).
_Opened = TypeVar("_Opened")

log = logging.getLogger("veil.node.replication")

PUSH_PATH = "/replicate"
PULL_PATH = "/replicate/pull"
FORWARD_PATH = "/replicate/forward"
#: Accounts read per step of a handover scan.
_SCAN_ACCOUNTS = 256
#: First wait before retrying a failed push (doubles up to ``retry_max``).
_FIRST_BACKOFF_S = 0.25
#: HTTP answers to a push that sending it again would not change: bad request, too
#: large, clock skew (the frame is re-made, but the clocks stay apart), wrong swarm.
#: 401 is not among them: a peer that does not list us yet will once it has the
#: consensus that does.
_PERMANENT = frozenset({400, 406, 413, 421})


def sync_scope(consensus: Consensus, swarm_id: int) -> bytes:
    """A swarm's ID and its two ring neighbours' (24 bytes): they fix which accounts the
    swarm holds, so pull cursors are kept per scope, and a pull names it."""
    ids = consensus.swarm_ids
    i = ids.index(swarm_id)
    left, right = ids[i - 1], ids[(i + 1) % len(ids)]
    return b"".join(x.to_bytes(8, "big") for x in (swarm_id, left, right))


def ring_position(account_key: bytes) -> int:
    """An account's ring position from its 32-byte X25519 key (as
    :attr:`onion.keys.AccountId.ring_position`, without the point check)."""
    pos = 0
    for i in range(0, 32, 8):
        pos ^= int.from_bytes(account_key[i : i + 8], "big")
    return pos


@dataclass(slots=True)
class ReplicationCounters:
    """Counters for metrics; read them, do not write them."""

    #: Messages a swarm peer acknowledged (push).
    pushed: int = 0
    #: Push requests that failed (unreachable, timeout, refused, bad answer).
    push_failures: int = 0
    #: Messages dropped from a peer's queue (full, gave up, peer left the swarm).
    push_dropped: int = 0
    #: Messages received by push that were new here.
    received: int = 0
    #: Pull requests made, and those that failed.
    pulls: int = 0
    pull_failures: int = 0
    #: Messages received by pull that were new here.
    pulled: int = 0
    #: Messages handed over to another swarm (and deleted here).
    handed_over: int = 0
    #: Handover pushes that failed or were refused.
    handover_failures: int = 0
    #: Client deletes and expiries forwarded to a peer, and forwards that failed.
    forwarded: int = 0
    forward_failures: int = 0
    #: Replication requests from peers refused, by wire status.
    refused: dict[str, int] = field(default_factory=dict)


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


class Replicator:
    """Replication for one node; see the module docstring.

    The node (node/app.py) starts :meth:`run` in its nursery and calls :meth:`stop` on
    shutdown; routes :data:`PUSH_PATH`, :data:`PULL_PATH` and :data:`FORWARD_PATH` to
    :meth:`handle_push`, :meth:`handle_pull` and :meth:`handle_forward`; and sets it as
    the storage service's ``replication`` hook (:meth:`replicate`, :meth:`forward`).
    """

    def __init__(
        self,
        *,
        keys: NodeKeys,
        view: NetworkView,
        service: StorageService,
        peers: PeerPool,
        clock: Callable[[], int],
        config: ReplicationConfig,
    ) -> None:
        self.keys = keys
        self.view = view
        self.service = service
        self.store: MessageStore = service.store
        self.peers = peers
        self.clock = clock
        self.config = config
        self.counters = ReplicationCounters()
        self._nursery: trio.Nursery | None = None
        self._outboxes: dict[bytes, _Outbox] = {}
        self._sync_now = trio.Event()
        self._handover_now = trio.Event()
        self._layout: tuple[object, ...] | None = None
        self._scope = trio.CancelScope()

    # --- running --------------------------------------------------------------------

    def stop(self) -> None:
        """Make :meth:`run` return (its tasks are cancelled, as in the module note)."""
        self._scope.cancel()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run replication until :meth:`stop` or cancellation (see the module docstring).
        Standalone: report started and wait (there are no peers)."""
        with self._scope:
            if self.view.standalone:
                task_status.started()
                await trio.sleep_forever()
            # Subscribe first: no consensus may fall between the first look and the follower.
            updates = self.view.subscribe()
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    self._note_layout(self.view.consensus)
                    nursery.start_soon(self._follow_consensus, updates)
                    nursery.start_soon(self._anti_entropy_loop)
                    nursery.start_soon(self._handover_loop)
                    task_status.started()
            finally:
                self._nursery = None
                self._outboxes.clear()
                updates.close()

    async def _follow_consensus(self, updates: trio.MemoryReceiveChannel[Consensus]) -> None:
        async with updates:
            async for consensus in updates:
                self._note_layout(consensus)
                peers = {node.node_id for node in self.view.swarm_peers()}
                for peer_id, outbox in list(self._outboxes.items()):
                    if peer_id not in peers:
                        self._close_outbox(outbox)

    def _note_layout(self, consensus: Consensus | None) -> None:
        """Start a sync and a handover scan if the ring or this node's swarm changed."""
        if consensus is None:
            return
        me = consensus.node(self.view.node_id)
        layout = (consensus.swarm_ids, None if me is None else me.swarm_id)
        if layout != self._layout:
            self._layout = layout
            self._sync_now.set()
            self._handover_now.set()

    # --- push ------------------------------------------------------------------------

    async def replicate(self, message: ReplicaMessage) -> None:
        """Queue ``message`` for every swarm peer and wait for the acks (the ack rule in
        the module docstring): returns after every peer that is not known to be failing
        has answered its push, or after ``ack_timeout``. Never raises for the network;
        cancellation only ends the wait (the pushes go on)."""
        if self._nursery is None:
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
            assert self._nursery is not None
            self._nursery.start_soon(self._outbox_task, outbox)
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
            ack = await self.push(peer, [item.message for item in batch])
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
        delay = min(_FIRST_BACKOFF_S * 2 ** min(outbox.failures - 1, 16), self.config.retry_max)
        await trio.sleep(delay)
        return False

    def _swarm_peer(self, peer_id: bytes) -> ConsensusNode | None:
        for node in self.view.swarm_peers():
            if node.node_id == peer_id:
                return node
        return None

    async def push(self, peer: ConsensusNode, messages: Sequence[ReplicaMessage]) -> wire.PushAck:
        """Push ``messages`` (one batch within the wire limits) to ``peer`` and return its
        ack. Raises a :class:`~onion.errors.VeilError`: NetworkError or RateLimited (the
        peer pool), :class:`ReplicationRefused` (an HTTP error), or the frame errors of
        :func:`~veil.onion.replication_frames.open_pushed` (a bad answer)."""
        frame, digest = wire.seal_push(self.keys, peer, messages, now_ms=self.clock())
        status, body = await self.peers.post(
            peer.host, peer.port, PUSH_PATH, frame, timeout=self.config.request_timeout
        )
        if status != 200:
            raise ReplicationRefused(status, body[:200].decode("utf-8", "replace").strip())
        return wire.open_pushed(
            body,
            self.keys,
            peer,
            digest,
            now_ms=self.clock(),
            skew_ms=self.config.clock_skew_ms,
        )

    async def forward(self, request: bytes) -> None:
        """Send a client's signed delete, delete_all or expire (just executed here) to
        every swarm peer, concurrently; return when all answered or after
        ``ack_timeout``. One attempt each: the client's signature is only good for the
        clock-skew window. Never raises for the network; cancellation ends it."""
        if self._nursery is None:
            return
        peers = self.view.swarm_peers()
        with trio.move_on_after(self.config.ack_timeout):
            async with trio.open_nursery() as nursery:
                for peer in peers:
                    nursery.start_soon(self._forward_to, peer, request)

    async def _forward_to(self, peer: ConsensusNode, request: bytes) -> None:
        try:
            frame, digest = wire.seal_forward(self.keys, peer, request, now_ms=self.clock())
            status, body = await self.peers.post(
                peer.host, peer.port, FORWARD_PATH, frame, timeout=self.config.request_timeout
            )
            if status != 200:
                raise ReplicationRefused(status, body[:200].decode("utf-8", "replace").strip())
            reply = wire.open_forwarded(
                body,
                self.keys,
                peer,
                digest,
                now_ms=self.clock(),
                skew_ms=self.config.clock_skew_ms,
            )
        except VeilError as exc:
            self.counters.forward_failures += 1
            log_event(
                log, logging.DEBUG, "forward_failed", peer=peer.node_id_hex[:16], error=str(exc)
            )
            return
        self.counters.forwarded += 1
        try:
            status_of_reply = rpc.decode_reply(reply).status
        except VeilError:
            status_of_reply = "malformed"
        if status_of_reply != "ok":  # e.g. the peer's consensus disagrees: log it
            log_event(
                log,
                logging.DEBUG,
                "forward_answered",
                peer=peer.node_id_hex[:16],
                status=status_of_reply,
            )

    # --- receiving -------------------------------------------------------------------

    def _lookup(self, node_id: bytes) -> ConsensusNode | None:
        return self.view.node(node_id)

    def _refused(self, exc: VeilError) -> None:
        status = wire_status(exc)
        self.counters.refused[status] = self.counters.refused.get(status, 0) + 1

    def _open(self, opener: Callable[..., _Opened], frame: bytes) -> _Opened:
        """Open a peer's frame with ``opener`` (a ``replication_frames.open_*``): checked
        against our keys, the consensus and our clock; raises its errors."""
        return opener(
            frame, self.keys, self._lookup, now_ms=self.clock(), skew_ms=self.config.clock_skew_ms
        )

    async def handle_push(self, frame: bytes) -> bytes:
        """Answer a push (the body of ``POST /replicate``) with the sealed ack.

        Raises a :class:`~onion.errors.VeilError` for the route to answer with its HTTP
        status: Unavailable (no consensus yet), the frame's errors (TooLarge,
        DecodeError, SchemaError, Unauthorized, ClockSkew), ProtocolError (a message
        that breaks a rule), WrongSwarm (no message is for this node's swarm). On
        cancel, a store write already queued may still commit.
        """
        try:
            consensus, me = self._membership()
            push = self._open(wire.open_push, frame)
            now = self.clock()
            accepted: list[ReplicaMessage] = []
            refused: list[bytes] = []
            for m in push.messages:
                wire.check_message(m, now_ms=now, skew_ms=self.config.clock_skew_ms)
                if consensus.swarm_of(ring_position(m.account)).swarm_id == me.swarm_id:
                    accepted.append(m)
                else:
                    refused.append(m.hash)
            if refused and not accepted:
                raise WrongSwarm("none of these accounts is in this node's swarm")
        except VeilError as exc:
            self._refused(exc)
            raise
        sender = consensus.node(push.sender)  # open_push found it in this consensus
        assert sender is not None
        created = await self.store.store_replicated(accepted) if accepted else []
        stored = sum(created)
        self.counters.received += stored
        return wire.seal_pushed(
            self.keys, sender, push.digest, stored, refused, now_ms=self.clock()
        )

    async def handle_pull(self, frame: bytes) -> bytes:
        """Answer a pull (the body of ``POST /replicate/pull``) with one sealed page of
        the rows of accounts in the asker's swarm. Errors as :meth:`handle_push`."""
        try:
            consensus, _ = self._membership()
            pull = self._open(wire.open_pull, frame)
        except VeilError as exc:
            self._refused(exc)
            raise
        asker = consensus.node(pull.sender)
        assert asker is not None  # open_pull found it in this consensus
        target = asker.swarm_id
        if not crypto.ct_equal(pull.scope, sync_scope(consensus, target)):
            # We see the asker's range of accounts differently (one of us has not
            # adopted the latest consensus yet). Answering from our view would let the
            # asker's cursor skip rows it does own: refuse, it asks again next round.
            error = Unavailable("this node's consensus gives the asker another range; retry")
            self._refused(error)
            raise error
        swarm_of = consensus.swarm_of

        def accept(account: bytes) -> bool:
            return swarm_of(ring_position(account)).swarm_id == target

        page = await self.store.replica_page(
            pull.after,
            accept=accept,
            limit=wire.MAX_MESSAGES,
            max_bytes=wire.BATCH_MAX_BYTES,
            item_overhead=wire.ITEM_OVERHEAD,
        )
        return wire.seal_page(self.keys, asker, pull.digest, page, now_ms=self.clock())

    async def handle_forward(self, frame: bytes) -> bytes:
        """Execute a client's delete, delete_all or expire that a member of this node's
        swarm forwards (the body of ``POST /replicate/forward``); answer the sealed
        storage reply (whatever its status: the client's signature and clock are checked
        here as for any request). Errors as :meth:`handle_push`, and Unauthorized for a
        sender outside this node's swarm, ProtocolError for another method."""
        try:
            consensus, me = self._membership()
            fwd = self._open(wire.open_forward, frame)
            sender = consensus.node(fwd.sender)
            assert sender is not None  # open_forward found it in this consensus
            if sender.swarm_id != me.swarm_id:
                raise Unauthorized("only members of this node's swarm forward requests")
            request = rpc.decode_request(fwd.request)
            if not isinstance(
                request, rpc.DeleteRequest | rpc.DeleteAllRequest | rpc.ExpireRequest
            ):
                raise ProtocolError("only delete, delete_all and expire are forwarded")
        except VeilError as exc:
            self._refused(exc)
            raise
        reply = await self.service.handle(fwd.request, forwarded=True)
        return wire.seal_forwarded(self.keys, sender, fwd.digest, reply, now_ms=self.clock())

    def _membership(self) -> tuple[Consensus, ConsensusNode]:
        consensus = self.view.consensus
        if consensus is None:
            raise Unavailable("this node holds no consensus yet")
        me = consensus.node(self.view.node_id)
        if me is None:
            raise Unavailable("this node is not in the consensus")
        return consensus, me

    # --- anti-entropy ------------------------------------------------------------------

    async def _anti_entropy_loop(self) -> None:
        while True:
            with trio.move_on_after(self.config.sync_interval):
                await self._sync_now.wait()
            self._sync_now = trio.Event()
            try:
                await self.sync_round()
            except Exception:  # a local failure (the store): log it, try next round
                log.exception("anti-entropy round failed")

    async def sync_round(self) -> None:
        """Pull from every swarm peer what it has after our cursor (concurrently)."""
        consensus = self.view.consensus
        me = self.view.me()
        if consensus is None or me is None:
            return
        scope = sync_scope(consensus, me.swarm_id)
        async with trio.open_nursery() as nursery:
            for peer in self.view.swarm_peers():
                nursery.start_soon(self._pull_from, peer, scope)

    async def _pull_from(self, peer: ConsensusNode, scope: bytes) -> None:
        cursor = await self.store.sync_cursor(peer.node_id, scope)
        for _ in range(self.config.max_pages):
            self.counters.pulls += 1
            try:
                page = await self.pull(peer, cursor, scope)
                if page.next_seq < cursor:
                    raise ProtocolError("the page goes back before the cursor")
                now = self.clock()
                for m in page.messages:
                    wire.check_message(m, now_ms=now, skew_ms=self.config.clock_skew_ms)
            except VeilError as exc:
                self.counters.pull_failures += 1
                log_event(
                    log, logging.DEBUG, "pull_failed", peer=peer.node_id_hex[:16], error=str(exc)
                )
                return
            mine = [m for m in page.messages if self._is_mine_key(m.account)]
            if mine:
                created = await self.store.store_replicated(mine)
                self.counters.pulled += sum(created)
            if page.next_seq != cursor:
                cursor = page.next_seq
                await self.store.set_sync_cursor(peer.node_id, scope, cursor)
            if not page.more:
                return

    def _is_mine_key(self, account: bytes) -> bool:
        consensus = self.view.consensus
        me = self.view.me()
        if consensus is None or me is None:
            return False
        return consensus.swarm_of(ring_position(account)).swarm_id == me.swarm_id

    async def pull(self, peer: ConsensusNode, after: int, scope: bytes) -> ReplicaPage:
        """One page of ``peer``'s rows after seq ``after``, of the accounts of ``scope``
        (:func:`sync_scope`); errors as :meth:`push` (503 if the peer sees the scope
        otherwise)."""
        frame, digest = wire.seal_pull(self.keys, peer, after, scope, now_ms=self.clock())
        status, body = await self.peers.post(
            peer.host, peer.port, PULL_PATH, frame, timeout=self.config.request_timeout
        )
        if status != 200:
            raise ReplicationRefused(status, body[:200].decode("utf-8", "replace").strip())
        return wire.open_page(
            body, self.keys, peer, digest, now_ms=self.clock(), skew_ms=self.config.clock_skew_ms
        )

    # --- handover ----------------------------------------------------------------------

    async def _handover_loop(self) -> None:
        delay = self.config.handover_interval
        while True:
            with trio.move_on_after(delay):
                await self._handover_now.wait()
            self._handover_now = trio.Event()
            try:
                complete = await self.handover_round()
            except Exception:  # a local failure (the store): log it, try again later
                log.exception("handover round failed")
                complete = False
            # Unfinished (a receiver may not have the new consensus yet): retry soon.
            delay = self.config.handover_interval if complete else self.config.sync_interval

    async def handover_round(self) -> bool:
        """Hand over every account held here that the current consensus puts in another
        swarm; True if all of them were handed over (or there was nothing to do)."""
        consensus = self.view.consensus
        if consensus is None:
            return True
        me = consensus.node(self.view.node_id)
        if me is None:
            return True  # not listed: keep everything (see the module docstring)
        complete = True
        after: bytes | None = None
        while True:
            accounts = await self.store.accounts(after, limit=_SCAN_ACCOUNTS)
            if not accounts:
                return complete
            for key in accounts:
                after = key
                swarm = consensus.swarm_of(ring_position(key))
                if swarm.swarm_id == me.swarm_id:
                    continue
                if not await self._hand_over(key, swarm):
                    complete = False
                if self.view.consensus is not consensus:
                    return False  # a newer consensus: start again with it

    async def _hand_over(self, account: bytes, swarm: Swarm) -> bool:
        """Push one account's messages to ``swarm`` and delete what a member acked."""
        cursor = (-(2**15) - 1, 0)
        complete = True
        while True:
            messages, cursor, more = await self.store.account_replicas(
                account,
                cursor,
                limit=wire.MAX_MESSAGES,
                max_bytes=wire.BATCH_MAX_BYTES,
                item_overhead=wire.ITEM_OVERHEAD,
            )
            if not messages:
                return complete
            acked: set[bytes] = set()
            async with trio.open_nursery() as nursery:
                for member in swarm.members:
                    if member.node_id != self.view.node_id:
                        nursery.start_soon(self._handover_push, member, messages, acked)
            done = [(m.namespace, m.hash) for m in messages if m.hash in acked]
            if done:
                self.counters.handed_over += await self.store.delete_replicas(account, done)
            if len(done) < len(messages):
                complete = False
            if not more:
                return complete

    async def _handover_push(
        self, member: ConsensusNode, batch: list[ReplicaMessage], acked: set[bytes]
    ) -> None:
        """Push a handover batch to one member; add what it stored to ``acked``."""
        try:
            ack = await self.push(member, batch)
        except VeilError as exc:
            self.counters.handover_failures += 1
            log_event(
                log,
                logging.DEBUG,
                "handover_push_failed",
                peer=member.node_id_hex[:16],
                error=str(exc),
            )
            return
        acked.update(m.hash for m in batch if m.hash not in ack.refused)

    # --- metrics -----------------------------------------------------------------------

    def figures(self) -> list[StorageFigure]:
        """The replication metrics, read at scrape time (node/metrics.py)."""
        c = self.counters
        queued = sum(o.queued for o in self._outboxes.values())

        def counter(name: str, doc: str, value: float) -> StorageFigure:
            return StorageFigure(name, doc, "counter", {(): value})

        return [
            counter("veil_replication_pushed", "Messages acknowledged by swarm peers", c.pushed),
            counter("veil_replication_push_failures", "Push requests that failed", c.push_failures),
            counter(
                "veil_replication_push_dropped",
                "Messages dropped from a peer's queue (peers catch up by pulling)",
                c.push_dropped,
            ),
            counter("veil_replication_received", "New messages received by push", c.received),
            counter("veil_replication_pulls", "Pull requests made to swarm peers", c.pulls),
            counter("veil_replication_pull_failures", "Pull requests that failed", c.pull_failures),
            counter("veil_replication_pulled", "New messages received by pull", c.pulled),
            counter(
                "veil_replication_handed_over",
                "Messages handed over to another swarm and deleted here",
                c.handed_over,
            ),
            counter(
                "veil_replication_handover_failures",
                "Handover pushes that failed",
                c.handover_failures,
            ),
            counter(
                "veil_replication_forwarded",
                "Client deletes and expiries forwarded to a swarm peer",
                c.forwarded,
            ),
            counter(
                "veil_replication_forward_failures",
                "Forwards of client deletes and expiries that failed",
                c.forward_failures,
            ),
            StorageFigure(
                "veil_replication_refused",
                "Replication requests from peers refused, by status",
                "counter",
                {(status,): float(n) for status, n in c.refused.items()},
                ("status",),
            ),
            StorageFigure(
                "veil_replication_queued", "Messages queued for swarm peers", "gauge", {(): queued}
            ),
        ]
