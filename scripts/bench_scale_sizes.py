"""Parts 3 to 6 of ``./scripts/bench scale``: a node's and a client's memory, a 30-node
devnet, and consensus documents of 1,000 and 10,000 descriptors (sans-IO).

See the suite's note in ``scripts/bench_scale.py``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench_scale_common import (
    BIG_DEVNET,
    CHANNELS,
    CONSENSUS_SIZES,
    MEMORY_STEPS,
    NODE_CONFIG,
    SEED,
    SMALL_DEVNET,
    SOURCES,
    Driver,
    NodeProc,
)


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
