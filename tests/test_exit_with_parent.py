"""Nodes and authorities stop when the process that started them dies, even by SIGKILL.

Issue 11: a SIGKILLed test run left its node processes behind. The tests' helpers
(tests/nodeutil.py, tests/authorityutil.py) and the devnet library tether what they
start (:class:`veil.client.devnet.spawning.Tether`); a detached devnet lets go. Each
test runs a small program that starts processes, prints their pids, and is then killed
(or exits after detaching); the processes are looked at through /proc, not through the
code under test.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from veil.client.devnet import Devnet

from .nodeutil import REPO
from .test_devnet import HAS_PROC, alive, wait_until

pytestmark = pytest.mark.skipif(not HAS_PROC, reason="needs /proc to check processes")

#: Starts an authority and a node with the tests' helpers, prints their pids, waits.
HELPERS = """
import json, sys, time
from pathlib import Path
from tests.authorityutil import make_network, start_authority
from tests.nodeutil import start_node
d = Path(sys.argv[1])
authority = start_authority(make_network(d / "net", count=1), 0)
node = start_node(d / "n1")
print(json.dumps([authority.pid, node.pid]), flush=True)
time.sleep(600)
"""

#: Starts a library devnet (one authority, one node), prints their pids, then waits or,
#: with "detach", detaches and exits.
LIBRARY = """
import json, sys, time
from veil.client.devnet import Devnet
net = Devnet(sys.argv[1])
net.up(nodes=1, swarm_size=1, authorities=1, interval_ms=1000)
print(json.dumps([m.pid for m in net.members]), flush=True)
if sys.argv[2] == "detach":
    net.detach()
    sys.exit(0)
time.sleep(600)
"""


def start_program(source: str, *args: str) -> tuple[subprocess.Popen[str], list[int]]:
    """Run ``source`` with ``args``; the program and the pids it printed."""
    program = subprocess.Popen(
        [sys.executable, "-c", source, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert program.stdout is not None and program.stderr is not None
    line = program.stdout.readline()
    if not line:
        program.wait(60)
        raise AssertionError(f"the program printed no pids\n{program.stderr.read()}")
    pids = json.loads(line)
    assert pids and all(alive(pid) for pid in pids)
    return program, pids


def sigkill(program: subprocess.Popen[str]) -> None:
    program.send_signal(signal.SIGKILL)
    program.wait(60)
    assert program.stdout is not None and program.stderr is not None
    program.stdout.close()
    program.stderr.close()


def kill_left(pids: list[int]) -> None:
    """Clean up after a failure: no process of a test outlives it."""
    for pid in pids:
        if alive(pid):
            subprocess.run(["kill", "-9", str(pid)], check=False)


def test_processes_started_by_the_test_helpers_stop_when_the_test_is_killed(
    tmp_path: Path,
) -> None:
    program, pids = start_program(HELPERS, str(tmp_path))
    try:
        sigkill(program)
        assert wait_until(lambda: not any(alive(pid) for pid in pids), timeout=30), pids
    finally:
        kill_left(pids)
    # They stopped as on SIGTERM: cleanly, saying so.
    assert "event=stopping signal=SIGTERM" in (tmp_path / "n1.log").read_text()


@pytest.mark.slow
def test_a_library_devnet_stops_when_its_process_is_killed(tmp_path: Path) -> None:
    program, pids = start_program(LIBRARY, str(tmp_path / "net"), "wait")
    try:
        assert len(pids) == 2
        sigkill(program)
        assert wait_until(lambda: not any(alive(pid) for pid in pids), timeout=30), pids
    finally:
        kill_left(pids)


@pytest.mark.slow
def test_a_detached_library_devnet_outlives_its_process(tmp_path: Path) -> None:
    program, pids = start_program(LIBRARY, str(tmp_path / "net"), "detach")
    try:
        assert program.wait(60) == 0
        # Its parent is gone and reaped: the processes still run and answer.
        net = Devnet.attach(tmp_path / "net")
        assert [m.pid for m in net.members] == pids
        for member in net.members:
            assert httpx.get(f"{member.url}/info", timeout=10).status_code == 200
        assert all(alive(pid) for pid in pids)
        report = net.down()
        assert sorted(report.stopped) == ["auth-0", "node-0"] and report.killed == ()
    finally:
        kill_left(pids)
