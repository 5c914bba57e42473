"""Starting devnet processes: free ports, ``authority-init``, and the spawn itself.

Design note
-----------
Every child runs in its own session (``start_new_session``), so a Ctrl-C at the terminal
reaches only the manager, which then stops its children in order (SIGTERM to all at
once, SIGKILL after a grace period), and a detached devnet outlives the command that
started it. A child's stdout and stderr go to its ``log``, after a line naming the time
and the command, so one log holds every run of that process for the post-mortem.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from veil.client.devnet.members import HOST
from veil.client.errors import DevnetError, DevnetStartError

__all__ = ["AUTHORITY_INIT_TIMEOUT_S", "authority_key", "free_port", "indent", "spawn"]

#: Seconds ``veil-node authority-init`` gets to write a new authority's key.
AUTHORITY_INIT_TIMEOUT_S = 60


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


def spawn(argv: Sequence[str], log_path: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a session of its own, its output appended to ``log_path``."""
    with log_path.open("ab") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(f"--- {stamp} veil devnet: {' '.join(argv)}\n".encode())
        log.flush()
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            # Its own session: terminal signals reach only the manager, which stops
            # its children in order; and a detached devnet outlives the manager.
            start_new_session=True,
        )


def indent(text: str) -> str:
    """``text`` indented by four spaces, for a log quoted in an error message."""
    return "\n".join(f"    {line}" for line in text.splitlines())
