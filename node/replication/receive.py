"""Receiving replication: a peer's push, pull or forward answered with a sealed frame.

Design note
-----------
A request frame is opened, then checked against the frames already accepted from its
sender (:class:`~veil.onion.replication_frames.ReplayGuard`): a copy is refused
``replayed`` (409). A push is accepted from any node listed in the consensus (a handover
comes from outside the swarm); each message must keep the protocol's rules
(:func:`~veil.onion.replication_frames.check_message`: the hash recomputed, the TTL
limit, and outside the inbox the owner's proof, verified, allowing the expiry), else the
message is refused (named in the answer as refused, not stored, counted by its status:
``bad_request``, or ``unauthorized`` for a proof) while the others of its batch are
judged on their own (issue 17: a batch carries several clients' stores), and a push
whose every message breaks a rule is refused whole with the first one's error; only
messages whose account maps to this node's swarm are stored; the others are named in
the answer as refused, and a push with none of this swarm's accounts is refused whole
(``wrong_swarm``). The store skips a copy of a message deleted here (its tombstone). A
pull is answered with the rows of the accounts in the *asker's* swarm (never an
owner-written row without its proof), and refused (503) if the asker names another
scope than this node's consensus gives it; the asker checks each message of the page as
a push (anti_entropy.py). A pull of deletions is answered, the same way, with the
owners' signed deletes this node executed (for the asker's accounts), which the asker
verifies before it applies them; a pull of revocations with the revocation records of
delegated links kept here (issue 12), which the asker verifies again. A forward (a
client's delete, delete_all or expire, or a revoke) is
accepted only from a member of this node's own swarm (a revoke from any listed node: a
handover sends the revocations of the accounts it moves, and the record is verified
here) and is executed by the storage service with its usual checks (the swarm, the
client's signature and clock), never forwarded again.

Every refusal is a typed :class:`~veil.onion.errors.VeilError` that the route answers
with its status, counted by wire status; nothing from a peer can crash the node. The
sealed answers are padded to the frame size classes as requests are; a refusal is a
plain-text HTTP error (it tells a watcher that a frame was refused, and why, but no
stored message's length).

Trust: a listed node (of any swarm) can add inbox messages to the accounts of the swarm
it pushes to (anyone may store there, as in Session); it cannot write into an
owner-written namespace (it has no owner's signature to show), stretch an expiry past
the signed TTL, bring back a message deleted here, delete anything the owner did not
sign a delete for, or make a frame act twice. A member
of the swarm can still withhold or delete its own copies. It cannot read what it is not
given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from veil.onion import crypto, rpc
from veil.onion import replication_frames as wire
from veil.onion.directory import Consensus, ConsensusNode
from veil.onion.errors import (
    ProtocolError,
    Unauthorized,
    Unavailable,
    VeilError,
    WrongSwarm,
    wire_status,
)
from veil.onion.keys import NodeKeys
from veil.onion.replica import ReplicaMessage, ReplicaPage

from ..config import ReplicationConfig
from ..network_view import NetworkView
from ..service import StorageService
from ..store import MessageStore
from .counters import ReplicationCounters
from .held import HeldHashes
from .ring import ring_position, sync_scope

__all__ = ["Receiver"]

#: What a ``replication_frames.open_*`` function returns (see Receiver._open).
_Opened = TypeVar("_Opened", wire.Push, wire.Pull, wire.Forward)

#: Request frames remembered per sender, at most (their digests, for the clock-skew
#: window): a listed peer pushes, pulls and forwards at most a few hundred frames a
#: second, so this is minutes of its traffic; over it, its frames are refused
#: (``rate_limited``) rather than a live digest forgotten.
MAX_FRAMES_PER_PEER = 100_000
#: Rows a summary's chunk looks at, at most (the store's scan limit): a chunk takes
#: SUMMARY_CHUNK rows, and most rows a peer holds are the asker's swarm's.
_SUMMARY_SCAN_ROWS = 8 * wire.SUMMARY_CHUNK


class Receiver:
    """Answers the three replication routes (see the module's note)."""

    def __init__(
        self,
        *,
        keys: NodeKeys,
        view: NetworkView,
        service: StorageService,
        clock: Callable[[], int],
        config: ReplicationConfig,
        counters: ReplicationCounters,
        held: HeldHashes | None = None,
    ) -> None:
        self.keys = keys
        #: Messages stored here lately (held.py), noted for anti-entropy.
        self.held = held if held is not None else HeldHashes()
        self.view = view
        self.service = service
        self.store: MessageStore = service.store
        self.clock = clock
        self.config = config
        self.counters = counters
        #: The request frames seen, per sender (see :meth:`_check_replay`).
        self._guard = wire.ReplayGuard(
            window_ms=config.clock_skew_ms, max_per_peer=MAX_FRAMES_PER_PEER, not_before_ms=clock()
        )

    def _lookup(self, node_id: bytes) -> ConsensusNode | None:
        return self.view.node(node_id)

    def _refused(self, exc: VeilError) -> None:
        status = wire_status(exc)
        self.counters.refused[status] = self.counters.refused.get(status, 0) + 1

    def _open(self, opener: Callable[..., _Opened], frame: bytes) -> _Opened:
        """Open a peer's request frame with ``opener`` (a ``replication_frames.open_*``):
        checked against our keys, the consensus and our clock, then against the frames
        already seen (:meth:`_check_replay`); raises its errors."""
        now = self.clock()
        opened = opener(
            frame, self.keys, self._lookup, now_ms=now, skew_ms=self.config.clock_skew_ms
        )
        self._check_replay(opened.sender, opened.digest, opened.sent_ms, now)
        return opened

    def _check_replay(self, sender: bytes, digest: bytes, sent_ms: int, now_ms: int) -> None:
        """Accept a request frame once (see
        :class:`~veil.onion.replication_frames.ReplayGuard`): a frame seen before is
        refused with :class:`~veil.onion.replication_frames.ReplayedFrame` (``replayed``,
        409). Checked after the frame's signature, so only listed nodes fill the guard."""
        self._guard.check(sender, digest, sent_ms, now_ms)

    async def handle_push(self, frame: bytes) -> bytes:
        """Answer a push (the body of ``POST /replicate``) with the sealed ack.

        Raises a :class:`~veil.onion.errors.VeilError` for the route to answer with its
        HTTP status: Unavailable (no consensus yet), the frame's errors (TooLarge,
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
            broken: VeilError | None = None
            for m in push.messages:
                try:
                    wire.check_message(
                        m,
                        now_ms=now,
                        skew_ms=self.config.clock_skew_ms,
                        is_revoked=self.store.is_revoked,
                        chains=self.service.chains,
                    )
                except VeilError as exc:
                    # One message of a batch that breaks a rule (a forged or revoked
                    # proof) is refused alone: the batch's others came from other
                    # clients' stores and are judged on their own.
                    broken = broken or exc
                    refused.append(m.hash)
                    continue
                if consensus.swarm_of(ring_position(m.account)).swarm_id == me.swarm_id:
                    accepted.append(m)
                else:
                    refused.append(m.hash)
            if broken is not None and not accepted:
                raise broken
            if refused and not accepted:
                raise WrongSwarm("none of these accounts is in this node's swarm")
            if broken is not None:
                self._refused(broken)  # counted by its status, as a whole refusal is
        except VeilError as exc:
            self._refused(exc)
            raise
        sender = consensus.node(push.sender)  # open_push found it in this consensus
        assert sender is not None
        created = await self.service.store_replicas(accepted, push.sender) if accepted else []
        self.held.note(accepted)
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

        if pull.summary:
            page = await self._summary_page(pull.after, accept)
        elif pull.revocations:
            page = await self.store.revocation_page(
                pull.after, accept=accept, limit=wire.MAX_MESSAGES, max_bytes=wire.BATCH_MAX_BYTES
            )
        elif pull.deletions:
            page = await self.store.deletion_page(
                pull.after, accept=accept, limit=wire.MAX_MESSAGES, max_bytes=wire.BATCH_MAX_BYTES
            )
        else:
            page = await self.store.replica_page(
                pull.after,
                accept=accept,
                limit=wire.MAX_MESSAGES,
                max_bytes=wire.BATCH_MAX_BYTES,
                item_overhead=wire.ITEM_OVERHEAD,
            )
        return wire.seal_page(self.keys, asker, pull.digest, page, now_ms=self.clock())

    async def _summary_page(self, after: int, accept: Callable[[bytes], bool]) -> ReplicaPage:
        """A summary of the rows after ``after`` (anti_entropy.py): up to
        :data:`~veil.onion.replication_frames.MAX_SUMMARY` entries, read in chunks of
        :data:`~veil.onion.replication_frames.SUMMARY_CHUNK` rows (and the batch's bytes),
        each entry naming its chunk's start, so that one page of rows pulled after it
        holds the whole chunk."""
        entries: list[wire.SummaryEntry] = []
        cursor = after
        more = True
        while more and len(entries) + wire.SUMMARY_CHUNK <= wire.MAX_SUMMARY:
            # The same rows a page pulled from the chunk's start would hold, without
            # their data (node/store: replica_summary).
            rows, next_seq, more = await self.store.replica_summary(
                cursor,
                accept=accept,
                limit=wire.SUMMARY_CHUNK,
                max_bytes=wire.BATCH_MAX_BYTES,
                item_overhead=wire.ITEM_OVERHEAD,
                scan_limit=_SUMMARY_SCAN_ROWS,
            )
            entries.extend(
                wire.SummaryEntry(cursor, account, namespace, hash_, expiry_ms)
                for account, namespace, hash_, expiry_ms in rows
            )
            if next_seq == cursor:
                break
            cursor = next_seq
        return ReplicaPage([], cursor, more, summary=tuple(entries))

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
            request = rpc.decode_request(fwd.request)
            # A revoke comes from the account's old swarm too (a handover): its record is
            # verified here, and any client may send it anyway.
            if sender.swarm_id != me.swarm_id and not isinstance(request, rpc.RevokeRequest):
                raise Unauthorized("only members of this node's swarm forward requests")
            if not isinstance(
                request,
                rpc.DeleteRequest | rpc.DeleteAllRequest | rpc.ExpireRequest | rpc.RevokeRequest,
            ):
                raise ProtocolError("only delete, delete_all, expire and revoke are forwarded")
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
