"""The replicator: one node's replication, its tasks under one nursery, and forwards.

Design note
-----------
:class:`Replicator` ties the parts together and is what the node (node/app.py) and the
storage service see: the push queues (outbox.py), the routes that answer peers
(receive.py), the pull rounds (anti_entropy.py), the handover scans (handover.py), the
outgoing requests (requests.py), and the counters (counters.py). It also forwards a
client's delete, delete_all or expire that succeeded here, as the client's own signed
request bytes, to every other member of the swarm (concurrently, one attempt each,
bounded by ``ack_timeout``, before the client is answered). Each member checks the
client's signature, clock and swarm itself, with the storage service's usual checks,
so no node can forge a delete.

Structure and cancellation: :meth:`Replicator.run` owns a nursery with the consensus
follower, the anti-entropy loop, the handover loop and one outbox task per swarm peer
(created on demand, ended when the peer leaves the swarm). Cancelling ``run`` cancels
them all: queued pushes are dropped (peers will pull), a store write in flight may
still commit, and callers waiting in :meth:`Replicator.replicate` return within their
``ack_timeout``. Network failures never escape a task; they are counted and logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from veil.onion import rpc
from veil.onion.directory import Consensus, ConsensusNode
from veil.onion.errors import VeilError
from veil.onion.keys import NodeKeys
from veil.onion.replica import ReplicaMessage

from ..config import ReplicationConfig
from ..link import LinkPool
from ..logging import log_event
from ..metrics import StorageFigure
from ..network_view import NetworkView
from ..peers import PeerPool
from ..service import StorageService
from ..store import MessageStore
from .anti_entropy import AntiEntropy
from .counters import ReplicationCounters, replication_figures
from .handover import Handover
from .held import HeldHashes
from .outbox import PushQueues
from .receive import Receiver
from .requests import PeerRequests

__all__ = ["Replicator"]

log = logging.getLogger("veil.node.replication")


class Replicator:
    """Replication for one node; see node/replication/__init__.py.

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
        links: LinkPool | None = None,
    ) -> None:
        """``links``: the node's link pool, on which frames go (None: over ``peers``)."""
        self.keys = keys
        self.view = view
        self.service = service
        self.store: MessageStore = service.store
        self.peers = peers
        self.clock = clock
        self.config = config
        self.counters = ReplicationCounters()
        self._requests = PeerRequests(
            keys=keys, peers=peers, clock=clock, config=config, links=links
        )
        self._push_queues = PushQueues(
            view=view, push=self._requests.push, config=config, counters=self.counters
        )
        #: Messages stored here lately, noted by every path that stores (held.py).
        self._held = HeldHashes()
        self._receiver = Receiver(
            keys=keys,
            view=view,
            service=service,
            clock=clock,
            config=config,
            counters=self.counters,
            held=self._held,
        )
        self._anti_entropy = AntiEntropy(
            view=view,
            store=self.store,
            requests=self._requests,
            clock=clock,
            config=config,
            counters=self.counters,
            chains=service.chains,
            store_replicas=service.store_replicas,
            held=self._held,
        )
        self._handover = Handover(
            view=view,
            store=self.store,
            requests=self._requests,
            config=config,
            counters=self.counters,
        )
        self._nursery: trio.Nursery | None = None
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
                    self._nursery = self._push_queues.nursery = nursery
                    self._note_layout(self.view.consensus)
                    nursery.start_soon(self._follow_consensus, updates)
                    nursery.start_soon(self._anti_entropy.run)
                    nursery.start_soon(self._handover.run)
                    task_status.started()
            finally:
                self._nursery = self._push_queues.nursery = None
                self._push_queues.clear()
                updates.close()

    async def _follow_consensus(self, updates: trio.MemoryReceiveChannel[Consensus]) -> None:
        async with updates:
            async for consensus in updates:
                self._note_layout(consensus)
                self._push_queues.keep_only({node.node_id for node in self.view.swarm_peers()})

    def _note_layout(self, consensus: Consensus | None) -> None:
        """Start a sync and a handover scan if the ring or this node's swarm changed."""
        if consensus is None:
            return
        me = consensus.node(self.view.node_id)
        layout = (consensus.swarm_ids, None if me is None else me.swarm_id)
        if layout != self._layout:
            self._layout = layout
            self._anti_entropy.start_round()
            self._handover.start_scan()

    # --- the storage service's hook ------------------------------------------------------

    async def replicate(self, message: ReplicaMessage) -> None:
        """Queue ``message`` for every swarm peer and wait for the acks (the ack rule,
        node/replication/outbox.py): returns after every peer that is not known to be
        failing has answered its push, or after ``ack_timeout``. Never raises for the
        network; cancellation only ends the wait (the pushes go on). The service calls it
        once ``message`` is committed here."""
        self._held.note((message,))
        await self._push_queues.replicate(message)

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
            reply = await self._requests.forward(peer, request)
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

    # --- the routes (see receive.py for what each refuses) -------------------------------

    async def handle_push(self, frame: bytes) -> bytes:
        """Answer a push (the body of ``POST /replicate``) with the sealed ack."""
        return await self._receiver.handle_push(frame)

    async def handle_pull(self, frame: bytes) -> bytes:
        """Answer a pull (the body of ``POST /replicate/pull``) with a sealed page."""
        return await self._receiver.handle_pull(frame)

    async def handle_forward(self, frame: bytes) -> bytes:
        """Execute a forwarded delete, delete_all or expire; the sealed storage reply."""
        return await self._receiver.handle_forward(frame)

    # --- metrics -----------------------------------------------------------------------

    def figures(self) -> list[StorageFigure]:
        """The replication metrics, read at scrape time (node/metrics.py)."""
        return replication_figures(self.counters, self._push_queues.queued())
