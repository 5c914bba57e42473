"""Helpers to run real ``veil-node authority`` processes on loopback.

A network of authorities (sync; call through ``trio.to_thread.run_sync`` from trio tests)::

    net = make_network(tmp_path, count=3, threshold=2)    # authority-init x3, network.json
    a = start_authority(net, 0, config={"authority": {"interval_ms": 1000}})
    consensus = wait_for_consensus(net, lambda c: len(c.nodes) == 1)
    assert a.stop() == 0

Each authority runs as ``sys.executable -m veil.node authority --data-dir DIR --listen
127.0.0.1:PORT --network NET --config DIR.toml``; its output goes to ``DIR.log``.
Readiness: ``DIR/authority.json`` names the new process's pid, then ``GET /info``
answers. Nodes that follow the network are started with
:func:`tests.nodeutil.start_node` and ``config=node_config(net)``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import httpx

from veil.onion.directory import Authority, Consensus, NetworkFile, verify_consensus
from veil.onion.errors import VeilError
from veil.onion.hostport import format_hostport

from .nodeutil import (
    REPO,
    NodeStartError,
    ProcessHandle,
    free_port,
    now_ms,
    spawn_logged,
    wait_for_state_file,
    write_toml,
)

__all__ = [
    "AuthorityHandle",
    "Network",
    "authority_init",
    "fetch_consensus",
    "make_network",
    "node_config",
    "start_authority",
    "wait_for",
    "wait_for_consensus",
]

#: Consensus interval used by the tests (ms): short, so that a test sees many epochs.
INTERVAL_MS = 1000


def authority_init(data_dir: Path) -> tuple[str, subprocess.CompletedProcess[str]]:
    """Run ``authority-init``; the key it printed and the finished process."""
    done = subprocess.run(
        [sys.executable, "-m", "veil.node", "authority-init", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise NodeStartError(f"authority-init failed ({done.returncode}): {done.stderr}")
    return json.loads(done.stdout)["key"], done


@dataclass
class Network:
    """A network of authorities (not necessarily running): dirs, ports, network.json."""

    root: Path
    file: NetworkFile
    path: Path
    dirs: list[Path]

    @property
    def authorities(self) -> tuple[Authority, ...]:
        return self.file.authorities

    def url(self, index: int) -> str:
        a = self.file.authorities[index]
        return f"http://{a.host}:{a.port}"


def make_network(root: Path, *, count: int = 1, threshold: int = 1) -> Network:
    """``count`` authority dirs with keys (``authority-init``), on free loopback ports,
    and their ``network.json`` with ``threshold``."""
    root.mkdir(parents=True, exist_ok=True)
    dirs = [root / f"auth-{i}" for i in range(count)]
    authorities = []
    for d in dirs:
        key, _ = authority_init(d)
        authorities.append(Authority(bytes.fromhex(key), "127.0.0.1", free_port()))
    network = NetworkFile(tuple(authorities), threshold)
    path = root / "network.json"
    path.write_text(network.to_json())
    return Network(root, network, path, dirs)


def node_config(net: Network, **network: Any) -> dict[str, dict[str, Any]]:
    """A node config that follows ``net`` (fast retries; loopback not rate limited)."""
    return {
        "network": {"file": str(net.path), "retry_interval": 0.2, **network},
        "rate_limit": {"exempt": ["127.0.0.0/8"]},
    }


@dataclass
class AuthorityHandle(ProcessHandle):
    """A running authority process."""

    what: ClassVar[str] = "authority"

    key: str = ""


def start_authority(
    net: Network,
    index: int,
    *,
    config: Mapping[str, Mapping[str, Any]] | None = None,
    timeout: float = 30.0,
) -> AuthorityHandle:
    """Start authority ``index`` of ``net`` on its pinned address; wait until it answers.

    ``config`` is merged over ``{"authority": {"interval_ms": INTERVAL_MS}}``.
    """
    data_dir = net.dirs[index]
    entry = net.file.authorities[index]
    tables: dict[str, dict[str, Any]] = {"authority": {"interval_ms": INTERVAL_MS}}
    for table, values in (config or {}).items():
        tables.setdefault(table, {}).update(values)
    config_path = write_toml(data_dir.with_name(data_dir.name + ".toml"), tables)
    args = [
        sys.executable,
        "-m",
        "veil.node",
        "authority",
        "--data-dir",
        str(data_dir),
        "--listen",
        format_hostport(entry.host, entry.port),
        "--network",
        str(net.path),
        "--config",
        str(config_path),
    ]
    process, log_path, tether = spawn_logged(args, data_dir)
    handle = AuthorityHandle(data_dir, process, log_path, tether=tether)
    try:
        wait_for_state_file(handle, "authority.json", "authority", timeout, _adopt_authority_doc)
    except BaseException:
        handle.kill()
        raise
    return handle


def _adopt_authority_doc(handle: Any, doc: dict[str, Any]) -> None:
    handle.host, handle.port, handle.key = doc["host"], doc["port"], doc["key"]


def fetch_consensus(url: str) -> bytes | None:
    """``GET /consensus`` from one authority: the document, or None if it has none."""
    try:
        r = httpx.get(f"{url}/consensus", timeout=10)
    except httpx.HTTPError:
        return None
    return r.content if r.status_code == 200 else None


def wait_for(what: str, check: Callable[[], Any], timeout: float = 45.0) -> Any:
    """Poll ``check`` until it returns something truthy; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def wait_for_consensus(
    net: Network,
    predicate: Callable[[Consensus], bool] = lambda c: True,
    *,
    indexes: tuple[int, ...] | None = None,
    threshold: int | None = None,
    timeout: float = 45.0,
) -> Consensus:
    """The first consensus served by one of the authorities ``indexes`` (default all)
    that verifies against the pinned keys (with ``threshold``, default the network's)
    and satisfies ``predicate``."""
    indexes = indexes if indexes is not None else tuple(range(len(net.authorities)))

    def check() -> Consensus | None:
        for i in indexes:
            data = fetch_consensus(net.url(i))
            if data is None:
                continue
            try:
                consensus = verify_consensus(
                    data,
                    pinned=net.file.pinned_keys,
                    threshold=threshold or net.file.threshold,
                    now_ms=now_ms(),
                )
            except VeilError:
                continue
            if predicate(consensus):
                return consensus
        return None

    return wait_for("a consensus", check, timeout)  # type: ignore[no-any-return]
