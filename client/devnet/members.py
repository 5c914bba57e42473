"""One process of a devnet (an authority or a node): its files, its pid, its signals.

Design note
-----------
A :class:`Member` is what the devnet knows of one ``veil-node`` process: where its data
dir, config and log are, the address and IDs it reported about itself, and its pid. The
manager that started it also holds its :class:`subprocess.Popen`, and judges it by that;
any other process (``veil devnet status`` or ``down``, run later) judges it by the pid,
which is signalled only while it is still ours (:mod:`.process_identity`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from veil.client.devnet.process_identity import pid_is_ours
from veil.client.errors import DevnetError
from veil.onion.hostport import format_hostport
from veil.onion.packet import Hop

__all__ = ["HOST", "LOG_TAIL_LINES", "Member", "Role", "select_member", "typed_field", "wait_gone"]

#: Every process of a devnet listens on this loopback address.
HOST = "127.0.0.1"
LOG_TAIL_LINES = 20

Role = Literal["authority", "node"]


@dataclass(eq=False)
class Member:
    """One authority or node of a devnet: where its files are and what it said about itself.

    ``id`` is the node ID or the authority's key (hex); ``onion_key`` is a node's X25519
    onion key (hex). ``process`` is set only in the manager that started it; elsewhere
    liveness is judged from ``pid`` (see the module note).
    """

    role: Role
    index: int
    data_dir: Path
    host: str = HOST
    port: int = 0
    id: str = ""
    onion_key: str = ""
    pid: int | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"{'auth' if self.role == 'authority' else 'node'}-{self.index}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "log"

    @property
    def config_path(self) -> Path:
        return self.data_dir / ("authority.toml" if self.role == "authority" else "node.toml")

    @property
    def info_path(self) -> Path:
        """The file the process writes once it listens (and removes when it stops)."""
        return self.data_dir / ("authority.json" if self.role == "authority" else "node.json")

    @property
    def address(self) -> str:
        return format_hostport(self.host, self.port)

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def hop(self) -> Hop:
        """This node as a hop of an onion path (nodes only)."""
        if self.role != "node" or not self.onion_key:
            raise DevnetError(f"{self.name} is not a started node")
        return Hop(bytes.fromhex(self.id), bytes.fromhex(self.onion_key), self.host, self.port)

    def is_running(self) -> bool:
        """The process is alive (and, when we did not start it, still the one we recorded)."""
        if self.process is not None:
            return self.process.poll() is None
        return self.pid is not None and pid_is_ours(self.pid, self.data_dir)

    @property
    def exit_code(self) -> int | None:
        """The exit code, if this manager started the process and it has exited."""
        return None if self.process is None else self.process.poll()

    def send_signal(self, sig: signal.Signals) -> None:
        """Signal the process if it is still ours (a child we started, or a recorded pid
        whose command line still names its data dir)."""
        try:
            if self.process is not None:
                if self.process.poll() is None:
                    self.process.send_signal(sig)
            elif self.pid is not None and pid_is_ours(self.pid, self.data_dir):
                os.kill(self.pid, sig)
        except ProcessLookupError:
            pass  # it exited in between

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the process's log ("" if there is none)."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 64 * 1024))
                text = f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "index": self.index,
            "data_dir": str(self.data_dir),
            "host": self.host,
            "port": self.port,
            "id": self.id,
            "onion_key": self.onion_key,
            "pid": self.pid,
            "log": str(self.log_path),
        }

    @classmethod
    def from_json(cls, role: Role, doc: Any) -> Member:
        """A member from its ``devnet.json`` entry; :class:`ValueError` if it is damaged."""
        if not isinstance(doc, dict):
            raise ValueError(f"a {role} entry is not an object")
        pid = doc.get("pid")
        member = cls(
            role=role,
            index=typed_field(doc, "index", int),
            data_dir=Path(typed_field(doc, "data_dir", str)),
            host=typed_field(doc, "host", str),
            port=typed_field(doc, "port", int),
            id=typed_field(doc, "id", str),
            onion_key=typed_field(doc, "onion_key", str),
            pid=pid if type(pid) is int and pid > 0 else None,
        )
        if not member.data_dir.is_absolute():
            raise ValueError(f"{member.name}: data_dir is not an absolute path")
        return member


def typed_field(doc: dict[str, Any], key: str, kind: type) -> Any:
    """``doc[key]``, which must be exactly of type ``kind``; :class:`ValueError` if not."""
    value = doc.get(key)
    if type(value) is not kind:
        raise ValueError(f"{key!r} is missing or not a {kind.__name__}")
    return value


def wait_gone(members: Sequence[Member], timeout_s: float) -> list[Member]:
    """Wait until every member has exited (reaping our children); those still running."""
    deadline = time.monotonic() + timeout_s
    left = [m for m in members if m.is_running()]
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = [m for m in left if m.is_running()]
    return left


def select_member(members: Sequence[Member], which: Member | str | int, role: str) -> Member:
    """The one member ``which`` names: itself, its index, its name (``node-3``) or a
    prefix of its ID (4 hex digits or more); :class:`DevnetError` if not exactly one."""
    if isinstance(which, Member):
        if which in members:
            return which
        raise DevnetError(f"{which.name} is not part of this devnet")
    if isinstance(which, int):
        found = [m for m in members if m.index == which]
    else:
        found = [m for m in members if m.name == which]
        if not found and len(which) >= 4:
            found = [m for m in members if m.id and m.id.startswith(which.lower())]
    if len(found) != 1:
        names = ", ".join(m.name for m in members)
        problem = "matches several" if found else "matches no"
        raise DevnetError(f"{which!r} {problem} {role} of this devnet ({names})")
    return found[0]
