"""What ``./scripts/bench scale``'s parts share: its constants, a ``veil-node`` process
(:class:`NodeProc`) and the load process that drives it (:class:`Driver`).

See the suite's note in ``scripts/bench_scale.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LOADGEN_NODE = HERE / "loadgen_node.py"
HOST = "127.0.0.1"

LEVELS = (1_000, 100_000, 1_000_000)
ACCOUNTS = 10_000
PROBES = 1_000
SEED = "bench-scale"
STORE_CONCURRENCY = 32
STORE_ROUNDS = 4
EXPIRING_EVERY = 10
SOURCES = tuple(f"127.0.0.{i}" for i in range(2, 7))
MEMORY_STEPS = (500, 1_000)
CHANNELS = 10
BIG_DEVNET = 30
SMALL_DEVNET = 10
CONSENSUS_SIZES = (1_000, 10_000)
START_TIMEOUT_S = 60.0
COMMAND_TIMEOUT_S = 300.0
TARGET_RETRIEVE_RATIO = 1.5
TARGET_STORE_RATIO = 0.8
TARGET_VERIFY_10K_MS = 200.0

NODE_CONFIG = """\
# ./scripts/bench scale: defaults, except the per-address limit (all load is loopback).
[rate_limit]
rate = 0
"""
SWEEP_CONFIG = (
    NODE_CONFIG
    + """
[debug]
clock_control = true

[storage]
sweep_interval = 1.0
"""
)


# --- processes -----------------------------------------------------------------------


def _readline(popen: subprocess.Popen[bytes], timeout: float, what: str) -> bytes:
    assert popen.stdout is not None
    ready, _, _ = select.select([popen.stdout], [], [], timeout)
    if not ready:
        raise RuntimeError(f"{what}: no answer in {timeout:g} s")
    line = popen.stdout.readline()
    if not line:
        raise RuntimeError(f"{what} exited ({popen.wait()})")
    return line


class NodeProc:
    """A ``veil-node run`` process on ``data_dir`` (standalone), ready when constructed."""

    def __init__(self, data_dir: Path, config: str, logdir: Path, name: str) -> None:
        from veil.client.devnet.spawning import Tether

        conf = logdir / f"{name}.toml"
        conf.write_text(config)
        exe = Path(sys.executable).with_name("veil-node")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "veil.node"]
        argv = [*cmd, "run", "--data-dir", str(data_dir), "--listen", f"{HOST}:0"]
        self._logf = (logdir / f"{name}.log").open("ab")
        self._tether = Tether()  # the node stops if the benchmark is killed
        t0 = time.perf_counter()
        self.popen = subprocess.Popen(
            [*argv, "--config", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._logf,
            env=self._tether.child_env(os.environ),
            pass_fds=self._tether.pass_fds,
        )
        self._tether.spawned()
        try:
            line = _readline(self.popen, START_TIMEOUT_S, name).decode()
        except BaseException:
            self.stop()
            raise
        self.start_ms = (time.perf_counter() - t0) * 1000
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"{name}: unexpected first line {line!r}")
        host, _, port = line.removeprefix("listening on ").strip().rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        info = json.loads((data_dir / "node.json").read_text())
        self.target = {
            "host": self.host,
            "port": self.port,
            "node_id": info["node_id"],
            "onion_key": info["onion_key"],
        }

    @property
    def pid(self) -> int:
        return self.popen.pid

    def rss(self) -> int:
        import psutil

        return int(psutil.Process(self.pid).memory_info().rss)

    def metric(self, name: str) -> float:
        """The sum of a /metrics family's samples (``name`` and ``name_total``)."""
        import httpx

        text = httpx.get(f"http://{self.host}:{self.port}/metrics", timeout=10).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith((f"{name} ", f"{name}_total ", f"{name}{{", f"{name}_total{{")):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def set_clock(self, offset_ms: int) -> None:
        import httpx

        url = f"http://{self.host}:{self.port}/debug/clock"
        httpx.post(url, json={"offset_ms": offset_ms}, timeout=10).raise_for_status()

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self.popen.stdout:
            self.popen.stdout.close()
        self._tether.close()
        self._logf.close()


class Driver:
    """The ``scripts/loadgen_node.py`` command server."""

    def __init__(self, logdir: Path) -> None:
        self._logf = (logdir / "loadgen-node.log").open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, str(LOADGEN_NODE)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._logf,
        )

    def send(self, **cmd: Any) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(json.dumps(cmd).encode() + b"\n")
        self.popen.stdin.flush()

    def answer(self) -> dict[str, Any]:
        reply = json.loads(_readline(self.popen, COMMAND_TIMEOUT_S, "loadgen_node"))
        if "error" in reply:
            raise RuntimeError(f"loadgen_node: {reply['error']}")
        return dict(reply)

    def call(self, **cmd: Any) -> dict[str, Any]:
        self.send(**cmd)
        return self.answer()

    def stop(self) -> None:
        if self.popen.poll() is None:
            assert self.popen.stdin is not None
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._logf.close()


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def _check(what: str, answer: dict[str, Any]) -> dict[str, Any]:
    if answer["errors"]:
        raise RuntimeError(f"bench scale: {what}: {answer['errors']}")
    return answer


# --- 1 and 2: the store as it grows, and the sweep ---------------------------------------
