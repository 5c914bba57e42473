"""Is that pid still ours? The identity of a process recorded in ``devnet.json``.

Design note
-----------
A devnet outlives the command that started it (``--detach``, or a manager that
crashed), so ``veil devnet status`` and ``down`` judge its processes from the pids
recorded in ``devnet.json``. The kernel reuses pids: a recorded pid may by now belong to
another program, which must never be counted as alive, let alone signalled. A process is
ours only if it is alive, not a zombie, and its command line names what we started it
with: a member's data dir as one whole argument, or ``devnet`` and ``up`` for a
foreground manager (``veil devnet up``).

psutil reads the process table on every platform (``/proc`` on Linux, ``sysctl`` on the
BSDs and macOS), so no code here parses ``/proc`` or ``ps`` by hand. It is imported only
when a devnet is managed, never when the ``veil`` command merely starts.
"""

from __future__ import annotations

from pathlib import Path

import psutil

__all__ = ["manager_is_alive", "pid_is_ours", "process_args"]

# States in which a pid is no longer a running program (exited, not yet reaped).
_GONE = frozenset({psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD})


def process_args(pid: int) -> list[str] | None:
    """The command line of a live process ``pid``; None if it is gone, a zombie, or
    cannot be read (another user's process on a system that hides them)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() in _GONE:
            return None
        args: list[str] = proc.cmdline()
    except (psutil.Error, ValueError):  # NoSuchProcess, ZombieProcess, AccessDenied, pid < 0
        return None
    return args or None  # a kernel thread, or a process on its way out


def pid_is_ours(pid: int, data_dir: Path) -> bool:
    """True if ``pid`` is alive and its command line has ``data_dir`` as an argument."""
    args = process_args(pid)
    return args is not None and str(data_dir) in args


def manager_is_alive(pid: int) -> bool:
    """True if ``pid`` is a live foreground manager: a ``veil devnet up`` (``python -m
    veil.client devnet up``)."""
    args = process_args(pid)
    return args is not None and "devnet" in args and "up" in args
