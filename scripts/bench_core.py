"""./scripts/bench core: the onion packet at a hop, against one X25519 multiplication.

A hop does exactly one X25519 scalar multiplication, so the floor for processing a
packet is one multiplication measured in the same run; ``hop_ratio`` is how far above
the floor the rest of the work (MAC, keystream, parsing) puts it. The machines are
shared and noisy, so the floor and the figure are measured in alternating short batches
(both see the same disturbances) and each is the best batch: the one least disturbed.
"""

from __future__ import annotations

import timeit

from veil.onion import crypto
from veil.onion.keys import NodeKeys
from veil.onion.packet import Hop, build_packet, process_packet
from veil.onion.wallclock import wall_clock_ms

ROUNDS = 30
BATCH = 200


def _interleaved_us(fns: dict[str, object], batch: int = BATCH) -> dict[str, float]:
    """Best per-call time of each function, measured in alternating batches."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(ROUNDS):
        for name, fn in fns.items():
            t = timeit.timeit(fn, number=batch) / batch * 1e6  # type: ignore[arg-type]
            best[name] = min(best[name], t)
    return best


def run() -> dict[str, float]:
    nodes = [NodeKeys.generate() for _ in range(4)]
    path = [
        Hop(k.identity_public, k.onion_public, "127.0.0.1", 9000 + i) for i, k in enumerate(nodes)
    ]
    now = wall_clock_ms()
    payload = bytes(512)  # a storage request: the smallest (2 KiB) size class
    packet, _ = build_packet(path, payload, now_ms=now)
    guard = nodes[0]
    secret, public = guard.onion_secret, guard.onion_public

    big_packet, _ = build_packet(path, bytes(100_000), now_ms=now)
    best = _interleaved_us(
        {
            "x25519": lambda: crypto.x25519(secret, public),
            "hop": lambda: process_packet(packet, secret, public),
        }
    )
    slow = _interleaved_us(
        {
            "build": lambda: build_packet(path, payload, now_ms=now),
            "hop_big": lambda: process_packet(big_packet, secret, public),
        },
        batch=20,
    )
    x25519_us, hop_us = best["x25519"], best["hop"]
    build_us, hop_big_us = slow["build"], slow["hop_big"]
    return {
        "x25519_us": round(x25519_us, 2),
        "hop_process_us": round(hop_us, 2),
        "hop_ratio": round(hop_us / x25519_us, 3),
        "build_path_us": round(build_us, 2),
        "build_ratio": round(build_us / x25519_us, 3),
        "hop_process_128k_us": round(hop_big_us, 2),
    }


def describe(r: dict[str, float]) -> str:
    return "\n".join(
        [
            "onion packets (2 KiB body, default path of 4 layers)",
            f"  x25519 multiplication (floor)   {r['x25519_us']:8.1f} us",
            f"  packet processing at a hop      {r['hop_process_us']:8.1f} us"
            f"   ratio {r['hop_ratio']:.2f} x floor   (target < 80 us, < 1.7)",
            f"  build a 4-layer packet          {r['build_path_us']:8.1f} us"
            f"   ratio {r['build_ratio']:.2f} x floor   (8 multiplications + 4 bases)",
            f"  hop, 128 KiB body class         {r['hop_process_128k_us']:8.1f} us",
        ]
    )
