"""./scripts/bench node: one node's relay and store throughput, each beside a peer.

What is measured (all on 127.0.0.1, in one run of about half a minute)
=====================================================================

* ``relay_pps``: onion packets per second relayed by ONE ``veil-node run`` process. Each
  packet is a valid 2-layer packet (:func:`veil.onion.packet.build_packet`) whose first hop
  is the node and whose second is the *sink* (``scripts/bench_forwarder.py sink``), a
  small h11 server that answers every POST with 2048 bytes (a reply size class). The
  node processes the packet (X25519, MAC, replay cache), forwards it over its peer pool,
  adds its reply layer to the sink's answer and answers. Every reply is checked after
  the timed part: it must be the node's relay of the sink's bytes (no key of ours opens
  it), not an error the node originated (which would open as a HopError).
* ``bare_forward_pps``: the same requests through the *bare forwarder*
  (``scripts/bench_forwarder.py forward``): the node's own HTTP server, config and peer
  pool, no onion, to the same sink. ``relay_ratio = relay_pps / bare_forward_pps`` is
  what the onion work costs on top of the socket work. Targets: ``relay_pps`` >= 2,000
  and ``relay_ratio`` >= 0.8.
* ``store_mps``: the node's store path, in-process: inbox store requests
  (``make_store``, 200-byte bodies, 2,000 inboxes so that none passes its rate limit)
  handed to :meth:`veil.node.service.StorageService.handle` (decode, checks, rate limit, the
  batching SQLite writer with the node's default ``synchronous=FULL``, the reply) by
  ``SERVICE_TASKS`` concurrent tasks, on a fresh database, best of ``ROUNDS`` rounds
  alternated with its floor. Target >= 10,000. Its floor,
  ``store_db_mps``, is the same messages straight into :meth:`veil.node.store.MessageStore.store`
  (no RPC), so ``store_service_db_ratio`` says how much the RPC layer costs.
* ``retrieve_owner_rps`` and ``retrieve_delegated_rps`` (issue 12): signed inbox
  retrieves handed to :meth:`~veil.node.service.StorageService.handle` in-process, as
  ``store_mps`` (``SERVICE_TASKS`` tasks, best of ``ROUNDS`` alternated rounds), over
  ``RETRIEVE_ACCOUNTS`` accounts holding one message each: signed by the account's key,
  or by a session key of each account with a one-link capability chain (the node's
  cache of verified chains warm after each chain's first request, as it is for a
  worker that polls). ``retrieve_delegated_ratio`` = delegated / owner-signed; target
  >= 0.9.
* ``store_onion_mps``: the same kind of stores through the node's real ``POST /onion``,
  in 1-layer packets (the node is the destination); every reply is opened and must be
  ``ok``. This is the whole path of a message at its last hop, HTTP and onion included,
  which is why it is reported beside ``store_mps`` and not instead of it.

Setup (printed with the figures): the machine's first two CPUs; the node and the bare
forwarder are pinned to one, the load generator (a separate process: a ``selectors``
loop over ``CONCURRENCY`` keep-alive connections, one request in flight each) and the
sink to the other, so the process under test has a core to itself and the load is cheap
enough not to be the bottleneck. Only one of node and forwarder is loaded at a time;
their rounds alternate and each figure is the best of ``ROUNDS``, so that a disturbance
on a shared machine falls on both sides of the ratio. CPU use is reported per round, in
cores: the process under test, the load core, and everything else on the machine
(``*_cpu_others``; a large value means other users disturbed the round). The node runs
with its default config except the per-address rate limit, which is off: all the load
comes from 127.0.0.1, and that limit is for floods from one host, not for throughput.

Packets are built before any timing (the node's replay cache refuses a packet twice,
so each timed request is a fresh one) and are used well inside the node's replay window.
Each measurement is a fixed number of requests, so the suite stops by itself.

The parts, each a module beside this one: ``bench_node_common.py`` (the numbers below
and the targets), ``bench_node_procs.py`` (processes, CPU pinning and CPU time),
``bench_node_loadgen.py`` (the load generator process), ``bench_node_service.py`` (the
in-process rounds).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench_node_common import (
    CONCURRENCY,
    DISTURBED_CORES,
    FORWARDER,
    HOST,
    MESSAGE_BYTES,
    RELAY_ROUND,
    REPLY_BYTES,
    RETRIEVE_ACCOUNTS,
    ROUNDS,
    SERVICE_TASKS,
    STORE_ACCOUNTS,
    STORE_ROUND,
    TARGET_DELEGATED_RATIO,
    TARGET_RELAY_PPS,
    TARGET_RELAY_RATIO,
    TARGET_STORE_MPS,
    WARMUP,
)
from bench_node_procs import (
    LoadGen,
    Proc,
    _busy_seconds,
    _cpu_seconds,
    _cpus,
    _node_argv,
    _node_hop,
)
from bench_node_service import _in_process_retrieve_rps, _in_process_store_mps

NODE_CONFIG = """\
# ./scripts/bench node: defaults, except the per-address limit (all load is loopback).
[rate_limit]
rate = 0
"""


def _round(
    load: LoadGen, kind: str, port: int, n: int, under_test: Proc, ours: list[int]
) -> dict[str, Any]:
    """One timed run of ``n`` requests, with the CPU use of who did the work.

    ``cpu_under_test``: the process measured, in cores; ``cpu_load_core``: the load
    generator and the sink (they share the other core); ``cpu_others``: everything else
    on the machine (other users' work: a large figure means the round was disturbed).
    """
    pids = [under_test.pid, *ours]
    before = {pid: _cpu_seconds(pid) for pid in pids}
    busy0 = _busy_seconds()
    answer = load.call(cmd="run", kind=kind, port=port, n=n, concurrency=CONCURRENCY)
    busy1 = _busy_seconds()
    wall = answer["elapsed"]
    used = {pid: _cpu_seconds(pid) - t0 for pid, t0 in before.items()}
    answer["cpu_under_test"] = used[under_test.pid] / wall
    answer["cpu_load_core"] = sum(used[p] for p in ours) / wall
    answer["cpu_others"] = max(0.0, (busy1 - busy0 - sum(used.values())) / wall)
    answer["rate"] = n / wall
    if answer["ok"] != n:
        raise RuntimeError(f"{kind}: {n - answer['ok']} of {n} requests failed: {answer['errors']}")
    return answer


def _best(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return max(rounds, key=lambda r: r["rate"])


def _measure_processes(tmp: Path, node_cpu: int | None, load_cpu: int | None) -> dict[str, Any]:
    """Relay, bare forward and onion store rounds against real processes."""
    config = tmp / "node.toml"
    config.write_text(NODE_CONFIG)
    py = sys.executable
    procs: list[Proc] = []
    load: LoadGen | None = None
    try:
        sink_argv = [py, str(FORWARDER), "sink", "--listen", f"{HOST}:0"]
        sink = Proc("sink", [*sink_argv, "--reply-bytes", str(REPLY_BYTES)], load_cpu, tmp)
        procs.append(sink)
        fwd_argv = [py, str(FORWARDER), "forward", "--listen", f"{HOST}:0"]
        fwd = Proc("forwarder", [*fwd_argv, "--next", f"{sink.host}:{sink.port}"], node_cpu, tmp)
        procs.append(fwd)
        node = Proc("node", _node_argv(tmp / "node", config), node_cpu, tmp)
        procs.append(node)
        hop = _node_hop(tmp / "node")
        load = LoadGen(load_cpu, tmp)
        # Our processes other than the one under test (the idle one of node and forwarder
        # included, so that only other users' work counts as "others").
        ours = [load.pid, sink.pid, os.getpid()]

        built = load.call(
            cmd="build",
            node={**hop, "host": node.host, "port": node.port},
            sink=[sink.host, sink.port],
            relay=WARMUP + ROUNDS * RELAY_ROUND,
            store=WARMUP + ROUNDS * STORE_ROUND,
            accounts=STORE_ACCOUNTS,
            message_bytes=MESSAGE_BYTES,
        )
        for kind, port in (("relay", node.port), ("forward", fwd.port), ("store", node.port)):
            load.call(cmd="run", kind=kind, port=port, n=WARMUP, concurrency=CONCURRENCY)
        relay, forward, store = [], [], []
        for _ in range(ROUNDS):
            # Alternate, so that a disturbance falls on both sides of the ratio.
            relay.append(_round(load, "relay", node.port, RELAY_ROUND, node, [*ours, fwd.pid]))
            forward.append(_round(load, "forward", fwd.port, RELAY_ROUND, fwd, [*ours, node.pid]))
        for _ in range(ROUNDS):
            store.append(_round(load, "store", node.port, STORE_ROUND, node, [*ours, fwd.pid]))
        return {
            "relay": _best(relay),
            "forward": _best(forward),
            "store": _best(store),
            "build_per_s": built["per_s"],
        }
    finally:
        if load is not None:
            load.stop()
        for p in reversed(procs):
            p.stop()


def run() -> dict[str, float]:
    node_cpu, load_cpu = _cpus()
    if load_cpu is not None:
        os.sched_setaffinity(0, {load_cpu})
    tmp = Path(tempfile.mkdtemp(prefix="veil-bench-node-"))
    try:
        m = _measure_processes(tmp, node_cpu, load_cpu)
        # In-process figures: this process takes the node's core (the node is gone).
        if node_cpu is not None:
            os.sched_setaffinity(0, {node_cpu})
        service_mps, db_mps, store_others = _in_process_store_mps(tmp)
        owner_rps, delegated_rps, retrieve_others = _in_process_retrieve_rps(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    relay, forward, store = m["relay"], m["forward"], m["store"]
    return {
        "relay_pps": round(relay["rate"], 1),
        "bare_forward_pps": round(forward["rate"], 1),
        "relay_ratio": round(relay["rate"] / forward["rate"], 3),
        "relay_target_ratio": round(relay["rate"] / TARGET_RELAY_PPS, 3),
        # Per CPU-second of the process under test: less sensitive to other users' load
        # than the rates (a CPU-bound process does about this many per second alone).
        "relay_per_cpu_s": round(relay["rate"] / max(relay["cpu_under_test"], 1e-3), 1),
        "forward_per_cpu_s": round(forward["rate"] / max(forward["cpu_under_test"], 1e-3), 1),
        "relay_cpu_node": round(relay["cpu_under_test"], 2),
        "relay_cpu_load_core": round(relay["cpu_load_core"], 2),
        "relay_cpu_others": round(relay["cpu_others"], 2),
        "relay_p50_ms": relay["p50_ms"],
        "forward_cpu_forwarder": round(forward["cpu_under_test"], 2),
        "forward_cpu_load_core": round(forward["cpu_load_core"], 2),
        "forward_cpu_others": round(forward["cpu_others"], 2),
        "forward_p50_ms": forward["p50_ms"],
        "store_mps": round(service_mps, 1),
        "store_target_ratio": round(service_mps / TARGET_STORE_MPS, 3),
        "store_db_mps": round(db_mps, 1),
        "store_cpu_others": round(store_others, 2),
        "store_service_db_ratio": round(service_mps / db_mps, 3),
        "retrieve_owner_rps": round(owner_rps, 1),
        "retrieve_delegated_rps": round(delegated_rps, 1),
        "retrieve_delegated_ratio": round(delegated_rps / owner_rps, 3),
        "retrieve_cpu_others": round(retrieve_others, 2),
        "store_onion_mps": round(store["rate"], 1),
        "store_onion_cpu_node": round(store["cpu_under_test"], 2),
        "store_onion_cpu_others": round(store["cpu_others"], 2),
        "build_packets_per_s": float(m["build_per_s"]),
        "pinned": 1.0 if node_cpu is not None else 0.0,
        "concurrency": float(CONCURRENCY),
    }


def describe(r: dict[str, float]) -> str:
    def mark(ok: bool) -> str:
        return "ok " if ok else "LOW"

    setup = (
        "node | forwarder pinned to one CPU, load generator + sink to the other"
        if r["pinned"]
        else "NOT pinned (fewer than 2 CPUs): the processes share cores"
    )
    rounds = ("relay", "forward", "store_onion", "store", "retrieve")
    disturbed = max(r[f"{k}_cpu_others"] for k in rounds)
    warning = (
        [f"  WARNING: other processes used up to {disturbed:.2f} cores during the rounds;"
         " these figures are low: run again on a quiet machine"]
        if disturbed > DISTURBED_CORES
        else []
    )  # fmt: skip
    return "\n".join(
        [
            f"one node on 127.0.0.1: {setup};",
            f"  {int(r['concurrency'])} keep-alive client connections, best of {ROUNDS} rounds;"
            " CPU in cores: the process under test / load core / other users",
            f"  relay, 2-layer packets node -> sink  {r['relay_pps']:8.0f} packets/s"
            f"  {mark(r['relay_pps'] >= TARGET_RELAY_PPS)} target >= {TARGET_RELAY_PPS:.0f}"
            f"   CPU {r['relay_cpu_node']:.2f} / {r['relay_cpu_load_core']:.2f}"
            f" / {r['relay_cpu_others']:.2f}, p50 {r['relay_p50_ms']:.1f} ms",
            f"  bare forwarder, same HTTP, no onion  {r['bare_forward_pps']:8.0f} packets/s"
            f"                   CPU {r['forward_cpu_forwarder']:.2f}"
            f" / {r['forward_cpu_load_core']:.2f} / {r['forward_cpu_others']:.2f},"
            f" p50 {r['forward_p50_ms']:.1f} ms",
            f"  relay / bare forwarder               {r['relay_ratio']:8.2f}"
            f"            {mark(r['relay_ratio'] >= TARGET_RELAY_RATIO)}"
            f" target >= {TARGET_RELAY_RATIO}",
            f"  per CPU-second of the process:       {r['relay_per_cpu_s']:8.0f} relayed,"
            f" {r['forward_per_cpu_s']:.0f} forwarded, ratio"
            f" {r['relay_per_cpu_s'] / r['forward_per_cpu_s']:.2f}",
            f"  store: StorageService.handle         {r['store_mps']:8.0f} messages/s"
            f" {mark(r['store_mps'] >= TARGET_STORE_MPS)} target >= {TARGET_STORE_MPS:.0f}"
            f"   (in-process, {SERVICE_TASKS} tasks, synchronous=FULL;"
            f" other users {r['store_cpu_others']:.2f})",
            f"  store: MessageStore.store (floor)    {r['store_db_mps']:8.0f} messages/s"
            f"                   service / floor {r['store_service_db_ratio']:.2f}",
            f"  retrieve, owner-signed               {r['retrieve_owner_rps']:8.0f} requests/s"
            f"                   (in-process, {RETRIEVE_ACCOUNTS} accounts;"
            f" other users {r['retrieve_cpu_others']:.2f})",
            f"  retrieve, delegated key + chain      {r['retrieve_delegated_rps']:8.0f} requests/s"
            f"  ratio {r['retrieve_delegated_ratio']:.2f}"
            f" {mark(r['retrieve_delegated_ratio'] >= TARGET_DELEGATED_RATIO)}"
            f" target >= {TARGET_DELEGATED_RATIO} (verified chains cached)",
            f"  store through POST /onion, 1 layer   {r['store_onion_mps']:8.0f} messages/s"
            f"                   CPU {r['store_onion_cpu_node']:.2f} / -"
            f" / {r['store_onion_cpu_others']:.2f}",
            f"  (packets built before timing by the load generator:"
            f" {r['build_packets_per_s']:.0f}/s)",
            *warning,
        ]
    )


def _main() -> int:
    print(describe(run()))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
