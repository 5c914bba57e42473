"""The message store itself: its public methods, long-poll watches, the sweeper, open_store.

Design note
-----------
:class:`MessageStore` is the façade the node uses; the work is in its siblings: the
schema and its migrations (schema.py), the one writer task that commits writes in
batches (writer.py), the write functions it runs (writes.py) and the reads
(reads.py). This module ties them to trio: it opens the two connections in a worker
thread, submits writes, gives each read its one checkpoint, and :func:`open_store` owns
the nursery of the writer and the sweeper.

Durability: ``journal_mode=WAL`` with ``synchronous=FULL`` by default, so an
acknowledged message survives a kill -9 of the node *and* an OS crash or power loss (the
WAL is fsynced at every commit). ``synchronous=NORMAL`` is also durable against a crash
of the node process (the WAL is in the OS page cache before ``COMMIT`` returns) but an
OS crash may lose the last transactions; it is offered for nodes that prefer throughput.
With batching, FULL measured about 77,000 inserts/s here against 114,000 for NORMAL, so
FULL is the default: "acknowledged" should mean "stored".

``seq`` (the rowid) orders messages by arrival; "since hash H" means "after the seq of
H". An unknown ``after_hash`` (expired, deleted, never stored) returns from the start, as
Session does: the client deduplicates by hash, and a client that lost its place must not
lose messages.

Expiry: reads never return a row whose ``expiry`` (ms, the store's clock) has passed. A
sweeper task deletes expired rows every ``sweep_interval`` seconds (trio's clock), in
write transactions of their own (``alone``, node/store/writer.py), each at most
``sweep_batch`` rows and about ``sweep_budget_s`` (10 ms) of DELETE work, in
statements of 50 rows; the next one is queued only once the last has committed, so
the stores queued meanwhile commit between two of them. A store waits for one sweep
transaction at most, whatever the store's size. Issue 17 measured why
(``./scripts/bench scale``, 1 million messages, 100,000 of them expiring): with 1,000
rows per transaction sharing each store batch's transaction, and SQLite's automatic
checkpoint inside its COMMIT (60 ms of it; see checkpointer.py), the sweep took 12-19 s
and the longest store 0.4-1.4 s against a p99 of 28-121 ms before it. At 1 million a
random-key DELETE of 1,000 rows is 60-100 ms of work (page misses), so a row bound
alone is either too long at 1 million or needlessly short at 1 thousand; the time
budget keeps the wait about the same at every size and the row bound keeps a
transaction's WAL frames small. ``delete_all``'s batches are ``alone`` too. Measured
after (bench scale, quiet machine, against the code before in the run just before it):
the sweep 6.8 s (8.9 s), stores completed during it / before it 0.24 (0.12), but the
longest store during it 207 ms (185 ms) and its p99 174 ms (173 ms): the stall that is
left is not the shared transaction; not yet found (candidates: the checkpointer's I/O
beside the WAL's fsyncs, its RESTART at the WAL's bound).

Page cache: the write connection has a 64 MiB page cache (SQLite's default is 2 MB).
Each insert updates three B-trees at random keys (the table by seq is sequential; the
(account, namespace, seq) and (account, namespace, hash) indexes are not), so once
those indexes outgrow the cache nearly every insert reads pages back from the OS:
issue 17 measured the SQLite insert rate alone 3 times lower at 1 million messages
than at 1 thousand, and +25-49 % inserts at 1 million with 64 MiB. At 1 million the two
indexes are about 100 MB; 64 MiB holds every interior page and most leaves, and is a
bounded price (the pages are only allocated as they are read, so a small store uses
little of it). Measured after: stores/s at 1 million / at 1 thousand 0.87 (0.90
before, in the run just before, both quiet; 0.71-0.77 in the issue's runs), 2,290
stores/s at 1 million against 2,047, and the fill 14,401 inserts/s against 10,372.
The read connection keeps the default: a retrieve reads a few pages of one account,
and its time did not grow with the store (retrieve at 1 million / at 1 thousand: 1.08).

Replication support (node/replication/): :meth:`MessageStore.store_replicated` stores
messages another node holds with their original timestamp, expiry and owner proof
(deduplicated as a client's store), except a copy of a message deleted here: every
delete and delete_all leaves a tombstone per hash (table ``tombstones``), which lives
until every copy a peer could send has expired and is swept with expired rows, so no
push, pull or handover brings a deleted message back, across restarts;
:meth:`MessageStore.remember_request` keeps the signed requests that must act once (a
delete_all) while their signature is fresh; :meth:`MessageStore.record_deletion`,
:meth:`MessageStore.deletion_page` and :meth:`MessageStore.apply_deletion` keep, list
and apply (as of their signed time) the owners' signed deletes that anti-entropy
carries; :meth:`MessageStore.replica_page` lists rows after a seq for a peer that pulls
(anti-entropy), with the peer's cursor kept in ``sync_cursors``;
:meth:`MessageStore.accounts`, :meth:`MessageStore.account_replicas` and
:meth:`MessageStore.delete_replicas` walk and drop one account's rows for a handover.

Revocations (issue 12): :meth:`MessageStore.store_revocation` keeps a verified
revocation record of a delegated link (table ``revocations``, one per link, durable
before it returns), :meth:`MessageStore.is_revoked` answers from an index in memory
(link digest -> account and how long it is kept; loaded from SQLite when the store
opens, updated after each commit, pruned by the sweeps), so the check a delegated
request makes costs one dict lookup, and :meth:`MessageStore.revocation_page` lists the
records for a peer that pulls them. A link digest names its account (a link lists its
resources, whose owner is the account), so one map over every account is an index per
account.

Long-poll support: :meth:`MessageStore.watch` gives a :class:`trio.Event` that the
writer sets right after the commit of a batch that stored a new message for that
(account, namespace). Entering ``watch`` *before* reading closes the race between "read
found nothing" and "start waiting".

Errors: opening raises :class:`~veil.node.errors.StoreError` (the file cannot be opened
or read, no WAL mode, a newer schema); a write submitted to a closing store raises
:class:`~veil.node.errors.StoreClosed`; a write or read that SQLite fails raises its
``sqlite3.Error`` to the storage service, which answers ``internal`` and logs it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

import trio

from veil.onion import rpc
from veil.onion.keys import OwnerId, owner_key

from ..errors import StoreClosed
from . import reads, writes
from .records import Clock, RoomIndex, StoredMessage, StoredPage, StoreOutcome
from .replication_methods import ReplicationMethods, deletion_digest, deletion_until
from .room_methods import RoomMethods

__all__ = ["MessageStore", "deletion_digest", "deletion_until", "open_store"]

log = logging.getLogger("veil.node.storage")

#: Work per sweep transaction, about (seconds, plus its COMMIT): see the module note.
SWEEP_BUDGET_S = 0.010
#: How often the checkpointer looks at the WAL (node/store/checkpointer.py).
CHECKPOINT_INTERVAL_S = 0.5
#: The WAL's bound in pages (4 KiB each), past which a RESTART checkpoint rewinds it.
WAL_LIMIT_PAGES = 16_384
#: The write connection's page cache, KiB (see the module note).
CACHE_KIB = 65_536


class MessageStore(RoomMethods, ReplicationMethods):
    """The message store; get one with :func:`open_store`, which runs its tasks.

    Every method takes the account as an :class:`~veil.onion.keys.AccountId` and a
    namespace (an int; range checks are the RPC layer's job). Times are ms from the
    store's clock.
    """

    # --- a client's messages (through the writer; see writer.py for cancel and errors) --

    async def store(
        self,
        account: OwnerId,
        namespace: int,
        hash: bytes,
        data: bytes,
        expiry_ms: int,
        proof: bytes | None = None,
        room: RoomIndex | None = None,
    ) -> StoreOutcome:
        """Store a message until ``expiry_ms``; deduplicated by ``hash``. ``proof``: the
        owner's signed store (onion/rpc/proof.py), kept for replication; None in the
        inbox. ``room``: a room record's index entry (namespace -2, node/rooms/).

        Returns after the COMMIT. See :meth:`BatchWriter.submit` for cancel and errors.
        """
        return await self._submit(
            writes.store_message(
                owner_key(account), namespace, hash, data, self.clock(), expiry_ms, proof, room
            )
        )

    async def delete(
        self, account: OwnerId, namespace: int, hashes: Sequence[bytes]
    ) -> list[bytes]:
        """Delete these messages, leaving a tombstone for each hash (see the module
        note); return the hashes that were there (expired ones too)."""
        now = self.clock()
        unknown_until = now + rpc.max_ttl_ms(namespace) + rpc.CLOCK_SKEW_MS
        return await self._submit(
            writes.delete_messages(owner_key(account), namespace, hashes, now, unknown_until)
        )

    async def delete_all(
        self, account: OwnerId, namespace: int | None, *, keep: int | None = None
    ) -> int:
        """Delete all the account's messages in ``namespace`` (None: every namespace but
        ``keep``), each leaving a tombstone.

        Runs as several transactions of at most ``sweep_batch`` rows, so that a large
        account does not hold other writes back; returns how many rows were deleted. If
        cancelled or failing part-way, the batches already committed stay deleted.
        """
        key = owner_key(account)
        total = 0
        while True:
            n = await self._submit(
                writes.delete_all_batch(key, namespace, self.clock(), self._sweep_batch, keep),
                alone=True,
            )
            total += n
            if n < self._sweep_batch:
                return total

    async def expire(
        self, account: OwnerId, namespace: int, hashes: Sequence[bytes], expiry_ms: int
    ) -> list[bytes]:
        """Set the expiry of these (unexpired) messages; return the hashes updated."""
        return await self._submit(
            writes.expire_messages(owner_key(account), namespace, hashes, expiry_ms, self.clock())
        )

    # --- expiry --------------------------------------------------------------------------

    async def sweep(self) -> int:
        """Delete every expired row now, in transactions of their own (see the module
        note): each at most ``sweep_batch`` rows and about ``sweep_budget_s`` of work.

        Returns the number of messages deleted. Cancel or error: transactions already
        committed stay.
        """
        total = 0
        done = False
        while not done:
            n, done = await self._submit(
                writes.sweep_rows(
                    "messages", "seq", "expiry", self.clock(), self._sweep_batch,
                    self._sweep_budget_s,
                ),
                alone=True,
            )  # fmt: skip
            self._sweep_batches += 1
            self._swept += n
            total += n
        # Tombstones and executed requests past their time (not counted as messages).
        for table, key, until in (
            ("tombstones", "account, namespace, hash", "expiry"),
            ("executed_requests", "digest", "expiry"),
            ("deletions", "seq", "expiry"),
            ("revocations", "seq", "expiry"),
            ("deferred_copies", "account, namespace, hash", "until"),
        ):
            done = False
            while not done:
                _, done = await self._submit(
                    writes.sweep_rows(
                        table, key, until, self.clock(), self._sweep_batch,
                        self._sweep_budget_s, counted=False,
                    ),
                    alone=True,
                )  # fmt: skip
        now = self.clock()
        for link in [link for link, (_, until) in self._revoked.items() if until <= now]:
            del self._revoked[link]
        if total:
            log.debug("swept %d expired messages", total)
        return total

    async def _sweeper(self, interval_s: float) -> None:
        """Sweep every ``interval_s`` seconds (trio's clock) until cancelled.

        A failing sweep is logged and retried at the next tick; it never stops the node.
        """
        while True:
            await trio.sleep(interval_s)
            try:
                await self.sweep()
            except StoreClosed:
                return
            except Exception as exc:
                log.error("sweeping expired messages failed: %r", exc)

    # --- reads (trio thread, one checkpoint each, before reading; see reads.py) --------

    async def retrieve(
        self,
        account: OwnerId,
        namespace: int,
        *,
        after_hash: bytes | None = None,
        limit: int,
        max_bytes: int,
        item_overhead: int = 0,
    ) -> StoredPage:
        """Unexpired messages after ``after_hash`` in arrival order, paginated.

        At most ``limit`` messages, and at most ``max_bytes`` counting ``len(data) +
        item_overhead`` per message, except that the first message is always returned
        (so a single big message can always be fetched). ``more`` says whether another
        message follows. An unknown ``after_hash`` starts from the beginning.

        A small indexed read on the trio thread; it has one checkpoint, before reading.
        Raises ``sqlite3.Error`` if the database cannot be read.
        """
        await trio.lowlevel.checkpoint()
        return reads.retrieve(
            self._reader_or_raise(),
            owner_key(account),
            namespace,
            self.clock(),
            after_hash,
            limit,
            max_bytes,
            item_overhead,
        )

    async def get(self, account: OwnerId, namespace: int, hash: bytes) -> StoredMessage | None:
        """One unexpired message by hash, or None."""
        await trio.lowlevel.checkpoint()
        return reads.get(self._reader_or_raise(), owner_key(account), namespace, hash, self.clock())


@asynccontextmanager
async def open_store(
    path: str | Path,
    *,
    clock: Clock,
    synchronous: Literal["FULL", "NORMAL"] = "FULL",
    queue_size: int = 1024,
    max_batch: int = 512,
    sweep_interval: float = 30.0,
    sweep_batch: int = 1000,
    sweep_budget_s: float = SWEEP_BUDGET_S,
    checkpoint_interval_s: float = CHECKPOINT_INTERVAL_S,
    wal_limit_pages: int = WAL_LIMIT_PAGES,
    cache_kib: int = CACHE_KIB,
) -> AsyncIterator[MessageStore]:
    """Open (creating if needed) the store at ``path`` and run its writer and sweeper.

    ``clock`` gives wall-clock ms (expiry); ``sweep_interval`` is in seconds of trio's
    clock. On a normal exit the writer drains the writes still queued (their callers get
    their results) and both connections are closed. On cancel or error, a batch already
    running finishes; queued writes fail with :class:`StoreClosed`; connections close.
    Opening raises :class:`StoreError` (the file cannot be opened, not WAL, newer
    schema). Bad arguments (a bug in the caller) raise ``ValueError``.
    """
    if synchronous not in ("FULL", "NORMAL"):
        raise ValueError("synchronous is 'FULL' or 'NORMAL'")
    if min(queue_size, max_batch, sweep_batch, wal_limit_pages, cache_kib) < 1:
        raise ValueError(
            "queue_size, max_batch, sweep_batch, wal_limit_pages and cache_kib must be positive"
        )
    if not (sweep_budget_s > 0 and checkpoint_interval_s > 0):
        raise ValueError("sweep_budget_s and checkpoint_interval_s must be positive")
    store = MessageStore(
        Path(path),
        clock=clock,
        synchronous=synchronous,
        queue_size=queue_size,
        max_batch=max_batch,
        sweep_batch=sweep_batch,
        sweep_budget_s=sweep_budget_s,
        checkpoint_interval_s=checkpoint_interval_s,
        wal_limit_pages=wal_limit_pages,
        cache_kib=cache_kib,
    )
    await trio.to_thread.run_sync(store._open)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store._writer.run)
            checkpoints = trio.CancelScope()

            async def run_checkpointer() -> None:
                with checkpoints:
                    await store._checkpointer.run(lambda: store._writer.batches)

            nursery.start_soon(run_checkpointer)
            sweeper = trio.CancelScope()

            async def run_sweeper() -> None:
                with sweeper:
                    await store._sweeper(sweep_interval)

            nursery.start_soon(run_sweeper)
            try:
                yield store
            finally:
                sweeper.cancel()
                checkpoints.cancel()
                # The writer ends once the queue is empty: pending writes are drained.
                store._writer.close()
    finally:
        store._writer.closed = True
        store._close_connections()
