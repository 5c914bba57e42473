"""What ``veil devnet status`` and ``down`` report: plain records, with their JSON.

Design note
-----------
Records only, frozen: the manager fills them (checking every process now, see
:meth:`veil.client.devnet.Devnet.status`), the command line prints them
(:func:`veil.client.cli.devnet.format_status`), and ``--json`` prints :meth:`to_json`,
whose keys are part of the command's output and so stay as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from veil.client.devnet.members import Role

__all__ = ["DevnetStatus", "MemberStatus", "StopReport"]


@dataclass(frozen=True)
class MemberStatus:
    """One process as ``veil devnet status`` shows it."""

    role: Role
    name: str
    id: str
    address: str
    pid: int | None
    swarm: int | None  # the node's swarm ID in the current consensus (None: not listed)
    running: bool  # the process is alive
    alive: bool  # alive and answering GET /info
    epoch: int | None = None  # the epoch of the consensus it holds (its /info), if any

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "name": self.name,
            "id": self.id,
            "address": self.address,
            "pid": self.pid,
            "swarm": None if self.swarm is None else f"{self.swarm:016x}",
            "running": self.running,
            "alive": self.alive,
            "epoch": self.epoch,
        }


@dataclass(frozen=True)
class DevnetStatus:
    """The whole devnet: its files, its consensus (if one could be fetched) and processes."""

    dir: Path
    network_file: Path
    manager_kind: str
    manager_pid: int | None
    swarm_size: int
    threshold: int
    interval_ms: int
    epoch: int | None
    consensus_error: str | None
    authorities: tuple[MemberStatus, ...]
    nodes: tuple[MemberStatus, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "dir": str(self.dir),
            "network": str(self.network_file),
            "manager": {"kind": self.manager_kind, "pid": self.manager_pid},
            "swarm_size": self.swarm_size,
            "threshold": self.threshold,
            "interval_ms": self.interval_ms,
            "epoch": self.epoch,
            "consensus_error": self.consensus_error,
            "authorities": [m.to_json() for m in self.authorities],
            "nodes": [m.to_json() for m in self.nodes],
        }


@dataclass(frozen=True)
class StopReport:
    """What stopping a devnet did."""

    stopped: tuple[str, ...]  # names of the processes that were running and were stopped
    killed: tuple[str, ...]  # of those, the ones that needed SIGKILL
