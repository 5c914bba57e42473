"""``DIR/devnet.json``: the record of a running devnet, written and read back.

Design note
-----------
The manager writes the record whenever its processes change (pids, addresses, IDs, the
manager's own kind and pid), atomically and with mode 0644, so that ``veil devnet
status`` and ``down``, run later by any process, find every process it started. The
file is read strictly: a known format and version, every field of its type, at most
:data:`MAX_STATE_BYTES`; anything else is :class:`~veil.client.errors.DevnetError`
naming the file, never a half-read devnet. The record is removed when the devnet stops.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from veil.client.devnet.members import Member, typed_field
from veil.client.errors import DevnetError, NoDevnet
from veil.client.files import write_atomically

__all__ = [
    "MAX_STATE_BYTES",
    "STATE_FILE",
    "STATE_FORMAT",
    "STATE_VERSION",
    "DevnetRecord",
    "ManagerKind",
    "read_state",
    "write_state",
]

STATE_FILE = "devnet.json"
STATE_FORMAT = "veil-devnet"
STATE_VERSION = 1
#: devnet.json is small (a few hundred bytes a process); larger is not ours.
MAX_STATE_BYTES = 1 << 20

ManagerKind = Literal["foreground", "library", "detached"]
_MANAGER_KINDS = ("foreground", "library", "detached")


@dataclass
class DevnetRecord:
    """What ``devnet.json`` holds besides the directory and the network file's path."""

    manager_kind: ManagerKind
    manager_pid: int | None
    swarm_size: int
    threshold: int
    interval_ms: int
    started_ms: int
    authorities: list[Member]
    nodes: list[Member]


def write_state(directory: Path, network_file: Path, record: DevnetRecord) -> None:
    """Replace ``directory/devnet.json`` with ``record``, atomically (mode 0644)."""
    doc = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "dir": str(directory),
        "network": str(network_file),
        "manager": {"kind": record.manager_kind, "pid": record.manager_pid},
        "swarm_size": record.swarm_size,
        "threshold": record.threshold,
        "interval_ms": record.interval_ms,
        "started_ms": record.started_ms,
        "authorities": [m.to_json() for m in record.authorities],
        "nodes": [m.to_json() for m in record.nodes],
    }
    data = (json.dumps(doc, indent=1) + "\n").encode()
    write_atomically(directory / STATE_FILE, data, mode=0o644)


def read_state(directory: Path) -> DevnetRecord:
    """The record in ``directory/devnet.json``.

    :class:`NoDevnet` if there is no such file; :class:`DevnetError` if it cannot be
    read or is damaged (the message says to remove it if no devnet runs).
    """
    path = directory / STATE_FILE
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        raise NoDevnet(f"no devnet is running in {directory} (no {STATE_FILE})") from None
    except OSError as exc:
        raise DevnetError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return _parse(raw)
    except ValueError as exc:
        raise DevnetError(
            f"{path} is damaged ({exc}); if no devnet runs there, remove the file"
        ) from None


def _parse(raw: bytes) -> DevnetRecord:
    if len(raw) > MAX_STATE_BYTES:
        raise ValueError("too large")
    doc = json.loads(raw)
    if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
        raise ValueError("not a devnet state file")
    if doc.get("version") != STATE_VERSION:
        raise ValueError(f"unknown version {doc.get('version')!r}")
    manager = doc.get("manager")
    if not isinstance(manager, dict):
        raise ValueError("no manager")
    kind = manager.get("kind")
    if kind not in _MANAGER_KINDS:
        raise ValueError(f"unknown manager kind {kind!r}")
    pid = manager.get("pid")
    auths, nodes = doc.get("authorities"), doc.get("nodes")
    # Read in the order the old reader did, so a damaged file names the same problem.
    swarm_size = typed_field(doc, "swarm_size", int)
    threshold = typed_field(doc, "threshold", int)
    interval_ms = typed_field(doc, "interval_ms", int)
    started_ms = typed_field(doc, "started_ms", int)
    if not isinstance(auths, list) or not isinstance(nodes, list):
        raise ValueError("authorities and nodes must be lists")
    return DevnetRecord(
        manager_kind=kind,
        manager_pid=pid if type(pid) is int and pid > 0 else None,
        swarm_size=swarm_size,
        threshold=threshold,
        interval_ms=interval_ms,
        started_ms=started_ms,
        authorities=[Member.from_json("authority", a) for a in auths],
        nodes=[Member.from_json("node", n) for n in nodes],
    )
