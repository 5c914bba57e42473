"""A real devnet (authorities and nodes as ``veil-node`` processes) for tests.

Sync (a plain test, or a sync fixture)::

    with devnet(tmp_path, nodes=3, swarm_size=3) as net:
        consensus = net.consensus()          # verified against net.network (network.json)
        node = consensus.swarm_of(account.id).members[0]   # .as_hop() for an onion path
        net.stop_node("node-1"); net.wait_for_nodes(absent=["node-1"])

From a trio test (start and stop run in a worker thread; the Devnet methods are
blocking, so call them with ``await trio.to_thread.run_sync(net.consensus)``)::

    async with running_devnet(tmp_path, nodes=3) as net:
        ...

The devnet lives in ``tmp_path / name`` (default ``devnet``): ``network.json`` (give it to
the client as ``--network``), and per process ``auth-I/`` or ``node-I/`` with its ``log``.
It uses a short consensus interval (:data:`FAST_INTERVAL_MS`), so that the first full
consensus and every change (a node added or stopped) show up within a second or two.

When the block ends, every process is stopped (SIGTERM, SIGKILL after the grace period);
if the block succeeded, every process that was still running must then exit with code
0 (a node that cannot shut down cleanly fails the test, with its log). See
:class:`veil.client.devnet.Devnet` for the whole API: ``add_node``, ``stop_node``,
``start_node``, ``kill_node``, ``stop_authority``, ``restart_authority``, ``status``,
``fetch_consensus``, ``wait_for_consensus``, ``wait_for_nodes``, ``node(...)`` (by index,
name or ID prefix; ``.hop()``, ``.url``, ``.log_tail()``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import trio

from veil.client.devnet import Devnet

__all__ = ["FAST_INTERVAL_MS", "GROUP_NODE_CONFIG", "devnet", "group_net_fixture", "running_devnet"]

#: Consensus interval of test devnets (ms).
FAST_INTERVAL_MS = 1000


def _check_clean_exit(net: Devnet, stopped: tuple[str, ...]) -> None:
    bad = [m for m in net.members if m.name in stopped and m.exit_code not in (0, None)]
    if bad:
        logs = "\n".join(f"--- {m.name} exited with {m.exit_code}:\n{m.log_tail()}" for m in bad)
        raise AssertionError(f"devnet processes did not shut down cleanly\n{logs}")


@contextlib.contextmanager
def devnet(
    tmp_path: Path,
    *,
    nodes: int = 3,
    swarm_size: int = 3,
    authorities: int = 1,
    threshold: int | None = None,
    interval_ms: int = FAST_INTERVAL_MS,
    node_config: Mapping[str, Mapping[str, Any]] | None = None,
    authority_config: Mapping[str, Mapping[str, Any]] | None = None,
    name: str = "devnet",
) -> Iterator[Devnet]:
    """A running devnet for the ``with`` block (see the module docstring)."""
    net = Devnet(tmp_path / name, node_config=node_config, authority_config=authority_config)
    try:
        net.up(
            nodes=nodes,
            swarm_size=swarm_size,
            authorities=authorities,
            threshold=threshold,
            interval_ms=interval_ms,
        )
        yield net
    except BaseException:
        net.down()
        raise
    report = net.down()
    _check_clean_exit(net, report.stopped)


@contextlib.asynccontextmanager
async def running_devnet(tmp_path: Path, **kwargs: Any) -> AsyncIterator[Devnet]:
    """:func:`devnet` for trio tests. Starting and stopping run in a worker thread and
    are shielded from cancellation (a half-started devnet is always stopped)."""
    manager = devnet(tmp_path, **kwargs)
    with trio.CancelScope(shield=True):
        net = await trio.to_thread.run_sync(manager.__enter__)
    try:
        yield net
    except BaseException as exc:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(manager.__exit__, type(exc), exc, exc.__traceback__)
        raise
    with trio.CancelScope(shield=True):
        await trio.to_thread.run_sync(manager.__exit__, None, None, None)


#: Node settings of the devnet the encryption-session tests share (quick replication).
GROUP_NODE_CONFIG = {"replication": {"sync_interval": 0.5, "ack_timeout": 10.0}}


@pytest.fixture(scope="session", name="group_net")
def group_net_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    """One devnet for every encryption-session test module of the run (issue 13):
    import it into the module (``from tests.devnetutil import group_net_fixture``) and
    name ``group_net`` as an argument."""
    with devnet(
        tmp_path_factory.mktemp("groups"), nodes=5, swarm_size=3, node_config=GROUP_NODE_CONFIG
    ) as running:
        yield running
