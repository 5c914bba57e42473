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

import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench_scale_common import (
    ACCOUNTS,
    BIG_DEVNET,
    CHANNELS,
    CONSENSUS_SIZES,
    HERE,
    LEVELS,
    MEMORY_STEPS,
    PROBES,
    SMALL_DEVNET,
    STORE_CONCURRENCY,
    TARGET_RETRIEVE_RATIO,
    TARGET_STORE_RATIO,
    TARGET_VERIFY_10K_MS,
    Driver,
)
from bench_scale_sizes import (
    _consensus_docs,
    _devnets,
    _node_memory,
)
from bench_scale_store import (
    _level_name,
    _store_levels,
)


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
