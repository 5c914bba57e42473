"""A local veil network: directory authorities and service nodes as ``veil-node`` processes.

:class:`Devnet` is the process manager behind ``veil devnet`` and the library that tests
and benchmarks use to get a real network on 127.0.0.1. It never imports ``node/``
(DESIGN.md): every authority and node is a ``python -m veil.node`` subprocess, driven only
through its command line, its files and its HTTP face, exactly as an operator would.

Layout of a devnet directory ``DIR``::

    DIR/network.json      the authorities' pinned keys, addresses and threshold (0644):
                          what clients take as ``--network``
    DIR/devnet.json       the running devnet: pids, addresses, IDs (0644); read by
                          ``veil devnet status`` and ``down``; removed when it stops
    DIR/devnet.lock       flock()ed by the manager while it starts (and, in the
                          foreground, runs) a devnet: two managers never share DIR
    DIR/auth-I/           authority I's data dir, with authority.toml (its config) and
                          log (its stdout and stderr)
    DIR/node-I/           node I's data dir, with node.toml and log

The modules, one job each:

- :mod:`.manager`: :class:`Devnet`, the facade that sequences the rest;
- :mod:`.commands`: :func:`devnet_status` and :func:`stop_devnet`, from another process;
- :mod:`.members`: one process (:class:`Member`): its files, liveness and signals;
- :mod:`.process_identity`: whether a recorded pid is still ours (psutil);
- :mod:`.state_file`: ``devnet.json``, written and read back;
- :mod:`.lock`: ``devnet.lock``, one manager per directory;
- :mod:`.config`: each process's TOML config and command line;
- :mod:`.spawning`: free ports, ``authority-init``, starting a process;
- :mod:`.probe`: ``GET /info`` and the verified consensus over HTTP;
- :mod:`.readiness`: waiting until processes, the consensus and the nodes are ready;
- :mod:`.status`: the records ``status`` and ``down`` report.
"""

from __future__ import annotations

from veil.client.devnet.commands import devnet_status, stop_devnet
from veil.client.devnet.manager import (
    DEFAULT_AUTHORITIES,
    DEFAULT_INTERVAL_MS,
    DEFAULT_NODES,
    DEFAULT_SWARM_SIZE,
    MIN_INTERVAL_MS,
    NETWORK_FILE,
    START_TIMEOUT_S,
    STOP_GRACE_S,
    Devnet,
)
from veil.client.devnet.members import Member
from veil.client.devnet.state_file import STATE_FILE
from veil.client.devnet.status import DevnetStatus, MemberStatus, StopReport
from veil.client.errors import DevnetError, DevnetRunning, DevnetStartError, NoDevnet

__all__ = [
    "DEFAULT_AUTHORITIES",
    "DEFAULT_INTERVAL_MS",
    "DEFAULT_NODES",
    "DEFAULT_SWARM_SIZE",
    "MIN_INTERVAL_MS",
    "NETWORK_FILE",
    "START_TIMEOUT_S",
    "STATE_FILE",
    "STOP_GRACE_S",
    "Devnet",
    "DevnetError",
    "DevnetRunning",
    "DevnetStartError",
    "DevnetStatus",
    "Member",
    "MemberStatus",
    "NoDevnet",
    "StopReport",
    "devnet_status",
    "stop_devnet",
]
