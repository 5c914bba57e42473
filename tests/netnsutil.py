"""Hosts in Linux network namespaces, on a private switch that the test creates.

Design note
-----------
A *lab* is a set of network namespaces made with ``ip netns`` (iproute2), all named
``<tag>-<host>`` with a tag unique to this process:

* ``<tag>-sw``, the switch: a bridge ``br0`` and, for each host, the switch end
  ``p-<host>`` of a veth pair. It has no address and no route.
* one namespace per host: ``lo`` and ``eth0`` (the other end of its veth pair) with one
  address of :data:`SUBNET` (``10.231.0.X/24``) and no other route, so a host reaches the
  other hosts of the lab and nothing else.

Nothing is added to the namespace the tests run in: no interface, no address, no route.
That matters: the test machine's own namespace may route ``10.231.0.0/24`` somewhere
real (a sandbox's gateway answers any address), so traffic for the lab must never start
there. Processes run with ``ip netns exec NS ARGV`` (which enters the namespace, then
execs ``ARGV``: the pid is the program's own). The test itself talks to the lab from one
worker thread that has entered a host's namespace (:class:`NetnsThread`: ``setns(2)``
changes the namespace of the calling thread only), and every call checks first that the
thread is in that namespace, so a socket can never be opened from the wrong one. A trio
program (the client library) runs in such a thread too (:class:`NetnsTrio`): trio opens
its sockets in the thread that runs its loop.

Cutting a host off is ``ip -n <tag>-sw link set p-<host> down``: the cable is pulled at
the switch; the host keeps its address and its processes run on, but no packet passes
in either direction until :meth:`Lab.rejoin` sets the link up again.

:func:`unavailable` says why labs cannot be made here (not Linux, not root, no ``ip``,
or the kernel refuses a namespace, a bridge, a veth pair or ``setns``), quoting the
command and its error. :meth:`Lab.close` (also on ``with`` exit, whatever happened)
stops every process the lab started (SIGTERM, then SIGKILL) and deletes its
namespaces, which destroys their interfaces. A lab whose process was killed before it
could clean up leaves its namespaces behind: the next lab deletes those in which no
process runs (:func:`remove_stale_labs`), and never touches any other.

Hosts run what the systemd units of ``contrib/systemd/`` run: :class:`UnitFile` reads a
unit as systemd does for the settings the tests use, and :meth:`UnitFile.command` gives
its ``ExecStart`` with the unit's ``Environment=`` expanded and its absolute paths
moved into the host's own directory tree (``/etc/veil/node.toml`` ->
``ROOT/etc/veil/node.toml``; ``/opt/veil``, the README's venv, -> this test run's
venv), the same arguments in the same order. :meth:`Lab.spawn` takes the unit's
environment and starts the process in ``/`` (a system service's working directory).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import ctypes.util
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import trio

from veil.client.devnet.spawning import Tether

__all__ = ["SUBNET", "Host", "Lab", "NetnsThread", "NetnsTrio", "UnitFile", "unavailable"]

#: The lab's addresses: 10.231.0.1 .. 10.231.0.254, only inside the lab's namespaces.
SUBNET = "10.231.0"
PREFIX_LEN = 24
NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
_LAB_NETNS = re.compile(r"^veil(\d+)-[a-z0-9]+$")
T = TypeVar("T")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS``; :class:`LabError` with its stderr if it fails and ``check``."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise LabError(f"`ip {' '.join(args)}` exited {done.returncode}: {done.stderr.strip()}")
    return done


class LabError(RuntimeError):
    """An ``ip`` command failed (the message quotes it and its error)."""


def _setns(path: Path) -> None:
    """Move the calling thread into the network namespace at ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if hasattr(os, "setns"):  # Python 3.12+
            os.setns(fd, CLONE_NEWNET)
            return
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns({path}): {os.strerror(errno)}")
    finally:
        os.close(fd)


def _current_netns() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def unavailable() -> str | None:
    """Why this machine cannot run a lab, or None if it can. Makes (and deletes) a probe
    namespace ``veil-probe-<pid>`` with a bridge and a veth pair in it, and enters it
    from a thread."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces are Linux-only (this is {sys.platform})"
    if os.geteuid() != 0:
        return f"creating network namespaces needs root (running as uid {os.geteuid()})"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not on PATH"
    probe = f"veil-probe-{os.getpid()}"
    steps = [
        ("netns", "add", probe),
        ("-n", probe, "link", "add", "br0", "type", "bridge"),
        ("-n", probe, "link", "add", "va", "type", "veth", "peer", "name", "vb"),
    ]
    added = False
    try:
        for step in steps:
            try:
                _ip(*step)
            except LabError as exc:
                return f"cannot make a network lab here: {exc}"
            added = True
        with NetnsThread(probe) as thread:
            try:
                thread.call(lambda: None)
            except OSError as exc:
                return f"cannot enter a network namespace from a thread: {exc}"
    finally:
        if added:
            _ip("netns", "del", probe, check=False)
    return None


class NetnsThread:
    """One worker thread inside network namespace ``name``: :meth:`call` runs a function
    there (sockets it opens belong to that namespace, whatever thread uses them later).

    Every call first checks that the thread is in the namespace (and enters it if not),
    raising :class:`OSError` if it cannot: nothing runs in the wrong namespace.
    """

    def __init__(self, name: str) -> None:
        self.path = NETNS_DIR / name
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"netns-{name}"
        )

    def _inside(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        wanted = os.stat(self.path).st_ino
        if _current_netns() != wanted:
            _setns(self.path)
            if _current_netns() != wanted:
                raise OSError(f"this thread is not in {self.path} after setns")
        return fn(*args)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the namespace's thread; its result, or its exception."""
        return self.submit(fn, *args).result()

    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        """``fn(*args)`` in the namespace's thread, without waiting for it."""
        return self._executor.submit(self._inside, fn, args)

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def __enter__(self) -> NetnsThread:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class NetnsTrio:
    """A trio event loop in a thread inside network namespace ``name``, for a test that
    is not itself async: :meth:`start` runs a long-lived task there (an open client, say)
    and returns what it passes to ``task_status.started``; :meth:`run` awaits a function
    in that loop from the calling thread. Sockets opened in the loop belong to the
    namespace. :meth:`close` cancels the tasks and re-raises the loop's error, if any."""

    def __init__(self, name: str) -> None:
        self._thread = NetnsThread(name)
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._done = self._thread.submit(trio.run, self._main)
        while not self._ready.wait(0.1):
            if self._done.done():
                self._done.result()  # the loop failed to start: raise why

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._ready.set()
            await trio.sleep_forever()

    def start(self, afn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """``nursery.start(afn, *args)`` in the loop: the value ``afn`` started with."""
        assert self._nursery is not None
        return trio.from_thread.run(self._nursery.start, afn, *args, trio_token=self._token)

    def run(self, afn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``await afn(*args)`` in the loop; its result, or its exception."""
        return trio.from_thread.run(afn, *args, trio_token=self._token)

    def close(self) -> None:
        if self._nursery is not None and not self._done.done():
            trio.from_thread.run_sync(self._nursery.cancel_scope.cancel, trio_token=self._token)
        try:
            self._done.result()
        finally:
            self._thread.close()

    def __enter__(self) -> NetnsTrio:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass
class Host:
    """A host of the lab: its namespace, its address and its switch port."""

    name: str
    netns: str
    address: str
    port_link: str


@dataclass
class _Process:
    host: Host
    process: subprocess.Popen[bytes]
    log_path: Path
    #: Ties a veil-node child to this process: it stops if the test run is killed.
    tether: Tether


class Lab:
    """Namespaces on a private switch (see the module docstring). Use as a context
    manager; every ``ip`` failure raises :class:`LabError`."""

    def __init__(self, tag: str | None = None) -> None:
        self.tag = tag or f"veil{os.getpid()}"
        self.switch = f"{self.tag}-sw"
        self.hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []
        self._processes: list[_Process] = []

    def __enter__(self) -> Lab:
        remove_stale_labs()
        try:
            self._add_netns(self.switch)
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _add_netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._namespaces.append(name)

    def add_host(self, name: str, index: int) -> Host:
        """A host ``name`` with the address ``SUBNET.index``, plugged into the switch."""
        if not 1 <= index <= 254 or name in self.hosts:
            raise ValueError(f"bad host {name!r} or index {index}")
        if len(f"p-{name}") > 15:  # IFNAMSIZ
            raise ValueError(f"host name {name!r} too long for an interface name")
        host = Host(name, f"{self.tag}-{name}", f"{SUBNET}.{index}", f"p-{name}")
        self._add_netns(host.netns)
        # The veth pair is made in the switch with its peer end straight inside the host:
        # no interface ever appears in the namespace the tests run in.
        _ip(
            "-n", self.switch, "link", "add", host.port_link,
            "type", "veth", "peer", "name", "eth0", "netns", host.netns,
        )  # fmt: skip
        _ip("-n", self.switch, "link", "set", host.port_link, "master", "br0", "up")
        _ip("-n", host.netns, "link", "set", "lo", "up")
        _ip("-n", host.netns, "addr", "add", f"{host.address}/{PREFIX_LEN}", "dev", "eth0")
        _ip("-n", host.netns, "link", "set", "eth0", "up")
        self.hosts[name] = host
        return host

    def cut(self, host: Host) -> None:
        """Pull the host's cable at the switch: nothing passes until :meth:`rejoin`."""
        _ip("-n", self.switch, "link", "set", host.port_link, "down")

    def rejoin(self, host: Host) -> None:
        _ip("-n", self.switch, "link", "set", host.port_link, "up")

    def spawn(
        self,
        host: Host,
        argv: Sequence[str],
        log_path: Path,
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside ``host``'s namespace (``ip netns exec``), output to
        ``log_path``, with ``env`` added to the environment; the lab stops it in
        :meth:`close` if it still runs."""
        # ``ip netns exec`` execs argv with the descriptors it was given, so a veil-node
        # child watches the tether's pipe as one started directly would.
        tether = Tether()
        env = tether.child_env({**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        log: IO[bytes]
        try:
            with log_path.open("ab") as log:
                process = subprocess.Popen(
                    ["ip", "netns", "exec", host.netns, *argv],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=cwd,
                    env=env,
                    pass_fds=tether.pass_fds,
                )
        except BaseException:
            tether.close()
            raise
        tether.spawned()
        self._processes.append(_Process(host, process, log_path, tether))
        return process

    def stop_all(self, grace: float = 10.0) -> dict[int, int]:
        """SIGTERM every process still running, SIGKILL those left after ``grace`` s;
        the exit code of each process started (by pid)."""
        running = [p.process for p in self._processes if p.process.poll() is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in running:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for p in self._processes:
            p.tether.close()
        return {p.process.pid: int(p.process.returncode) for p in self._processes}

    def close(self) -> None:
        """Stop the processes and delete the namespaces (their interfaces go with them).
        Safe to call twice; never raises for what is already gone."""
        try:
            self.stop_all()
        finally:
            for name in reversed(self._namespaces):
                _ip("netns", "del", name, check=False)
            self._namespaces.clear()

    def leftovers(self) -> list[str]:
        """Namespaces of this lab that still exist (for a test of the clean-up)."""
        return [p.name for p in iter_netns() if p.name.startswith(f"{self.tag}-")]


def remove_stale_labs() -> list[str]:
    """Delete the namespaces that a lab of a process that is gone left behind (it was
    killed before it could clean up), if no process runs in them; their names."""
    removed = []
    for path in iter_netns():
        match = _LAB_NETNS.match(path.name)
        if match is None or Path(f"/proc/{match[1]}").exists():
            continue
        pids = _ip("netns", "pids", path.name, check=False)
        if pids.returncode == 0 and not pids.stdout.strip():
            _ip("netns", "del", path.name, check=False)
            removed.append(path.name)
    return removed


def iter_netns() -> Iterator[Path]:
    """The named network namespaces (``/run/netns/*``)."""
    if not NETNS_DIR.is_dir():
        return iter(())
    return iter(sorted(NETNS_DIR.iterdir()))


@dataclass(frozen=True)
class UnitFile:
    """A systemd unit file: its ``(section, key, value)`` assignments in file order.

    Read as systemd reads them: ``#`` and ``;`` lines are comments, a line ending in a
    backslash goes on on the next line, a key may be assigned more than once (an empty
    value resets a list, as ``CapabilityBoundingSet=``)."""

    path: Path
    entries: tuple[tuple[str, str, str], ...]

    @classmethod
    def read(cls, path: Path) -> UnitFile:
        entries: list[tuple[str, str, str]] = []
        section = ""
        pending = ""
        for raw in path.read_text().splitlines():
            line = pending + raw.strip()
            pending = ""
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
                continue
            key, sep, value = line.partition("=")
            if not sep or not section:
                raise ValueError(f"{path}: not a unit file line: {line!r}")
            entries.append((section, key.strip(), value.strip()))
        return cls(path, tuple(entries))

    def values(self, section: str, key: str) -> list[str]:
        """Every value assigned to ``key`` in ``section``, in order."""
        return [v for s, k, v in self.entries if (s, k) == (section, key)]

    def value(self, section: str, key: str) -> str:
        """The value that counts (the last one); KeyError if there is none."""
        found = self.values(section, key)
        if not found:
            raise KeyError(f"{self.path.name} sets no {section}.{key}")
        return found[-1]

    def environment(self) -> dict[str, str]:
        """The ``Environment=`` variables of ``[Service]``."""
        env: dict[str, str] = {}
        for value in self.values("Service", "Environment"):
            for word in shlex.split(value):
                name, _, text = word.partition("=")
                env[name] = text
        return env

    def command(self, paths: Mapping[str, str | Path]) -> list[str]:
        """``ExecStart`` as argv: each ``${NAME}`` word replaced by the unit's
        ``Environment=`` value (one argument, as systemd does), and each absolute path
        under a prefix of ``paths`` moved under its replacement. Refuses what this
        reader does not do (``$NAME`` splitting, ``%`` specifiers, ``-@:+!`` prefixes)
        rather than run something the unit would not."""
        line = self.value("Service", "ExecStart")
        if line[:1] in set("-@:+!") or "%" in line:
            raise ValueError(f"{self.path.name}: ExecStart too clever for this reader: {line}")
        env = self.environment()
        argv = []
        for word in shlex.split(line):
            match = re.fullmatch(r"\$\{(\w+)\}", word)
            if match:
                word = env[match[1]]
            elif "$" in word:
                raise ValueError(f"{self.path.name}: cannot expand {word!r}")
            for prefix, replacement in paths.items():
                if word == prefix or word.startswith(prefix.rstrip("/") + "/"):
                    word = str(replacement) + word[len(prefix.rstrip("/")) :]
                    break
            argv.append(word)
        return argv
