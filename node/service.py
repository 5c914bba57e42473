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

Waiting slots (:class:`WaiterSlots`; issue 11: 10,000 unsigned retrieves of one
public-read namespace took every slot and the owner's own poll was refused):

* At most ``max_waiters`` polls wait at a time, node-wide.
* A *source* holds at most ``max_waiters_per_source`` of them, counted apart for signed
  and unsigned polls (so a source's unsigned polls never use up its signed ones' share).
  The source is what the node can tell about who sent the request, which for an onion
  request is the *previous hop*, not the client (onion routing hides that): the
  connecting address of a ``POST /onion`` (IPv6 by its /64, as the rate limit keys it,
  node/ratelimit.py) or the peer of the link the packet came on. A client that posts
  its packets to this node directly is its own source; clients behind a relay share the
  relay's share, which is why the share is a tenth of the cap and not less: an honest
  relay carries many clients, and a destination sees its polls arrive spread over the
  network's relays. A request with no known source (a test, an in-process caller) is
  not limited per source, only by the cap.
* A *signed* poll (it carries a verified signature: the account's owner, or a key the
  owner delegated) is never refused because of unsigned ones: at the cap it evicts the
  oldest unsigned waiter, which is answered at once with what it has (nothing, as a
  wait that ended), exactly what its client would get a little later anyway. Signing
  costs an account, but accounts are free, so signed polls are bounded too: by the
  per-source share and the cap. Only when every slot holds a signed poll is a signed
  poll refused.
* Refused polls get ``rate_limited`` at once (so a client backs off instead of
  spinning).

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

Metrics: :attr:`StorageService.counters` (requests by method and status, rate-limited
stores, waiting polls) and :meth:`StorageService.stats` (the store's counters).
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

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
from veil.onion.keys import GroupId, OwnerId, owner_key, owner_of_key
from veil.onion.wallclock import wall_clock_ms

from .groups import GroupGuard, GroupStates
from .ratelimit import TokenBucketLimiter
from .store import (
    MessageStore,
    ReplicaMessage,
    StoreStats,
    deletion_digest,
    deletion_until,
    open_store,
)

__all__ = [
    "ReplicationHook",
    "ServiceConfig",
    "ServiceCounters",
    "StorageService",
    "SwarmCheck",
    "WaiterSlots",
    "open_storage_service",
]

log = logging.getLogger("veil.node.storage")

#: Label used for requests that do not decode to a known method.
INVALID_METHOD = "invalid"


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """Tunables of the storage service (the node's config file fills these)."""

    #: Accepted distance between a signed request's timestamp and the node's clock.
    clock_skew_ms: int = rpc.CLOCK_SKEW_MS
    #: Inbox stores per second per recipient account, sustained.
    inbox_rate: float = 10.0
    #: Inbox stores per recipient account in a burst.
    inbox_burst: int = 100
    #: Token buckets kept at most (one per recently written inbox).
    max_buckets: int = 100_000
    #: Long-polls waiting at the same time, at most.
    max_waiters: int = 10_000
    #: Long-polls one source (the previous hop: an address or a link) may hold waiting,
    #: signed and unsigned counted apart; see the module note.
    max_waiters_per_source: int = 1_000
    #: Store options; see :func:`veil.node.store.open_store`.
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    queue_size: int = 1024
    max_batch: int = 512
    #: Seconds between sweeps (the name is the config file's key, ``[storage]``).
    sweep_interval: float = 30.0
    sweep_batch: int = 1000
    #: Verified capability chains kept (delegated keys), least recently used dropped.
    max_cached_chains: int = 10_000
    #: Encryption sessions' states kept in memory (least recently used dropped), and
    #: each session's record count and bytes (node/groups.py).
    max_group_states: int = 1024
    max_group_records: int = 2000
    max_group_bytes: int = 8 * 1024 * 1024
    max_group_cache_bytes: int = 64 * 1024 * 1024


@dataclass(slots=True)
class ServiceCounters:
    """Counters for the metrics code; read them, do not write them."""

    #: (method, status) -> requests answered; method is "invalid" if it did not decode.
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: Inbox stores refused by the rate limit.
    rate_limited: int = 0
    #: Long-polls waiting now (a gauge).
    waiting_polls: int = 0
    #: Unsigned long-polls ended early to make room for a signed one.
    evicted_polls: int = 0
    #: Messages newly stored (not counting duplicates).
    stored: int = 0
    #: Copies of sessions' records or messages refused from peers (node/groups.py).
    group_replicas_refused: int = 0


class SwarmCheck(Protocol):
    """Which accounts this node serves (node/swarm_guard.py's SwarmGuard)."""

    def check(self, account: OwnerId) -> None:
        """Return if ``account`` is this node's; raise Unavailable or WrongSwarm if not."""
        ...

    def get_swarm(self, account: OwnerId) -> rpc.GetSwarmResult:
        """``account``'s swarm; raise Unavailable or NotFound if there is none to give."""
        ...


class ReplicationHook(Protocol):
    """Copies new messages to the swarm's other members (node/replication/)."""

    async def replicate(self, message: ReplicaMessage) -> None:
        """Push ``message`` (just committed here); return within a bounded time. Never
        raises for the network's failures; cancellation just stops the wait."""
        ...

    async def forward(self, request: bytes) -> None:
        """Send a client's signed delete, delete_all or expire, or a revoke, executed
        here, to the swarm's other members; return within a bounded time, as
        :meth:`replicate`."""
        ...


@dataclass(eq=False, slots=True)
class _Slot:
    """One waiting poll's place; ``scope`` ends its wait when it is evicted."""

    key: tuple[bool, str] | None
    signed: bool
    scope: trio.CancelScope
    held: bool = True


class WaiterSlots:
    """The long-poll slots: the node-wide cap, the per-source share, and signed polls
    evicting unsigned ones (see the module note). Not thread-safe; trio tasks only."""

    def __init__(self, max_waiters: int, max_per_source: int) -> None:
        self.max_waiters = max_waiters
        self.max_per_source = max_per_source
        self.waiting = 0
        #: Unsigned polls evicted so far.
        self.evicted = 0
        #: (signed, source) -> polls waiting.
        self._per_source: Counter[tuple[bool, str]] = Counter()
        #: Unsigned polls waiting, oldest first (a dict keeps insertion order).
        self._unsigned: dict[_Slot, None] = {}

    def take(self, *, signed: bool, source: str | None, scope: trio.CancelScope) -> _Slot:
        """A slot for a poll waiting in ``scope``; raises RateLimited if there is none.

        A signed poll at the cap evicts the oldest unsigned one: its slot is freed here
        and its scope cancelled, so its wait ends and it answers with what it has."""
        key = None if source is None else (signed, source)
        if key is not None and self._per_source[key] >= self.max_per_source:
            raise RateLimited("too many long-polls from this source; poll later")
        if self.waiting >= self.max_waiters:
            if not signed or not self._unsigned:
                raise RateLimited("too many long-polls waiting on this node; poll later")
            oldest = next(iter(self._unsigned))
            self.release(oldest)
            oldest.scope.cancel()
            self.evicted += 1
        slot = _Slot(key, signed, scope)
        self.waiting += 1
        if key is not None:
            self._per_source[key] += 1
        if not signed:
            self._unsigned[slot] = None
        return slot

    def release(self, slot: _Slot) -> None:
        """Give ``slot`` back (once; a second call, after an eviction, does nothing)."""
        if not slot.held:
            return
        slot.held = False
        self.waiting -= 1
        if slot.key is not None:
            left = self._per_source[slot.key] - 1
            if left:
                self._per_source[slot.key] = left
            else:
                del self._per_source[slot.key]  # the map holds only sources waiting now
        if not slot.signed:
            del self._unsigned[slot]


class StorageService:
    """Answers storage RPC requests; get one with :func:`open_storage_service`."""

    def __init__(
        self, store: MessageStore, *, clock: Callable[[], int], config: ServiceConfig
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
                count = await self.store.delete_all(req.account, req.namespace)
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
        with the owner's proof outside the inbox (replication carries it)."""
        if req.namespace == rpc.INBOX and not self._buckets.allow(
            owner_key(req.account), trio.current_time()
        ):
            self.counters.rate_limited += 1
            raise RateLimited("too many messages to this inbox; try again later")
        expiry = now + req.ttl_ms
        proof = rpc.proof_of_request(req)
        outcome = await self.store.store(
            req.account, req.namespace, req.hash, req.data, expiry, proof
        )
        if outcome.created:
            self.counters.stored += 1
            if isinstance(req.account, GroupId):
                await self.groups.stored(req.account, req.namespace, req.data)
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

    async def store_replicas(self, messages: list[ReplicaMessage]) -> list[bool]:
        """Store copies from peers (through ``check_message`` already): a group's go
        through :meth:`GroupGuard.admit_replica` first (refused ones are dropped and
        counted); returns, per message *stored*, whether it was new here."""
        admitted: list[tuple[ReplicaMessage, GroupId | None]] = []
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
            else:
                admitted.append((m, None))
        if not admitted:
            return []
        created = await self.store.store_replicated([m for m, _ in admitted])
        for (m, group), new in zip(admitted, created, strict=True):
            if new and group is not None:
                await self.groups.stored(group, m.namespace, m.data)
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
        yield StorageService(store, clock=clock, config=config)
