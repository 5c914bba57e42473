"""The store's one writer: writes queued, run in batches in a worker thread, one COMMIT each.

Design note
-----------
SQLite calls block, and trio must not block. Every write goes through ONE writer task
(:meth:`BatchWriter.run`) fed by a bounded trio memory channel. The writer takes every
write that is waiting (up to ``max_batch``) and runs them all in one
``trio.to_thread.run_sync`` call, inside one transaction. A thread hop per message costs
more than the insert itself (about 3,900 messages/s here, against about 15,000
batched), and one ``COMMIT`` per batch is what makes ``synchronous=FULL`` affordable
(group commit: under load, batches grow and the fsync is shared).

One failing write fails alone: the batch first runs with no ``SAVEPOINT`` (a savepoint
and its release cost two statements per write, a fifth of a small insert); if a write
raises, the transaction is rolled back and the batch runs again with each write in its
own ``SAVEPOINT``, so the failing write is rolled back alone and the others commit. (So
a write function may run twice: it must act only on the cursor it is given.) A failing
``COMMIT`` fails the whole batch.

Persist, then wake: a caller's ``await`` returns only after the ``COMMIT`` of its batch
(the node acknowledges nothing that is not on disk). The writer then wakes every caller
of the batch in one pass, by rescheduling each waiting task directly (no
:class:`trio.Event` per write). The channel is bounded (``queue_size``), so a flood of
writes makes writers wait (backpressure) instead of growing a queue without limit.

Large deletes run alone: a write submitted with ``alone=True`` (a sweep's or a
delete_all's batch) gets a transaction of its own. The writer takes it only as the
first write of a batch; met while filling a batch, it is held and runs right after
that batch. Before issue 17 the writer took whatever was queued, so during a sweep
every store batch also carried the sweep's next 1,000-row DELETE (and its COMMIT the
WAL checkpoint, see checkpointer.py): ``./scripts/bench scale`` measured the longest
store at 0.4-1.4 s during a sweep at 1 million messages; sweep writes alone, still
1,000 rows, 836 ms; alone and bounded (message_store.py) it is one short sweep
transaction and one store batch.

This is the store's hot path (node/store/message_store.py measures it): a write is a
small object with ``__slots__``, and the batch loop does no more than the bookkeeping
below.

Not done (issue 17): a persistent writer thread instead of one ``to_thread.run_sync``
per batch. A microbench of the hand-off alone measured 49 µs of CPU per call against
23 µs for a thread fed by a queue, and py-spy put the hand-off at 23 % of a loaded
node's samples (probably inflated by the GIL hand-off it shows); a batch carries many
writes under load, so it is a few µs per store. Not measured yet on ``./scripts/bench
node``'s store rate, so not changed: change it only with that measurement.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import trio

from ..errors import StoreClosed

__all__ = ["BatchWriter", "WriteFn"]

log = logging.getLogger("veil.node.storage")

T = TypeVar("T")

#: A write: run on the write connection's cursor inside the batch's transaction, it
#: returns ``(result, row_delta, notify)``: what the caller gets, how the row count
#: changed, and the (account, namespace) keys whose watchers to wake after the commit.
WriteFn = Callable[[sqlite3.Cursor], tuple[T, int, Sequence[tuple[bytes, int]]]]


class _Write:
    """One queued write: a :data:`WriteFn` and its outcome.

    ``fn`` may run twice (a batch in which a write failed is rolled back and run again,
    each write in its own SAVEPOINT), so it must act only on the cursor it is given.

    The caller waits with :meth:`wait`; the writer ends the wait with :meth:`finish` or
    :meth:`fail`, in the trio thread, by rescheduling the caller's task directly (cheaper
    than a :class:`trio.Event` per write, which this was: one wake per write, no parking
    lot).
    """

    __slots__ = ("alone", "delta", "done", "error", "fn", "notify", "ok", "task", "value")

    def __init__(
        self,
        fn: Callable[[sqlite3.Cursor], tuple[Any, int, Sequence[tuple[bytes, int]]]],
        alone: bool = False,
    ) -> None:
        self.fn = fn
        #: Runs in a transaction of its own (a sweep's or a delete_all's batch).
        self.alone = alone
        self.done = False
        #: The caller's task while it waits; None before it waits, after, or if it gave up.
        self.task: trio.lowlevel.Task | None = None
        self.ok = False
        self.value: Any = None
        self.error: BaseException | None = None
        self.delta = 0
        self.notify: Sequence[tuple[bytes, int]] = ()

    async def wait(self) -> None:
        """Return once the writer has finished or failed this write (trio thread).

        Cancel: the caller stops waiting (the write itself is not withdrawn).
        """
        if self.done:
            await trio.lowlevel.checkpoint()
            return
        self.task = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self.task = None  # the writer will not wake a task that gave up
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def finish(self) -> None:
        """Wake the caller: ``ok``/``value``/``error`` hold the outcome (trio thread)."""
        if not self.done:
            self.done = True
            task, self.task = self.task, None
            if task is not None:
                trio.lowlevel.reschedule(task)

    def fail(self, error: BaseException) -> None:
        if not self.done:
            self.ok = False
            self.error = error
            self.finish()


class BatchWriter:
    """The queue of writes and the task that commits them (see the module's note).

    After a batch commits, the writer adds each write's row delta to :attr:`rows` and
    calls ``notify(key)`` for each (account, namespace) key it names (the store wakes
    long-polls there), in the trio thread, before the write's caller wakes. :meth:`run`
    is the writer task; :meth:`close` ends it once the queue is drained.
    """

    def __init__(
        self,
        *,
        queue_size: int,
        max_batch: int,
        notify: Callable[[tuple[bytes, int]], None],
    ) -> None:
        self._max_batch = max_batch
        self._notify = notify
        self._send, self._recv = trio.open_memory_channel[_Write](queue_size)
        # One cursor for every write: a cursor per statement (conn.execute) costs about a
        # microsecond more per write, in the writer's thread. Set by the store once open.
        self.cursor: sqlite3.Cursor | None = None
        self.closed = False
        #: Rows in the table: set by the store once open, kept by the committed writes.
        self.rows = 0
        #: Write transactions committed since opened.
        self.batches = 0

    def close(self) -> None:
        """Refuse new writes; :meth:`run` ends once the queued ones are committed."""
        self._send.close()

    async def submit(self, fn: WriteFn[T], *, alone: bool = False) -> T:
        """Queue one write and wait for its batch's COMMIT; return its result.

        ``alone``: the write runs in a transaction of its own, never batched with others
        (a large delete: see the module's note), after the writes queued before it.

        Cancelled while waiting for room in the queue: the write is not queued. Cancelled
        after that: the write may still be committed (as with any request whose answer
        is lost); the caller just does not learn it. Raises :class:`StoreClosed` if the
        store is closing, ``sqlite3.Error`` if the write or its batch's COMMIT failed.
        """
        if self.closed:
            raise StoreClosed("the message store is closed")
        write = _Write(fn, alone)
        # As ``await send`` (a cancelled caller queues nothing), but without its trip
        # through the scheduler when the queue has room: the wait below yields anyway.
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            try:
                self._send.send_nowait(write)
            except trio.WouldBlock:
                await self._send.send(write)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise StoreClosed("the message store is closed") from None
        await write.wait()
        if write.error is not None:
            raise write.error
        return write.value

    async def run(self) -> None:
        """Run batches until the send side is closed and drained.

        On cancel: a batch already in its thread finishes (``to_thread`` is not
        abandoned, so no half-used connection is left behind) and its callers get their
        results; writes still in the queue fail with :class:`StoreClosed`.
        """
        held: _Write | None = None  # an ``alone`` write taken out after a batch began
        try:
            while True:
                if held is not None:
                    first, held = held, None
                else:
                    try:
                        first = await self._recv.receive()
                    except trio.EndOfChannel:
                        break
                batch = [first]
                while not first.alone and len(batch) < self._max_batch:
                    try:
                        write = self._recv.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    if write.alone:
                        held = write  # its own transaction, right after this batch
                        break
                    batch.append(write)
                try:
                    await trio.to_thread.run_sync(self._run_batch, batch)
                except Exception as exc:
                    # COMMIT (or BEGIN) failed: nothing of this batch is stored.
                    log.error("a write batch of %d failed: %r", len(batch), exc)
                    for write in batch:
                        write.fail(exc)
                    continue
                self.batches += 1
                # Every caller of the batch wakes in this one pass (no checkpoint between).
                for write in batch:
                    if write.ok:
                        self.rows += write.delta
                        for key in write.notify:
                            self._notify(key)
                    write.finish()
        finally:
            # After a normal end the queue is already empty. On cancel or error, fail what
            # is still queued, then close, so that blocked and later senders fail at once.
            self.closed = True
            if held is not None:
                held.fail(StoreClosed("the message store closed before this write"))
            while True:
                try:
                    pending = self._recv.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
                pending.fail(StoreClosed("the message store closed before this write"))
            self._recv.close()

    def _run_batch(self, batch: list[_Write]) -> None:
        """Run the batch in one transaction and COMMIT it (worker thread).

        Fast path: the writes run one after the other with no SAVEPOINT around each (two
        statements fewer per write, about a fifth of a small insert's cost). If one of
        them raises, the whole transaction is rolled back and the batch runs again with
        each write in its own SAVEPOINT (:meth:`_run_isolated`), so that exactly the
        failing write fails and the others commit. Raises if BEGIN or COMMIT fails
        (nothing of the batch is stored then).
        """
        db = self.cursor
        assert db is not None  # invariant: run() starts only after the store has opened
        db.execute("BEGIN IMMEDIATE")
        try:
            for write in batch:
                write.value, write.delta, write.notify = write.fn(db)
        except Exception:
            # Failures are rare (the RPC layer checked every field): pay for isolation
            # only then. The first pass's results are dropped with its transaction.
            if db.connection.in_transaction:
                db.execute("ROLLBACK")
            self._run_isolated(db, batch)
            return
        except BaseException:
            self._abandon(db, batch)
            raise
        try:
            db.execute("COMMIT")
        except BaseException:
            self._abandon(db, batch)
            raise
        for write in batch:
            write.ok = True

    def _run_isolated(self, db: sqlite3.Cursor, batch: list[_Write]) -> None:
        """The batch in one transaction, each write in its own SAVEPOINT (worker thread).

        A write that raises is rolled back to its savepoint and fails alone; the others
        commit. Raises if BEGIN, a savepoint statement or COMMIT fails.
        """
        db.execute("BEGIN IMMEDIATE")
        try:
            for write in batch:
                write.value, write.delta, write.notify = None, 0, ()
                write.error = None
                db.execute("SAVEPOINT w")
                try:
                    write.value, write.delta, write.notify = write.fn(db)
                except Exception as exc:
                    db.execute("ROLLBACK TO w")
                    db.execute("RELEASE w")
                    write.ok = False
                    write.error = exc
                else:
                    db.execute("RELEASE w")
                    write.ok = True
            db.execute("COMMIT")
        except BaseException:
            self._abandon(db, batch)
            raise

    @staticmethod
    def _abandon(db: sqlite3.Cursor, batch: list[_Write]) -> None:
        """Roll back what is left of a failed transaction; no write of it counts."""
        if db.connection.in_transaction:
            db.execute("ROLLBACK")
        for write in batch:
            write.ok = False
