"""What the parts of ``./scripts/bench node`` share: its numbers, its targets, and
random account IDs.

The suite (``scripts/bench_node.py``) says what each number means in its note; the
processes (``bench_node_procs.py``), the load generator (``bench_node_loadgen.py``) and
the in-process rounds (``bench_node_service.py``) read them here.
"""

from __future__ import annotations

import secrets
from pathlib import Path

HERE = Path(__file__).resolve().parent
FORWARDER = HERE / "bench_forwarder.py"
HOST = "127.0.0.1"

CONCURRENCY = 32
WARMUP = 500
RELAY_ROUND = 3000
STORE_ROUND = 2000
ROUNDS = 3
STORE_ACCOUNTS = 2000
SERVICE_MESSAGES = 20_000
SERVICE_TASKS = 256
MESSAGE_BYTES = 200  # a short text message in its envelope
REPLY_BYTES = 2048
START_TIMEOUT = 30.0
RUN_TIMEOUT = 60.0

#: Other users' CPU (in cores) during a round above which the figures are flagged.
DISTURBED_CORES = 0.2
TARGET_RELAY_PPS = 2000.0
TARGET_RELAY_RATIO = 0.8
TARGET_STORE_MPS = 10_000.0
RETRIEVE_ACCOUNTS = 200
RETRIEVE_REQUESTS = 10_000
TARGET_DELEGATED_RATIO = 0.9


def _accounts(n: int) -> list[str]:
    """``n`` valid account IDs (random X25519 public keys)."""
    from veil.onion import crypto

    return ["05" + crypto.x25519_public(secrets.token_bytes(32)).hex() for _ in range(n)]
