"""``DIR/devnet.lock``: one manager per devnet directory.

Design note
-----------
A manager holds an exclusive ``flock`` on the lock file while it starts (and, in the
foreground, runs) a devnet, so two ``veil devnet up`` on the same directory never both
start one: the second is refused at once. The kernel drops the lock when the descriptor
is closed or the manager dies, so a crash leaves no lock to clean up (a stale
``devnet.json`` is judged separately, by the pids it names).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from veil.client.errors import DevnetRunning

__all__ = ["LOCK_FILE", "DirectoryLock"]

LOCK_FILE = "devnet.lock"


class DirectoryLock:
    """The lock on ``directory/devnet.lock``, taken by :meth:`acquire`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock (a no-op if held); :class:`DevnetRunning` if another holds it."""
        if self._fd is not None:
            return
        fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DevnetRunning(
                f"a devnet is already running (or starting) in {self.directory}: another "
                f"manager holds {LOCK_FILE}; stop it with `veil devnet down --dir "
                f"{self.directory}`"
            ) from None
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (a no-op if not held)."""
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
