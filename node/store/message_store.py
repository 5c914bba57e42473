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
sweeper task deletes expired rows every ``sweep_interval`` seconds (trio's clock), at
most ``sweep_batch`` rows per transaction, each batch a separate write through the
writer, so a large sweep never holds other writes back for long.

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
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import trio

from veil.onion import crypto, rpc
from veil.onion.keys import OwnerId, owner_key
from veil.onion.replica import ReplicaMessage, ReplicaPage

from ..errors import StoreClosed, StoreError
from . import reads, writes
from .records import Clock, StoredMessage, StoredPage, StoreOutcome, StoreStats
from .schema import connect, migrate
from .writer import BatchWriter

__all__ = ["MessageStore", "deletion_digest", "deletion_until", "open_store"]

log = logging.getLogger("veil.node.storage")


@dataclass(eq=False, slots=True)
class _Watch:
    event: trio.Event = field(default_factory=trio.Event)
    users: int = 0


class MessageStore:
    """The message store; get one with :func:`open_store`, which runs its tasks.

    Every method takes the account as an :class:`~veil.onion.keys.AccountId` and a
    namespace (an int; range checks are the RPC layer's job). Times are ms from the
    store's clock.
    """

    def __init__(
        self,
        path: Path,
        *,
        clock: Clock,
        synchronous: Literal["FULL", "NORMAL"],
        queue_size: int,
        max_batch: int,
        sweep_batch: int,
    ) -> None:
        self.path = path
        self.clock = clock
        self._synchronous = synchronous
        self._sweep_batch = sweep_batch
        self._writer = BatchWriter(queue_size=queue_size, max_batch=max_batch, notify=self._notify)
        # Bound once: a store's path is a few calls deep, each lookup saved counts.
        self._submit = self._writer.submit
        self._writer_conn: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._watches: dict[tuple[bytes, int], _Watch] = {}
        self._swept = 0
        self._sweep_batches = 0
        #: The revoked links: digest -> (account key, kept until ms). See the module note.
        self._revoked: dict[bytes, tuple[bytes, int]] = {}

    # --- opening and closing (called by open_store) ---------------------------------

    def _open(self) -> None:
        """Open both connections and bring the schema up to date (worker thread).

        Raises :class:`StoreError`; SQLite's own errors are re-raised as one, with the
        same message.
        """
        try:
            self._writer_conn = conn = connect(self.path, self._synchronous, read_only=False)
            migrate(conn, self.path)
            self._writer.rows = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
            self._writer.cursor = conn.cursor()
            self._reader = connect(self.path, self._synchronous, read_only=True)
            for account, link, until in reads.revoked_links(self._reader, self.clock()):
                self._revoked[link] = (account, until)
        except sqlite3.Error as exc:
            self._close_connections()
            raise StoreError(str(exc)) from exc
        except BaseException:
            self._close_connections()
            raise

    def _close_connections(self) -> None:
        for conn in (self._reader, self._writer_conn):
            if conn is not None:
                try:
                    conn.close()
                except sqlite3.Error:  # pragma: no cover - closing is best effort
                    log.exception("closing the store's connection failed")
        self._reader = self._writer_conn = self._writer.cursor = None

    # --- writes (through the writer; see writer.py for cancel and errors) -------------

    async def store(
        self,
        account: OwnerId,
        namespace: int,
        hash: bytes,
        data: bytes,
        expiry_ms: int,
        proof: bytes | None = None,
    ) -> StoreOutcome:
        """Store a message until ``expiry_ms``; deduplicated by ``hash``. ``proof``: the
        owner's signed store (onion/rpc/proof.py), kept for replication; None in the
        inbox.

        Returns after the COMMIT. See :meth:`BatchWriter.submit` for cancel and errors.
        """
        return await self._submit(
            writes.store_message(
                owner_key(account), namespace, hash, data, self.clock(), expiry_ms, proof
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

    async def record_deletion(
        self, account: OwnerId, digest: bytes, request: bytes, until_ms: int
    ) -> bool:
        """Keep the owner's signed delete or delete_all ``request`` for anti-entropy
        until ``until_ms``; False if it was kept already."""
        return await self._submit(
            writes.record_deletion(owner_key(account), digest, request, until_ms)
        )

    async def apply_deletion(
        self,
        account: OwnerId,
        namespace: int | None,
        hashes: Sequence[bytes] | None,
        *,
        signed_ms: int,
        digest: bytes,
        request: bytes,
        until_ms: int,
    ) -> int:
        """Apply a deletion another member executed, as of its signed time (see
        :func:`~veil.node.store.writes.apply_deletion`); how many rows it deleted here.
        One transaction (a delete_all of a large account holds the writer that long)."""
        return await self._submit(
            writes.apply_deletion(
                owner_key(account),
                namespace,
                None if hashes is None else list(hashes),
                signed_ms,
                digest,
                request,
                until_ms,
                self.clock(),
            )
        )

    async def store_revocation(
        self, account: OwnerId, link: bytes, record: bytes, link_expiry_ms: int, until_ms: int
    ) -> bool:
        """Keep a verified revocation ``record`` of the delegated link ``link`` (served to
        peers until ``link_expiry_ms``, kept until ``until_ms``); from the commit on,
        :meth:`is_revoked` answers True for the link. False if the link was revoked here
        already (the record kept first stays)."""
        created = await self._submit(
            writes.store_revocation(owner_key(account), link, record, link_expiry_ms, until_ms)
        )
        known = self._revoked.get(link)
        if known is None or known[1] < until_ms:
            self._revoked[link] = (owner_key(account), until_ms)
        return bool(created)

    def is_revoked(self, link: bytes) -> bool:
        """Whether a revocation of the delegated link ``link`` (its digest) is kept here:
        a dict lookup (the index is in memory; see the module note)."""
        return link in self._revoked

    def revocations(self) -> int:
        """How many revoked links are kept (a gauge)."""
        return len(self._revoked)

    def revoked_accounts(self) -> dict[bytes, set[bytes]]:
        """The accounts (32-byte keys) with revocations kept here, and their revoked
        links (from the index in memory; for a handover)."""
        accounts: dict[bytes, set[bytes]] = {}
        for link, (account, _) in self._revoked.items():
            accounts.setdefault(account, set()).add(link)
        return accounts

    async def account_revocations(self, account: bytes) -> list[bytes]:
        """The revocation records of ``account`` (its 32-byte key) whose link could
        still be used, in arrival order: what a handover sends to its new swarm."""
        await trio.lowlevel.checkpoint()
        return reads.account_revocations(self._reader_or_raise(), account, self.clock())

    async def delete_all(self, account: OwnerId, namespace: int | None) -> int:
        """Delete all the account's messages in ``namespace`` (None: every namespace),
        each leaving a tombstone.

        Runs as several transactions of at most ``sweep_batch`` rows, so that a large
        account does not hold other writes back; returns how many rows were deleted. If
        cancelled or failing part-way, the batches already committed stay deleted.
        """
        key = owner_key(account)
        total = 0
        while True:
            n = await self._submit(
                writes.delete_all_batch(key, namespace, self.clock(), self._sweep_batch)
            )
            total += n
            if n < self._sweep_batch:
                return total

    async def remember_request(self, digest: bytes, until_ms: int) -> bool:
        """Note that a signed request (its ``digest``) is executed, until ``until_ms``;
        False if it was already (then do not execute it again). Kept across restarts."""
        return await self._submit(writes.remember_request(digest, until_ms, self.clock()))

    async def forget_request(self, digest: bytes) -> None:
        """Undo :meth:`remember_request` (the request failed; it may come again)."""
        await self._submit(writes.forget_request(digest))

    async def expire(
        self, account: OwnerId, namespace: int, hashes: Sequence[bytes], expiry_ms: int
    ) -> list[bytes]:
        """Set the expiry of these (unexpired) messages; return the hashes updated."""
        return await self._submit(
            writes.expire_messages(
                owner_key(account), namespace, hashes, expiry_ms, self.clock()
            )
        )

    async def store_replicated(self, messages: Sequence[ReplicaMessage]) -> list[bool]:
        """Store messages that another node holds, keeping their timestamp and expiry.

        One write (one transaction) for the whole list; returns, per message, whether it
        was new here. Deduplicated as :meth:`store`: a live copy keeps the later expiry,
        an expired copy is replaced; a message whose expiry has passed is skipped (False).
        The caller has checked every field (node/replication/). Long-polls on a
        new message's (account, namespace) wake up. Cancel and errors as :meth:`store`.
        """
        return await self._submit(writes.store_replicas(list(messages), self.clock()))

    async def delete_replicas(self, account: bytes, items: Sequence[tuple[int, bytes]]) -> int:
        """Delete these ``(namespace, hash)`` messages of ``account`` (its 32-byte key), as
        a handover does once another swarm holds them; returns how many were there."""
        return await self._submit(writes.delete_replicas(account, list(dict.fromkeys(items))))

    async def set_sync_cursor(self, peer: bytes, scope: bytes, seq: int) -> None:
        """Remember that ``peer``'s rows up to ``seq`` were pulled for ``scope``; cursors of
        this peer for other scopes are dropped (a node keeps one scope at a time)."""
        await self._submit(writes.set_sync_cursor(peer, scope, seq))

    async def sweep(self) -> int:
        """Delete every expired row now, ``sweep_batch`` rows per transaction.

        Returns the number deleted. Cancel or error: batches already committed stay.
        """
        total = 0
        while True:
            now = self.clock()
            n = await self._submit(
                writes.delete_rows(
                    "DELETE FROM messages WHERE seq IN"
                    " (SELECT seq FROM messages WHERE expiry <= ? LIMIT ?)",
                    (now, self._sweep_batch),
                )
            )
            self._sweep_batches += 1
            self._swept += n
            total += n
            if n < self._sweep_batch:
                break
        # Tombstones and executed requests past their time (not counted as messages).
        for table, key in (
            ("tombstones", "account, namespace, hash"),
            ("executed_requests", "digest"),
            ("deletions", "seq"),
            ("revocations", "seq"),
        ):
            while True:
                n = await self._submit(
                    writes.delete_rows(
                        f"DELETE FROM {table} WHERE ({key}) IN"  # noqa: S608
                        f" (SELECT {key} FROM {table}"
                        " WHERE expiry <= ? LIMIT ?)",
                        (self.clock(), self._sweep_batch),
                        counted=False,
                    )
                )
                if n < self._sweep_batch:
                    break
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
        return reads.get(
            self._reader_or_raise(), owner_key(account), namespace, hash, self.clock()
        )

    async def replica_page(
        self,
        after_seq: int,
        *,
        accept: Callable[[bytes], bool],
        limit: int,
        max_bytes: int,
        item_overhead: int = 0,
        scan_limit: int = 1024,
    ) -> ReplicaPage:
        """Unexpired messages with a seq after ``after_seq`` whose account key ``accept``
        takes, in seq order: what a peer pulls (anti-entropy).

        At most ``limit`` messages and ``max_bytes`` (``len(data) + item_overhead`` each,
        the first message always included), and at most ``scan_limit`` rows looked at,
        so a page costs little even when ``accept`` refuses most rows. Data is read only
        for the rows taken. ``next_seq`` is where the next page starts. A read on the trio
        thread with one checkpoint, before reading.
        """
        await trio.lowlevel.checkpoint()
        return reads.replica_page(
            self._reader_or_raise(),
            after_seq,
            self.clock(),
            accept,
            limit,
            max_bytes,
            item_overhead,
            scan_limit,
        )

    async def deletion_page(
        self,
        after_seq: int,
        *,
        accept: Callable[[bytes], bool],
        limit: int,
        max_bytes: int,
        scan_limit: int = 1024,
    ) -> ReplicaPage:
        """The signed deletions kept here (:meth:`record_deletion`) with a seq after
        ``after_seq`` whose account ``accept`` takes, in seq order, as a page whose
        ``deletes`` hold them (no messages): what a peer pulls to learn the deletes it
        missed. Limits as :meth:`replica_page` (the byte budget counts the requests)."""
        await trio.lowlevel.checkpoint()
        return reads.deletion_page(
            self._reader_or_raise(), after_seq, self.clock(), accept, limit, max_bytes, scan_limit
        )

    async def revocation_page(
        self,
        after_seq: int,
        *,
        accept: Callable[[bytes], bool],
        limit: int,
        max_bytes: int,
        scan_limit: int = 1024,
    ) -> ReplicaPage:
        """The revocation records kept here with a seq after ``after_seq`` whose account
        ``accept`` takes and whose link could still be used, in seq order, as a page
        whose ``revocations`` hold them (no messages): what a peer pulls to learn the
        revocations it missed. Limits as :meth:`deletion_page`."""
        await trio.lowlevel.checkpoint()
        return reads.revocation_page(
            self._reader_or_raise(), after_seq, self.clock(), accept, limit, max_bytes, scan_limit
        )

    async def account_replicas(
        self,
        account: bytes,
        after: tuple[int, int] = (-(2**15) - 1, 0),
        *,
        limit: int,
        max_bytes: int,
        item_overhead: int = 0,
    ) -> tuple[list[ReplicaMessage], tuple[int, int], bool]:
        """One account's unexpired messages after the cursor ``after`` = (namespace,
        seq), in that order (the index's): ``(messages, next cursor, more)``.

        For a handover, which walks one account at a time. Limits as
        :meth:`replica_page`. A read on the trio thread.
        """
        await trio.lowlevel.checkpoint()
        conn = self._reader_or_raise()
        return reads.account_replicas(
            conn, account, after, self.clock(), limit, max_bytes, item_overhead
        )

    async def accounts(self, after: bytes | None = None, *, limit: int) -> list[bytes]:
        """Up to ``limit`` account keys that have rows here (expired ones too), in key
        order, after ``after``. One index seek per account; a read on the trio thread."""
        await trio.lowlevel.checkpoint()
        return reads.accounts(self._reader_or_raise(), after, limit)

    async def sync_cursor(self, peer: bytes, scope: bytes) -> int:
        """The seq up to which ``peer``'s rows were pulled for ``scope`` (0: none yet)."""
        await trio.lowlevel.checkpoint()
        return reads.sync_cursor(self._reader_or_raise(), peer, scope)

    def stats(self) -> StoreStats:
        """Counters for metrics; cheap (no table scan), safe to call from the trio thread."""
        return StoreStats(
            messages=self._writer.rows,
            size_bytes=0 if self._reader is None else reads.size_bytes(self._reader),
            swept=self._swept,
            sweep_batches=self._sweep_batches,
            write_batches=self._writer.batches,
        )

    def _reader_or_raise(self) -> sqlite3.Connection:
        if self._reader is None:
            raise StoreClosed("the message store is closed")
        return self._reader

    # --- long-poll support -------------------------------------------------------------

    @contextmanager
    def watch(self, account: OwnerId, namespace: int) -> Iterator[trio.Event]:
        """An event set after the next commit that stores a new message here.

        Enter it before reading, then wait on the event if the read found nothing: a
        store that commits between the two still sets the event. The map of watched keys
        holds only keys that someone is watching (it is cleaned up on exit).
        """
        key = (owner_key(account), namespace)
        entry = self._watches.get(key)
        if entry is None:
            entry = self._watches[key] = _Watch()
        entry.users += 1
        try:
            yield entry.event
        finally:
            entry.users -= 1
            if entry.users == 0 and self._watches.get(key) is entry:
                del self._watches[key]

    def _notify(self, key: tuple[bytes, int]) -> None:
        """Wake the watchers of ``key`` (the writer calls it after a commit)."""
        entry = self._watches.pop(key, None)
        if entry is not None:
            entry.event.set()


def deletion_digest(req: rpc.DeleteRequest | rpc.DeleteAllRequest) -> bytes:
    """What names a signed delete or delete_all (in ``executed_requests`` and
    ``deletions``): a digest of its signature, which only the owner makes and which is
    the same for the same signed request (Ed25519 is deterministic and libsodium refuses
    malleated signatures)."""
    assert req.auth is not None  # deletes are always signed (verify_request)
    return crypto.hash32(req.auth.signature, b"veil/executed")


def deletion_until(req: rpc.DeleteRequest | rpc.DeleteAllRequest) -> int:
    """How long a signed deletion is kept for anti-entropy: until every message it could
    have deleted (stored up to its signed time, plus the clock skew) has expired."""
    assert req.auth is not None
    longest = rpc.MAX_TTL_PRIVATE_MS if req.namespace is None else rpc.max_ttl_ms(req.namespace)
    return req.auth.timestamp_ms + longest + 2 * rpc.CLOCK_SKEW_MS


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
    if queue_size < 1 or max_batch < 1 or sweep_batch < 1:
        raise ValueError("queue_size, max_batch and sweep_batch must be positive")
    store = MessageStore(
        Path(path),
        clock=clock,
        synchronous=synchronous,
        queue_size=queue_size,
        max_batch=max_batch,
        sweep_batch=sweep_batch,
    )
    await trio.to_thread.run_sync(store._open)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store._writer.run)
            sweeper = trio.CancelScope()

            async def run_sweeper() -> None:
                with sweeper:
                    await store._sweeper(sweep_interval)

            nursery.start_soon(run_sweeper)
            try:
                yield store
            finally:
                sweeper.cancel()
                # The writer ends once the queue is empty: pending writes are drained.
                store._writer.close()
    finally:
        store._writer.closed = True
        store._close_connections()
