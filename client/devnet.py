"""A local veil network: directory authorities and service nodes as ``veil-node`` processes.

Design note
-----------
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

Starting (:meth:`Devnet.up`): take the lock; refuse if ``devnet.json`` names a live
process (a stale file whose processes are all dead is removed); pick free loopback ports
for the authorities; ``veil-node authority-init`` each one to learn its key; write
``network.json``; start the authorities and wait until each has written
``authority.json`` naming its pid and answers ``GET /info``; start the nodes (port 0:
each picks its own) and wait for their ``node.json`` the same way; then wait until a
consensus fetched from an authority, verified against the pinned keys and threshold,
lists every node, and until every node holds that consensus or a later one (the
``epoch`` of its ``GET /info``): only then does each node know its swarm and its peers,
so that the first store a client sends is routed and replicated. Any process that
exits meanwhile fails the start at once with its name, exit code and the tail of its
log; so does a timeout, naming what was missing.
A failed (or interrupted) start stops everything it started; data dirs and logs stay
for the post-mortem.

Owning processes. Every child runs in its own session (``start_new_session``), so a
Ctrl-C at the terminal reaches only the manager, which then stops its children in an
orderly way (SIGTERM to all at once, SIGKILL after a grace period), and a detached
devnet outlives the command that started it. A process recorded in ``devnet.json`` is
signalled only if it is still ours: alive, not a zombie, and its command line holds its
data dir as an argument (``/proc/PID/cmdline``, or ``ps`` where there is no /proc), so a
pid the kernel has since given to another program is never killed.

The manager is recorded too (``manager.kind``): ``foreground`` (``veil devnet up``
without ``--detach``: ``veil devnet down`` sends it SIGTERM and lets it stop its own
children), ``library`` (a test or benchmark: ``down`` from outside stops the children
directly), or ``detached`` (no manager).

Everything here is blocking (subprocess, sleeps, sync httpx). A trio test calls it
through ``trio.to_thread.run_sync`` (see ``tests/devnetutil.py``). HTTP goes only to
the loopback addresses recorded here, with ``trust_env=False`` so that no proxy from the
environment sees it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from veil.client.errors import DevnetError, DevnetRunning, DevnetStartError, NoDevnet
from veil.onion.directory import Authority, Consensus, NetworkFile, verify_consensus
from veil.onion.errors import VeilError
from veil.onion.packet import Hop

__all__ = [
    "DEFAULT_AUTHORITIES",
    "DEFAULT_INTERVAL_MS",
    "DEFAULT_NODES",
    "DEFAULT_SWARM_SIZE",
    "NETWORK_FILE",
    "STATE_FILE",
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

HOST = "127.0.0.1"
STATE_FILE = "devnet.json"
NETWORK_FILE = "network.json"
LOCK_FILE = "devnet.lock"
STATE_FORMAT = "veil-devnet"
STATE_VERSION = 1
#: devnet.json is small (a few hundred bytes a process); larger is not ours.
MAX_STATE_BYTES = 1 << 20

DEFAULT_NODES = 10
DEFAULT_SWARM_SIZE = 5  # DESIGN.md: swarm target size 5
DEFAULT_AUTHORITIES = 1
#: Consensus interval of ``veil devnet up`` (production: an hour; onion.directory's
#: default, a minute, would make a devnet wait a minute for its first full consensus).
DEFAULT_INTERVAL_MS = 5000
#: Seconds between SIGTERM and SIGKILL when stopping. A node drains in-flight requests
#: for ``http.shutdown_grace`` (5 s by default) before it exits.
STOP_GRACE = 10.0
#: Seconds a process gets to write its info file and answer /info after it starts.
START_TIMEOUT = 60.0
LOG_TAIL_LINES = 20

Role = Literal["authority", "node"]
ManagerKind = Literal["foreground", "library", "detached"]
_MEMBER_DIR = re.compile(r"^(auth|node)-(\d+)$")

#: The shortest consensus interval an authority accepts ([authority] interval_ms):
#: checked here so that a bad value is a usage error, not a child that dies at start.
MIN_INTERVAL_MS = 500


# --- one process -----------------------------------------------------------------------------


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
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

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
        if not isinstance(doc, dict):
            raise ValueError(f"a {role} entry is not an object")
        pid = doc.get("pid")
        member = cls(
            role=role,
            index=_typed(doc, "index", int),
            data_dir=Path(_typed(doc, "data_dir", str)),
            host=_typed(doc, "host", str),
            port=_typed(doc, "port", int),
            id=_typed(doc, "id", str),
            onion_key=_typed(doc, "onion_key", str),
            pid=pid if type(pid) is int and pid > 0 else None,
        )
        if not member.data_dir.is_absolute():
            raise ValueError(f"{member.name}: data_dir is not an absolute path")
        return member


def _typed(doc: dict[str, Any], key: str, kind: type) -> Any:
    value = doc.get(key)
    if type(value) is not kind:
        raise ValueError(f"{key!r} is missing or not a {kind.__name__}")
    return value


# --- is that pid still ours? -----------------------------------------------------------------


def process_args(pid: int) -> list[str] | None:
    """The command line of a live process ``pid``; None if it is gone, a zombie, or
    cannot be read."""
    proc = Path(f"/proc/{pid}")
    if Path("/proc/self/cmdline").exists():
        try:
            stat_text = (proc / "stat").read_text()
            # The state follows the command name in parentheses, which may hold spaces.
            if stat_text[stat_text.rindex(")") + 2 :].startswith(("Z", "X")):
                return None
            raw = (proc / "cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        if not raw:
            return None
        return [a.decode("utf-8", "surrogateescape") for a in raw.rstrip(b"\0").split(b"\0")]
    # No /proc (macOS, BSD): ask ps. Arguments with spaces come out split, which only
    # makes the match below stricter.
    try:
        out = subprocess.run(
            ["ps", "-o", "stat=,command=", "-p", str(pid)],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    if not out or out.split()[0].startswith("Z"):
        return None
    return out.split()[1:]


def pid_is_ours(pid: int, data_dir: Path) -> bool:
    """True if ``pid`` is alive and its command line has ``data_dir`` as an argument."""
    args = process_args(pid)
    return args is not None and str(data_dir) in args


def _manager_is_alive(pid: int) -> bool:
    """The foreground manager is a ``veil devnet up`` (``python -m veil.client devnet up``)."""
    args = process_args(pid)
    return args is not None and "devnet" in args and "up" in args


# --- files -------------------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


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


def _toml(tables: Mapping[str, Mapping[str, Any]]) -> str:
    lines: list[str] = ["# written by veil devnet; rewritten at every start"]
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)


def _merge(
    base: Mapping[str, Mapping[str, Any]], extra: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, dict[str, Any]]:
    merged = {table: dict(values) for table, values in base.items()}
    for table, values in (extra or {}).items():
        merged.setdefault(table, {}).update(values)
    return merged


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


# --- status ------------------------------------------------------------------------------------


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

    @property
    def all_alive(self) -> bool:
        return all(m.alive for m in (*self.authorities, *self.nodes))

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
    via_manager: bool  # a foreground manager was asked to stop its own processes


# --- the manager ---------------------------------------------------------------------------


class Devnet:
    """A devnet in ``directory``: start it with :meth:`up`, or :meth:`attach` to a running one.

    Use it as a context manager to stop what it started when the block ends::

        with Devnet(tmp_path / "net") as net:
            net.up(nodes=3, swarm_size=3, interval_ms=1000)
            consensus = net.consensus()
            net.stop_node("node-1")

    ``node_command`` is the ``veil-node`` command line (default ``python -m veil.node`` with
    this interpreter). ``node_config`` and ``authority_config`` are TOML tables merged
    over the devnet's own (``{"storage": {"inbox_rate": 100.0}}``). ``env`` replaces the
    children's environment (default: this process's). ``log`` receives progress remarks.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        node_command: Sequence[str] | None = None,
        node_config: Mapping[str, Mapping[str, Any]] | None = None,
        authority_config: Mapping[str, Mapping[str, Any]] | None = None,
        env: Mapping[str, str] | None = None,
        manager_kind: ManagerKind = "library",
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.dir = Path(directory).expanduser().resolve()
        self.node_command = list(node_command or (sys.executable, "-m", "veil.node"))
        self.node_config = node_config
        self.authority_config = authority_config
        self.env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
        self.manager_kind: ManagerKind = manager_kind
        self.manager_pid: int | None = os.getpid()
        self._log = log or (lambda _message: None)
        self.authorities: list[Member] = []
        self.nodes: list[Member] = []
        self.swarm_size = DEFAULT_SWARM_SIZE
        self.threshold = 1
        self.interval_ms = DEFAULT_INTERVAL_MS
        self.started_ms = 0
        self._network: NetworkFile | None = None
        self._http: httpx.Client | None = None
        self._lock_fd: int | None = None
        self._owns_state = False
        self._reported: set[Member] = set()

    # -- files and state

    @property
    def network_file(self) -> Path:
        return self.dir / NETWORK_FILE

    @property
    def state_file(self) -> Path:
        return self.dir / STATE_FILE

    @property
    def network(self) -> NetworkFile:
        """The parsed ``network.json`` of this devnet."""
        if self._network is None:
            try:
                text = self.network_file.read_text()
            except OSError as exc:
                raise DevnetError(f"cannot read {self.network_file}: {exc.strerror}") from None
            self._network = NetworkFile.from_json(text)
        return self._network

    @property
    def members(self) -> list[Member]:
        return [*self.authorities, *self.nodes]

    def _state_doc(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "dir": str(self.dir),
            "network": str(self.network_file),
            "manager": {"kind": self.manager_kind, "pid": self.manager_pid},
            "swarm_size": self.swarm_size,
            "threshold": self.threshold,
            "interval_ms": self.interval_ms,
            "started_ms": self.started_ms,
            "authorities": [m.to_json() for m in self.authorities],
            "nodes": [m.to_json() for m in self.nodes],
        }

    def _write_state(self) -> None:
        data = (json.dumps(self._state_doc(), indent=1) + "\n").encode()
        _write_atomic(self.state_file, data)
        self._owns_state = True

    @classmethod
    def attach(cls, directory: str | os.PathLike[str], **kwargs: Any) -> Devnet:
        """A :class:`Devnet` for the devnet recorded in ``directory/devnet.json`` (started
        by another process, or this one). :class:`NoDevnet` if there is no such file;
        :class:`DevnetError` if it is damaged."""
        net = cls(directory, **kwargs)
        net._load_state()
        return net

    def _load_state(self) -> None:
        path = self.state_file
        try:
            with path.open("rb") as f:
                raw = f.read(MAX_STATE_BYTES + 1)
        except FileNotFoundError:
            raise NoDevnet(f"no devnet is running in {self.dir} (no {STATE_FILE})") from None
        except OSError as exc:
            raise DevnetError(f"cannot read {path}: {exc.strerror}") from None
        try:
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
            if kind not in ("foreground", "library", "detached"):
                raise ValueError(f"unknown manager kind {kind!r}")
            pid = manager.get("pid")
            self.manager_kind = kind
            self.manager_pid = pid if type(pid) is int and pid > 0 else None
            self.swarm_size = _typed(doc, "swarm_size", int)
            self.threshold = _typed(doc, "threshold", int)
            self.interval_ms = _typed(doc, "interval_ms", int)
            self.started_ms = _typed(doc, "started_ms", int)
            auths, nodes = doc.get("authorities"), doc.get("nodes")
            if not isinstance(auths, list) or not isinstance(nodes, list):
                raise ValueError("authorities and nodes must be lists")
            self.authorities = [Member.from_json("authority", a) for a in auths]
            self.nodes = [Member.from_json("node", n) for n in nodes]
        except ValueError as exc:
            raise DevnetError(
                f"{path} is damaged ({exc}); if no devnet runs there, remove the file"
            ) from None
        self._owns_state = True

    # -- liveness

    def is_running(self) -> bool:
        """Some process of this devnet (or its foreground manager) is alive."""
        if any(m.is_running() for m in self.members):
            return True
        return (
            self.manager_kind == "foreground"
            and self.manager_pid is not None
            and self.manager_pid != os.getpid()
            and _manager_is_alive(self.manager_pid)
        )

    def exited(self) -> list[Member]:
        """Members that have exited since the last call (for a foreground watcher)."""
        gone = [m for m in self.members if m not in self._reported and not m.is_running()]
        self._reported.update(gone)
        return gone

    # -- HTTP

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            # trust_env=False: a proxy from the environment must not see devnet traffic.
            self._http = httpx.Client(trust_env=False, timeout=5.0)
        return self._http

    def _info(self, member: Member, timeout: float = 2.0) -> dict[str, Any] | None:
        try:
            r = self.http.get(f"{member.url}/info", timeout=timeout)
            if r.status_code != 200:
                return None
            doc = r.json()
        except (httpx.HTTPError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def fetch_consensus(self, authority: Member | int | None = None) -> Consensus | None:
        """The current consensus, verified against ``network.json`` (pinned keys and
        threshold), from ``authority`` or else the first authority that has one.

        None if no authority has one yet (or none answers). A document that fails
        verification raises its :class:`~onion.errors.VeilError`.
        """
        if authority is None:
            candidates = self.authorities
        elif isinstance(authority, int):
            candidates = [self.authorities[authority]]
        else:
            candidates = [authority]
        nf = self.network
        error: VeilError | None = None
        for member in candidates:
            try:
                r = self.http.get(f"{member.url}/consensus")
            except httpx.HTTPError:
                continue
            if r.status_code != 200:
                continue
            now_ms = time.time_ns() // 1_000_000
            try:
                return verify_consensus(
                    r.content, pinned=nf.pinned_keys, threshold=nf.threshold, now_ms=now_ms
                )
            except VeilError as exc:  # another authority may hold a valid one
                error = error or exc
        if error is not None:
            raise error
        return None

    def consensus(self) -> Consensus:
        """:meth:`fetch_consensus`, but a :class:`DevnetError` instead of None."""
        found = self.fetch_consensus()
        if found is None:
            raise DevnetError(f"no authority of the devnet in {self.dir} serves a consensus")
        return found

    def wait_for_consensus(
        self,
        predicate: Callable[[Consensus], bool],
        *,
        timeout: float | None = None,
        what: str = "the expected consensus",
        watch: Iterable[Member] = (),
        explain: Callable[[Consensus], str] | None = None,
    ) -> Consensus:
        """Poll the authorities until a verified consensus satisfies ``predicate``.

        Fails (:class:`DevnetStartError`) as soon as a ``watch``ed member exits or no
        authority runs, or after ``timeout`` s (default: ten consensus intervals, at least 30 s),
        naming what was missing (``explain`` says what the last consensus lacks).
        """
        if timeout is None:
            timeout = max(30.0, 10 * self.interval_ms / 1000)
        deadline = time.monotonic() + timeout
        watched = list(watch)
        last: Consensus | None = None
        last_error: str | None = None
        while True:
            self._check_alive(watched, f"while waiting for {what}")
            if not any(m.is_running() for m in self.authorities):
                self._check_alive(self.authorities, f"while waiting for {what}")
            try:
                found = self.fetch_consensus()
            except VeilError as exc:
                found, last_error = None, f"{type(exc).__name__}: {exc}"
            if found is not None:
                last = found
                if predicate(found):
                    return found
            if time.monotonic() > deadline:
                if last is None:
                    seen = f"no authority served a valid consensus ({last_error or 'none yet'})"
                else:
                    seen = f"the last consensus (epoch {last.epoch}) lists {len(last.nodes)} nodes"
                    if explain is not None:
                        seen += f"; {explain(last)}"
                tails = "\n".join(self._tail_block(m) for m in self.authorities)
                raise DevnetStartError(f"no {what} after {timeout:.0f} s: {seen}\n{tails}")
            time.sleep(0.1)

    def wait_for_nodes(
        self,
        present: Iterable[Member | str | int] = (),
        absent: Iterable[Member | str | int] = (),
        *,
        timeout: float | None = None,
        watch: Iterable[Member] = (),
    ) -> Consensus:
        """Wait for a consensus that lists every ``present`` node and none of ``absent``
        (as :meth:`wait_for_consensus`, which fails early if a ``watch``ed member exits)."""
        want = [self.node(n) for n in present]
        gone = [self.node(n) for n in absent]
        want_ids = {bytes.fromhex(m.id) for m in want}
        gone_ids = {bytes.fromhex(m.id) for m in gone}

        def ok(c: Consensus) -> bool:
            ids = {n.node_id for n in c.nodes}
            return want_ids <= ids and not (gone_ids & ids)

        def explain(c: Consensus) -> str:
            ids = {n.node_id for n in c.nodes}
            missing = [m.name for m in want if bytes.fromhex(m.id) not in ids]
            extra = [m.name for m in gone if bytes.fromhex(m.id) in ids]
            return f"missing: {', '.join(missing) or '-'}; still listed: {', '.join(extra) or '-'}"

        names = ", ".join(m.name for m in want) or "-"
        gone_names = ", ".join(m.name for m in gone) or "-"
        what = f"consensus with [{names}] and without [{gone_names}]"
        return self.wait_for_consensus(ok, timeout=timeout, what=what, watch=watch, explain=explain)

    def wait_for_sync(
        self,
        consensus: Consensus,
        members: Iterable[Member | str | int] | None = None,
        *,
        timeout: float | None = None,
    ) -> None:
        """Wait until each of ``members`` (default: every running node) holds
        ``consensus`` or a later one (its ``GET /info`` ``epoch``), so that it routes,
        stores and replicates by it. An authority's consensus reaches the nodes only when
        they next fetch (by its ``fresh_until``), so a test that needs every node to agree
        calls this after :meth:`wait_for_nodes`.

        :class:`DevnetStartError` if one of them exits, or after ``timeout`` s (default:
        five consensus intervals, at least 20 s) naming the nodes behind.
        """
        if members is None:
            chosen = [m for m in self.nodes if m.is_running()]
        else:
            chosen = [self.node(m) for m in members]
        if timeout is None:
            timeout = max(20.0, 5 * self.interval_ms / 1000)
        deadline = time.monotonic() + timeout
        behind = list(chosen)
        while True:
            self._check_alive(chosen, f"while waiting for nodes to adopt epoch {consensus.epoch}")
            epochs = {m: _epoch_of(self._info(m)) for m in behind}
            behind = [m for m in behind if (epochs[m] or -1) < consensus.epoch]
            if not behind:
                return
            if time.monotonic() > deadline:
                lag = ", ".join(f"{m.name} (epoch {epochs[m]})" for m in behind)
                raise DevnetStartError(
                    f"nodes still behind consensus epoch {consensus.epoch} after "
                    f"{timeout:.0f} s: {lag}"
                )
            time.sleep(0.05)

    # -- selecting members

    def node(self, which: Member | str | int) -> Member:
        """A node by :class:`Member`, index, name (``node-3``) or node-ID prefix (hex)."""
        return _select(self.nodes, which, "node")

    def authority(self, which: Member | str | int) -> Member:
        return _select(self.authorities, which, "authority")

    # -- starting

    def up(
        self,
        nodes: int = DEFAULT_NODES,
        swarm_size: int = DEFAULT_SWARM_SIZE,
        authorities: int = DEFAULT_AUTHORITIES,
        threshold: int | None = None,
        *,
        interval_ms: int = DEFAULT_INTERVAL_MS,
        fresh: bool = False,
        timeout: float | None = None,
    ) -> DevnetStatus:
        """Start ``authorities`` authorities and ``nodes`` nodes and wait until the
        consensus lists every node and every node holds it (see the module note); return
        the status.

        ``threshold`` defaults to a majority of the authorities. ``fresh`` first removes
        the member data dirs (``auth-I``, ``node-I``) a previous devnet left in the
        directory; otherwise their keys and stored messages are reused.

        Raises :class:`DevnetRunning` if a devnet runs in the directory,
        :class:`DevnetStartError` if a process dies or is not ready in time (everything
        started is stopped first), :class:`ValueError` for bad numbers. On
        KeyboardInterrupt (or any exception) everything started is stopped and it
        propagates.
        """
        if nodes < 1 or authorities < 1 or swarm_size < 1:
            raise ValueError("a devnet needs at least one node and one authority")
        if threshold is None:
            threshold = authorities // 2 + 1
        if not 1 <= threshold <= authorities:
            raise ValueError(f"threshold must be between 1 and {authorities}, not {threshold}")
        if interval_ms < MIN_INTERVAL_MS:
            raise ValueError(f"interval_ms must be at least {MIN_INTERVAL_MS}")
        if self.members:
            raise DevnetRunning("this Devnet object has already started a devnet")
        self.swarm_size, self.threshold, self.interval_ms = swarm_size, threshold, interval_ms
        self.dir.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        try:
            self._clear_stale()
            if fresh:
                self._remove_member_dirs()
            self.started_ms = time.time_ns() // 1_000_000
            deadline = time.monotonic() + (timeout or START_TIMEOUT)
            self._start_authorities(authorities, threshold, deadline)
            self._log(f"{authorities} authorit{'y' if authorities == 1 else 'ies'} ready")
            self._write_state()
            new = [self._new_member("node", i) for i in range(nodes)]
            self.nodes.extend(new)
            for member in new:
                self._start_process(member)
            self._wait_started(new, deadline)
            self._write_state()
            self._log(f"{nodes} node{'s' * (nodes != 1)} listening; waiting for the consensus")
            full = self.wait_for_nodes(present=new, timeout=timeout, watch=self.members)
            self.wait_for_sync(full, timeout=timeout)
            self._write_state()
        except BaseException:
            self.down(grace=STOP_GRACE)
            raise
        return self.status()

    def _take_lock(self) -> None:
        if self._lock_fd is not None:
            return
        fd = os.open(self.dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DevnetRunning(
                f"a devnet is already running (or starting) in {self.dir}: another manager "
                f"holds {LOCK_FILE}; stop it with `veil devnet down --dir {self.dir}`"
            ) from None
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None

    def _clear_stale(self) -> None:
        """Refuse if devnet.json names a live devnet; remove it if all it names is dead."""
        try:
            previous = Devnet.attach(self.dir)
        except NoDevnet:
            return
        except DevnetError:
            raise DevnetRunning(
                f"{self.state_file} is damaged, so a devnet may be running in {self.dir}; "
                f"stop it, or remove the file if none runs"
            ) from None
        if previous.is_running():
            alive = [m.name for m in previous.members if m.is_running()]
            raise DevnetRunning(
                f"a devnet is already running in {self.dir} "
                f"({', '.join(alive) or 'its manager'} alive); "
                f"stop it with `veil devnet down --dir {self.dir}`"
            )
        self._log(f"removing stale {self.state_file} (its processes are gone)")
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()

    def _remove_member_dirs(self) -> None:
        for child in self.dir.iterdir():
            if _MEMBER_DIR.match(child.name) and child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)

    def _new_member(self, role: Role, index: int) -> Member:
        prefix = "auth" if role == "authority" else "node"
        data_dir = self.dir / f"{prefix}-{index}"
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return Member(role=role, index=index, data_dir=data_dir)

    def _start_authorities(self, count: int, threshold: int, deadline: float) -> None:
        previous_ports: dict[bytes, int] = {}
        with contextlib.suppress(OSError, VeilError):
            # Keep the ports of the last run, so a network.json a client copied still works.
            old = NetworkFile.from_json(self.network_file.read_text())
            previous_ports = {a.key: a.port for a in old.authorities}
        auths = [self._new_member("authority", i) for i in range(count)]
        for member in auths:
            member.id = self._authority_key(member)
            member.port = free_port(previous_ports.get(bytes.fromhex(member.id), 0))
        self._network = NetworkFile(
            authorities=tuple(Authority(bytes.fromhex(m.id), m.host, m.port) for m in auths),
            threshold=threshold,
        )
        _write_atomic(self.network_file, self._network.to_json().encode())
        self.authorities.extend(auths)
        for member in auths:
            self._start_process(member)
        self._wait_started(auths, deadline)

    def _authority_key(self, member: Member) -> str:
        argv = [*self.node_command, "authority-init", "--data-dir", str(member.data_dir)]
        try:
            done = subprocess.run(argv, capture_output=True, env=self.env, timeout=60, check=False)
        except subprocess.TimeoutExpired:
            raise DevnetStartError(f"{member.name}: `authority-init` did not finish") from None
        out = done.stdout.decode("utf-8", "replace").strip()
        err = done.stderr.decode("utf-8", "replace").strip()
        if done.returncode != 0:
            raise DevnetStartError(
                f"{member.name}: `{' '.join(argv)}` failed with exit code {done.returncode}"
                f"\n{_indent(err or out)}"
            )
        try:
            key = json.loads(out.splitlines()[-1])["key"]
            bytes.fromhex(key)
            if len(key) != 64:
                raise ValueError
        except (ValueError, IndexError, KeyError, TypeError):
            raise DevnetStartError(
                f'{member.name}: authority-init printed {out[:200]!r}, not {{"key": "<hex>"}}'
            ) from None
        return str(key)

    def _config_tables(self, member: Member) -> dict[str, dict[str, Any]]:
        if member.role == "authority":
            base: dict[str, dict[str, Any]] = {
                "authority": {"interval_ms": self.interval_ms, "swarm_size": self.swarm_size},
            }
            return _merge(base, self.authority_config)
        base = {
            "network": {"file": str(self.network_file)},
            # Every client and every peer of a loopback devnet connects from 127.0.0.1,
            # so a per-address limit would throttle the whole network as one client.
            "rate_limit": {"exempt": ["127.0.0.0/8"]},
            # A node that was down catches up by anti-entropy pulls; the default (10 s
            # between pulls) is for real networks, a devnet should catch up at once.
            "replication": {"sync_interval": 1.0},
        }
        return _merge(base, self.node_config)

    def _argv(self, member: Member, port: int) -> list[str]:
        listen = f"{member.host}:{port}"
        dd = str(member.data_dir)
        cfg = str(member.config_path)
        if member.role == "authority":
            return [
                *self.node_command,
                "authority",
                "--data-dir",
                dd,
                "--listen",
                listen,
                "--network",
                str(self.network_file),
                "--config",
                cfg,
            ]
        return [*self.node_command, "run", "--data-dir", dd, "--listen", listen, "--config", cfg]

    def _start_process(self, member: Member, port: int | None = None) -> None:
        """Spawn ``member`` (authorities on their pinned port, nodes on ``port`` or any)."""
        member.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        member.config_path.write_text(_toml(self._config_tables(member)))
        listen_port = member.port if member.role == "authority" else (port or 0)
        argv = self._argv(member, listen_port)
        with member.log_path.open("ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"--- {stamp} veil devnet: {' '.join(argv)}\n".encode())
            log.flush()
            member.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                # Its own session: terminal signals reach only the manager, which stops
                # its children in order; and a detached devnet outlives the manager.
                start_new_session=True,
            )
        member.pid = member.process.pid
        self._reported.discard(member)

    def _wait_started(self, members: Sequence[Member], deadline: float) -> None:
        """Wait until each member has written its info file naming its pid and answers
        GET /info; :class:`DevnetStartError` if one exits or the deadline passes."""
        pending = list(members)
        while pending:
            self._check_alive(members, "while starting")
            for member in list(pending):
                if self._read_info_file(member) and self._info(member) is not None:
                    pending.remove(member)
            if not pending:
                return
            if time.monotonic() > deadline:
                names = ", ".join(m.name for m in pending)
                tails = "\n".join(self._tail_block(m) for m in pending)
                raise DevnetStartError(f"not ready in time: {names}\n{tails}")
            time.sleep(0.05)

    def _read_info_file(self, member: Member) -> bool:
        try:
            doc = json.loads(member.info_path.read_text())
        except (OSError, ValueError):
            return False
        if not isinstance(doc, dict) or doc.get("pid") != member.pid:
            return False  # not yet written, or left by an earlier process
        host, port = doc.get("host"), doc.get("port")
        if (not isinstance(host, str) or type(port) is not int) and isinstance(
            doc.get("address"), str
        ):
            host, _, port_text = doc["address"].rpartition(":")
            host = host.strip("[]")
            port = int(port_text) if port_text.isdigit() else None
        if not isinstance(host, str) or type(port) is not int:
            return False
        member.host, member.port = host, port
        if member.role == "node":
            node_id, onion_key = doc.get("node_id"), doc.get("onion_key")
            if not isinstance(node_id, str) or not isinstance(onion_key, str):
                return False
            member.id, member.onion_key = node_id, onion_key
        elif isinstance(doc.get("key"), str) and doc["key"] != member.id:
            raise DevnetStartError(
                f"{member.name} runs with key {doc['key'][:16]}..., but authority-init "
                f"gave {member.id[:16]}...; network.json would pin the wrong key"
            )
        return True

    def _check_alive(self, members: Iterable[Member], when: str) -> None:
        dead = [m for m in members if m.pid is not None and not m.is_running()]
        if dead:
            blocks = "\n".join(self._tail_block(m) for m in dead)
            names = ", ".join(m.name for m in dead)
            raise DevnetStartError(f"{names} exited {when}\n{blocks}")

    def _tail_block(self, member: Member) -> str:
        code = member.exit_code
        state = (
            f"exited with code {code}"
            if code is not None
            else ("running" if member.is_running() else "not running")
        )
        tail = member.log_tail() or "(empty log)"
        return (
            f"--- {member.name} (pid {member.pid}, {state}); last lines of {member.log_path}:\n"
            f"{_indent(tail)}"
        )

    # -- changing a running devnet (library; each returns once the change is visible)

    def add_node(self, *, wait: bool = True, timeout: float | None = None) -> Member:
        """Start one more node (the next index) and, if ``wait``, wait until the consensus
        lists it and every running node holds that consensus."""
        index = max((m.index for m in self.nodes), default=-1) + 1
        member = self._new_member("node", index)
        self.nodes.append(member)
        self._start_process(member)
        self._wait_started([member], time.monotonic() + (timeout or START_TIMEOUT))
        self._write_state()
        if wait:
            listed = self.wait_for_nodes(present=[member], timeout=timeout, watch=[member])
            self.wait_for_sync(listed, timeout=timeout)
        return member

    def start_node(self, which: Member | str | int, *, wait: bool = True) -> Member:
        """Start a stopped node again on its data dir (same keys and messages), on its
        previous port if that is free; if ``wait``, as :meth:`add_node`."""
        member = self.node(which)
        if member.is_running():
            raise DevnetError(f"{member.name} is already running")
        self._start_process(member, port=free_port(member.port))
        self._wait_started([member], time.monotonic() + START_TIMEOUT)
        self._write_state()
        if wait:
            self.wait_for_sync(self.wait_for_nodes(present=[member], watch=[member]))
        return member

    def stop_node(self, which: Member | str | int, grace: float = STOP_GRACE) -> int | None:
        """SIGTERM the node and wait for it (SIGKILL after ``grace``); its exit code (None
        if this manager did not start it)."""
        member = self.node(which)
        self._stop([member], grace)
        return member.exit_code

    def kill_node(self, which: Member | str | int) -> None:
        """SIGKILL the node (a crash) and wait until it is gone."""
        self._kill(self.node(which))

    def stop_authority(self, which: Member | str | int, grace: float = STOP_GRACE) -> int | None:
        member = self.authority(which)
        self._stop([member], grace)
        return member.exit_code

    def kill_authority(self, which: Member | str | int) -> None:
        self._kill(self.authority(which))

    def start_authority(self, which: Member | str | int) -> Member:
        """Start a stopped authority again, on its pinned address (network.json names it)."""
        member = self.authority(which)
        if member.is_running():
            raise DevnetError(f"{member.name} is already running")
        if free_port(member.port) != member.port:
            raise DevnetError(f"{member.name}'s port {member.port} is taken by another program")
        self._start_process(member)
        self._wait_started([member], time.monotonic() + START_TIMEOUT)
        self._write_state()
        return member

    def restart_authority(self, which: Member | str | int, grace: float = STOP_GRACE) -> Member:
        """Stop the authority (SIGTERM) and start it again on the same data dir and port."""
        self.stop_authority(which, grace)
        return self.start_authority(which)

    def _kill(self, member: Member) -> None:
        _send(member, signal.SIGKILL)
        _wait_gone([member], 10.0)
        self._reported.add(member)

    def _stop(self, members: Sequence[Member], grace: float) -> list[Member]:
        """SIGTERM every running member at once, wait up to ``grace``, SIGKILL the rest.
        Returns the members that needed SIGKILL."""
        running = [m for m in members if m.is_running()]
        for member in running:
            _send(member, signal.SIGTERM)
        left = _wait_gone(running, grace)
        for member in left:
            _send(member, signal.SIGKILL)
        _wait_gone(left, 10.0)
        self._reported.update(members)
        return left

    # -- stopping

    def down(self, grace: float = STOP_GRACE) -> StopReport:
        """Stop every process of the devnet (SIGTERM, then SIGKILL after ``grace``),
        remove ``devnet.json`` and release the lock. Safe to call twice."""
        running = [m for m in self.members if m.is_running()]
        try:
            killed = self._stop(running, grace)
        finally:
            # Reap what this manager started, so no zombie is left behind.
            for member in self.members:
                if member.process is not None and member.process.poll() is not None:
                    member.process.wait()
            if self._owns_state:
                with contextlib.suppress(FileNotFoundError):
                    self.state_file.unlink()
                self._owns_state = False
            self._release_lock()
            self.close()
        return StopReport(
            stopped=tuple(m.name for m in running),
            killed=tuple(m.name for m in killed),
            via_manager=False,
        )

    def detach(self) -> None:
        """Leave the processes running without a manager: ``devnet.json`` now says so,
        and ``veil devnet down`` (or :func:`stop_devnet`) stops them."""
        self.manager_kind, self.manager_pid = "detached", None
        self._write_state()
        self._owns_state = False
        for member in self.members:
            member.process = None  # never signal or reap them from this object again
        self._release_lock()
        self.close()

    def close(self) -> None:
        """Close the HTTP client (processes are left alone)."""
        if self._http is not None:
            self._http.close()
            self._http = None

    def __enter__(self) -> Devnet:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.down()

    # -- status

    def status(self) -> DevnetStatus:
        """Every process: ID, address, pid, swarm in the current consensus, and whether
        it is alive (running and answering GET /info, both checked now)."""
        consensus: Consensus | None = None
        error: str | None = None
        try:
            consensus = self.fetch_consensus()
            if consensus is None:
                error = "no authority serves a consensus"
        except VeilError as exc:
            error = f"{type(exc).__name__}: {exc}"
        members = self.members
        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(self._answers, members))
        statuses: list[MemberStatus] = []
        for member, (running, info) in zip(members, answers, strict=True):
            swarm_id = None
            if consensus is not None and member.role == "node" and member.id:
                listed = consensus.node(bytes.fromhex(member.id))
                swarm_id = None if listed is None else listed.swarm_id
            statuses.append(
                MemberStatus(
                    role=member.role,
                    name=member.name,
                    id=member.id,
                    address=member.address,
                    pid=member.pid,
                    swarm=swarm_id,
                    running=running,
                    alive=running and info is not None,
                    epoch=_epoch_of(info),
                )
            )
        return DevnetStatus(
            dir=self.dir,
            network_file=self.network_file,
            manager_kind=self.manager_kind,
            manager_pid=self.manager_pid,
            swarm_size=self.swarm_size,
            threshold=self.threshold,
            interval_ms=self.interval_ms,
            epoch=None if consensus is None else consensus.epoch,
            consensus_error=error,
            authorities=tuple(s for s in statuses if s.role == "authority"),
            nodes=tuple(s for s in statuses if s.role == "node"),
        )

    def _answers(self, member: Member) -> tuple[bool, dict[str, Any] | None]:
        """Whether the process runs, and its /info if it answers as the member we recorded
        (not another program on a reused port)."""
        if not member.is_running():
            return False, None
        info = self._info(member)
        if info is None:
            return True, None
        claimed = info.get("node_id") if member.role == "node" else info.get("key", member.id)
        return True, info if claimed == member.id else None


# --- module-level commands (what ``veil devnet status|down`` run) --------------------------


def devnet_status(directory: str | os.PathLike[str]) -> DevnetStatus:
    """The status of the devnet recorded in ``directory``.

    :class:`NoDevnet` if none is recorded, or if every process it records is gone (the
    stale file is then left for ``up`` to clean, and the message says so).
    """
    net = Devnet.attach(directory)
    try:
        if not net.is_running():
            raise NoDevnet(
                f"no devnet is running in {net.dir} (its {STATE_FILE} is stale: every "
                f"process it names has exited)"
            )
        return net.status()
    finally:
        net.close()


def stop_devnet(directory: str | os.PathLike[str], grace: float = STOP_GRACE) -> StopReport:
    """Stop the devnet recorded in ``directory`` and remove its ``devnet.json``.

    A foreground manager is asked to stop (SIGTERM) and given ``grace`` + 10 s; whatever
    is still running after that, and every process of a detached or library devnet, is
    sent SIGTERM and then SIGKILL. Only processes that are still ours are signalled (see
    the module note). :class:`NoDevnet` if nothing is recorded.
    """
    net = Devnet.attach(directory)
    via_manager = False
    pid = net.manager_pid
    if net.manager_kind == "foreground" and pid is not None and _manager_is_alive(pid):
        running = [m.name for m in net.members if m.is_running()]
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace + 10.0
        while _manager_is_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        via_manager = True
        if not _manager_is_alive(pid) and not any(m.is_running() for m in net.members):
            with contextlib.suppress(FileNotFoundError):
                net.state_file.unlink()
            return StopReport(stopped=tuple(running), killed=(), via_manager=True)
    report = net.down(grace)
    return StopReport(report.stopped, report.killed, via_manager)


# --- helpers -----------------------------------------------------------------------------------


def _send(member: Member, sig: signal.Signals) -> None:
    """Signal ``member`` if it is still ours (a child we started, or a recorded pid whose
    command line still names its data dir)."""
    try:
        if member.process is not None:
            if member.process.poll() is None:
                member.process.send_signal(sig)
        elif member.pid is not None and pid_is_ours(member.pid, member.data_dir):
            os.kill(member.pid, sig)
    except ProcessLookupError:
        pass  # it exited in between


def _wait_gone(members: Sequence[Member], timeout: float) -> list[Member]:
    """Wait until every member has exited (reaping our children); those still running."""
    deadline = time.monotonic() + timeout
    left = [m for m in members if m.is_running()]
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = [m for m in left if m.is_running()]
    return left


def _select(members: Sequence[Member], which: Member | str | int, role: str) -> Member:
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


def _epoch_of(info: Mapping[str, Any] | None) -> int | None:
    epoch = None if info is None else info.get("epoch")
    return epoch if type(epoch) is int else None


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines())
