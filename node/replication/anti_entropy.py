"""Anti-entropy and joining: pulling from each swarm peer what it has after our cursor.

Design note
-----------
Every ``sync_interval`` seconds on average, and at once when this node's swarm or the
swarm ring changes, the node pulls from each swarm peer the peer's rows after a cursor (the peer's
``seq``, which is never reused), page by page, at most ``max_pages`` pages per peer and
round. The peer answers only the rows of accounts that belong to the *asker's* swarm in
its own consensus (receive.py). The cursor is kept in the store (``sync_cursors``) per
peer and *scope* (ring.py): the scope is this node's swarm ID and its two ring
neighbours, which fix the range of accounts the swarm holds, so when that range changes
the pulls start again from 0 (a copy already held is deduplicated). A pull names its
scope, and a peer whose consensus gives the asker another scope refuses it (503)
rather than answer from its own view: nodes adopt a new consensus a moment apart, and
an answer filtered by the peer's older view would move the asker's cursor past rows
that the asker does own. A node that was down, or that has just joined a swarm, catches
up this way. A failed pull is counted and logged at INFO (rate limited per peer and
cause: one line a minute, :class:`~veil.node.logging.PeerWarnings`); the next round
tries again.

**Whose rows a round takes.** A round fixes, when it starts, the consensus it works in
(:class:`_Round`: the consensus, this node's swarm and the scope), and judges which rows
of a page are this node's in *that* consensus, the one its pulls named, never in
whatever consensus the node holds when the answer arrives. A round used to look at the
current one: a node restarted with a saved consensus that lists it pulled under it,
adopted meanwhile a newer one that did not list it yet (it had been down; the authority
lists it again a moment later), found no row "its own" and dropped the whole page while
the cursor moved past it. The rows were lost for good at that node, whose scope (and so
cursor) was the same once it was listed again: the flaky
``tests/test_group_swarm.py::test_a_session_across_the_swarm_revocation_and_end`` (the
revocation the restarted member had missed never reached it), which
``test_a_member_keeps_what_it_pulled_while_its_consensus_changed`` replays for certain.
Rows of the round's scope are the node's to keep whatever it adopted since; if the ring
moved meanwhile, the handover scans move them on, as any row.

**Rounds out of step** (issue 17). Each wait is drawn from 0.5 to 1.5 intervals. The
nodes of a network start together, and rounds at a fixed interval stayed in step: every
member built and checked its summaries in the same instant, a burst of the whole
swarm's anti-entropy CPU at once every interval, which held messages in flight behind
it. On the 10-node devnet at 125 msg/s (``scripts/bench_load.py``'s setup, 20 s steps)
the delivery p99 was 324 and 487 ms with rounds in step, 52 ms with no round during the
step, and 76 and 90 ms with the jitter; a 2 s interval did no better (78, 85 ms) for a
little more CPU.

**Summary first** (issue 17). A pull of rows used to bring every row after the cursor,
and each member pulls from every other, so with swarms of 5 each message was sent,
opened and checked (its owner's proof verified) 20 times a round besides its 4 pushes:
about 1 ms of node CPU per message at a 10 s interval (py-spy: 16% of the nodes' CPU).
Now a round asks each peer first for a *summary* of its rows after the cursor (owner,
namespace, hash, expiry; up to 512 a page, 2 or 16 KiB in the steady state), looks each
up here (in :class:`~veil.node.replication.held.HeldHashes`, the messages stored here
lately, else an indexed read), and pulls rows only after the start of a chunk that
holds a row it lacks (or holds with an earlier expiry, which the copy would extend): as
before, but only there. Pushes have brought nearly every row, so a round usually sends
no message data and checks no proof. Rows pulled are still checked one by one, and a
row held here is skipped before the check (it was checked when it was stored).
Measured (one exchange of 512 rows both hold, both sides' CPU, real stores and frames):
inbox rows 58-67 us a row before, 28.5 us now; rows with owner proofs 153-166 us
before, 38-40 us now. The peer's reading of its rows was most of what was left, and
a summary's read now skips the rows' data (``MessageStore.replica_summary``). The
summary is a claim, never data: a peer that lies in it can make this node pull rows
(each checked, bounded by ``_ROW_PULLS_PER_SUMMARY`` pages) or not pull its own rows
(withholding, which a member can always do), never skip a row that it does not hold
itself, so the other members' summaries still bring everything.

A page is data from a peer: each message is checked as a pushed one
(:func:`~veil.onion.replication_frames.check_message`, the owner's proof included), and
one that fails is dropped and counted (``veil_replication_pull_refused_total``) while the
cursor moves past it; the store skips copies of messages deleted here (tombstones).

Deletions. After the rows, each round pulls the peer's *deletions* (the owners' signed
delete and delete_all requests it executed, as sent) after a second cursor. Each is
checked as a client's request would be (the owner's key and signature, the method),
except its age, and applied as of its signed time, once (node/store/: it deletes what
was first stored up to then, plus the clock skew, leaves tombstones, and is kept for the
next member), so a member that missed a delete catches up as it does with stores.

Revocations (issue 12). Last, each round pulls the peer's revocation records of
delegated links after a third cursor, verifies each one again as a client's ``revoke``
is verified (:func:`veil.onion.capability.verify_revocation`, this node's clock and
skew, its own revocations for an administrator's authority chain) and keeps it, for an
account of this swarm, exactly as the storage service does; so a member that was down
when a revocation was stored refuses the revoked link within a round of coming back,
and since records are in SQLite and loaded at start, a restart loses none. A peer
serves a record while the revoked link could still be used; a record whose link has
expired has nothing left to stop. Revocations are pulled after the rows, so the
messages a page brings are checked against the revocations known before it (a copy
whose proof's chain is revoked is refused): the order costs at most a round's delay.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from veil.onion import replication_frames as wire
from veil.onion import rpc
from veil.onion.capability import ChainCache, verify_revocation
from veil.onion.directory import Consensus, ConsensusNode
from veil.onion.errors import InvalidId, ProtocolError, Unauthorized, VeilError
from veil.onion.keys import AccountId, GroupId, owner_key, owner_of_key
from veil.onion.replica import ReplicaMessage, ReplicaPage

from ..config import ReplicationConfig
from ..groups import GroupGuard
from ..logging import PeerWarnings
from ..network_view import NetworkView
from ..rooms import RoomGuard
from ..store import MessageStore, deletion_digest, deletion_until
from .counters import ReplicationCounters
from .held import HeldHashes
from .requests import PeerRequests
from .ring import ring_position, sync_scope
from .wakeup import Wakeup

__all__ = ["AntiEntropy"]

#: Appended to a peer's ID for the cursor of its deletions (sync_cursors keeps one scope
#: per "peer" key, so rows and deletions need two keys).
_DELETIONS = b"/deletions"
#: The same for the cursor of its revocations.
_REVOCATIONS = b"/revocations"
#: Pages of rows pulled for one summary page, at most: each chunk of a summary fits one
#: page of rows, so an honest peer never needs more; a peer that serves its rows one at
#: a time ends the round for itself.
_ROW_PULLS_PER_SUMMARY = wire.MAX_SUMMARY // wire.SUMMARY_CHUNK + 1
#: One log line per peer and cause at most this often (pull failures, refused rows).
_LOG_INTERVAL_S = 60.0

log = logging.getLogger("veil.node.replication")


@dataclass(frozen=True, slots=True)
class _Round:
    """What a round works in, fixed when it starts (see the module note)."""

    consensus: Consensus
    swarm_id: int
    scope: bytes

    def holds(self, account: bytes) -> bool:
        """True if ``account`` (a raw owner key) is in this round's swarm."""
        return self.consensus.swarm_of(ring_position(account)).swarm_id == self.swarm_id


class AntiEntropy:
    """The pull rounds (see the module's note); :meth:`run` loops until cancelled."""

    def __init__(
        self,
        *,
        view: NetworkView,
        store: MessageStore,
        requests: PeerRequests,
        clock: Callable[[], int],
        config: ReplicationConfig,
        counters: ReplicationCounters,
        chains: ChainCache | None = None,
        store_replicas: Callable[[list[ReplicaMessage], bytes], Awaitable[list[bool]]]
        | None = None,
        held: HeldHashes | None = None,
    ) -> None:
        self.view = view
        #: How pulled copies are stored (with the peer that sent them): the service's
        #: (sessions' and rooms' checks), or the store's.
        self.store_replicas = store_replicas or (lambda ms, _: store.store_replicated(ms))
        self.store = store
        self.requests = requests
        self.clock = clock
        self.config = config
        self.counters = counters
        #: The storage service's cache of verified chains (owner proofs of delegated keys).
        self.chains = chains
        #: Messages stored here lately (held.py): most summary rows need no store read.
        self.held = held if held is not None else HeldHashes()
        self._wakeup = Wakeup()
        #: Rate-limited INFO lines about peers' failed pulls and refused rows.
        self._lines = PeerWarnings(interval_s=_LOG_INTERVAL_S)

    def start_round(self) -> None:
        """Run a round now (the ring or this node's swarm changed)."""
        self._wakeup.set()

    async def run(self) -> None:
        while True:
            # Jittered (0.5 to 1.5 intervals, the interval on average): the nodes of a
            # network start together, and rounds at a fixed interval stayed in step, so
            # every member's summaries were built and checked in the same instant.
            await self._wakeup.wait(self.config.sync_interval * random.uniform(0.5, 1.5))
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
        round_ = _Round(consensus, me.swarm_id, sync_scope(consensus, me.swarm_id))
        async with trio.open_nursery() as nursery:
            for peer in self.view.swarm_peers():
                nursery.start_soon(self._pull_from, peer, round_)

    async def _pull_from(self, peer: ConsensusNode, round_: _Round) -> None:
        await self._pull_pages(peer, round_, peer.node_id, {"summary": True}, self._take_summary)
        # Deletions and revocations are pulled after cursors of their own, kept as the
        # rows' is under the peer's ID with a suffix, so the three never replace each
        # other.
        await self._pull_pages(
            peer, round_, peer.node_id + _DELETIONS, {"deletions": True}, self._take_deletions
        )
        await self._pull_pages(
            peer,
            round_,
            peer.node_id + _REVOCATIONS,
            {"revocations": True},
            self._take_revocations,
        )

    async def _pull_pages(
        self,
        peer: ConsensusNode,
        round_: _Round,
        key: bytes,
        what: dict[str, bool],
        take: Callable[[ConsensusNode, ReplicaPage, _Round], Awaitable[None]],
    ) -> None:
        """Pull ``peer``'s pages of one kind (``what``: rows, deletions or revocations)
        after the cursor kept under ``key``, hand each to ``take``, and move the cursor
        past it. A failed pull ends this round (the next round starts from the cursor)."""
        scope = round_.scope
        cursor = await self.store.sync_cursor(key, scope)
        for _ in range(self.config.max_pages):
            self.counters.pulls += 1
            try:
                page = await self.requests.pull(peer, cursor, scope, **what)
                if page.next_seq < cursor:
                    raise ProtocolError("the page goes back before the cursor")
                if page.summary and page.summary[0].start < cursor:
                    raise ProtocolError("the summary starts before the cursor")
                # A summary's take pulls rows (and may fail as a pull does).
                await take(peer, page, round_)
            except VeilError as exc:
                self.counters.pull_failures += 1
                self._lines.warn(
                    log,
                    "pull_failed",
                    (peer.node_id, type(exc).__name__),
                    level=logging.INFO,
                    peer=peer.node_id_hex[:16],
                    error=str(exc),
                )
                return
            if page.next_seq != cursor:
                cursor = page.next_seq
                await self.store.set_sync_cursor(key, scope, cursor)
            if not page.more:
                return

    async def _take_summary(self, peer: ConsensusNode, page: ReplicaPage, round_: _Round) -> None:
        """Pull the rows of a summary page that this node lacks (see the module note):
        one page of rows after the start of each chunk that names one, unless a page
        pulled for an earlier chunk reached past it already. A failed pull of rows
        raises (the cursor stays before the summary; the next round asks again)."""
        if not page.summary:
            return
        starts = sorted({e.start for e in page.summary})
        ends = dict(zip(starts, [*starts[1:], page.next_seq], strict=True))
        wanted: set[int] = set()
        for entry in page.summary:
            if entry.start in wanted or not round_.holds(entry.account):
                continue
            if await self._holds(entry.account, entry.namespace, entry.hash, entry.expiry_ms):
                self.counters.summary_held += 1
            else:
                wanted.add(entry.start)
        covered = -1
        budget = _ROW_PULLS_PER_SUMMARY
        for start in sorted(wanted):
            after = max(start, covered)
            while after < ends[start]:
                if budget == 0:
                    raise ProtocolError("a summary's rows take too many pages")
                budget -= 1
                self.counters.pulls += 1
                rows = await self.requests.pull(peer, after, round_.scope)
                if rows.next_seq <= after:
                    break  # nothing more there (rows deleted since the summary)
                await self._take_rows(peer, rows, round_)
                after = covered = rows.next_seq
                if not rows.more:
                    break

    async def _holds(self, account: bytes, namespace: int, hash: bytes, expiry_ms: int) -> bool:
        """True if a live copy of this message is here, expiring no earlier than
        ``expiry_ms`` (a copy with a later expiry would extend ours: worth pulling)."""
        if self.held.holds(hash, expiry_ms):
            return True
        try:
            owner = owner_of_key(account)
        except InvalidId:
            return False  # pulled, it is refused as a bad owner (and counted)
        held = await self.store.get(owner, namespace, hash)
        return held is not None and held.expiry_ms >= expiry_ms

    async def _take_rows(self, peer: ConsensusNode, page: ReplicaPage, round_: _Round) -> None:
        """Check and store the rows of a page that are this node's and not held here
        (a held copy was checked when it was stored; checking it again, the owner's
        proof included, was most of a pull's cost)."""
        fresh = [
            m
            for m in page.messages
            if round_.holds(m.account)
            and not await self._holds(m.account, m.namespace, m.hash, m.expiry_ms)
        ]
        mine = self._checked(peer, fresh)
        if mine:
            created = await self.store_replicas(mine, peer.node_id)
            self.held.note(mine)
            self.counters.pulled += sum(created)

    async def _take_deletions(self, peer: ConsensusNode, page: ReplicaPage, round_: _Round) -> None:
        """Apply the signed deletes we missed (see :meth:`_apply`)."""
        for request in page.deletes:
            await self._apply(peer, request, round_)

    async def _take_revocations(
        self, peer: ConsensusNode, page: ReplicaPage, round_: _Round
    ) -> None:
        """Verify each revocation record again and keep it (see the module note)."""
        for record in page.revocations:
            await self._keep_revocation(peer, record, round_)

    def _refused(self, peer: ConsensusNode, exc: VeilError) -> None:
        """Count a refused row, deletion or revocation of ``peer``'s; log it (limited)."""
        self.counters.pull_refused += 1
        self._lines.warn(
            log,
            "pulled_refused",
            (peer.node_id, type(exc).__name__),
            level=logging.INFO,
            peer=peer.node_id_hex[:16],
            error=str(exc),
        )

    async def _keep_revocation(self, peer: ConsensusNode, record: bytes, round_: _Round) -> None:
        """Keep a revocation record a peer holds, once verified here (as a client's
        ``revoke``), for an account of this swarm."""
        skew = self.config.clock_skew_ms
        try:
            revocation = verify_revocation(
                record, now_ms=self.clock(), skew_ms=skew, is_revoked=self.store.is_revoked
            )
            owner = revocation.owner
            if not isinstance(owner, AccountId):
                raise ProtocolError("only accounts' revocations are kept by a swarm")
        except VeilError as exc:
            self._refused(peer, exc)
            return
        if not round_.holds(owner_key(owner)):
            return
        created = await self.store.store_revocation(
            owner,
            revocation.link,
            revocation.encoded,
            revocation.expires_ms + skew,
            revocation.expires_ms + rpc.MAX_TTL_PRIVATE_MS + 2 * skew,
        )
        self.counters.revocations_pulled += int(created)

    async def _apply(self, peer: ConsensusNode, request: bytes, round_: _Round) -> None:
        """Apply a delete or delete_all a peer executed: only the owner's signed request
        (checked as a client's, except its age: it is applied as of its signed time, so
        it deletes nothing stored after it), for an account of this swarm, once."""
        try:
            req = rpc.decode_request(request)
            if not isinstance(req, rpc.DeleteRequest | rpc.DeleteAllRequest):
                raise ProtocolError("only deletes and delete_alls are kept as deletions")
            if req.auth is None:
                raise Unauthorized("a deletion must be signed by the owner")
            if isinstance(req.account, GroupId):
                GroupGuard.check_shape(req)  # a session's records are never deleted
            RoomGuard.check_shape(req)  # nor a room's by request
            # The signature, its key and its method; not its age (the clock is its own).
            # A delegated key's delete is judged by its chain at its signed time, and
            # refused once the chain is known revoked here (its time is the key
            # holder's claim: a revoked key could otherwise backdate one).
            rpc.verify_request(
                req, req.auth.timestamp_ms, is_revoked=self.store.is_revoked, chains=self.chains
            )
        except VeilError as exc:
            self._refused(peer, exc)
            return
        if not round_.holds(owner_key(req.account)):
            return
        hashes = req.hashes if isinstance(req, rpc.DeleteRequest) else None
        deleted = await self.store.apply_deletion(
            req.account,
            req.namespace,
            hashes,
            signed_ms=req.auth.timestamp_ms,
            digest=deletion_digest(req),
            request=request,
            until_ms=deletion_until(req),
            keep=rpc.ROOM_NAMESPACE,
        )
        self.counters.deletions_applied += deleted

    def _checked(self, peer: ConsensusNode, messages: list[ReplicaMessage]) -> list[ReplicaMessage]:
        """The messages of a page that keep the protocol's rules, the owner's proof
        included (:func:`~veil.onion.replication_frames.check_message`): a page is data
        from a peer, checked as a push is. One that does not is dropped and counted, and
        the cursor moves past it (asking again would get the same row)."""
        now = self.clock()
        good: list[ReplicaMessage] = []
        for m in messages:
            try:
                wire.check_message(
                    m,
                    now_ms=now,
                    skew_ms=self.config.clock_skew_ms,
                    is_revoked=self.store.is_revoked,
                    chains=self.chains,
                )
            except VeilError as exc:
                self._refused(peer, exc)
                continue
            good.append(m)
        return good
