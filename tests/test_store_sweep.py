"""The expiry sweep does not hold stores back (issue 17), on real SQLite files.

Asserted through the structure, never a wall-clock time (the machine is shared): the
SQL the writer's connection runs shows each sweep transaction alone (no store in it)
and bounded in rows, and a store queued while a sweep runs commits before the sweep
ends. The sweep still does all it did: expired messages, tombstones and the other
tables past their time.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import trio

from veil.node.store import MessageStore, open_store

from .test_store import ALICE, BOB, HOUR, T0, Clock, h, put


@dataclass
class Transaction:
    statements: set[str] = field(default_factory=set)  # what ran (trigger steps repeat it)
    rows: int = 0  # rows it changed


def transactions(store: MessageStore) -> list[Transaction]:
    """Record each write transaction of the store's writer: the list returned fills in
    as transactions commit."""
    conn = store._writer_conn  # the writer's own connection: what really reaches SQLite
    assert conn is not None
    done: list[Transaction] = []
    current = Transaction()
    changes_at_begin = 0

    def trace(sql: str) -> None:
        nonlocal current, changes_at_begin
        if sql.startswith("BEGIN"):
            current = Transaction()
            changes_at_begin = conn.total_changes
        elif sql == "COMMIT":
            current.rows = conn.total_changes - changes_at_begin
            done.append(current)
        else:
            current.statements.add(sql)

    conn.set_trace_callback(trace)
    return done


async def fill_expiring(store: MessageStore, n: int, *, expiry: int) -> None:
    async def one(i: int) -> None:
        await put(store, b"old%d" % i, expiry=expiry)

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(one, i)


async def test_sweep_transactions_hold_no_store_and_are_bounded_in_rows(tmp_path: Path) -> None:
    clock = Clock()
    async with open_store(
        tmp_path / "m.db", clock=clock, sweep_batch=20, sweep_interval=10**6
    ) as store:
        await fill_expiring(store, 300, expiry=T0 + 1000)
        clock.now = T0 + 5000
        txns = transactions(store)
        stored: list[bytes] = []

        async def storer(i: int) -> None:
            out = await put(store, b"new%d" % i, who=BOB, expiry=T0 + HOUR)
            stored.append(out.hash)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.sweep)
            for i in range(200):  # stores queued all through the sweep
                nursery.start_soon(storer, i)
                if i % 10 == 0:
                    await trio.sleep(0)
        assert len(stored) == 200 and store.stats().swept == 300
        sweep_sql = "DELETE FROM messages WHERE (seq)"
        sweeps = [t for t in txns if any(s.startswith(sweep_sql) for s in t.statements)]
        # 300 rows, at most 20 per transaction: 15 transactions or more, each of the
        # sweep's statements only (no INSERT of a store in it) and 20 rows at most.
        assert len(sweeps) >= 15
        assert sum(t.rows for t in sweeps) == 300
        for t in sweeps:
            assert all(s.startswith(sweep_sql) for s in t.statements), t
            assert t.rows <= 20, t
        # The 200 stores ran in transactions without a sweep's DELETE.
        inserts = [t for t in txns if any(s.startswith("INSERT") for s in t.statements)]
        assert sum(t.rows for t in inserts) == 200
        assert not any(t in sweeps for t in inserts)


async def test_a_store_queued_during_a_sweep_commits_before_the_sweep_ends(
    tmp_path: Path,
) -> None:
    clock = Clock()
    async with open_store(
        tmp_path / "m.db", clock=clock, sweep_batch=10, sweep_interval=10**6
    ) as store:
        await fill_expiring(store, 400, expiry=T0 + 1000)
        clock.now = T0 + 5000
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.sweep)
            while store.stats().sweep_batches == 0:  # the sweep has begun
                await trio.sleep(0)
            await put(store, b"urgent", who=BOB)
            # 40 sweep transactions are needed; the store waited for at most two.
            assert store.stats().sweep_batches <= 3
            assert store.stats().swept < 400
        assert store.stats().swept == 400
        assert await store.get(BOB, 0, h(b"urgent")) is not None


async def test_the_sweep_still_clears_every_table_past_its_time(tmp_path: Path) -> None:
    clock = Clock()
    db = tmp_path / "m.db"
    async with open_store(db, clock=clock, sweep_batch=7, sweep_interval=10**6) as store:
        for i in range(30):
            await put(store, b"gone%d" % i, expiry=T0 + 1000)
        await put(store, b"stays", expiry=T0 + HOUR)
        # 25 deletes: each leaves a tombstone living until the message's expiry.
        await store.delete(ALICE, 0, [h(b"gone%d" % i) for i in range(25)])
        assert await store.remember_request(b"r" * 32, T0 + 2000)
        clock.now = T0 + 1000 + 60_000
        assert await store.sweep() == 5  # the 5 expired messages not deleted
        with sqlite3.connect(db) as conn:
            # The inbox's tombstones of messages live until the latest expiry a store
            # could have (TTL + skew) only when the message was unknown; these were
            # known, so they went with their messages' expiry.
            assert conn.execute("SELECT count(*) FROM tombstones").fetchone()[0] == 0
            assert conn.execute("SELECT count(*) FROM executed_requests").fetchone()[0] == 0
            assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 1
        assert await store.get(ALICE, 0, h(b"stays")) is not None
