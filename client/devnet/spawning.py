"""Starting devnet processes: free ports, ``authority-init``, and the spawn itself.

Design note
-----------
Every child runs in its own session (``start_new_session``), so a Ctrl-C at the terminal
reaches only the manager, which then stops its children in order (SIGTERM to all at
once, SIGKILL after a grace period), and a detached devnet outlives the command that
started it. A child's stdout and stderr go to its ``log``, after a line naming the time
and the command, so one log holds every run of that process for the post-mortem.

A child also stops when the process that started it dies, however it dies (a SIGKILLed
test run once left its nodes running): :class:`Tether`. The parent keeps the write end
of a pipe, the child gets the read end (its number in ``VEIL_NODE_PARENT_FD``) and
watches it (``veil-node``, node/cli.py); when the parent is gone the kernel closes the
write end, the child reads end-of-file and stops as on SIGTERM. A pipe, not Linux's
``PR_SET_PDEATHSIG``: that signal comes when the *thread* that forked the child ends,
and devnets are started from worker threads (``trio.to_thread``, which end when idle)
as often as not; it needs a ``preexec_fn`` (unsafe in a process with threads) and would
race with a parent that dies before it is set. A pipe ends with the process and not
before, and an end-of-file that came before the child looked is still seen. A devnet
that detaches (``veil devnet up --detach``) releases its tethers: one byte down the
pipe tells the child to stop watching, so it outlives the command.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from veil.client.devnet.members import HOST
from veil.client.errors import DevnetError, DevnetStartError

__all__ = [
    "AUTHORITY_INIT_TIMEOUT_S",
    "PARENT_FD_ENV",
    "Tether",
    "authority_key",
    "free_port",
    "indent",
    "spawn",
]

#: Seconds ``veil-node authority-init`` gets to write a new authority's key.
AUTHORITY_INIT_TIMEOUT_S = 60

#: Where ``veil-node`` finds the pipe it watches (node/cli.py reads the same name; the
#: node and client packages share no code).
PARENT_FD_ENV = "VEIL_NODE_PARENT_FD"


class Tether:
    """A pipe that ties one child's life to this process (see the module note).

    Pass :meth:`child_env` and :attr:`pass_fds` to :class:`subprocess.Popen`, then call
    :meth:`spawned`. :meth:`release` lets the child outlive this process; :meth:`close`
    (once the child has exited) frees the pipe, and would stop a child still running.
    Without either, the pipe lives as long as this process, which is the point.
    """

    __slots__ = ("_read_fd", "_write_fd")

    def __init__(self) -> None:
        # Both ends are close-on-exec (os.pipe), so no other child inherits them;
        # Popen's pass_fds makes the read end, and only it, the child's.
        self._read_fd, self._write_fd = os.pipe()

    def child_env(self, env: Mapping[str, str]) -> dict[str, str]:
        """``env`` and the variable that tells ``veil-node`` which descriptor to watch."""
        return {**env, PARENT_FD_ENV: str(self._read_fd)}

    @property
    def pass_fds(self) -> tuple[int, ...]:
        return () if self._read_fd < 0 else (self._read_fd,)

    def spawned(self) -> None:
        """The child holds its read end now: this process's copy goes."""
        if self._read_fd >= 0:
            os.close(self._read_fd)
            self._read_fd = -1

    def release(self) -> None:
        """Let the child outlive this process: it reads one byte and stops watching."""
        if self._write_fd >= 0:
            with contextlib.suppress(BrokenPipeError):  # the child has exited already
                os.write(self._write_fd, b"r")
        self.close()

    def close(self) -> None:
        """Close both ends here (a child still watching then stops)."""
        self.spawned()
        if self._write_fd >= 0:
            os.close(self._write_fd)
            self._write_fd = -1


def free_port(preferred: int = 0) -> int:
    """``preferred`` if nothing listens there, else a free loopback port (bound, released)."""
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket() as s:
            # As the servers do: connections of an earlier process left in TIME_WAIT
            # must not make its port look taken (a listener still fails the bind).
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise DevnetError("no free port on 127.0.0.1")  # pragma: no cover: bind to 0 failed


def authority_key(
    node_command: Sequence[str], name: str, data_dir: Path, env: Mapping[str, str]
) -> str:
    """Run ``veil-node authority-init`` on ``data_dir`` and return the authority's public
    key (hex) it prints; :class:`DevnetStartError` naming ``name`` if it fails."""
    argv = [*node_command, "authority-init", "--data-dir", str(data_dir)]
    try:
        done = subprocess.run(
            argv, capture_output=True, env=env, timeout=AUTHORITY_INIT_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise DevnetStartError(f"{name}: `authority-init` did not finish") from None
    out = done.stdout.decode("utf-8", "replace").strip()
    err = done.stderr.decode("utf-8", "replace").strip()
    if done.returncode != 0:
        raise DevnetStartError(
            f"{name}: `{' '.join(argv)}` failed with exit code {done.returncode}"
            f"\n{indent(err or out)}"
        )
    try:
        key = json.loads(out.splitlines()[-1])["key"]
        bytes.fromhex(key)
        if len(key) != 64:
            raise ValueError
    except (ValueError, IndexError, KeyError, TypeError):
        raise DevnetStartError(
            f'{name}: authority-init printed {out[:200]!r}, not {{"key": "<hex>"}}'
        ) from None
    return str(key)


def spawn(
    argv: Sequence[str], log_path: Path, env: Mapping[str, str], tether: Tether | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a session of its own, its output appended to ``log_path``; with
    ``tether``, the child stops when this process dies (until the tether is released)."""
    if tether is not None:
        env = tether.child_env(env)
    with log_path.open("ab") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(f"--- {stamp} veil devnet: {' '.join(argv)}\n".encode())
        log.flush()
        try:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                # Its own session: terminal signals reach only the manager, which stops
                # its children in order; and a detached devnet outlives the manager.
                start_new_session=True,
                pass_fds=() if tether is None else tether.pass_fds,
            )
        finally:
            if tether is not None:
                tether.spawned()


def indent(text: str) -> str:
    """``text`` indented by four spaces, for a log quoted in an error message."""
    return "\n".join(f"    {line}" for line in text.splitlines())
