"""The processes of ``./scripts/bench node``: started, pinned to a CPU, and their CPU
time read from /proc.

A :class:`Proc` is a child that prints ``listening on HOST:PORT`` when it is ready (the
node, the bare forwarder, the sink); a ``veil-node`` child is tethered, so it stops if
the benchmark is killed. :class:`LoadGen` is the load generator process, driven by JSON
lines. CPU use is read per process (``/proc/PID/stat``) and for the whole machine
(``/proc/stat``), so that a round can tell the process under test, the load core and
other users apart.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench_node_common import HERE, HOST, RUN_TIMEOUT, START_TIMEOUT

from veil.client.devnet.spawning import Tether


def _cpus() -> tuple[int | None, int | None]:
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return None, None
    if len(cpus) < 2:
        return None, None
    return cpus[0], cpus[1]


def _pin(pid: int, cpu: int | None) -> None:
    """Pin every thread of ``pid`` to ``cpu`` (threads made later inherit it)."""
    if cpu is None:
        return
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tids = [pid]
    for tid in tids:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, {cpu})


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Proc:
    """A child process that prints ``listening on HOST:PORT`` when it is ready."""

    def __init__(self, name: str, argv: list[str], cpu: int | None, logdir: Path) -> None:
        self.name = name
        self.log = logdir / f"{name}.log"
        self._logf = self.log.open("wb")
        # A veil-node child stops if the benchmark is killed (the others ignore it).
        self._tether = Tether()
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._logf,
            cwd=HERE.parent,
            env=self._tether.child_env(os.environ),
            pass_fds=self._tether.pass_fds,
        )
        self._tether.spawned()
        _pin(self.popen.pid, cpu)
        self.cpu = cpu
        line = _readline(self.popen, START_TIMEOUT, name, self.log)
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"{name}: unexpected first line {line!r}; see {self.log}")
        host, _, port = line.removeprefix("listening on ").strip().rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        _pin(self.popen.pid, cpu)  # again: threads started during start-up

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self.popen.stdout:
            self.popen.stdout.close()
        self._tether.close()
        self._logf.close()


def _readline(popen: subprocess.Popen[bytes], timeout: float, name: str, log: Path) -> str:
    assert popen.stdout is not None
    ready, _, _ = select.select([popen.stdout], [], [], timeout)
    if not ready:
        raise RuntimeError(f"{name}: no output within {timeout:g} s; see {log}")
    line = popen.stdout.readline().decode("utf-8", "replace")
    if not line:
        raise RuntimeError(f"{name} exited ({popen.wait()}); see {log}")
    return line


class LoadGen:
    """The load generator process (``scripts/bench_node_loadgen.py``), driven by JSON lines."""

    def __init__(self, cpu: int | None, logdir: Path) -> None:
        self.log = logdir / "loadgen.log"
        self._logf = self.log.open("wb")
        self.popen = subprocess.Popen(
            [sys.executable, str(HERE / "bench_node_loadgen.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._logf,
            cwd=HERE.parent,
        )
        _pin(self.popen.pid, cpu)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def call(self, **cmd: Any) -> dict[str, Any]:
        assert self.popen.stdin is not None
        self.popen.stdin.write(json.dumps(cmd).encode() + b"\n")
        self.popen.stdin.flush()
        line = _readline(self.popen, RUN_TIMEOUT + 30, "loadgen", self.log)
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"loadgen: {answer['error']}")
        return answer

    def stop(self) -> None:
        if self.popen.poll() is None:
            assert self.popen.stdin is not None
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._logf.close()


def _node_argv(data_dir: Path, config: Path) -> list[str]:
    exe = Path(sys.executable).with_name("veil-node")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "veil.node"]
    return [
        *cmd,
        "run",
        "--data-dir",
        str(data_dir),
        "--listen",
        f"{HOST}:0",
        "--config",
        str(config),
    ]


def _node_hop(data_dir: Path) -> dict[str, Any]:
    info = json.loads((data_dir / "node.json").read_text())
    return {"node_id": info["node_id"], "onion_key": info["onion_key"]}


def _busy_seconds() -> float:
    """CPU time spent by everything on the machine so far (all CPUs), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
