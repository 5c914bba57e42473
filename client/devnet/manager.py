"""The devnet manager: :class:`Devnet`, a facade over the modules beside it.

Design note
-----------
:class:`Devnet` is a facade: it holds one devnet's settings and members and sequences
the jobs that live in the modules beside it (the lock, the state file, the config and
command line, spawning, probing, waiting, process identity). Its methods are the
library's API, which tests and benchmarks use to get a real network on 127.0.0.1.

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
log; so does a timeout, naming what was missing. A failed (or interrupted) start stops
everything it started; data dirs and logs stay for the post-mortem.

The manager is recorded too (``manager.kind``): ``foreground`` (``veil devnet up``
without ``--detach``: ``veil devnet down`` sends it SIGTERM and lets it stop its own
children), ``library`` (a test or benchmark: ``down`` from outside stops the children
directly), or ``detached`` (no manager).

Everything here is blocking (subprocess, sleeps, sync httpx). A trio test calls it
through ``trio.to_thread.run_sync`` (see ``tests/devnetutil.py``).

Over the house's 500 lines (about 660) on purpose: what is left here is the one class
of the library's API, :class:`Devnet` (about 550 lines, 37 methods), each method a few
lines that sequence the modules beside it (the longest: :meth:`Devnet.status`, about 40
lines of code building the table, and :meth:`Devnet.up`, about 35); splitting the class
further would scatter one object. Measured: this note is about 40 lines, the imports
and public constants before the class about 70, the methods' docstrings about 85; the
code is about 460 lines.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

import veil.client.devnet.readiness as readiness
from veil.client.devnet.config import Tables, command_line, config_tables, toml_text
from veil.client.devnet.lock import DirectoryLock
from veil.client.devnet.members import Member, Role, select_member, wait_gone
from veil.client.devnet.probe import Prober, epoch_of
from veil.client.devnet.process_identity import manager_is_alive
from veil.client.devnet.spawning import Tether, authority_key, free_port, spawn
from veil.client.devnet.state_file import (
    STATE_FILE,
    DevnetRecord,
    ManagerKind,
    read_state,
    write_state,
)
from veil.client.devnet.status import DevnetStatus, MemberStatus, StopReport
from veil.client.errors import DevnetError, DevnetRunning, InvalidArgument, NoDevnet
from veil.client.files import read_network_file, write_atomically
from veil.onion.directory import Authority, Consensus, NetworkFile
from veil.onion.errors import NetworkFileError, VeilError
from veil.onion.wallclock import wall_clock_ms

__all__ = [
    "DEFAULT_AUTHORITIES",
    "DEFAULT_INTERVAL_MS",
    "DEFAULT_NODES",
    "DEFAULT_SWARM_SIZE",
    "KILL_WAIT_S",
    "MIN_INTERVAL_MS",
    "NETWORK_FILE",
    "START_TIMEOUT_S",
    "STOP_GRACE_S",
    "Devnet",
]

NETWORK_FILE = "network.json"

DEFAULT_NODES = 10
DEFAULT_SWARM_SIZE = 5  # DESIGN.md: swarm target size 5
DEFAULT_AUTHORITIES = 1
#: Consensus interval of ``veil devnet up`` (production: an hour; onion.directory's
#: default, a minute, would make a devnet wait a minute for its first full consensus).
DEFAULT_INTERVAL_MS = 5000
#: Seconds between SIGTERM and SIGKILL when stopping. A node drains in-flight requests
#: for ``http.shutdown_grace`` (5 s by default) before it exits.
STOP_GRACE_S = 10.0
#: Seconds a process gets to write its info file and answer /info after it starts.
START_TIMEOUT_S = 60.0
#: Seconds a process gets to exit after SIGKILL.
KILL_WAIT_S = 10.0

_MEMBER_DIR = re.compile(r"^(auth|node)-(\d+)$")

#: The shortest consensus interval an authority accepts ([authority] interval_ms):
#: checked here so that a bad value is a usage error, not a child that dies at start.
MIN_INTERVAL_MS = 500


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
        node_config: Tables | None = None,
        authority_config: Tables | None = None,
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
        self._prober = Prober()
        self._lock = DirectoryLock(self.dir)
        self._owns_state = False
        self._reported: set[Member] = set()
        #: What makes each process this object started stop if this process dies
        #: (spawning.py), until :meth:`detach` releases them.
        self._tethers: dict[Member, Tether] = {}

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
                self._network = read_network_file(self.network_file)
            except NetworkFileError as exc:  # missing, unreadable or damaged: this devnet's
                raise DevnetError(str(exc)) from None
        return self._network

    @property
    def members(self) -> list[Member]:
        return [*self.authorities, *self.nodes]

    def _write_state(self) -> None:
        record = DevnetRecord(
            manager_kind=self.manager_kind,
            manager_pid=self.manager_pid,
            swarm_size=self.swarm_size,
            threshold=self.threshold,
            interval_ms=self.interval_ms,
            started_ms=self.started_ms,
            authorities=self.authorities,
            nodes=self.nodes,
        )
        write_state(self.dir, self.network_file, record)
        self._owns_state = True

    @classmethod
    def attach(cls, directory: str | os.PathLike[str], **kwargs: Any) -> Devnet:
        """A :class:`Devnet` for the devnet recorded in ``directory/devnet.json`` (started
        by another process, or this one). :class:`NoDevnet` if there is no such file;
        :class:`DevnetError` if it is damaged."""
        net = cls(directory, **kwargs)
        record = read_state(net.dir)
        net.manager_kind, net.manager_pid = record.manager_kind, record.manager_pid
        net.swarm_size, net.threshold = record.swarm_size, record.threshold
        net.interval_ms, net.started_ms = record.interval_ms, record.started_ms
        net.authorities, net.nodes = record.authorities, record.nodes
        net._owns_state = True
        return net

    # -- liveness

    def is_running(self) -> bool:
        """Some process of this devnet (or its foreground manager) is alive."""
        if any(m.is_running() for m in self.members):
            return True
        return (
            self.manager_kind == "foreground"
            and self.manager_pid is not None
            and self.manager_pid != os.getpid()
            and manager_is_alive(self.manager_pid)
        )

    def exited(self) -> list[Member]:
        """Members that have exited since the last call (for a foreground watcher)."""
        gone = [m for m in self.members if m not in self._reported and not m.is_running()]
        self._reported.update(gone)
        return gone

    # -- HTTP

    @property
    def http(self) -> httpx.Client:
        """The blocking HTTP client the devnet asks its processes with (loopback only)."""
        return self._prober.http

    def fetch_consensus(self, authority: Member | int | None = None) -> Consensus | None:
        """The current consensus, verified against ``network.json`` (pinned keys and
        threshold), from ``authority`` or else the first authority that has one.

        None if no authority has one yet (or none answers). A document that fails
        verification raises its :class:`~veil.onion.errors.VeilError`.
        """
        if authority is None:
            candidates = self.authorities
        elif isinstance(authority, int):
            candidates = [self.authorities[authority]]
        else:
            candidates = [authority]
        return self._prober.fetch_consensus(candidates, self.network)

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
        timeout_s: float | None = None,
        what: str = "the expected consensus",
        watch: Iterable[Member] = (),
        explain: Callable[[Consensus], str] | None = None,
    ) -> Consensus:
        """Poll the authorities until a verified consensus satisfies ``predicate``.

        Fails (:class:`DevnetStartError`) as soon as a ``watch``ed member exits or no
        authority runs, or after ``timeout_s`` (default: ten consensus intervals, at
        least 30 s), naming what was missing (``explain`` says what the last consensus
        lacks).
        """
        if timeout_s is None:
            timeout_s = max(30.0, 10 * self.interval_ms / 1000)
        return readiness.wait_for_consensus(
            self.fetch_consensus,
            self.authorities,
            predicate,
            timeout_s=timeout_s,
            what=what,
            watch=watch,
            explain=explain,
        )

    def wait_for_nodes(
        self,
        present: Iterable[Member | str | int] = (),
        absent: Iterable[Member | str | int] = (),
        *,
        timeout_s: float | None = None,
        watch: Iterable[Member] = (),
    ) -> Consensus:
        """Wait for a consensus that lists every ``present`` node and none of ``absent``
        (as :meth:`wait_for_consensus`, which fails early if a ``watch``ed member exits)."""
        want = [self.node(n) for n in present]
        gone = [self.node(n) for n in absent]
        ok, explain, what = readiness.nodes_condition(want, gone)
        return self.wait_for_consensus(
            ok, timeout_s=timeout_s, what=what, watch=watch, explain=explain
        )

    def wait_for_sync(
        self,
        consensus: Consensus,
        members: Iterable[Member | str | int] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> None:
        """Wait until each of ``members`` (default: every running node) holds
        ``consensus`` or a later one (its ``GET /info`` ``epoch``), so that it routes,
        stores and replicates by it. An authority's consensus reaches the nodes only when
        they next fetch (by its ``fresh_until``), so a test that needs every node to agree
        calls this after :meth:`wait_for_nodes`.

        :class:`DevnetStartError` if one of them exits, or after ``timeout_s`` (default:
        five consensus intervals, at least 20 s) naming the nodes behind.
        """
        if members is None:
            chosen = [m for m in self.nodes if m.is_running()]
        else:
            chosen = [self.node(m) for m in members]
        if timeout_s is None:
            timeout_s = max(20.0, 5 * self.interval_ms / 1000)
        readiness.wait_for_sync(self._prober, consensus, chosen, timeout_s=timeout_s)

    # -- selecting members

    def node(self, which: Member | str | int) -> Member:
        """A node by :class:`Member`, index, name (``node-3``) or node-ID prefix (hex)."""
        return select_member(self.nodes, which, "node")

    def authority(self, which: Member | str | int) -> Member:
        return select_member(self.authorities, which, "authority")

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
        timeout_s: float | None = None,
    ) -> DevnetStatus:
        """Start ``authorities`` authorities and ``nodes`` nodes and wait until the
        consensus lists every node and every node holds it (see the module note); return
        the status.

        ``threshold`` defaults to a majority of the authorities. ``fresh`` first removes
        the member data dirs (``auth-I``, ``node-I``) a previous devnet left in the
        directory; otherwise their keys and stored messages are reused.

        Raises :class:`DevnetRunning` if a devnet runs in the directory,
        :class:`DevnetStartError` if a process dies or is not ready in time (everything
        started is stopped first), :class:`~veil.client.errors.InvalidArgument` (a
        ValueError) for bad numbers. On KeyboardInterrupt (or any exception) everything
        started is stopped and it propagates.
        """
        if nodes < 1 or authorities < 1 or swarm_size < 1:
            raise InvalidArgument("a devnet needs at least one node and one authority")
        if threshold is None:
            threshold = authorities // 2 + 1
        if not 1 <= threshold <= authorities:
            raise InvalidArgument(f"threshold must be between 1 and {authorities}, not {threshold}")
        if interval_ms < MIN_INTERVAL_MS:
            raise InvalidArgument(f"interval_ms must be at least {MIN_INTERVAL_MS}")
        if self.members:
            raise DevnetRunning("this Devnet object has already started a devnet")
        self.swarm_size, self.threshold, self.interval_ms = swarm_size, threshold, interval_ms
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            self._clear_stale()
            if fresh:
                self._remove_member_dirs()
            self.started_ms = wall_clock_ms()
            deadline = time.monotonic() + (timeout_s or START_TIMEOUT_S)
            self._start_authorities(authorities, threshold, deadline)
            self._log(f"{authorities} authorit{'y' if authorities == 1 else 'ies'} ready")
            self._write_state()
            new = [self._new_member("node", i) for i in range(nodes)]
            self.nodes.extend(new)
            for member in new:
                self._start_process(member)
            readiness.wait_started(self._prober, new, deadline)
            self._write_state()
            self._log(f"{nodes} node{'s' * (nodes != 1)} listening; waiting for the consensus")
            full = self.wait_for_nodes(present=new, timeout_s=timeout_s, watch=self.members)
            self.wait_for_sync(full, timeout_s=timeout_s)
            self._write_state()
        except BaseException:
            self.down(grace_s=STOP_GRACE_S)
            raise
        return self.status()

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
        with contextlib.suppress(NetworkFileError):
            # Keep the ports of the last run, so a network.json a client copied still works.
            old = read_network_file(self.network_file)
            previous_ports = {a.key: a.port for a in old.authorities}
        auths = [self._new_member("authority", i) for i in range(count)]
        for member in auths:
            member.id = authority_key(self.node_command, member.name, member.data_dir, self.env)
            member.port = free_port(previous_ports.get(bytes.fromhex(member.id), 0))
        self._network = NetworkFile(
            authorities=tuple(Authority(bytes.fromhex(m.id), m.host, m.port) for m in auths),
            threshold=threshold,
        )
        write_atomically(self.network_file, self._network.to_json().encode(), mode=0o644)
        self.authorities.extend(auths)
        for member in auths:
            self._start_process(member)
        readiness.wait_started(self._prober, auths, deadline)

    def _start_process(self, member: Member, port: int | None = None) -> None:
        """Spawn ``member`` (authorities on their pinned port, nodes on ``port`` or any)."""
        member.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        tables = config_tables(
            member,
            interval_ms=self.interval_ms,
            swarm_size=self.swarm_size,
            network_file=self.network_file,
            node_config=self.node_config,
            authority_config=self.authority_config,
        )
        member.config_path.write_text(toml_text(tables))
        listen_port = member.port if member.role == "authority" else (port or 0)
        argv = command_line(self.node_command, member, listen_port, self.network_file)
        old = self._tethers.pop(member, None)
        if old is not None:
            old.close()  # of the member's previous run, which has exited
        tether = self._tethers[member] = Tether()
        member.process = spawn(argv, member.log_path, self.env, tether)
        member.pid = member.process.pid
        self._reported.discard(member)

    # -- changing a running devnet (library; each returns once the change is visible)

    def add_node(self, *, wait: bool = True, timeout_s: float | None = None) -> Member:
        """Start one more node (the next index) and, if ``wait``, wait until the consensus
        lists it and every running node holds that consensus."""
        index = max((m.index for m in self.nodes), default=-1) + 1
        member = self._new_member("node", index)
        self.nodes.append(member)
        self._start_process(member)
        deadline = time.monotonic() + (timeout_s or START_TIMEOUT_S)
        readiness.wait_started(self._prober, [member], deadline)
        self._write_state()
        if wait:
            listed = self.wait_for_nodes(present=[member], timeout_s=timeout_s, watch=[member])
            self.wait_for_sync(listed, timeout_s=timeout_s)
        return member

    def start_node(self, which: Member | str | int, *, wait: bool = True) -> Member:
        """Start a stopped node again on its data dir (same keys and messages), on its
        previous port if that is free; if ``wait``, as :meth:`add_node`."""
        member = self.node(which)
        if member.is_running():
            raise DevnetError(f"{member.name} is already running")
        self._start_process(member, port=free_port(member.port))
        readiness.wait_started(self._prober, [member], time.monotonic() + START_TIMEOUT_S)
        self._write_state()
        if wait:
            self.wait_for_sync(self.wait_for_nodes(present=[member], watch=[member]))
        return member

    def stop_node(self, which: Member | str | int, grace_s: float = STOP_GRACE_S) -> int | None:
        """SIGTERM the node and wait for it (SIGKILL after ``grace_s``); its exit code
        (None if this manager did not start it)."""
        member = self.node(which)
        self._stop([member], grace_s)
        return member.exit_code

    def kill_node(self, which: Member | str | int) -> None:
        """SIGKILL the node (a crash) and wait until it is gone."""
        member = self.node(which)
        member.send_signal(signal.SIGKILL)
        wait_gone([member], KILL_WAIT_S)
        self._reported.add(member)

    def stop_authority(
        self, which: Member | str | int, grace_s: float = STOP_GRACE_S
    ) -> int | None:
        """SIGTERM the authority and wait for it (SIGKILL after ``grace_s``); its exit
        code (None if this manager did not start it)."""
        member = self.authority(which)
        self._stop([member], grace_s)
        return member.exit_code

    def start_authority(self, which: Member | str | int) -> Member:
        """Start a stopped authority again, on its pinned address (network.json names it)."""
        member = self.authority(which)
        if member.is_running():
            raise DevnetError(f"{member.name} is already running")
        if free_port(member.port) != member.port:
            raise DevnetError(f"{member.name}'s port {member.port} is taken by another program")
        self._start_process(member)
        readiness.wait_started(self._prober, [member], time.monotonic() + START_TIMEOUT_S)
        self._write_state()
        return member

    def restart_authority(self, which: Member | str | int, grace_s: float = STOP_GRACE_S) -> Member:
        """Stop the authority (SIGTERM) and start it again on the same data dir and port."""
        self.stop_authority(which, grace_s)
        return self.start_authority(which)

    def _stop(self, members: Sequence[Member], grace_s: float) -> list[Member]:
        """SIGTERM every running member at once, wait up to ``grace_s``, SIGKILL the rest.
        Returns the members that needed SIGKILL."""
        running = [m for m in members if m.is_running()]
        for member in running:
            member.send_signal(signal.SIGTERM)
        left = wait_gone(running, grace_s)
        for member in left:
            member.send_signal(signal.SIGKILL)
        wait_gone(left, KILL_WAIT_S)
        self._reported.update(members)
        return left

    # -- stopping

    def down(self, grace_s: float = STOP_GRACE_S) -> StopReport:
        """Stop every process of the devnet (SIGTERM, then SIGKILL after ``grace_s``),
        remove ``devnet.json`` and release the lock. Safe to call twice."""
        running = [m for m in self.members if m.is_running()]
        try:
            killed = self._stop(running, grace_s)
        finally:
            # Reap what this manager started, so no zombie is left behind.
            for member in self.members:
                if member.process is not None and member.process.poll() is not None:
                    member.process.wait()
            for tether in self._tethers.values():
                tether.close()  # their processes have exited
            self._tethers.clear()
            if self._owns_state:
                with contextlib.suppress(FileNotFoundError):
                    self.state_file.unlink()
                self._owns_state = False
            self._lock.release()
            self.close()
        return StopReport(
            stopped=tuple(m.name for m in running), killed=tuple(m.name for m in killed)
        )

    def detach(self) -> None:
        """Leave the processes running without a manager: ``devnet.json`` now says so,
        and ``veil devnet down`` (or :func:`stop_devnet`) stops them."""
        self.manager_kind, self.manager_pid = "detached", None
        self._write_state()
        self._owns_state = False
        for member in self.members:
            member.process = None  # never signal or reap them from this object again
        for tether in self._tethers.values():
            tether.release()  # they outlive this process now
        self._tethers.clear()
        self._lock.release()
        self.close()

    def close(self) -> None:
        """Close the HTTP client (processes are left alone)."""
        self._prober.close()

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
            answers = list(pool.map(self._prober.answers, members))
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
                    epoch=epoch_of(info),
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
