"""Helpers to run real ``veil-node`` processes on loopback and talk to them through onions.

Starting a node (sync; works in sync fixtures and, through a thread, in trio tests)::

    node = start_node(tmp_path / "n1", config={"http": {"request_timeout": 2.0}})
    ...                                   # node.url, node.hop(), node.info(), node.pid
    assert node.stop() == 0               # SIGTERM, wait, exit code

    with node_process(tmp_path / "n1") as node:   # stops it, asserting exit code 0
        ...

    async with running_node(tmp_path / "n1") as node:   # the same from a trio test
        ...

The node runs as ``sys.executable -m veil.node run --data-dir DIR --listen 127.0.0.1:0``
(``--config DIR.toml`` when ``config`` is given, written here as TOML). Its stdout and
stderr go to ``DIR.log`` (next to the data dir, not in it); :meth:`NodeHandle.log_text`
reads it, and a node that fails to start raises :class:`NodeStartError` with its log.
Readiness: ``DIR/node.json`` names the new process's pid (the node writes it once it
listens), then ``GET /info`` answers. Every process started here (nodes, and authorities
through tests/authorityutil.py) stops when the test process dies, even by SIGKILL: it
watches a pipe (:class:`veil.client.devnet.spawning.Tether`).

Talking to it: :func:`onion_request` sends a payload along a path of :class:`Hop` (from
:meth:`NodeHandle.hop`) and returns the destination's opened reply (or raises
:class:`~veil.onion.packet.HopError`); :func:`onion_rpc` does the same for a storage RPC
request and decodes the :class:`~veil.onion.rpc.Reply`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx
import trio

from veil.client.devnet.spawning import Tether
from veil.onion import rpc
from veil.onion.hostport import format_hostport
from veil.onion.link import UPGRADE_PATH, UPGRADE_TOKEN
from veil.onion.packet import Hop, build_packet
from veil.onion.wallclock import wall_clock_ms

__all__ = [
    "NodeHandle",
    "NodeStartError",
    "OnionRefused",
    "free_port",
    "node_process",
    "now_ms",
    "onion_request",
    "onion_rpc",
    "post_packet",
    "running_node",
    "start_node",
    "write_toml",
]

REPO = Path(__file__).resolve().parent.parent


class NodeStartError(RuntimeError):
    """The node process exited or did not answer in time; the message holds its log."""


class OnionRefused(Exception):
    """The first hop answered with an HTTP error instead of a reply (a 4xx for a packet
    that failed before any reply was possible)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text}")
        self.status = status
        self.text = text


#: The wall clock the nodes read (ms since the epoch), for the tests' own timestamps.
now_ms = wall_clock_ms


def free_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- config files ---------------------------------------------------------------------


def run_node_with_config(data_dir: Path, config: Path) -> subprocess.CompletedProcess[str]:
    """``veil-node run`` on loopback with ``config``, to its end (for configs it refuses
    at start: exit 2 and a message on stderr)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "veil.node",
            "run",
            "--data-dir",
            str(data_dir),
            "--listen",
            "127.0.0.1:0",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def write_toml(path: Path, tables: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write ``{"table": {"key": value}}`` as a TOML file (flat tables only)."""
    lines: list[str] = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path


# --- the process ---------------------------------------------------------------------------


@dataclass
class ProcessHandle:
    """A running veil-node process (node or authority) and what it told us about itself."""

    what: ClassVar[str] = "process"

    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    host: str = ""
    port: int = 0
    info_doc: dict[str, Any] = field(default_factory=dict)
    #: Stops the process if the test process dies; closed once the process has exited.
    tether: Tether | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def address(self) -> str:
        return format_hostport(self.host, self.port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def info(self) -> dict[str, Any]:
        """``GET /info`` (sync)."""
        r = httpx.get(f"{self.url}/info", timeout=10)
        r.raise_for_status()
        return dict(r.json())

    def metrics(self) -> str:
        """``GET /metrics`` (sync): the Prometheus text."""
        r = httpx.get(f"{self.url}/metrics", timeout=10)
        r.raise_for_status()
        return r.text

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait for the exit, return the exit code (SIGKILL after ``timeout``)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise NodeStartError(
                    f"{self.what} did not exit within {timeout} s of SIGTERM\n{self.log_text()}"
                ) from None
        self._untether()
        return int(self.process.returncode)

    def kill(self) -> None:
        """``kill -9`` and reap."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._untether()

    def _untether(self) -> None:
        """The process has exited: free its pipe."""
        if self.tether is not None:
            self.tether.close()
            self.tether = None


@dataclass
class NodeHandle(ProcessHandle):
    """A running node process."""

    what: ClassVar[str] = "node"

    node_id: str = ""
    onion_key: bytes = b""

    def hop(self) -> Hop:
        """This node as a hop of an onion path."""
        return Hop(bytes.fromhex(self.node_id), self.onion_key, self.host, self.port)


def start_node(
    data_dir: str | Path,
    *,
    config: Mapping[str, Mapping[str, Any]] | None = None,
    listen: str = "127.0.0.1:0",
    extra_args: Sequence[str] = (),
    timeout: float = 30.0,
) -> NodeHandle:
    """Start ``python -m veil.node run`` on ``data_dir`` and wait until it answers /info."""
    data_dir = Path(data_dir)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "veil.node", "run"]
    args += ["--data-dir", str(data_dir), "--listen", listen]
    if config is not None:
        args += ["--config", str(write_toml(data_dir.with_name(data_dir.name + ".toml"), config))]
    args += list(extra_args)
    process, log_path, tether = spawn_logged(args, data_dir)
    handle = NodeHandle(data_dir, process, log_path, tether=tether)
    try:
        doc = wait_for_state_file(handle, "node.json", "node", timeout, _adopt_node_doc)
    except BaseException:
        handle.kill()
        raise
    assert doc is not None
    return handle


def _adopt_node_doc(handle: Any, doc: dict[str, Any]) -> None:
    handle.host = doc["host"]
    handle.port = doc["port"]
    handle.node_id = doc["node_id"]
    handle.onion_key = bytes.fromhex(doc["onion_key"])


def spawn_logged(args: list[str], data_dir: Path) -> tuple[subprocess.Popen[bytes], Path, Tether]:
    """Start ``args`` from the repository with stdout and stderr in ``DATA_DIR.log``,
    tethered to this process (it stops if this process dies)."""
    log_path = data_dir.with_name(data_dir.name + ".log")
    tether = Tether()
    env = tether.child_env({**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
                env=env,
                pass_fds=tether.pass_fds,
            )
    except BaseException:
        tether.close()
        raise
    tether.spawned()
    return process, log_path, tether


def wait_for_state_file(
    handle: Any,
    name: str,
    what: str,
    timeout: float,
    adopt: Callable[[Any, dict[str, Any]], None],
) -> dict[str, Any]:
    """Wait until ``handle``'s process wrote ``DATA_DIR/name`` naming its pid and answers
    ``GET /info``; ``adopt`` copies the file's fields onto the handle first.

    Raises :class:`NodeStartError` (with the log) if the process exits or the timeout
    passes first.
    """
    deadline = time.monotonic() + timeout
    info_path = handle.data_dir / name
    while True:
        if handle.process.poll() is not None:
            raise NodeStartError(
                f"{what} exited with {handle.process.returncode} while starting\n"
                f"{handle.log_text()}"
            )
        if time.monotonic() > deadline:
            raise NodeStartError(f"{what} not ready after {timeout} s\n{handle.log_text()}")
        try:
            doc = json.loads(info_path.read_text())
        except (FileNotFoundError, ValueError):
            doc = None
        if doc is not None and doc.get("pid") == handle.pid:
            adopt(handle, doc)
            try:
                handle.info_doc = handle.info()
                return doc
            except httpx.HTTPError:
                pass
        time.sleep(0.02)


@contextlib.contextmanager
def node_process(data_dir: str | Path, **kwargs: Any) -> Iterator[NodeHandle]:
    """A node for the ``with`` block; on exit it is stopped and must exit 0."""
    node = start_node(data_dir, **kwargs)
    try:
        yield node
    finally:
        code = node.stop()
    assert code == 0, f"node exited with {code}\n{node.log_text()}"


@contextlib.asynccontextmanager
async def running_node(data_dir: str | Path, **kwargs: Any) -> AsyncIterator[NodeHandle]:
    """:func:`node_process` for trio tests (start and stop run in a worker thread)."""
    node = await trio.to_thread.run_sync(lambda: start_node(data_dir, **kwargs))
    try:
        yield node
    finally:
        code = await trio.to_thread.run_sync(node.stop)
    assert code == 0, f"node exited with {code}\n{node.log_text()}"


# --- onion requests ----------------------------------------------------------------------


async def post_packet(
    client: httpx.AsyncClient, entry: Hop, packet: bytes, *, timeout: float = 60.0
) -> httpx.Response:
    """POST ``packet`` to ``entry``'s /onion; the raw HTTP response."""
    url = f"http://{entry.host}:{entry.port}/onion"
    return await client.post(url, content=packet, timeout=timeout)


async def onion_request(
    client: httpx.AsyncClient,
    path: Sequence[Hop],
    payload: bytes,
    *,
    at_ms: int | None = None,
    timeout: float = 60.0,
) -> bytes:
    """Send ``payload`` along ``path`` and return the destination's reply payload.

    ``at_ms`` is the packet's timestamp (default: now). Raises :class:`HopError` for a
    layered error and :class:`OnionRefused` for an HTTP error from the first hop.
    """
    packet, opener = build_packet(path, payload, now_ms=now_ms() if at_ms is None else at_ms)
    response = await post_packet(client, path[0], packet, timeout=timeout)
    if response.status_code != 200:
        raise OnionRefused(response.status_code, response.text)
    return opener.open(response.content)


async def onion_rpc(
    client: httpx.AsyncClient, path: Sequence[Hop], request: bytes, *, timeout: float = 60.0
) -> rpc.Reply:
    """A storage RPC request through ``path``; the decoded reply (any status)."""
    return rpc.decode_reply(await onion_request(client, path, request, timeout=timeout))


#: A bare link upgrade, without a proof of identity: a standalone node takes it (a node in
#: a network answers it 403).
LINK_UPGRADE = (
    b"GET " + UPGRADE_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
    b"Upgrade: " + UPGRADE_TOKEN + b"\r\n\r\n"
)


def upgrade_to_link(s: socket.socket) -> bytes:
    """Send :data:`LINK_UPGRADE` on ``s`` and read the 101: the bytes read after it (the
    start of the link's frames)."""
    s.sendall(LINK_UPGRADE)
    got = b""
    while b"\r\n\r\n" not in got:
        data = s.recv(65536)
        assert data, "closed during the upgrade"
        got += data
    head, _, rest = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return rest
