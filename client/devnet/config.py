"""What each devnet process is started with: its TOML config file and its command line.

Design note
-----------
The devnet drives ``veil-node`` only as an operator would, through its command line and
its config file (it never imports ``node/``). The config is written fresh at every start
from the devnet's own settings (consensus interval, swarm size, the network file) with
the caller's tables merged over them, so a test can tune a node (``{"storage":
{"inbox_rate": 100.0}}``) without knowing the rest. Only the TOML this needs is written
(tables of booleans, numbers, strings and lists): Python reads TOML but does not write
it, and a dependency for this much would be a poor trade.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from veil.client.devnet.members import Member
from veil.onion.hostport import format_hostport

__all__ = ["Tables", "command_line", "config_tables", "merge_tables", "toml_text"]

#: TOML tables by name: ``{"storage": {"inbox_rate": 100.0}}``.
Tables = Mapping[str, Mapping[str, Any]]


def config_tables(
    member: Member,
    *,
    interval_ms: int,
    swarm_size: int,
    network_file: Path,
    node_config: Tables | None,
    authority_config: Tables | None,
) -> dict[str, dict[str, Any]]:
    """The config of ``member``: the devnet's tables, then the caller's merged over them."""
    if member.role == "authority":
        base: dict[str, dict[str, Any]] = {
            # Every node of a loopback devnet registers from 127.0.0.1: the per-source
            # share of the registry would cap the devnet at max_per_source nodes.
            "authority": {
                "interval_ms": interval_ms,
                "swarm_size": swarm_size,
                "per_source_exempt": ["127.0.0.0/8"],
            },
        }
        return merge_tables(base, authority_config)
    base = {
        "network": {"file": str(network_file)},
        # Every client and every peer of a loopback devnet connects from 127.0.0.1,
        # so a per-address limit would throttle the whole network as one client.
        "rate_limit": {"exempt": ["127.0.0.0/8"]},
        # A node that was down catches up by anti-entropy pulls; the default (10 s
        # between pulls) is for real networks, a devnet should catch up at once.
        "replication": {"sync_interval": 1.0},
    }
    return merge_tables(base, node_config)


def command_line(
    node_command: Sequence[str], member: Member, port: int, network_file: Path
) -> list[str]:
    """The ``veil-node`` command line that runs ``member``, listening on ``port``."""
    listen = format_hostport(member.host, port)
    dd = str(member.data_dir)
    cfg = str(member.config_path)
    if member.role == "authority":
        return [
            *node_command,
            "authority",
            "--data-dir",
            dd,
            "--listen",
            listen,
            "--network",
            str(network_file),
            "--config",
            cfg,
        ]
    return [*node_command, "run", "--data-dir", dd, "--listen", listen, "--config", cfg]


def merge_tables(base: Tables, extra: Tables | None) -> dict[str, dict[str, Any]]:
    """``base`` with each table of ``extra`` merged over it (key by key)."""
    merged = {table: dict(values) for table, values in base.items()}
    for table, values in (extra or {}).items():
        merged.setdefault(table, {}).update(values)
    return merged


def toml_text(tables: Tables) -> str:
    """``tables`` as a TOML document, one ``[table]`` each."""
    lines: list[str] = ["# written by veil devnet; rewritten at every start"]
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")
