"""The systemd units of ``contrib/systemd/``: systemd accepts them, and veil runs in them.

* ``systemd-analyze verify`` on each unit, with ``ExecStart``'s ``/opt/veil/bin/veil-node``
  (the README's venv) replaced by this run's installed ``veil-node`` (verify checks that
  the program exists). verify exits 0 even for an unknown key or a bad value, printing a
  warning only: any line it prints about the unit fails the test, and broken copies show
  that such lines are caught.
* ``systemd-analyze security`` rates each unit's sandbox; the README quotes the score,
  and the test keeps it at "OK" or better.
* ``systemd-sysusers`` makes the units' ``veil`` user from ``veil.sysusers`` in a
  scratch root: a system account that cannot log in.
* The three sandbox settings that can break a Python program are seccomp filters:
  ``MemoryDenyWriteExecute`` (no writable and executable memory: a JIT or a library
  with text relocations fails), ``SystemCallFilter`` and ``RestrictAddressFamilies``.
  Without a systemd to run the units (a container), the test installs the same filters
  itself, read from the unit, with libseccomp (systemd's own way), in the child before
  it execs ``veil-node``; an authority and a node then form a network, a message is
  stored and read back through an onion request, and both stop cleanly. Another child
  shows that the filters bite (a W+X mapping refused, a netlink socket refused, a
  syscall outside the list fatal).

These tests need Linux, systemd's tools (package ``systemd``: ``systemd-analyze``,
``systemd-sysusers``) and libseccomp (``libseccomp2``, a dependency of systemd), which
``./scripts/test`` installs when they are missing. Where they are absent the tests
fail, saying what is missing: they never skip.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from veil.onion import rpc
from veil.onion.directory import Authority, NetworkFile
from veil.onion.keys import Account
from veil.onion.packet import Hop, build_packet

from .netnsutil import UnitFile
from .nodeutil import REPO, free_port, now_ms, write_toml

UNITS = REPO / "contrib" / "systemd"
NODE_UNIT = UNITS / "veil-node.service"
AUTHORITY_UNIT = UNITS / "veil-authority.service"
#: Where the README installs veil, and where this run's veil is.
INSTALLED = "/opt/veil/bin/veil-node"
VEIL_NODE = Path(sys.prefix) / "bin" / "veil-node"
#: Worst exposure score ``systemd-analyze security`` may give a unit (its "OK" band
#: ends at 4.9; the units score 1.1 with systemd 252).
MAX_EXPOSURE = 2.0


def tool(name: str) -> str:
    """The path of systemd tool ``name``; the test fails (never skips) without it."""
    found = shutil.which(name) or shutil.which(name, path="/usr/bin:/bin:/usr/sbin:/sbin")
    if found is None:
        pytest.fail(f"{name} is not installed: ./scripts/test installs it (apt package systemd)")
    return found


def runnable_copy(unit: Path, directory: Path, edit: Callable[[str], str] = str) -> Path:
    """``unit`` in ``directory``, its ExecStart pointed at this run's ``veil-node``."""
    assert VEIL_NODE.exists(), f"{VEIL_NODE} is missing: install the project (./scripts/test)"
    text = unit.read_text()
    assert INSTALLED in text
    copy = directory / unit.name
    copy.write_text(edit(text.replace(INSTALLED, str(VEIL_NODE))))
    return copy


def verify(unit: Path) -> list[str]:
    """What ``systemd-analyze verify`` says about ``unit`` (lines naming it)."""
    done = subprocess.run(
        [tool("systemd-analyze"), "verify", str(unit)],
        capture_output=True,
        text=True,
        cwd=unit.parent,
        timeout=60,
        check=False,
    )
    said = [line for line in (done.stdout + done.stderr).splitlines() if unit.name in line]
    if done.returncode != 0 and not said:
        said = [f"exit {done.returncode}: {done.stdout}{done.stderr}"]
    return said


# --- systemd accepts the units --------------------------------------------------------------


@pytest.mark.parametrize("unit", [NODE_UNIT, AUTHORITY_UNIT], ids=lambda u: u.name)
def test_systemd_analyze_verify_accepts_the_unit(unit: Path, tmp_path: Path) -> None:
    assert verify(runnable_copy(unit, tmp_path)) == []


@pytest.mark.parametrize(
    ("edit", "complaint"),
    [
        (lambda t: t.replace("ProtectSystem=strict", "ProtectSystem=strictly"), "protect"),
        (lambda t: t.replace("ProtectHome=yes", "ProtectHomes=yes"), "ProtectHomes"),
        (lambda t: t.replace(str(VEIL_NODE), "/nonexistent/veil-node"), "/nonexistent"),
    ],
    ids=["a bad value", "an unknown key", "a missing program"],
)
def test_verify_catches_a_broken_unit(
    edit: Callable[[str], str], complaint: str, tmp_path: Path
) -> None:
    """The check above can fail: systemd's complaints about a unit are seen."""
    said = verify(runnable_copy(NODE_UNIT, tmp_path, edit))
    assert said and complaint.lower() in " ".join(said).lower(), said


@pytest.mark.parametrize("unit", [NODE_UNIT, AUTHORITY_UNIT], ids=lambda u: u.name)
def test_the_sandbox_rates_ok(unit: Path, tmp_path: Path) -> None:
    analyze = tool("systemd-analyze")
    version = subprocess.run(
        [analyze, "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    if int(version.split()[1]) < 250:  # security --offline came with systemd 250
        pytest.skip(f"systemd-analyze security --offline needs systemd 250+: {version[:40]}")
    done = subprocess.run(
        [analyze, "security", "--offline=yes", str(runnable_copy(unit, tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", done.stdout)
    assert found, done.stdout + done.stderr
    assert float(found[1]) <= MAX_EXPOSURE, done.stdout


def test_the_units_user_is_a_system_account_without_login(tmp_path: Path) -> None:
    users = UNITS / "veil.sysusers"
    (tmp_path / "etc").mkdir()
    subprocess.run(
        [tool("systemd-sysusers"), f"--root={tmp_path}", str(users)],
        capture_output=True,
        timeout=60,
        check=True,
    )
    entries = [line.split(":") for line in (tmp_path / "etc/passwd").read_text().splitlines()]
    (veil,) = [e for e in entries if e[0] == "veil"]
    assert int(veil[2]) < 1000  # a system UID
    assert veil[6].endswith("nologin")
    for unit in (NODE_UNIT, AUTHORITY_UNIT):
        read = UnitFile.read(unit)
        assert read.value("Service", "User") == read.value("Service", "Group") == "veil"


@pytest.mark.parametrize("unit", [NODE_UNIT, AUTHORITY_UNIT], ids=lambda u: u.name)
def test_the_unit_gives_a_clean_stop_time_to_finish(unit: Path) -> None:
    """systemd waits TimeoutStopSec after SIGTERM, then kills: it must exceed the
    default [http] shutdown_grace the process gives requests in flight, with room for
    closing the store."""
    from veil.node.config import NodeConfig

    read = UnitFile.read(unit)
    assert read.value("Service", "KillSignal") == "SIGTERM"
    stop_s = int(read.value("Service", "TimeoutStopSec").removesuffix("s"))
    assert stop_s >= NodeConfig().http.shutdown_grace + 10
    # Exit code 2 is a configuration or usage error: restarting cannot fix it.
    assert read.value("Service", "Restart") == "on-failure"
    assert read.value("Service", "RestartPreventExitStatus") == "2"


@pytest.mark.parametrize("unit", [NODE_UNIT, AUTHORITY_UNIT], ids=lambda u: u.name)
def test_the_data_dir_is_the_only_writable_path(unit: Path) -> None:
    read = UnitFile.read(unit)
    state = read.value("Service", "StateDirectory")
    argv = read.command({})
    assert argv[argv.index("--data-dir") + 1] == f"/var/lib/{state}"
    assert read.values("Service", "ReadWritePaths") == [f"/var/lib/{state}"]
    assert read.value("Service", "ProtectSystem") == "strict"
    assert read.value("Service", "CapabilityBoundingSet") == ""
    assert read.value("Service", "NoNewPrivileges") == "yes"


# --- veil inside the units' seccomp filters -------------------------------------------------

SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ = 4
SCMP_CMP_MASKED_EQ = 7
PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000
ADDRESS_FAMILIES = {"AF_UNIX": 1, "AF_INET": 2, "AF_INET6": 10}
AF_MAX = 46


def scmp_act_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class ScmpArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


@functools.cache
def libseccomp() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp")
    if name is None:
        pytest.fail("libseccomp is not installed: ./scripts/test installs it (apt: systemd)")
    lib = ctypes.CDLL(name, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(ScmpArgCmp),
    ]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib


@functools.cache
def syscall_group(name: str) -> frozenset[str]:
    """The system calls of a ``SystemCallFilter`` group, as this machine's systemd
    defines it (``systemd-analyze syscall-filter``), nested groups expanded."""
    listing = subprocess.run(
        [tool("systemd-analyze"), "syscall-filter", name],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    calls: set[str] = set()
    for line in listing[1:]:
        word = line.strip()
        if not word or word.startswith("#"):
            continue
        calls |= syscall_group(word) if word.startswith("@") else {word}
    return frozenset(calls)


@functools.cache
def allowed_syscalls(unit: Path) -> frozenset[str]:
    """The unit's ``SystemCallFilter=`` lines as one allow list: the first line's
    groups, less every ``~`` line's (systemd's rule when the first is an allow list)."""
    allowed: set[str] = set()
    for i, line in enumerate(UnitFile.read(unit).values("Service", "SystemCallFilter")):
        deny = line.startswith("~")
        assert deny == (i > 0), "this reader handles an allow list, then deny lists"
        names = line.removeprefix("~").split()
        calls = set().union(*(syscall_group(n) if n[0] == "@" else {n} for n in names))
        allowed = allowed - calls if deny else allowed | calls
    return frozenset(allowed)


def _filter(lib: ctypes.CDLL, default: int, rules: list[tuple[int, str, list[ScmpArgCmp]]]) -> None:
    ctx = lib.seccomp_init(default)
    assert ctx, "seccomp_init failed"
    try:
        for action, call, conditions in rules:
            number = lib.seccomp_syscall_resolve_name(call.encode())
            if number < 0:
                continue  # not a system call of this architecture
            array = (ScmpArgCmp * max(1, len(conditions)))(*conditions)
            result = lib.seccomp_rule_add_array(ctx, action, number, len(conditions), array)
            assert result == 0, f"seccomp_rule_add({call}): {os.strerror(-result)}"
        result = lib.seccomp_load(ctx)  # also sets no_new_privs, as NoNewPrivileges= does
        assert result == 0, f"seccomp_load: {os.strerror(-result)}"
    finally:
        lib.seccomp_release(ctx)


def unit_seccomp(unit: Path) -> Callable[[], None]:
    """A ``preexec_fn`` that puts the calling process under ``unit``'s
    ``MemoryDenyWriteExecute``, ``RestrictAddressFamilies`` and ``SystemCallFilter``,
    with the rules systemd uses for them (src/shared/seccomp-util.c): W+X mmap,
    mprotect/pkey_mprotect adding PROT_EXEC and shmat with SHM_EXEC fail with EPERM;
    socket() of another family fails with EAFNOSUPPORT; a system call off the list
    kills the process (SIGSYS), the default without SystemCallErrorNumber=.

    The unit runs as its own user, never root, and the process must too: as root,
    SQLite gives the journal and WAL files it creates the database's owner (fchown, of
    @privileged, so fatal here). A root test process is not a user of this machine,
    so the child first enters a user namespace of its own in which it is uid and gid
    1000 (``PrivateUsers=`` makes one too): its euid is not 0, it loses its
    capabilities when it execs, and files keep the owner they have outside."""
    read = UnitFile.read(unit)
    assert read.value("Service", "MemoryDenyWriteExecute") == "yes"
    assert read.value("Service", "SystemCallArchitectures") == "native"
    families = {
        ADDRESS_FAMILIES[f] for f in read.value("Service", "RestrictAddressFamilies").split()
    }
    allowed = sorted(allowed_syscalls(unit))
    lib = libseccomp()  # loaded before the fork: the child only calls it

    def masked(arg: int, mask: int) -> list[ScmpArgCmp]:
        return [ScmpArgCmp(arg, SCMP_CMP_MASKED_EQ, mask, mask)]

    eperm, eafnosupport = scmp_act_errno(errno.EPERM), scmp_act_errno(errno.EAFNOSUPPORT)
    guards = [
        (eperm, "mmap", masked(2, PROT_WRITE | PROT_EXEC)),
        (eperm, "mprotect", masked(2, PROT_EXEC)),
        (eperm, "pkey_mprotect", masked(2, PROT_EXEC)),
        (eperm, "shmat", masked(2, SHM_EXEC)),
    ]
    guards += [
        (eafnosupport, "socket", [ScmpArgCmp(0, SCMP_CMP_EQ, family, 0)])
        for family in range(AF_MAX)
        if family not in families
    ]
    allow_list = [(SCMP_ACT_ALLOW, call, []) for call in allowed]

    def install() -> None:
        if os.geteuid() == 0:
            _become_unprivileged()
        # Two filters, as systemd installs several: the kernel applies the strictest
        # answer of all. The allow list goes last, once seccomp() itself is done with.
        _filter(lib, SCMP_ACT_ALLOW, guards)
        _filter(lib, SCMP_ACT_KILL_PROCESS, allow_list)

    return install


CLONE_NEWUSER = 0x10000000
#: The uid and gid the child has in its user namespace (any but 0).
INSIDE_ID = 1000


def _become_unprivileged() -> None:
    """Enter a new user namespace mapping ``INSIDE_ID`` to our own ids (allowed to any
    process for its own ids; the caller is the forked child, single-threaded)."""
    uid, gid = os.geteuid(), os.getegid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWUSER) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUSER)")
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"{INSIDE_ID} {uid} 1")
    Path("/proc/self/gid_map").write_text(f"{INSIDE_ID} {gid} 1")


def test_the_seccomp_filters_bite() -> None:
    """The controls: inside the node unit's filters, writable executable memory and a
    netlink socket are refused, and a system call off the list ends the process."""
    probe = (
        "import errno, mmap, os, socket\n"
        "try:\n"
        "    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "    print('wx mapped')\n"
        "except PermissionError:\n"
        "    print('wx refused')\n"
        "try:\n"
        "    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)\n"
        "    print('netlink opened')\n"
        "except OSError as exc:\n"
        "    print('netlink refused' if exc.errno == errno.EAFNOSUPPORT else exc)\n"
        "socket.socket(socket.AF_INET6).close()\n"
        "print('inet6 opened', flush=True)\n"
        "os.sched_setaffinity(0, os.sched_getaffinity(0))  # @resources: not in the list\n"
        "print('affinity set')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=unit_seccomp(NODE_UNIT),
        check=False,
    )
    assert done.stdout.splitlines() == ["wx refused", "netlink refused", "inet6 opened"]
    assert done.returncode == -signal.SIGSYS


# --- a network in the filters ---------------------------------------------------------------


class Sandboxed:
    """A ``veil-node`` process started inside a unit's seccomp filters."""

    def __init__(self, unit: Path, args: list[str], log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [str(VEIL_NODE), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd="/",
                preexec_fn=unit_seccomp(unit),
            )

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def sandboxed() -> Iterator[Callable[[Path, list[str], Path], Sandboxed]]:
    started: list[Sandboxed] = []

    def start(unit: Path, args: list[str], log: Path) -> Sandboxed:
        started.append(Sandboxed(unit, args, log))
        return started[-1]

    yield start
    for process in started:
        process.stop()


def wait_for(what: str, check: Callable[[], object], processes: list[Sandboxed]) -> object:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for p in processes:
            assert p.process.poll() is None, f"exited {p.process.returncode}:\n{p.text()}"
        found = check()
        if found:
            return found
        time.sleep(0.2)
    logs = "\n".join(p.text()[-3000:] for p in processes)
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


def read_json(path: Path) -> dict[str, object] | None:
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (FileNotFoundError, ValueError):
        return None


def test_an_authority_and_a_node_run_inside_the_units_filters(
    tmp_path: Path, sandboxed: Callable[[Path, list[str], Path], Sandboxed]
) -> None:
    auth_dir, node_dir = tmp_path / "veil-authority", tmp_path / "veil-node"
    init = subprocess.run(
        [str(VEIL_NODE), "authority-init", "--data-dir", str(auth_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=unit_seccomp(AUTHORITY_UNIT),
        check=True,
    )
    key = bytes.fromhex(json.loads(init.stdout)["key"])
    port = free_port()
    network = tmp_path / "network.json"
    network.write_text(NetworkFile((Authority(key, "127.0.0.1", port),), 1).to_json())
    auth_config = write_toml(
        tmp_path / "authority.toml",
        {"authority": {"interval_ms": 1000, "per_source_exempt": ["127.0.0.0/8"]}},
    )
    node_config = write_toml(
        tmp_path / "node.toml",
        {"network": {"file": str(network)}, "rate_limit": {"exempt": ["127.0.0.0/8"]}},
    )
    authority = sandboxed(
        AUTHORITY_UNIT,
        [
            "authority",
            *("--data-dir", str(auth_dir), "--listen", f"127.0.0.1:{port}"),
            *("--network", str(network), "--config", str(auth_config)),
        ],
        tmp_path / "authority.log",
    )
    node = sandboxed(
        NODE_UNIT,
        [
            "run",
            *("--data-dir", str(node_dir), "--listen", "127.0.0.1:0"),
            *("--config", str(node_config)),
        ],
        tmp_path / "node.log",
    )
    both = [authority, node]
    doc = wait_for("node.json", lambda: read_json(node_dir / "node.json"), both)
    assert isinstance(doc, dict)
    url = f"http://127.0.0.1:{doc['port']}"
    with httpx.Client(trust_env=False, timeout=10.0) as http:

        def listed() -> bool:
            try:
                return isinstance(http.get(f"{url}/info").json().get("epoch"), int)
            except (httpx.HTTPError, ValueError):
                return False

        # The authority checked the node with an onion request, signed a consensus,
        # and the node verified and adopted it: Ed25519 and X25519 on both sides.
        wait_for("the node to adopt a consensus", listed, both)
        hop = Hop(
            bytes.fromhex(str(doc["node_id"])),
            bytes.fromhex(str(doc["onion_key"])),
            "127.0.0.1",
            int(str(doc["port"])),
        )
        account = Account.generate()

        def call(request: bytes) -> dict[str, object]:
            packet, opener = build_packet([hop], request, now_ms=now_ms())
            r = http.post(f"{url}/onion", content=packet)
            assert r.status_code == 200, r.text
            return rpc.decode_reply(opener.open(r.content)).raise_for_status()

        stored = rpc.StoreResult.from_wire(
            call(rpc.make_store(account.id, b"in the sandbox", 600_000, now_ms=now_ms()))
        )
        held = rpc.RetrieveResult.from_wire(call(rpc.make_retrieve(account, now_ms=now_ms())))
        assert [m.hash for m in held.messages] == [stored.hash]
        assert [m.data for m in held.messages] == [b"in the sandbox"]
    assert [node.stop(), authority.stop()] == [0, 0], node.text() + authority.text()
    for p in both:
        assert "Traceback" not in p.text(), p.text()
