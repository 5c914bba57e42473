"""A devnet seen from another process: what ``veil devnet status`` and ``down`` run.

Design note
-----------
These start from ``devnet.json`` alone (:meth:`Devnet.attach`): the processes were
started by another command (a detached devnet, a foreground ``veil devnet up`` in
another terminal, or a test that crashed), so each is judged and signalled by its
recorded pid, and only while it is still ours
(:mod:`veil.client.devnet.process_identity`). A foreground manager is asked to stop
its own children first, since it reaps them and reports how they exited.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

from veil.client.devnet.manager import KILL_WAIT_S, STOP_GRACE_S, Devnet
from veil.client.devnet.process_identity import manager_is_alive
from veil.client.devnet.state_file import STATE_FILE
from veil.client.devnet.status import DevnetStatus, StopReport
from veil.client.errors import NoDevnet

__all__ = ["devnet_status", "stop_devnet"]

#: Pause between checks that a foreground manager has exited.
_POLL_S = 0.05


def devnet_status(directory: str | os.PathLike[str]) -> DevnetStatus:
    """The status of the devnet recorded in ``directory``.

    :class:`NoDevnet` if none is recorded, or if every process it records is gone (the
    stale file is then left for ``up`` to clean, and the message says so).
    """
    net = Devnet.attach(directory)
    try:
        if not net.is_running():
            raise NoDevnet(
                f"no devnet is running in {net.dir} (its {STATE_FILE} is stale: every "
                f"process it names has exited)"
            )
        return net.status()
    finally:
        net.close()


def stop_devnet(directory: str | os.PathLike[str], grace_s: float = STOP_GRACE_S) -> StopReport:
    """Stop the devnet recorded in ``directory`` and remove its ``devnet.json``.

    A foreground manager is asked to stop (SIGTERM) and given ``grace_s`` + 10 s;
    whatever is still running after that, and every process of a detached or library
    devnet, is sent SIGTERM and then SIGKILL. Only processes that are still ours are
    signalled (:mod:`veil.client.devnet.process_identity`). :class:`NoDevnet` if
    nothing is recorded.
    """
    net = Devnet.attach(directory)
    pid = net.manager_pid
    if net.manager_kind == "foreground" and pid is not None and manager_is_alive(pid):
        running = [m.name for m in net.members if m.is_running()]
        os.kill(pid, signal.SIGTERM)
        # The manager's own stop: its grace period, then its wait after SIGKILL.
        deadline = time.monotonic() + grace_s + KILL_WAIT_S
        while manager_is_alive(pid) and time.monotonic() < deadline:
            time.sleep(_POLL_S)
        if not manager_is_alive(pid) and not any(m.is_running() for m in net.members):
            with contextlib.suppress(FileNotFoundError):
                net.state_file.unlink()
            return StopReport(stopped=tuple(running), killed=())
    return net.down(grace_s)
