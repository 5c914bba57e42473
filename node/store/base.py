"""The store's core: its two connections, the writer it submits to, long-poll watches.

Design note
-----------
:class:`StoreBase` is what every part of :class:`~veil.node.store.MessageStore` stands on
(node/store/message_store.py puts the parts together): it opens the write connection
and the read-only one in a worker thread and brings the schema up to date, owns the
:class:`~veil.node.store.writer.BatchWriter` that commits writes in batches, gives the
read connection to the reads (or :class:`~veil.node.errors.StoreClosed`), counts for
the metrics, and keeps the long-poll watches that the writer wakes after a commit. The
methods of each job are mixins on it: replication's (replication_methods.py), rooms'
(room_methods.py), a client's messages (message_store.py).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import trio

from veil.onion.keys import OwnerId, owner_key

from ..errors import StoreClosed, StoreError
from . import reads
from .checkpointer import Checkpointer
from .records import Clock, StoreStats
from .schema import connect, migrate
from .writer import BatchWriter

__all__ = ["StoreBase"]

log = logging.getLogger("veil.node.storage")

#: SQLite's default page size, which the store keeps (for journal_size_limit in bytes).
_PAGE_BYTES = 4096


@dataclass(eq=False, slots=True)
class _Watch:
    event: trio.Event = field(default_factory=trio.Event)
    users: int = 0


class StoreBase:
    """The message store's connections, writer and watches (see the module note)."""

    def __init__(
        self,
        path: Path,
        *,
        clock: Clock,
        synchronous: Literal["FULL", "NORMAL"],
        queue_size: int,
        max_batch: int,
        sweep_batch: int,
        sweep_budget_s: float,
        checkpoint_interval_s: float,
        wal_limit_pages: int,
        cache_kib: int,
    ) -> None:
        self.path = path
        self.clock = clock
        self._synchronous = synchronous
        self._sweep_batch = sweep_batch
        self._sweep_budget_s = sweep_budget_s
        self._cache_kib = cache_kib
        self._wal_limit_pages = wal_limit_pages
        self._checkpointer = Checkpointer(
            path, synchronous, interval_s=checkpoint_interval_s, wal_limit_pages=wal_limit_pages
        )
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

    def _open(self) -> None:
        """Open both connections and bring the schema up to date (worker thread).

        Raises :class:`StoreError`; SQLite's own errors are re-raised as one, with the
        same message.
        """
        try:
            self._writer_conn = conn = connect(self.path, self._synchronous, read_only=False)
            # Checkpoints are the checkpointer's (checkpointer.py), never in a COMMIT.
            conn.execute("PRAGMA wal_autocheckpoint=0")
            # When the WAL is rewound, its file is cut back to the checkpointer's bound.
            conn.execute(f"PRAGMA journal_size_limit={self._wal_limit_pages * _PAGE_BYTES}")
            # A page cache in KiB (negative: KiB, not pages); see the module's note.
            conn.execute(f"PRAGMA cache_size=-{self._cache_kib}")
            migrate(conn, self.path)
            self._writer.rows = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
            self._writer.cursor = conn.cursor()
            self._reader = connect(self.path, self._synchronous, read_only=True)
            for account, link, until in reads.revoked_links(self._reader, self.clock()):
                self._revoked[link] = (account, until)
            self._checkpointer.open()
        except sqlite3.Error as exc:
            self._close_connections()
            raise StoreError(str(exc)) from exc
        except BaseException:
            self._close_connections()
            raise

    def _close_connections(self) -> None:
        self._checkpointer.close()
        for conn in (self._reader, self._writer_conn):
            if conn is not None:
                try:
                    conn.close()
                except sqlite3.Error:  # pragma: no cover - closing is best effort
                    log.exception("closing the store's connection failed")
        self._reader = self._writer_conn = self._writer.cursor = None

    # --- for the metrics, and for the reads ------------------------------------------

    def stats(self) -> StoreStats:
        """Counters for metrics; cheap (no table scan), safe to call from the trio thread."""
        return StoreStats(
            messages=self._writer.rows,
            size_bytes=0 if self._reader is None else reads.size_bytes(self._reader),
            swept=self._swept,
            sweep_batches=self._sweep_batches,
            write_batches=self._writer.batches,
            checkpoint=self._checkpointer.stats(),
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
