"""./scripts/bench scale: how a node's and the network's costs grow with what they hold.

What is measured (all on 127.0.0.1, in one run of a few minutes)
================================================================

1. **A node's store as it grows** (``LEVELS``: 1 thousand, 100 thousand and 1 million
   messages of ``MESSAGE_BYTES`` over ``ACCOUNTS`` accounts). The store file is filled
   *directly* through the node's own store API (``scripts/loadgen_node.py fill``: the
   batching writer a node's RPC uses, from 2,048 concurrent tasks in batches of up to
   4,096, in a child process), because a million stores through the RPC (about 2,500 a
   second here) would take this 2-core machine seven minutes and measure the RPC, not
   the store (which is measured next, through the RPC). The fill runs with
   ``synchronous=NORMAL`` to save time (the fill's own durability is of no interest);
   the node then serves that data dir with its default ``synchronous=FULL``. Message
   ``i`` goes to account ``i % ACCOUNTS`` (at 1 thousand: one message each for 1,000 of
   them). At each level a real ``veil-node run`` process (standalone: it holds every
   account) is started on the data dir, and a load process
   (``scripts/loadgen_node.py``) sends it 1-layer onion packets to ``POST /onion``:

   * ``store_mps_*``: inbox stores to ``PROBES`` accounts spread over the ``ACCOUNTS``,
     in ``STORE_ROUNDS`` rounds of one each, ``STORE_CONCURRENCY`` in flight, every
     reply opened and checked ``ok``: the best round's rate. ``store_cpu_ms_*``: the
     node's CPU per store (from /proc, the best round), which other users' load moves
     far less than the rate (``store_cpu_others_*``: their cores meanwhile).
   * ``retrieve_ms_p50_*`` / ``p99``: ``PROBES`` owner-signed inbox retrieves, one at a
     time, each after the next-to-last message just stored to its account, so every
     retrieve returns exactly one message (checked) whatever the level: the figure is
     the cost of finding it among the messages held, not of reading more of them.
     ``retrieve_cpu_ms_*``: the node's CPU per retrieve.
   * Ratios to the smallest level: ``retrieve_ratio_1m`` (target <= 1.5) and
     ``store_ratio_1m`` (target >= 0.8); ``*_cpu_ratio_1m`` the same for CPU per request.
   * ``disk_per_byte_*``: the data dir's store files (SQLite file, WAL and shared
     memory, after the node stopped) over the bytes of message data held.
   * ``node_start_ms_*``: spawn to ``listening on`` (the store is opened, its rows
     counted).
   * ``fill_mps_*``: the fill's rate (the store API without RPC, ``NORMAL``).

2. **The expiry sweep's pause**, at 1 million: every ``EXPIRING_EVERY``-th message of
   the fill expires after an hour. The node is restarted with ``[debug] clock_control``
   and ``[storage] sweep_interval = 1``, the load process stores at
   ``STORE_CONCURRENCY`` in flight, and the node's clock is moved two hours on: the
   next sweep deletes those 100 thousand rows, ``sweep_batch`` (1,000) rows per write
   transaction. ``sweep_pause_ms``: the longest store while the sweep ran (from the
   node's ``veil_store_swept`` counter moving to its last change), beside the store's
   p50 and p99 before it (the floor; ``sweep_pause_ratio`` = the longest over that p99);
   ``sweep_store_rate_ratio``, the stores completed per second while the sweep ran over
   the rate before it; ``sweep_s`` and ``sweep_rows_per_s``.

3. **A node's memory** (RSS of a fresh ``veil-node run`` process, psutil): idle; with
   500 and 1,000 idle client TCP connections; then, on another fresh node, with 500 and
   1,000 long-polls waiting (owner-signed retrieves of distinct empty inboxes, ``wait``
   25 s, each on its own connection). Connections come from ``SOURCES`` loopback
   addresses (127.0.0.x), because the node allows 256 connections per address.
   ``*_per_item_kb``: the RSS added per connection or poll, from 0 to 500 and from 500
   to 1,000: equal halves mean no cost that grows with how many are open.

4. **A client's memory with 10 followed channels**: a load generator process
   (``scripts/loadgen.py``) opens one client; its RSS with the client open and idle
   (the floor), then with ``CHANNELS`` channels followed (each post received), as a
   ratio.

5. **Network size**: a devnet of ``BIG_DEVNET`` nodes started (``veil devnet``'s
   defaults), beside a 10-node one started the same way (the floor, as a ratio); the
   consensus it serves (``GET /consensus`` of a node): its size, and its verification
   (:func:`veil.onion.directory.verify_consensus`, as a client does), best of 5.

6. **Consensus of 1,000 and 10,000 descriptors, sans-IO**: descriptors made and parsed
   (the authority's registration, reported apart), the body built and signed
   (``make_consensus_body``, ``sign_consensus``, ``assemble``) and verified
   (``verify_consensus``), in ms. Floors: the Ed25519 check of the body alone and a
   plain CBOR decode of the document (no schema); target: verify 10,000 < 200 ms.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
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


def _fill(db: Path, first: int, last: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            str(LOADGEN_NODE),
            "fill",
            "--db",
            str(db),
            "--seed",
            SEED,
            "--first",
            str(first),
            "--last",
            str(last),
            "--accounts",
            str(ACCOUNTS),
        ],
        capture_output=True,
        check=False,
        timeout=COMMAND_TIMEOUT_S,
    )
    if out.returncode != 0:
        raise RuntimeError(f"bench scale: the fill failed:\n{out.stderr.decode()[-2000:]}")
    return dict(json.loads(out.stdout))


def _disk_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in data_dir.glob("store.sqlite*"))


def _store_levels(tmp: Path, driver: Driver) -> dict[str, float]:
    from loadgen_node import MESSAGE_BYTES

    data_dir = tmp / "node-scale"
    data_dir.mkdir()
    r: dict[str, float] = {}
    held = filled_to = 0
    # The probe messages: indices past every fill, two per probe account per level.
    probe_accounts = [j * (ACCOUNTS // PROBES) for j in range(PROBES)]
    base = 10 * LEVELS[-1]
    for n, level in enumerate(LEVELS):
        name = _level_name(level)
        filled = _fill(data_dir / "store.sqlite", filled_to, level)
        held += level - filled_to
        filled_to = level
        r[f"fill_mps_{name}"] = filled["per_s"]
        node = NodeProc(data_dir, NODE_CONFIG, tmp, f"node-{name}")
        try:
            r[f"node_start_ms_{name}"] = round(node.start_ms, 1)
            first = [[a, base + n * 4 * PROBES + 4 * j] for j, a in enumerate(probe_accounts)]
            # Each round stores one message to each probe account; the rate is the best
            # round's (a shared machine).
            rounds = [
                _measured(
                    node,
                    driver,
                    f"stores at {name}",
                    {
                        "cmd": "stores",
                        "target": node.target,
                        "seed": SEED,
                        "items": [[a, i + k] for a, i in first],
                        "concurrency": STORE_CONCURRENCY,
                    },
                )
                for k in range(STORE_ROUNDS)
            ]
            stored = sum(x["n"] for x in rounds)
            r[f"store_mps_{name}"] = round(max(x["per_s"] for x in rounds), 1)
            r[f"store_cpu_ms_{name}"] = round(min(x["cpu_ms_each"] for x in rounds), 4)
            r[f"store_cpu_others_{name}"] = max(x["cpu_others"] for x in rounds)
            got = _measured(
                node,
                driver,
                f"retrieves at {name}",
                {
                    "cmd": "retrieves",
                    "target": node.target,
                    "seed": SEED,
                    # After each account's next-to-last message: exactly its last one.
                    "after": [
                        [a, h] for (a, _), h in zip(first, rounds[-2]["hashes"], strict=True)
                    ],
                    "expect": rounds[-1]["hashes"],
                    "concurrency": 1,
                },
            )
            r[f"retrieve_ms_p50_{name}"] = round(percentile(got["latency_ms"], 50), 3)
            r[f"retrieve_ms_p99_{name}"] = round(percentile(got["latency_ms"], 99), 3)
            r[f"retrieve_cpu_ms_{name}"] = round(got["cpu_ms_each"], 4)
            r[f"retrieve_cpu_others_{name}"] = got["cpu_others"]
            held += stored
            if level == LEVELS[-1]:
                r.update(_sweep(tmp, data_dir, node, driver, base + len(LEVELS) * 4 * PROBES))
        finally:
            node.stop()
        r[f"disk_per_byte_{name}"] = round(_disk_bytes(data_dir) / (held * MESSAGE_BYTES), 2)
        r[f"held_{name}"] = float(held)
    small, big = _level_name(LEVELS[0]), _level_name(LEVELS[-1])
    r["retrieve_ratio_1m"] = round(r[f"retrieve_ms_p50_{big}"] / r[f"retrieve_ms_p50_{small}"], 3)
    r["store_ratio_1m"] = round(r[f"store_mps_{big}"] / r[f"store_mps_{small}"], 3)
    # Per request, the node's own CPU: less sensitive to other users than the rates.
    r["store_cpu_ratio_1m"] = round(r[f"store_cpu_ms_{big}"] / r[f"store_cpu_ms_{small}"], 3)
    r["retrieve_cpu_ratio_1m"] = round(
        r[f"retrieve_cpu_ms_{big}"] / r[f"retrieve_cpu_ms_{small}"], 3
    )
    return r


def _measured(node: NodeProc, driver: Driver, what: str, cmd: dict[str, Any]) -> dict[str, Any]:
    """The driver's answer to ``cmd``, checked, with the node's CPU per request (ms) and
    the cores other processes used meanwhile (the machine's busy time less ours)."""
    from bench_load import busy_seconds, cpu_seconds

    ours = (node.pid, driver.popen.pid, os.getpid())
    cpu0, node0 = sum(map(cpu_seconds, ours)), cpu_seconds(node.pid)
    busy0, t0 = busy_seconds(), time.monotonic()
    answer = _check(what, driver.call(**cmd))
    used = sum(map(cpu_seconds, ours)) - cpu0
    wall = max(time.monotonic() - t0, 1e-3)
    answer["cpu_ms_each"] = (cpu_seconds(node.pid) - node0) * 1000 / answer["n"]
    answer["cpu_others"] = round(max(0.0, (busy_seconds() - busy0 - used) / wall), 2)
    return answer


def _sweep(
    tmp: Path, data_dir: Path, node: NodeProc, driver: Driver, first_index: int
) -> dict[str, float]:
    """The sweep's pause at the last level: see the module note (2)."""
    import threading

    node.stop()
    sweeper = NodeProc(data_dir, SWEEP_CONFIG, tmp, "node-sweep")
    try:
        target = sweeper.target
        accounts = [j * (ACCOUNTS // PROBES) + 1 for j in range(PROBES)]

        def items(start: int, n: int) -> list[list[int]]:
            return [[accounts[k % PROBES], first_index + start + k] for k in range(n)]

        before = _check(
            "stores before the sweep",
            driver.call(
                cmd="stores",
                target=target,
                seed=SEED,
                items=items(0, 2000),
                concurrency=STORE_CONCURRENCY,
            ),
        )
        swept0 = sweeper.metric("veil_store_swept")
        offset_ms = 2 * 3600 * 1000
        expected = LEVELS[-1] // EXPIRING_EVERY
        changes: list[tuple[int, float]] = []
        stop = threading.Event()

        def watch() -> None:
            last = swept0
            while not stop.is_set():
                swept = sweeper.metric("veil_store_swept")
                if swept != last:
                    changes.append((time.monotonic_ns(), swept))
                    last = swept
                time.sleep(0.02)

        watcher = threading.Thread(target=watch, daemon=True)
        sweeper.set_clock(offset_ms)
        t_clock = time.monotonic_ns()
        watcher.start()
        # Enough stores to outlast the sweep; each carries its send time (ns).
        driver.send(
            cmd="stores",
            target=target,
            seed=SEED,
            items=items(2000, 8000),
            concurrency=STORE_CONCURRENCY,
            clock_offset_ms=offset_ms,
            stamps=True,
        )
        during = _check("stores during the sweep", driver.answer())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not changes or changes[-1][1] - swept0 < expected):
            time.sleep(0.1)
        stop.set()
        watcher.join()
    finally:
        sweeper.stop()
    swept = changes[-1][1] - swept0 if changes else 0.0
    if not changes:
        raise RuntimeError("bench scale: the sweep did not run")
    t_start, t_end = changes[0][0], changes[-1][0]
    # The sweep started at most one metrics poll before its first change was seen.
    in_sweep = [
        lat
        for lat, sent in zip(during["latency_ms"], during["sent_ns"], strict=True)
        if t_start - 50_000_000 <= sent + lat * 1e6 and sent <= t_end
    ]
    sweep_s = max((t_end - t_start) / 1e9, 1e-3)
    return {
        "sweep_rows": swept,
        # The floors: stores before the sweep, on the same node and connections.
        "sweep_pause_ratio": round(max(in_sweep) / percentile(before["latency_ms"], 99), 2)
        if in_sweep
        else 0.0,
        "sweep_store_rate_ratio": round(len(in_sweep) / sweep_s / before["per_s"], 3),
        "store_mps_before_sweep": round(before["per_s"], 1),
        "sweep_s": round((t_end - t_start) / 1e9, 2),
        "sweep_rows_per_s": round(swept / max((t_end - t_start) / 1e9, 1e-3), 1),
        "sweep_pause_ms": round(max(in_sweep), 2) if in_sweep else 0.0,
        "sweep_store_ms_p99": round(percentile(in_sweep, 99), 2),
        "sweep_stores_seen": float(len(in_sweep)),
        "store_ms_p50_before_sweep": round(percentile(before["latency_ms"], 50), 2),
        "store_ms_p99_before_sweep": round(percentile(before["latency_ms"], 99), 2),
        "sweep_clock_to_start_s": round((t_start - t_clock) / 1e9, 2),
    }


def _level_name(level: int) -> str:
    return {1_000: "1k", 100_000: "100k", 1_000_000: "1m"}.get(level, str(level))


# --- 3: a node's memory -------------------------------------------------------------------


def _node_memory(tmp: Path, driver: Driver) -> dict[str, float]:
    r: dict[str, float] = {}
    for kind in ("conns", "polls"):
        data_dir = tmp / f"node-mem-{kind}"
        node = NodeProc(data_dir, NODE_CONFIG, tmp, f"node-mem-{kind}")
        try:
            time.sleep(1.0)
            rss = [node.rss()]
            if kind == "conns":
                r["node_rss_idle_mb"] = round(rss[0] / 2**20, 1)
            held = 0
            for n in MEMORY_STEPS:
                got = driver.call(
                    cmd="hold",
                    target=node.target,
                    sources=list(SOURCES),
                    n=n - held,
                    polls=kind == "polls",
                    seed=f"{SEED}-polls",
                    first=held,
                    wait_s=25,
                    settle_s=1.0,
                )
                if got["answered"]:
                    raise RuntimeError(f"bench scale: {got['answered']} {kind} were answered")
                held = n
                rss.append(node.rss())
                if kind == "polls":
                    waiting = node.metric("veil_storage_waiting_polls")
                    if waiting != n:
                        raise RuntimeError(f"bench scale: {waiting:.0f} polls waiting, not {n}")
            driver.call(cmd="release")
        finally:
            node.stop()
        steps = (0, *MEMORY_STEPS)
        r[f"node_rss_{kind}_base_mb"] = round(rss[0] / 2**20, 1)
        for i, n in enumerate(MEMORY_STEPS, start=1):
            r[f"node_rss_{n}_{kind}_mb"] = round(rss[i] / 2**20, 1)
            r[f"{kind}_per_item_kb_{steps[i - 1]}_{n}"] = round(
                (rss[i] - rss[i - 1]) / (n - steps[i - 1]) / 1024, 2
            )
        a, b = MEMORY_STEPS
        first_half = r[f"{kind}_per_item_kb_0_{a}"]
        r[f"{kind}_growth_ratio"] = round(r[f"{kind}_per_item_kb_{a}_{b}"] / first_half, 3)
    return r


# --- 4 and 5: the devnets: start time, consensus, a client's memory ------------------------


def _devnets(tmp: Path) -> dict[str, float]:
    import httpx

    from veil.client.devnet import Devnet
    from veil.onion.directory import verify_consensus
    from veil.onion.wallclock import wall_clock_ms

    r: dict[str, float] = {}
    for size in (SMALL_DEVNET, BIG_DEVNET):
        net = Devnet(tmp / f"devnet-{size}")
        with net:
            t0 = time.monotonic()
            net.up(nodes=size)
            r[f"devnet_{size}_start_s"] = round(time.monotonic() - t0, 2)
            node = net.nodes[0]
            raw = httpx.get(f"http://{node.host}:{node.port}/consensus", timeout=10).content
            network = net.network
            pinned = [a.key for a in network.authorities]
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                consensus = verify_consensus(
                    raw, pinned=pinned, threshold=network.threshold, now_ms=wall_clock_ms()
                )
                times.append((time.perf_counter() - t0) * 1000)
            if len(consensus.nodes) != size:
                raise RuntimeError(f"bench scale: consensus of {len(consensus.nodes)} nodes")
            r[f"devnet_{size}_consensus_bytes"] = float(len(raw))
            r[f"devnet_{size}_verify_ms"] = round(min(times), 3)
            if size == BIG_DEVNET:
                r.update(_client_memory(tmp, net.network_file))
    r["devnet_start_ratio"] = round(
        r[f"devnet_{BIG_DEVNET}_start_s"] / r[f"devnet_{SMALL_DEVNET}_start_s"], 3
    )
    return r


def _client_memory(tmp: Path, network_file: Path) -> dict[str, float]:
    """RSS of a client process idle, then following CHANNELS channels (module note, 4)."""
    import psutil
    from bench_load import LoadGen

    publisher, follower = LoadGen(100, tmp), LoadGen(101, tmp)
    try:
        for gen, home in ((publisher, "pub"), (follower, "fol")):
            gen.send(
                cmd="open",
                home=str(tmp / f"client-{home}"),
                network=str(network_file),
                senders=1,
                followers=0,
            )
            gen.answer()
        publisher.send(cmd="channels", n=CHANNELS)
        channels = publisher.answer()["channels"]
        time.sleep(1.0)
        idle = psutil.Process(follower.pid).memory_info().rss
        follower.send(cmd="follow", channels=channels, timeout_s=60)
        followed = follower.answer()
        time.sleep(1.0)
        busy = psutil.Process(follower.pid).memory_info().rss
    finally:
        publisher.stop()
        follower.stop()
    return {
        "client_rss_idle_mb": round(idle / 2**20, 1),
        f"client_rss_{CHANNELS}_channels_mb": round(busy / 2**20, 1),
        "client_channels_ratio": round(busy / idle, 3),
        "client_per_channel_kb": round((busy - idle) / CHANNELS / 1024, 1),
        "client_channel_posts": float(followed["posts"]),
    }


# --- 6: consensus documents, sans-IO -----------------------------------------------------


def _consensus_docs() -> dict[str, float]:
    from veil.onion import cbor, crypto
    from veil.onion.directory import (
        CONSENSUS_DOMAIN,
        MAX_CONSENSUS_SIZE,
        assemble,
        make_consensus_body,
        make_descriptor,
        parse_descriptor,
        sign_consensus,
        split_consensus,
        verify_consensus,
    )
    from veil.onion.keys import NodeKeys
    from veil.onion.wallclock import wall_clock_ms

    def best(fn: Any, rounds: int = 3) -> tuple[float, Any]:
        times, out = [], None
        for _ in range(rounds):
            t0 = time.perf_counter()
            out = fn()
            times.append((time.perf_counter() - t0) * 1000)
        return min(times), out

    r: dict[str, float] = {}
    authority = NodeKeys.generate()
    for n in CONSENSUS_SIZES:
        now = wall_clock_ms()
        keys = [NodeKeys.generate() for _ in range(n)]
        t0 = time.perf_counter()
        raw = [
            make_descriptor(
                k, f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 1024 + i, "0.1.0", now
            )
            for i, k in enumerate(keys)
        ]
        descriptors = [parse_descriptor(d, now_ms=now) for d in raw]
        register_ms = (time.perf_counter() - t0) * 1000

        def build(ds: Any = descriptors, t: int = now) -> bytes:
            body = make_consensus_body(ds, epoch=1, valid_after_ms=t)
            return assemble(body, [sign_consensus(body, authority)])

        build_ms, doc = best(build)
        pinned = [authority.identity_public]
        verify_ms, consensus = best(
            lambda d=doc, t=now, p=pinned: verify_consensus(d, pinned=p, threshold=1, now_ms=t)
        )
        assert len(consensus.nodes) == n
        body, sigs = split_consensus(doc)
        sig_ms, _ = best(
            lambda b=body, s=sigs: crypto.verify(s[0].key, CONSENSUS_DOMAIN, b, s[0].signature)
        )
        decode_ms, _ = best(lambda b=body: cbor.decode(b, max_size=MAX_CONSENSUS_SIZE))
        k = f"{n // 1000}k"
        r[f"consensus_{k}_bytes"] = float(len(doc))
        r[f"consensus_{k}_register_ms"] = round(register_ms, 1)
        r[f"consensus_{k}_build_ms"] = round(build_ms, 2)
        r[f"consensus_{k}_verify_ms"] = round(verify_ms, 2)
        r[f"consensus_{k}_sig_ms"] = round(sig_ms, 3)
        r[f"consensus_{k}_decode_ms"] = round(decode_ms, 2)
        r[f"consensus_{k}_verify_floor_ratio"] = round(verify_ms / (sig_ms + decode_ms), 3)
    r["max_consensus_bytes"] = float(MAX_CONSENSUS_SIZE)
    return r


# --- the suite -----------------------------------------------------------------------------


def run() -> dict[str, float]:
    sys.path.insert(0, str(HERE))
    t_start = time.monotonic()
    results: dict[str, float] = {}
    tmp = Path(tempfile.mkdtemp(prefix="veil-bench-scale-"))
    driver: Driver | None = None
    try:
        results.update(_consensus_docs())
        driver = Driver(tmp)
        results.update(_node_memory(tmp, driver))
        results.update(_store_levels(tmp, driver))
        driver.stop()
        driver = None
        results.update(_devnets(tmp))
    finally:
        if driver is not None:
            driver.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    results["run_s"] = round(time.monotonic() - t_start, 1)
    return results


def describe(r: dict[str, float]) -> str:
    def mark(ok: bool) -> str:
        return "ok " if ok else "MISSED"

    names = [_level_name(x) for x in LEVELS]
    small = names[0]
    lines = [f"scale: one node's store, memory, and the network's size (run {r['run_s']:.0f} s)"]
    lines.append(
        f"  store as it grows ({ACCOUNTS:,} accounts; {PROBES} probes; filled through the"
        " store API, served by a real node over POST /onion):"
    )
    lines.append(
        "    held      retrieve p50 / p99 ms (ratio)  CPU ms   stores/s (ratio)  CPU ms"
        "  others  disk/byte  start ms  fill/s"
    )
    for name in names:
        lines.append(
            f"    {r[f'held_{name}']:9,.0f} {r[f'retrieve_ms_p50_{name}']:7.3f} /"
            f" {r[f'retrieve_ms_p99_{name}']:6.3f}"
            f" ({r[f'retrieve_ms_p50_{name}'] / r[f'retrieve_ms_p50_{small}']:4.2f})"
            f"  {r[f'retrieve_cpu_ms_{name}']:6.3f}"
            f"  {r[f'store_mps_{name}']:7.0f}"
            f" ({r[f'store_mps_{name}'] / r[f'store_mps_{small}']:4.2f})"
            f"   {r[f'store_cpu_ms_{name}']:6.3f}"
            f"  {r[f'store_cpu_others_{name}']:5.2f}"
            f"  {r[f'disk_per_byte_{name}']:8.2f}  {r[f'node_start_ms_{name}']:8.0f}"
            f"  {r[f'fill_mps_{name}']:6.0f}"
        )
    lines += [
        f"    retrieve at 1M / at 1k: {r['retrieve_ratio_1m']:.2f}"
        f"  {mark(r['retrieve_ratio_1m'] <= TARGET_RETRIEVE_RATIO)} target <= 1.5"
        f" (CPU per retrieve {r['retrieve_cpu_ratio_1m']:.2f});"
        f"  store at 1M / at 1k: {r['store_ratio_1m']:.2f}"
        f"  {mark(r['store_ratio_1m'] >= TARGET_STORE_RATIO)} target >= 0.8"
        f" (CPU per store {r['store_cpu_ratio_1m']:.2f}: above 1 costs more)",
        f"  expiry sweep at 1M: {r['sweep_rows']:,.0f} rows in {r['sweep_s']:.1f} s"
        f" ({r['sweep_rows_per_s']:,.0f} rows/s); longest store during it"
        f" {r['sweep_pause_ms']:.1f} ms, p99 {r['sweep_store_ms_p99']:.1f} ms"
        f" ({r['sweep_stores_seen']:.0f} stores); before it: p50"
        f" {r['store_ms_p50_before_sweep']:.1f} ms, p99 {r['store_ms_p99_before_sweep']:.1f} ms"
        f" ({STORE_CONCURRENCY} in flight): longest / p99 before {r['sweep_pause_ratio']:.1f};"
        f" stores/s during the sweep / before it {r['sweep_store_rate_ratio']:.2f}",
        f"  node memory (RSS): idle {r['node_rss_idle_mb']:.1f} MB",
    ]
    a, b = MEMORY_STEPS
    for kind, what in (("conns", "idle connections"), ("polls", "waiting long-polls")):
        lines.append(
            f"    {what:19}: {r[f'node_rss_{kind}_base_mb']:.1f}"
            f" -> {r[f'node_rss_{a}_{kind}_mb']:.1f} ({a})"
            f" -> {r[f'node_rss_{b}_{kind}_mb']:.1f} MB ({b}); per item"
            f" {r[f'{kind}_per_item_kb_0_{a}']:.1f} KB"
            f" then {r[f'{kind}_per_item_kb_{a}_{b}']:.1f}"
            f" KB (ratio {r[f'{kind}_growth_ratio']:.2f}; 1.0 = no growth with the count)"
        )
    lines += [
        f"  client memory: idle {r['client_rss_idle_mb']:.1f} MB, following {CHANNELS} channels"
        f" {r[f'client_rss_{CHANNELS}_channels_mb']:.1f} MB"
        f" (ratio {r['client_channels_ratio']:.2f},"
        f" {r['client_per_channel_kb']:.0f} KB a channel)",
        f"  devnet of {BIG_DEVNET} nodes: up in {r[f'devnet_{BIG_DEVNET}_start_s']:.1f} s"
        f" ({SMALL_DEVNET} nodes: {r[f'devnet_{SMALL_DEVNET}_start_s']:.1f} s, ratio"
        f" {r['devnet_start_ratio']:.2f}); consensus"
        f" {r[f'devnet_{BIG_DEVNET}_consensus_bytes']:,.0f} bytes, verified in"
        f" {r[f'devnet_{BIG_DEVNET}_verify_ms']:.2f} ms"
        f" ({SMALL_DEVNET} nodes: {r[f'devnet_{SMALL_DEVNET}_consensus_bytes']:,.0f} bytes,"
        f" {r[f'devnet_{SMALL_DEVNET}_verify_ms']:.2f} ms)",
        "  consensus documents, sans-IO (best of 3):",
    ]
    for n in CONSENSUS_SIZES:
        k = f"{n // 1000}k"
        target = (
            f"  {mark(r[f'consensus_{k}_verify_ms'] < TARGET_VERIFY_10K_MS)} target < 200 ms"
            if n == 10_000
            else ""
        )
        lines.append(
            f"    {n:6,} descriptors: {r[f'consensus_{k}_bytes']:,.0f} bytes; build + sign"
            f" {r[f'consensus_{k}_build_ms']:.1f} ms; verify {r[f'consensus_{k}_verify_ms']:.1f} ms"
            f"{target}; floor: Ed25519 over the body {r[f'consensus_{k}_sig_ms']:.2f} ms + plain"
            f" CBOR decode {r[f'consensus_{k}_decode_ms']:.1f} ms, ratio"
            f" {r[f'consensus_{k}_verify_floor_ratio']:.2f} (registering the descriptors:"
            f" {r[f'consensus_{k}_register_ms']:.0f} ms)"
        )
    lines.append(
        f"    the largest consensus accepted: {r['max_consensus_bytes']:,.0f} bytes"
        " (10,000 nodes of the longest fields and 32 signatures take about 2.2 MB)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    print(describe(run()))
