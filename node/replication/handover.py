"""Handover: the accounts that a new consensus moves out of this swarm, pushed and dropped.

Design note
-----------
When a consensus moves accounts out of this node's swarm (a swarm split, dissolved, or
this node moved), the node walks its accounts (:meth:`MessageStore.accounts`), and for
every account that is no longer its own pushes the account's messages to every member
of the account's new swarm, page by page, and deletes its copies of a page only after at
least one of those members acknowledged them (the receiver accepts them because the
account maps to *its* swarm in *its* consensus; one that has not seen the new consensus
yet refuses, and the handover is retried). A scan runs at start, on every consensus that
changes the ring or this node's swarm, and every ``handover_interval`` seconds (which
also picks up a message that arrived during a scan); an unfinished scan is retried
after ``sync_interval``. A node that the consensus does not list hands nothing over: it
may just be between checks, and its old swarm still holds the data. The receivers check
every message as a push (the owner's proof outside the inbox); rows stored before
proofs existed are not read for a handover (no member would take them) and stay here
until they expire.

Revocations (issue 12) go first, so that the new swarm refuses a revoked key (and the
messages signed by it) before it holds the account's messages: for every account with
revocations kept here that the consensus puts in another swarm, each record whose link
could still be used is sent to every member of the new swarm as a forwarded ``revoke``
(``POST /replicate/forward``, which takes a revoke from any listed node: the record is
verified by the receiver, and anyone may send it as a client anyway). The records stay
here (swept in time); a record handed over to a swarm (acked ``ok`` by a member) is not
sent to it again while this node runs, and the swarm's members spread it among
themselves by anti-entropy.
"""

from __future__ import annotations

import logging

import trio

from veil.onion import capability as cap
from veil.onion import replication_frames as wire
from veil.onion import rpc
from veil.onion.directory import Consensus, ConsensusNode, Swarm
from veil.onion.errors import VeilError
from veil.onion.replica import ReplicaMessage

from ..config import ReplicationConfig
from ..logging import log_event
from ..network_view import NetworkView
from ..store import MessageStore
from .counters import ReplicationCounters
from .requests import PeerRequests
from .ring import ring_position
from .wakeup import Wakeup

__all__ = ["Handover"]

log = logging.getLogger("veil.node.replication")

#: Accounts read per step of a handover scan.
_SCAN_ACCOUNTS = 256
#: Before the first (namespace, seq) of an account: namespaces are 16-bit signed.
_FIRST_CURSOR = (-(2**15) - 1, 0)


class Handover:
    """The handover scans (see the module's note); :meth:`run` loops until cancelled."""

    def __init__(
        self,
        *,
        view: NetworkView,
        store: MessageStore,
        requests: PeerRequests,
        config: ReplicationConfig,
        counters: ReplicationCounters,
    ) -> None:
        self.view = view
        self.store = store
        self.requests = requests
        self.config = config
        self.counters = counters
        self._wakeup = Wakeup()
        #: (revoked link, swarm ID) already handed over (acked by a member).
        self._revocations_sent: set[tuple[bytes, int]] = set()

    def start_scan(self) -> None:
        """Scan now (the ring or this node's swarm changed)."""
        self._wakeup.set()

    async def run(self) -> None:
        delay_s = self.config.handover_interval
        while True:
            await self._wakeup.wait(delay_s)
            try:
                complete = await self.handover_round()
            except Exception:  # a local failure (the store): log it, try again later
                log.exception("handover round failed")
                complete = False
            # Unfinished (a receiver may not have the new consensus yet): retry soon.
            delay_s = self.config.handover_interval if complete else self.config.sync_interval

    async def handover_round(self) -> bool:
        """Hand over every account held here that the current consensus puts in another
        swarm; True if all of them were handed over (or there was nothing to do)."""
        consensus = self.view.consensus
        if consensus is None:
            return True
        me = consensus.node(self.view.node_id)
        if me is None:
            return True  # not listed: keep everything (see the module's note)
        complete = await self._hand_over_revocations(consensus, me.swarm_id)
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

    async def _hand_over_revocations(self, consensus: Consensus, my_swarm: int) -> bool:
        """Send the revocations of the accounts that moved to another swarm to its
        members (see the module's note); True if every one was acked by a member."""
        complete = True
        for account, links in self.store.revoked_accounts().items():
            swarm = consensus.swarm_of(ring_position(account))
            if swarm.swarm_id == my_swarm:
                continue
            if all((link, swarm.swarm_id) in self._revocations_sent for link in links):
                continue
            for record in await self.store.account_revocations(account):
                link = cap.Revocation.decode(record).link
                if (link, swarm.swarm_id) in self._revocations_sent:
                    continue
                acked: list[bool] = []
                request = rpc.make_revoke(record)
                async with trio.open_nursery() as nursery:
                    for member in swarm.members:
                        if member.node_id != self.view.node_id:
                            nursery.start_soon(self._forward_revoke, member, request, acked)
                if any(acked):
                    self._revocations_sent.add((link, swarm.swarm_id))
                    self.counters.revocations_handed_over += 1
                else:
                    complete = False
        return complete

    async def _forward_revoke(
        self, member: ConsensusNode, request: bytes, acked: list[bool]
    ) -> None:
        try:
            reply = rpc.decode_reply(await self.requests.forward(member, request))
        except VeilError as exc:
            self.counters.handover_failures += 1
            log_event(
                log,
                logging.DEBUG,
                "handover_revoke_failed",
                peer=member.node_id_hex[:16],
                error=str(exc),
            )
            return
        acked.append(reply.ok)

    async def _hand_over(self, account: bytes, swarm: Swarm) -> bool:
        """Push one account's messages to ``swarm`` and delete what a member acked."""
        cursor = _FIRST_CURSOR
        complete = True
        while True:
            messages, cursor, more = await self.store.account_replicas(
                account,
                cursor,
                limit=wire.MAX_MESSAGES,
                max_bytes=wire.BATCH_MAX_BYTES,
                item_overhead=wire.ITEM_OVERHEAD,
            )
            if messages:
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
            ack = await self.requests.push(member, batch)
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
