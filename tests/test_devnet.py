"""``veil devnet`` and :mod:`veil.client.devnet`: real authorities and nodes on 127.0.0.1.

The command-line tests run ``python -m veil.client devnet ...`` as a subprocess, as a user
would, and check the processes it starts through ``/proc`` (not through the module under
test). The library test drives :class:`veil.client.devnet.Devnet` through tests/devnetutil.py,
which later network tests use too.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.devnetutil import FAST_INTERVAL_MS, devnet
from veil.onion.directory import NetworkFile, verify_consensus
from veil.onion.wallclock import wall_clock_ms

REPO = Path(__file__).resolve().parent.parent
HAS_PROC = Path("/proc/self/cmdline").exists()
FAST = ["--interval-ms", str(FAST_INTERVAL_MS)]


def veil(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "veil.client", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (read from /proc, independently of the
    code under test)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def processes_under(directory: Path) -> list[int]:
    """Live processes whose command line mentions ``directory``."""
    found = []
    needle = str(directory).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def wait_until(predicate: Any, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def pids_of(doc: dict[str, Any]) -> list[int]:
    return [m["pid"] for m in (*doc["authorities"], *doc["nodes"])]


# --- no processes ----------------------------------------------------------------------------


def test_status_and_down_without_a_devnet(tmp_path: Path) -> None:
    status = veil("devnet", "status", "--dir", str(tmp_path))
    assert status.returncode == 1
    assert "no devnet is running" in status.stderr
    down = veil("devnet", "down", "--dir", str(tmp_path))
    assert down.returncode == 0
    assert "no devnet is running" in down.stdout


def test_default_dir_is_under_the_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = veil("--home", str(home), "devnet", "status")
    assert result.returncode == 1
    assert str(home / "devnet") in result.stderr


def test_threshold_above_the_authorities_is_a_usage_error(tmp_path: Path) -> None:
    result = veil("devnet", "up", "--authorities", "2", "--threshold", "3", "--dir", str(tmp_path))
    assert result.returncode == 2
    assert "--threshold 3" in result.stderr
    assert not (tmp_path / "network.json").exists()


def _state(directory: Path, pid: int) -> None:
    """A devnet.json naming ``pid`` as node-0, as a crashed manager would leave it."""
    node_dir = directory / "node-0"
    node_dir.mkdir(parents=True)
    doc = {
        "format": "veil-devnet",
        "version": 1,
        "dir": str(directory),
        "network": str(directory / "network.json"),
        "manager": {"kind": "detached", "pid": None},
        "swarm_size": 5,
        "threshold": 1,
        "interval_ms": 1000,
        "started_ms": 0,
        "authorities": [],
        "nodes": [
            {
                "name": "node-0",
                "index": 0,
                "data_dir": str(node_dir),
                "host": "127.0.0.1",
                "port": 1,
                "id": "00" * 32,
                "onion_key": "00" * 32,
                "pid": pid,
                "log": str(node_dir / "log"),
            }
        ],
    }
    (directory / "devnet.json").write_text(json.dumps(doc))


@pytest.mark.skipif(not HAS_PROC, reason="needs /proc to check processes")
def test_a_recorded_pid_that_is_now_another_program_is_never_signalled(tmp_path: Path) -> None:
    # The kernel gave node-0's pid to an unrelated program: status must not count it
    # and down must not kill it.
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _state(tmp_path, stranger.pid)
        status = veil("devnet", "status", "--dir", str(tmp_path))
        assert status.returncode == 1
        assert "stale" in status.stderr
        down = veil("devnet", "down", "--dir", str(tmp_path), "--grace", "0.5")
        assert down.returncode == 0, down.stderr
        assert stranger.poll() is None  # still running: never signalled
        assert not (tmp_path / "devnet.json").exists()  # the stale file is gone
    finally:
        stranger.kill()
        stranger.wait()


def test_a_damaged_state_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "devnet.json").write_text('{"format": "something else"}')
    result = veil("devnet", "status", "--dir", str(tmp_path))
    assert result.returncode == 1
    assert "devnet.json is damaged" in result.stderr


# --- the command line with real processes ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not HAS_PROC, reason="needs /proc to check processes")
def test_detached_devnet_status_refusal_and_down(tmp_path: Path) -> None:
    d = tmp_path / "net"
    up = veil("devnet", "up", "--detach", "--nodes", "3", "--swarm-size", "3", "--dir", str(d),
              "--json", *FAST)  # fmt: skip
    assert up.returncode == 0, up.stderr
    started = json.loads(up.stdout)
    pids = pids_of(started)
    try:
        assert len(started["nodes"]) == 3 and len(started["authorities"]) == 1
        assert all(alive(pid) for pid in pids)  # outlived the command that started them

        # network.json: world-readable, and it pins the key that signs the consensus.
        network_file = d / "network.json"
        assert stat.S_IMODE(network_file.stat().st_mode) == 0o644
        nf = NetworkFile.from_json(network_file.read_text())
        assert [a.key.hex() for a in nf.authorities] == [started["authorities"][0]["id"]]
        import httpx

        auth = nf.authorities[0]
        raw = httpx.get(f"http://{auth.host}:{auth.port}/consensus", trust_env=False).content
        consensus = verify_consensus(
            raw, pinned=nf.pinned_keys, threshold=nf.threshold, now_ms=wall_clock_ms()
        )
        assert {n.node_id_hex for n in consensus.nodes} >= {n["id"] for n in started["nodes"]}

        status = veil("devnet", "status", "--json", "--dir", str(d))
        assert status.returncode == 0, status.stderr
        doc = json.loads(status.stdout)
        assert [n["alive"] for n in doc["nodes"]] == [True] * 3
        assert [a["alive"] for a in doc["authorities"]] == [True]
        assert all(n["swarm"] is not None for n in doc["nodes"])
        assert pids_of(doc) == pids

        again = veil("devnet", "up", "--detach", "--nodes", "2", "--dir", str(d), *FAST)
        assert again.returncode == 1
        assert "already running" in again.stderr
        assert all(alive(pid) for pid in pids)  # the refusal touched nothing

        down = veil("devnet", "down", "--dir", str(d))
        assert down.returncode == 0, down.stderr
        assert "stopped 4 processes" in down.stdout
        assert not any(alive(pid) for pid in pids)
        assert not (d / "devnet.json").exists()

        after = veil("devnet", "status", "--dir", str(d))
        assert after.returncode == 1
        assert "no devnet is running" in after.stderr
    finally:
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_PROC, reason="needs /proc to check processes")
def test_foreground_devnet_stops_every_child_on_sigint(tmp_path: Path) -> None:
    d = tmp_path / "net"
    manager = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "veil.client",
            "devnet",
            "up",
            "--nodes",
            "2",
            "--swarm-size",
            "2",
            "--dir",
            str(d),
            "--json",
            *FAST,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    pids: list[int] = []
    try:
        assert manager.stdout is not None
        line = manager.stdout.readline()  # the JSON object, once the network is ready
        assert line, manager.stderr.read() if manager.stderr else ""
        pids = pids_of(json.loads(line))
        assert len(pids) == 3 and all(alive(pid) for pid in pids)
        status = veil("devnet", "status", "--json", "--dir", str(d))
        assert json.loads(status.stdout)["manager"] == {"kind": "foreground", "pid": manager.pid}

        manager.send_signal(signal.SIGINT)
        assert manager.wait(60) == 0
        assert not any(alive(pid) for pid in pids)  # no orphans
        assert processes_under(d) == []
        assert not (d / "devnet.json").exists()
    finally:
        if manager.poll() is None:
            manager.kill()
            manager.wait()
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_PROC, reason="needs /proc to check processes")
def test_a_node_that_dies_at_startup_fails_up_and_names_it(tmp_path: Path) -> None:
    d = tmp_path / "net"
    # A devnet.json left by a crash, naming a process that has exited: up removes it
    # and proceeds.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _state(d, gone.pid)
    # node-1's key file is readable by others: the node refuses to start (exit 2), as it
    # must for a key that may have leaked.
    (d / "node-1").mkdir(parents=True)
    keys = d / "node-1" / "node_keys.json"
    keys.write_text("{}")
    keys.chmod(0o644)
    up = veil("devnet", "up", "--detach", "--nodes", "3", "--dir", str(d), *FAST)
    assert up.returncode == 1
    assert "removing stale" in up.stderr
    assert "node-1 exited while starting" in up.stderr
    assert "exited with code 2" in up.stderr
    assert "node_keys.json" in up.stderr  # the tail of its log says why
    # Everything that was started is stopped again, and nothing claims to run.
    assert wait_until(lambda: processes_under(d) == [], timeout=30)
    assert not (d / "devnet.json").exists()


# --- the library ----------------------------------------------------------------------------


@pytest.mark.slow
def test_library_add_stop_restart(tmp_path: Path) -> None:
    with devnet(tmp_path, nodes=3, swarm_size=3) as net:
        first = net.consensus()
        assert len(first.nodes) == 3
        assert {n.node_id_hex for n in first.nodes} == {m.id for m in net.nodes}

        added = net.add_node()
        assert added.name == "node-3"
        with_added = net.consensus()
        assert with_added.node(added.id) is not None
        assert with_added.epoch > first.epoch

        # A stopped node shuts down cleanly and drops out of the consensus; started
        # again on the same data dir, it comes back with the same ID.
        assert net.stop_node("node-1") == 0
        assert not net.node(1).is_running()
        net.wait_for_nodes(absent=["node-1"])
        node_id = net.node(1).id
        net.start_node("node-1")
        assert net.node(1).id == node_id
        assert net.consensus().node(node_id) is not None

        # An authority restarts on its pinned address with its key, and serves again.
        auth = net.authority(0)
        key, port = auth.id, auth.port
        net.restart_authority(0)
        assert (auth.id, auth.port) == (key, port)
        net.wait_for_consensus(lambda c: len(c.nodes) == 4, what="consensus after restart")

        net.kill_node("node-0")
        status = net.status()
        assert [n.alive for n in status.nodes] == [False, True, True, True]
        assert status.authorities[0].alive


@pytest.mark.slow
async def test_running_devnet_carries_a_three_hop_store_and_retrieve(tmp_path: Path) -> None:
    # What a client does with a fresh devnet: read the consensus, build a path of three
    # distinct nodes ending in the account's swarm, store, and read the message back.
    # Every node must already hold the consensus for this to work on the first try.
    import httpx
    import trio

    from tests.devnetutil import running_devnet
    from tests.nodeutil import now_ms, onion_rpc
    from veil.onion import rpc
    from veil.onion.keys import Account

    async with running_devnet(tmp_path, nodes=4, swarm_size=2) as net:
        consensus = await trio.to_thread.run_sync(net.consensus)
        account = Account.generate()
        swarm = consensus.swarm_of(account.id)
        destination = swarm.members[0]
        relays = [n for n in consensus.nodes if n is not destination][:2]
        path = [n.as_hop() for n in (*relays, destination)]
        async with httpx.AsyncClient(trust_env=False) as client:
            store = rpc.make_store(account.id, b"hello devnet", 60_000, now_ms=now_ms())
            (await onion_rpc(client, path, store)).raise_for_status()
            retrieve = rpc.make_retrieve(account, now_ms=now_ms())
            result = rpc.parse_result(
                "retrieve", (await onion_rpc(client, path, retrieve)).raise_for_status()
            )
        assert [m.data for m in result.messages] == [b"hello devnet"]
