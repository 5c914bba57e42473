"""WAL checkpoints off the writer's commit path: a connection and a task of their own.

Design note
-----------
In WAL mode a COMMIT appends pages to the ``-wal`` file; a *checkpoint* copies them
back into the database file, after which the WAL is reused from its start. By default
SQLite checkpoints inside the COMMIT that takes the WAL past 1,000 pages, on the
committing connection, i.e. in the store's one writer, while every queued write waits.
``./scripts/bench scale`` (issue 17) measured it at 1 million messages: a 1,000-row
sweep DELETE's COMMIT took about 60 ms (281 ms the first time) with the checkpoint in
it and 15 ms with ``wal_autocheckpoint=0``, and the stores queued behind it waited.

So the write connection runs with ``wal_autocheckpoint=0`` and :class:`Checkpointer`
does the checkpoints from a third connection, in a worker thread, every
``interval_s`` seconds (trio's clock) if anything was committed since the last one:

* a ``PASSIVE`` checkpoint, which takes no lock that the writer waits for: it copies
  the frames committed before it began, while the writer goes on committing;
* the bound: under a steady load the writer commits during every passive checkpoint,
  so the WAL is never fully copied when the writer starts its next transaction, and
  SQLite only rewinds the WAL then; it would grow without limit. When a passive
  checkpoint leaves more than ``wal_limit_pages`` frames in the WAL, a ``RESTART``
  checkpoint follows: it waits for the writer's current transaction (busy handler),
  holds the next one back while it copies the frames left and syncs, and makes the
  next transaction rewind the WAL. Before it, up to four more passive checkpoints run
  back to back while more than 1/16 of the bound is left to copy, each copying what
  the writer committed during the one before, so the RESTART's stall covers a few
  frames, not the whole WAL nor an interval's. That stall is the price of a bounded
  WAL; it comes at most once per ``wal_limit_pages`` of writes. ``journal_size_limit``
  then truncates the file to that bound when it is rewound, so the disk it takes
  stays bounded too.

Durability is SQLite's own and unchanged: a checkpoint never removes a frame from the
WAL before the pages it holds are synced to the database file (this connection has the
store's ``synchronous`` level, so with FULL it syncs the WAL before copying and the
database file before the WAL may be rewound), and a COMMIT is durable as soon as its
frames are in the WAL (fsynced with FULL). A crash at any point of a checkpoint leaves
either the WAL frames or the copied pages, and the next open recovers from the WAL. So
acknowledged writes survive a kill -9 whatever the checkpointer was doing; only the
WAL's size depends on it (and the time to open the store after a crash: at most
``wal_limit_pages`` frames plus an interval's to read back).

On cancel: a checkpoint already in its thread finishes (``to_thread`` is not
abandoned), then the task ends; the store closes the connection. A failing checkpoint
is logged and tried again at the next tick; it never stops the node (the WAL then
grows until one succeeds: SQLite still reads and writes correctly meanwhile).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

import trio

from .records import CheckpointStats
from .schema import connect

__all__ = ["Checkpointer"]

log = logging.getLogger("veil.node.storage")

#: Passive checkpoints, at most, before a RESTART one (see Checkpointer.checkpoint).
_CATCH_UP_PASSES = 4


class Checkpointer:
    """Checkpoints the store's WAL from its own connection (see the module's note)."""

    def __init__(
        self, path: Path, synchronous: str, *, interval_s: float, wal_limit_pages: int
    ) -> None:
        self._path = path
        self._synchronous = synchronous
        self._interval_s = interval_s
        self._limit = wal_limit_pages
        self._conn: sqlite3.Connection | None = None
        self._passive = 0
        self._restarts = 0
        self._frames = 0  # in the WAL after the last checkpoint
        self._uncopied = 0  # of which not copied to the database file yet

    def open(self) -> None:
        """Open the checkpoint connection (worker thread); ``sqlite3.Error`` if it fails."""
        self._conn = connect(self._path, self._synchronous, read_only=False)

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.close()
            except sqlite3.Error:  # pragma: no cover - closing is best effort
                log.exception("closing the store's checkpoint connection failed")

    def stats(self) -> CheckpointStats:
        return CheckpointStats(self._passive, self._restarts, self._frames)

    def checkpoint(self) -> int:
        """One PASSIVE checkpoint, then a RESTART one if the WAL is past its bound
        (worker thread). Returns the frames left in the WAL; raises ``sqlite3.Error``."""
        conn = self._conn
        if conn is None:
            return 0
        # (busy, frames in the WAL, frames copied): the WAL's frames stay until the
        # writer rewinds it, copied or not.
        _busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self._passive += 1
        if frames > self._limit:
            # Catch up first with more passive checkpoints (each copies what the writer
            # committed during the one before), so that the RESTART, which holds the
            # writer back, has only a few frames left to copy.
            for _ in range(_CATCH_UP_PASSES):
                if frames - copied <= self._limit // 16:
                    break
                _busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                self._passive += 1
            # Every frame is copied and the writer will rewind the WAL at its next
            # BEGIN; busy (1) if the writer or a reader held on past the busy timeout.
            busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            self._restarts += 1
            if busy:
                log.warning("the WAL is past %d pages and could not be rewound yet", self._limit)
            else:
                frames = copied = 0  # all copied: the next write transaction rewinds it
        self._frames = max(frames, 0)
        self._uncopied = max(frames - copied, 0)
        return self._frames

    async def run(self, committed: Callable[[], int]) -> None:
        """Checkpoint every ``interval_s`` seconds if ``committed()`` (a count of
        transactions) moved since the last checkpoint; until cancelled."""
        last = committed()
        while True:
            await trio.sleep(self._interval_s)
            now = committed()
            if now == last and self._uncopied == 0:
                continue  # idle, and everything is copied already
            last = now
            try:
                await trio.to_thread.run_sync(self.checkpoint)
            except sqlite3.Error as exc:
                log.error("checkpointing the store's WAL failed: %r", exc)
