"""The storage RPC service: request bytes in, reply bytes out, over the message store.

Design note
-----------
:meth:`StorageService.handle` is the whole interface: the HTTP server (or the onion
layer, for a request that arrived through a path) passes it the decrypted request body
and sends back what it returns. It never raises for bad input: every
:class:`~veil.onion.errors.VeilError` becomes an error reply with its wire status, anything
unexpected becomes ``internal`` (logged with its traceback but never its message, which
could quote request contents), and every reply carries ``t``, the node's clock in ms.
The one exception that leaves ``handle`` is :class:`trio.Cancelled`: when the caller is
cancelled (its client went away) there is nobody to answer.

Order of work for a request: decode and check (:func:`veil.onion.rpc.decode_request`, size
limit before parsing), authenticate (:func:`veil.onion.rpc.verify_request` against the
injected clock, about a minute of skew), rate-limit, execute, encode the reply. A store,
most of what a node answers, skips the method dispatch and has its reply assembled by
:func:`veil.onion.rpc.store_reply` (the same bytes as any ok reply); one clock reading serves
both the signature check and the new expiry.

Rate limit: stores into an inbox (namespace 0) are unsigned, so the node cannot tell
senders apart (onion routing hides even their address); the limit is per *recipient*
account, a token bucket (``inbox_rate`` per second, bursts of ``inbox_burst``) on trio's
clock, so that one inbox cannot be flooded into eating the node's disk. The bucket map
is bounded (``max_buckets``): the least recently used bucket is dropped first, and an
idle bucket has refilled anyway, so dropping it loses nothing.

Long-poll: a retrieve with ``wait`` > 0 that finds nothing waits, up to ``wait``
seconds, on the store's per-(account, namespace) event, which the store's writer sets
right after committing a new message there, so the poll returns at once with it. The
watch is taken before the first read, so a store committing in between is not missed.
Cancelling a waiting poll just ends it.

Waiting slots (issue 11): a node-wide cap, a per-source share, signed polls first, a
refusal ``rate_limited`` at once (node/service/waiters.py says why).

What a waiting poll holds: its decoded request and the store's watch; the caller
(node/onion_handler.py) drops the packet, whose size class is the sender's choice (up to
128 KiB), before it hands the payload here, so a poll holds memory at its real size
(measured with tracemalloc at the 128 KiB class: 139 KB a waiter before, about 7 KB
after; a node process's RSS, 240 polls over POST /onion: 172 KB a waiter before, 31 KB
after, the connection's buffers and tasks included). A packet that came on a link is
still held by node/link/serve.py's worker while it waits.

Swarms and replication (set by the node, node/app.py; both None for a bare service):
:attr:`StorageService.swarms` (node/swarm_guard.py) is asked, right after a request is
decoded and before its signature is checked, whether the account is this node's; it
raises ``unavailable`` (no consensus yet) or ``wrong_swarm`` with the account's swarm,
and answers ``get_swarm``. :attr:`StorageService.replication` (node/replication/) is
handed every message that a store *created*, after its commit and before the client is
answered; it returns once the push to the swarm's other members has completed or its
bounded timeout ran out (the ack rule is in node/replication/); outside the inbox the
message goes with its owner's proof (the store request's signature and TTL,
:func:`veil.onion.rpc.proof_of_request`), kept in the store, which every member checks.
A delete, delete_all or expire that succeeded here is forwarded the same way (the
client's own signed bytes, which each member verifies); one that arrives forwarded is
not forwarded again. A signed delete_all is executed once per node (remembered in the
store while its signature is fresh): a copy sent again answers ``deleted: 0``, since it
would otherwise delete what was stored after it.

Delegated session keys (issue 12): a signed request that carries a ``capability`` is
judged by its chain (:func:`veil.onion.rpc.verify_request`), against this node's clock
and skew, its revocations (:meth:`~veil.node.store.MessageStore.is_revoked`, an index in
memory) and :attr:`StorageService.chains`, a bounded cache of verified chains
(:class:`~veil.onion.capability.ChainCache`, ``max_cached_chains``), so a repeated
delegated request costs one signature check, as an owner-signed one does. A ``revoke``
request's record is verified (the same call) and kept durably (store table
``revocations``) until every message stored under the revoked link could have expired;
from then on every request under the link, or under a link below it, is refused
(``unauthorized``). A revoke is forwarded to the swarm's other members at once, as a
delete is, whether it was new here or not (a client that sends it again after a
failure reaches the members it missed); anti-entropy carries it to the rest.

Encryption sessions (issue 13): a request whose ``pubkey`` is a group ID (``03...``) is
checked by :attr:`StorageService.groups` (node/groups.py): namespaces 1 and 2 only,
the session's own revocations (its records, not the ``revoke`` RPC), its end, and each
record against the session's state; copies from peers go through
:meth:`StorageService.store_replicas`, which judges a group's the same way.

Rooms (issue 16): a request in an account's room namespace (-2) is checked by
:attr:`StorageService.rooms` (node/rooms/): an unsigned store is one room record,
judged against the room's records (the same bytes again answer as a store); ``delete``,
``delete_all`` and ``expire`` of it are refused, and an owner's ``delete_all`` of every
namespace leaves it; moderation records take effect on the store; copies from peers are
judged by the room's state, and those that cannot be judged yet wait in the store.

Metrics: :attr:`StorageService.counters` (requests by method and status, rate-limited
stores, waiting polls) and :meth:`StorageService.stats` (the store's counters).
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from veil.onion import __version__, rpc
from veil.onion.capability import ChainCache
from veil.onion.errors import (
    NotFound,
    ProtocolError,
    RateLimited,
    VeilError,
    wire_status,
)
from veil.onion.keys import AccountId, GroupId, OwnerId, owner_key, owner_of_key
from veil.onion.wallclock import wall_clock_ms

from ..groups import GroupGuard, GroupStates
from ..ratelimit import TokenBucketLimiter
from ..rooms import DEFAULT_POLICY, Judged, RoomGuard, RoomPolicy
from ..store import (
    MessageStore,
    ReplicaMessage,
    StoreStats,
    deletion_digest,
    deletion_until,
    open_store,
)
from .interfaces import ReplicationHook, ServiceConfig, ServiceCounters, SwarmCheck
from .waiters import WaiterSlots

__all__ = ["StorageService", "open_storage_service"]

log = logging.getLogger("veil.node.storage")

#: Label used for requests that do not decode to a known method.
INVALID_METHOD = "invalid"


class StorageService:
    """Answers storage RPC requests; get one with :func:`open_storage_service`."""

    def __init__(
        self,
        store: MessageStore,
        *,
        clock: Callable[[], int],
        config: ServiceConfig,
        room_policy: RoomPolicy = DEFAULT_POLICY,
    ) -> None:
        self.store = store
        self.clock = clock
        self.config = config
        self.counters = ServiceCounters()
        self._buckets = TokenBucketLimiter(
            config.inbox_rate, config.inbox_burst, config.max_buckets
        )
        self.waiters = WaiterSlots(config.max_waiters, config.max_waiters_per_source)
        #: Verified capability chains (delegated keys), by digest.
        self.chains = ChainCache(config.max_cached_chains)
        #: Encryption sessions' states and checks (node/groups.py).
        self.groups = GroupGuard(
            GroupStates(
                store,
                max_groups=config.max_group_states,
                max_records=config.max_group_records,
                max_bytes=config.max_group_bytes,
                max_total_bytes=config.max_group_cache_bytes,
                skew_ms=config.clock_skew_ms,
            ),
            clock,
            config.clock_skew_ms,
        )
        #: Rooms' states and checks (node/rooms/).
        self.rooms = RoomGuard(store, clock=clock, chains=self.chains, policy=room_policy)
        #: The swarm check; None: every account is served (a standalone node).
        self.swarms: SwarmCheck | None = None
        #: Where created messages go for replication; None: nowhere.
        self.replication: ReplicationHook | None = None

    def stats(self) -> StoreStats:
        """The store's counters (messages, size in bytes, sweeps); cheap."""
        return self.store.stats()

    async def handle(
        self, request: bytes, *, forwarded: bool = False, source: str | None = None
    ) -> bytes:
        """Answer one request (CBOR bytes) with one reply (CBOR bytes); never raises
        for bad input or a failing store: the reply carries the error's status.

        ``forwarded``: the request is a client's delete, delete_all or expire that a
        swarm peer executed and forwards (node/replication/); it is checked as any
        other (swarm, signature, clock) but not forwarded again.

        ``source``: who sent it, as far as the node can tell (the previous hop's address
        or link; see the module note); long-polls are limited per source. None: unknown
        (not limited per source).

        A long-poll retrieve may wait up to its ``wait`` seconds. On cancel,
        :class:`trio.Cancelled` propagates; a store already handed to the writer may
        still be committed.
        """
        method = INVALID_METHOD
        try:
            req = rpc.decode_request(request)
            method = req.method
            if self.swarms is not None and not isinstance(
                req, rpc.InfoRequest | rpc.GetSwarmRequest
            ):
                self.swarms.check(req.account)
            group = not isinstance(req, rpc.InfoRequest) and isinstance(req.account, GroupId)
            if group:
                self.groups.check_shape(req)
            else:
                self.rooms.check_shape(req)
            now = self.clock()
            proven = rpc.verify_request(
                req,
                now,
                self.config.clock_skew_ms,
                # A group's revocations are its records (checked by self.groups), not
                # the account revocations of the revoke RPC.
                is_revoked=None if group else self.store.is_revoked,
                chains=self.chains,
                # A member's retrieve signed by its own account key: its membership in
                # the session's state as this node holds it (node/groups.py).
                group_reader=await self.groups.reader(req) if group else None,
            )
            if group:
                await self.groups.check_request(req, proven)
            if type(req) is rpc.StoreRequest:
                # The hot path (most requests a node answers): no dispatch, and the reply
                # assembled by rpc.store_reply (the same bytes as ok_reply's).
                reply = rpc.store_reply(self.clock(), await self._store(req, now))
            elif type(req) is rpc.DeleteAllRequest and not await self._first_time(req):
                # Executed already (a copy of the owner's request, sent again while its
                # signature is fresh): it would delete what was stored since. Not again.
                reply = rpc.ok_reply(self.clock(), rpc.DeleteAllResult(0).to_wire())
            else:
                try:
                    result = await self._execute(req, source)
                except BaseException:
                    if type(req) is rpc.DeleteAllRequest:  # not done: it may come again
                        await self._forget(req)
                    raise
                if isinstance(req, rpc.DeleteRequest | rpc.DeleteAllRequest):
                    await self._record_deletion(req, request)
                if (
                    not forwarded
                    and self.replication is not None
                    and isinstance(
                        req,
                        rpc.DeleteRequest
                        | rpc.DeleteAllRequest
                        | rpc.ExpireRequest
                        | rpc.RevokeRequest,
                    )
                ):
                    # The client signed it (a revoke: its record is signed): every member
                    # checks that signature itself.
                    await self.replication.forward(request)
                reply = rpc.ok_reply(self.clock(), result.to_wire())
            status = "ok"
        except VeilError as exc:
            status = wire_status(exc)
            reply = rpc.error_reply(self.clock(), exc)
        except Exception as exc:
            # Type and where, never the message: it could quote request contents.
            log.error(
                "internal error in %s: %s\n%s",
                method,
                type(exc).__name__,
                "".join(traceback.format_tb(exc.__traceback__)),
            )
            status = "internal"
            reply = rpc.encode_reply(rpc.Reply("internal", self.clock(), error="internal error"))
        self.counters.requests[(method, status)] += 1
        return reply

    async def _execute(self, req: rpc.Request, source: str | None) -> rpc.Result:
        match req:
            case rpc.StoreRequest():
                return await self._store(req, self.clock())
            case rpc.RetrieveRequest():
                return await self._retrieve(req, source)
            case rpc.DeleteRequest():
                deleted = await self.store.delete(req.account, req.namespace, req.hashes)
                return rpc.DeleteResult(deleted)
            case rpc.DeleteAllRequest():
                # Every namespace but the room's (its records go by moderation or TTL).
                count = await self.store.delete_all(
                    req.account, req.namespace, keep=rpc.ROOM_NAMESPACE
                )
                return rpc.DeleteAllResult(count)
            case rpc.ExpireRequest():
                return await self._expire(req)
            case rpc.InfoRequest():
                return rpc.InfoResult.current(__version__)
            case rpc.RevokeRequest():
                return await self._revoke(req)
            case rpc.GetSwarmRequest():
                if self.swarms is None:
                    raise NotFound("a standalone node has no swarms: it stores every account")
                return self.swarms.get_swarm(req.account)
        raise AssertionError(f"unhandled request type {type(req).__name__}")  # pragma: no cover

    async def _revoke(self, req: rpc.RevokeRequest) -> rpc.RevokeResult:
        """Keep a revocation that :func:`~veil.onion.rpc.verify_request` verified: served
        to peers while the revoked link could be used (its expiry plus the skew), kept
        until every message stored under it could have expired (the proofs of
        replicated copies are checked against it)."""
        revocation = req.revocation
        skew = self.config.clock_skew_ms
        link_expiry = revocation.expires_ms + skew
        until = revocation.expires_ms + rpc.MAX_TTL_PRIVATE_MS + 2 * skew
        created = await self.store.store_revocation(
            req.account, revocation.link, req.record, link_expiry, until
        )
        return rpc.RevokeResult(created, until)

    async def _first_time(self, req: rpc.DeleteAllRequest) -> bool:
        """True the first time this node sees the signed ``req`` (remembered in the store
        while its signature passes the clock check, across restarts)."""
        auth = req.auth
        assert auth is not None  # verify_request: a delete_all is always signed
        return await self.store.remember_request(
            deletion_digest(req), auth.timestamp_ms + self.config.clock_skew_ms + 1
        )

    async def _record_deletion(
        self, req: rpc.DeleteRequest | rpc.DeleteAllRequest, request: bytes
    ) -> None:
        """Keep the owner's signed delete (as sent) for anti-entropy, so a member that
        missed it learns it (node/replication/), until every message it could have
        deleted has expired."""
        await self.store.record_deletion(
            req.account, deletion_digest(req), request, deletion_until(req)
        )

    async def _forget(self, req: rpc.DeleteAllRequest) -> None:
        """Best effort, bounded, even while cancelled: a delete_all that failed may be
        sent again (a failure here only means a retry deletes nothing more)."""
        with trio.move_on_after(1.0) as scope, contextlib.suppress(Exception):
            scope.shield = True
            await self.store.forget_request(deletion_digest(req))

    async def _store(self, req: rpc.StoreRequest, now: int) -> rpc.StoreResult:
        """Store ``req``'s message until ``now`` (the node's clock, ms) plus its TTL,
        with the owner's proof outside the inbox (replication carries it); a room
        record once the room's rules take it (node/rooms/)."""
        if req.namespace == rpc.INBOX and not self._buckets.allow(
            owner_key(req.account), trio.current_time()
        ):
            self.counters.rate_limited += 1
            raise RateLimited("too many messages to this inbox; try again later")
        room: Judged | None = None
        if req.namespace == rpc.ROOM_NAMESPACE and isinstance(req.account, AccountId):
            judged = await self.rooms.judge_store(req)
            if isinstance(judged, rpc.StoreResult):
                return judged  # the same record, stored before: a client's retry
            room = judged
        expiry = now + req.ttl_ms
        proof = rpc.proof_of_request(req)
        outcome = await self.store.store(
            req.account,
            req.namespace,
            req.hash,
            req.data,
            expiry,
            proof,
            None if room is None else room.index,
        )
        if outcome.created:
            self.counters.stored += 1
            if isinstance(req.account, GroupId):
                await self.groups.stored(req.account, req.namespace, req.data)
            elif room is not None:
                assert isinstance(req.account, AccountId)
                await self.rooms.stored(req.account, room.record, outcome.expiry_ms)
            if self.replication is not None:
                replica_expiry = outcome.expiry_ms
                if proof is not None:  # what receivers accept (see onion/rpc/proof.py)
                    replica_expiry = min(replica_expiry, rpc.expiry_limit(rpc.decode_proof(proof)))
                await self.replication.replicate(
                    ReplicaMessage(
                        owner_key(req.account),
                        req.namespace,
                        outcome.hash,
                        req.data,
                        outcome.timestamp_ms,
                        replica_expiry,
                        proof,
                    )
                )
        return rpc.StoreResult(outcome.hash, outcome.expiry_ms, outcome.created)

    async def store_replicas(
        self, messages: list[ReplicaMessage], source: bytes | None = None
    ) -> list[bool]:
        """Store copies from peers (through ``check_message`` already): a group's go
        through :meth:`GroupGuard.admit_replica` first (refused ones are dropped and
        counted), room records through :meth:`RoomGuard.take_copies` (which keeps those
        it cannot judge yet); returns, per message *stored*, whether it was new here.
        ``source``: the peer that sent them (its node ID; None: unknown)."""
        admitted: list[tuple[ReplicaMessage, GroupId | None]] = []
        rooms: list[tuple[ReplicaMessage, AccountId]] = []
        for m in messages:
            owner = owner_of_key(m.account)
            if isinstance(owner, GroupId):
                try:
                    await self.groups.admit_replica(owner, m)
                except VeilError as exc:
                    self.counters.group_replicas_refused += 1
                    log.info("group replica refused: %s", wire_status(exc))
                    continue
                admitted.append((m, owner))
            elif m.namespace == rpc.ROOM_NAMESPACE:
                rooms.append((m, owner))
            else:
                admitted.append((m, None))
        created: list[bool] = []
        if admitted:
            created = await self.store.store_replicated([m for m, _ in admitted])
            for (m, group), new in zip(admitted, created, strict=True):
                if new and group is not None:
                    await self.groups.stored(group, m.namespace, m.data)
        if rooms:
            created += await self.rooms.take_copies(rooms, source or b"")
        return created

    async def _read(self, account: OwnerId, req: rpc.RetrieveRequest) -> rpc.RetrieveResult:
        found = await self.store.retrieve(
            account,
            req.namespace,
            after_hash=req.last_hash,
            limit=req.limit,
            max_bytes=rpc.RETRIEVE_MAX_BYTES,
            item_overhead=rpc.RETRIEVE_ITEM_OVERHEAD,
        )
        messages = [
            rpc.Message(m.hash, m.data, m.timestamp_ms, m.expiry_ms) for m in found.messages
        ]
        return rpc.RetrieveResult(messages, found.more)

    async def _retrieve(self, req: rpc.RetrieveRequest, source: str | None) -> rpc.RetrieveResult:
        with self.store.watch(req.account, req.namespace) as changed:
            # The watch is taken before this read: a commit after it sets `changed`.
            result = await self._read(req.account, req)
            if result.messages or req.wait_s == 0:
                return result
            waiters = self.waiters
            evicted = waiters.evicted
            with trio.move_on_after(req.wait_s) as scope:
                # Signed: verify_request has checked the signature (handle, before us).
                slot = waiters.take(signed=req.auth is not None, source=source, scope=scope)
                self.counters.evicted_polls += waiters.evicted - evicted
                self.counters.waiting_polls = waiters.waiting
                try:
                    await changed.wait()
                finally:
                    waiters.release(slot)
                    self.counters.waiting_polls = waiters.waiting
            return await self._read(req.account, req)

    async def _expire(self, req: rpc.ExpireRequest) -> rpc.ExpireResult:
        now = self.clock()
        latest = now + rpc.max_ttl_ms(req.namespace)
        if not now <= req.expiry_ms <= latest:
            raise ProtocolError(
                f"expiry must be between now ({now}) and {latest}, the longest TTL of "
                f"namespace {req.namespace}"
            )
        updated = await self.store.expire(req.account, req.namespace, req.hashes, req.expiry_ms)
        return rpc.ExpireResult(updated, req.expiry_ms)


@asynccontextmanager
async def open_storage_service(
    db_path: str | Path,
    *,
    clock: Callable[[], int] = wall_clock_ms,
    config: ServiceConfig | None = None,
    room_policy: RoomPolicy = DEFAULT_POLICY,
) -> AsyncIterator[StorageService]:
    """Open the message store at ``db_path`` and yield the service answering on it.

    ``clock`` is the node's wall clock in ms (injectable for tests); timeouts (long-poll,
    rate limits, sweeps) use trio's clock. On exit, writes still queued are committed
    and the store is closed; on cancel or error, queued writes fail and the store is
    closed (see :func:`veil.node.store.open_store`). Opening raises
    :class:`~veil.node.errors.StoreError` if the store cannot be opened.
    """
    config = config or ServiceConfig()
    async with open_store(
        db_path,
        clock=clock,
        synchronous=config.synchronous,
        queue_size=config.queue_size,
        max_batch=config.max_batch,
        sweep_interval=config.sweep_interval,
        sweep_batch=config.sweep_batch,
    ) as store:
        yield StorageService(store, clock=clock, config=config, room_policy=room_policy)
