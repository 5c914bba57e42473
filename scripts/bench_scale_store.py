"""Parts 1 and 2 of ``./scripts/bench scale``: a node's store as it grows (1 thousand to
1 million messages), and the expiry sweep's pause at a million.

See the suite's note in ``scripts/bench_scale.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_scale_common import (
    ACCOUNTS,
    COMMAND_TIMEOUT_S,
    EXPIRING_EVERY,
    LEVELS,
    LOADGEN_NODE,
    NODE_CONFIG,
    PROBES,
    SEED,
    STORE_CONCURRENCY,
    STORE_ROUNDS,
    SWEEP_CONFIG,
    Driver,
    NodeProc,
    _check,
    percentile,
)


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
