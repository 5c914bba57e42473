"""The in-process rounds of ``./scripts/bench node``: stores and retrieves handed to
``StorageService.handle``, each beside its floor.

See the suite's note (``scripts/bench_node.py``: ``store_mps``, ``store_db_mps``,
``retrieve_owner_rps``, ``retrieve_delegated_rps``). Each round runs on a fresh
database, ``SERVICE_TASKS`` concurrent tasks, best of ``ROUNDS`` alternated rounds, with
the CPU other users took meanwhile.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench_node_common import (
    MESSAGE_BYTES,
    RETRIEVE_ACCOUNTS,
    RETRIEVE_REQUESTS,
    ROUNDS,
    SERVICE_MESSAGES,
    SERVICE_TASKS,
    STORE_ACCOUNTS,
    _accounts,
)
from bench_node_procs import _busy_seconds

from veil.onion.wallclock import wall_clock_ms


def _in_process_store_mps(tmp: Path) -> tuple[float, float, float]:
    """Stores/s into StorageService.handle, into MessageStore.store beneath it, and the
    CPU (in cores) that other users took meanwhile.

    Both on fresh databases with the node's defaults (``synchronous=FULL``), best of
    ``ROUNDS`` alternated rounds (a fresh database each), from
    ``SERVICE_TASKS`` concurrent tasks (as many requests in flight as a busy node has),
    so that the store's writer can batch. The second figure is the floor of the first:
    the same messages without the RPC (CBOR, checks, rate limit, reply).
    """
    import trio

    from veil.node.service import open_storage_service
    from veil.node.store import open_store
    from veil.onion import rpc
    from veil.onion.keys import AccountId

    now = wall_clock_ms()
    ttl = 86_400_000
    accounts = _accounts(STORE_ACCOUNTS)
    bodies = [secrets.token_bytes(MESSAGE_BYTES) for _ in range(SERVICE_MESSAGES)]
    targets = [accounts[i % len(accounts)] for i in range(SERVICE_MESSAGES)]
    requests = [rpc.make_store(t, d, ttl, now_ms=now) for t, d in zip(targets, bodies, strict=True)]
    ids = {a: AccountId.parse(a) for a in accounts}
    rows = [
        (ids[t], rpc.message_hash(ids[t], rpc.INBOX, d), d)
        for t, d in zip(targets, bodies, strict=True)
    ]

    others: list[float] = []

    async def drive(call: Any, items: list[Any]) -> float:
        it = iter(items)

        async def worker() -> None:
            for item in it:
                await call(item)

        busy0, cpu0 = _busy_seconds(), time.process_time()
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(SERVICE_TASKS):
                nursery.start_soon(worker)
        wall = trio.current_time() - start
        ours = time.process_time() - cpu0
        others.append(max(0.0, (_busy_seconds() - busy0 - ours) / wall))
        return len(items) / wall

    async def service_main() -> float:
        replies: list[bytes] = []

        async def call(req: bytes) -> None:
            replies.append(await service.handle(req))

        db = tmp / f"service-{len(others)}.sqlite"  # a fresh database every round
        async with open_storage_service(db) as service:
            for a in accounts[:64]:  # warm up (first pages, code paths)
                await service.handle(rpc.make_store(a, b"warm", ttl, now_ms=now))
            rate = await drive(call, requests)
        # Checked after the clock stops: decoding replies is the client's work.
        bad = Counter(r.status for r in map(rpc.decode_reply, replies) if not r.ok)
        if bad or len(replies) != len(requests):
            raise RuntimeError(f"service store: {len(replies)} replies, failures {dict(bad)}")
        return rate

    async def db_main() -> float:
        async def call(row: tuple[Any, bytes, bytes]) -> None:
            await store.store(row[0], rpc.INBOX, row[1], row[2], now + ttl)

        async with open_store(tmp / f"db-{len(others)}.sqlite", clock=lambda: now) as store:
            for a in accounts[:64]:
                await store.store(ids[a], rpc.INBOX, bytes(32), b"warm", now + ttl)
            return await drive(call, rows)

    # Alternated, best of ROUNDS each, as the relay figures: a disturbance from other
    # users falls on both, and the best round is the least disturbed.
    service, floor = [], []
    for _ in range(ROUNDS):
        service.append(trio.run(service_main))
        floor.append(trio.run(db_main))
    return max(service), max(floor), max(others)


def _in_process_retrieve_rps(tmp: Path) -> tuple[float, float, float]:
    """Signed inbox retrieves/s into StorageService.handle: by the accounts' keys, by
    delegated session keys (one chain each), and the CPU other users took meanwhile.
    See the module note."""
    import trio

    from veil.node.service import open_storage_service
    from veil.onion import capability as cap
    from veil.onion import rpc
    from veil.onion.keys import Account

    now = wall_clock_ms()
    owners = [Account.generate() for _ in range(RETRIEVE_ACCOUNTS)]
    signers = []
    for owner in owners:
        key = cap.SessionKey.generate()
        chain = cap.delegate(
            owner,
            key.ed25519_public,
            [cap.Resource.single(owner.id, rpc.INBOX, {cap.RETRIEVE})],
            now_ms=now,
        )
        signers.append(cap.DelegatedSigner(key, chain))
    picks = [i % RETRIEVE_ACCOUNTS for i in range(RETRIEVE_REQUESTS)]
    by_owner = [rpc.make_retrieve(owners[i], now_ms=now) for i in picks]
    by_delegate = [rpc.make_retrieve(signers[i], now_ms=now) for i in picks]
    others: list[float] = []

    async def measure(requests: list[bytes], db: Path) -> float:
        replies: list[bytes] = []
        async with open_storage_service(db) as service:
            for owner in owners:
                await service.handle(
                    rpc.make_store(owner.id, b"one message", 86_400_000, now_ms=now)
                )
            it = iter(requests)

            async def worker() -> None:
                for req in it:
                    replies.append(await service.handle(req))

            busy0, cpu0 = _busy_seconds(), time.process_time()
            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                for _ in range(SERVICE_TASKS):
                    nursery.start_soon(worker)
            wall = trio.current_time() - start
            ours = time.process_time() - cpu0
            others.append(max(0.0, (_busy_seconds() - busy0 - ours) / wall))
        bad = Counter(r.status for r in map(rpc.decode_reply, replies) if not r.ok)
        if bad or len(replies) != len(requests):
            raise RuntimeError(f"retrieve: {len(replies)} replies, failures {dict(bad)}")
        return len(requests) / wall

    owner_rates, delegated_rates = [], []
    for n in range(ROUNDS):
        owner_rates.append(trio.run(measure, by_owner, tmp / f"retrieve-owner-{n}.sqlite"))
        delegated_rates.append(
            trio.run(measure, by_delegate, tmp / f"retrieve-delegated-{n}.sqlite")
        )
    return max(owner_rates), max(delegated_rates), max(others)
