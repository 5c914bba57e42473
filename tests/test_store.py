"""The SQLite message store, on real database files: round trips, deduplication,
pagination, expiry and sweeps, batching under concurrency, shutdown, and durability of
acknowledged writes across a SIGKILL of the process."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from veil.node.store import MessageStore, StoreClosed, StoreError, StoreOutcome, open_store
from veil.node.store.schema import SCHEMA_VERSION
from veil.onion.crypto import hash32
from veil.onion.keys import Account, AccountId

T0 = 1_700_000_000_000
HOUR = 3_600_000


class Clock:
    """A wall clock in ms that the test moves by hand."""

    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def account(n: int) -> AccountId:
    return Account(bytes([n]) * 32).id


ALICE = account(1)
BOB = account(2)


def h(data: bytes) -> bytes:
    return hash32(data, b"test")


async def put(store: MessageStore, data: bytes, *, who: AccountId = ALICE, ns: int = 0,
              expiry: int = T0 + HOUR) -> StoreOutcome:  # fmt: skip
    return await store.store(who, ns, h(data), data, expiry)


async def test_store_then_retrieve_round_trip(tmp_path: Path) -> None:
    clock = Clock()
    async with open_store(tmp_path / "m.db", clock=clock) as store:
        out = await put(store, b"hello", expiry=T0 + HOUR)
        assert out == StoreOutcome(h(b"hello"), T0 + HOUR, created=True)
        got = await store.retrieve(ALICE, 0, limit=10, max_bytes=10_000)
        assert not got.more
        [msg] = got.messages
        assert (msg.hash, msg.data, msg.timestamp_ms, msg.expiry_ms) == (
            h(b"hello"),
            b"hello",
            T0,
            T0 + HOUR,
        )
        # Other accounts and other namespaces see nothing.
        assert (await store.retrieve(BOB, 0, limit=10, max_bytes=10_000)).messages == []
        assert (await store.retrieve(ALICE, 5, limit=10, max_bytes=10_000)).messages == []
        assert await store.get(ALICE, 0, h(b"hello")) == msg
        assert store.stats().messages == 1
        assert store.stats().size_bytes > 0
    # And it is still there after reopening.
    async with open_store(tmp_path / "m.db", clock=clock) as store:
        assert await store.get(ALICE, 0, h(b"hello")) == msg
        assert store.stats().messages == 1


async def test_same_hash_is_stored_once_and_keeps_the_later_expiry(tmp_path: Path) -> None:
    clock = Clock()
    async with open_store(tmp_path / "m.db", clock=clock) as store:
        first = await put(store, b"same", expiry=T0 + 2 * HOUR)
        again = await put(store, b"same", expiry=T0 + HOUR)
        later = await put(store, b"same", expiry=T0 + 3 * HOUR)
        assert first.created and not again.created and not later.created
        assert again.expiry_ms == T0 + 2 * HOUR  # never shortened by a re-send
        assert later.expiry_ms == T0 + 3 * HOUR
        got = await store.retrieve(ALICE, 0, limit=10, max_bytes=10_000)
        assert [m.expiry_ms for m in got.messages] == [T0 + 3 * HOUR]
        assert store.stats().messages == 1
        # The same bytes for another account or namespace are another message.
        assert (await put(store, b"same", who=BOB)).created
        assert (await put(store, b"same", ns=3)).created
        assert store.stats().messages == 3


async def test_an_expired_duplicate_is_stored_afresh_after_the_newer_messages(
    tmp_path: Path,
) -> None:
    clock = Clock()
    async with open_store(tmp_path / "m.db", clock=clock) as store:
        await put(store, b"old", expiry=T0 + 1000)
        await put(store, b"other", expiry=T0 + HOUR)
        clock.now += 2000
        again = await put(store, b"old", expiry=clock.now + HOUR)
        assert again.created
        # A client that had read up to "other" sees the re-sent message.
        got = await store.retrieve(ALICE, 0, after_hash=h(b"other"), limit=10, max_bytes=10**6)
        assert [m.data for m in got.messages] == [b"old"]
        assert store.stats().messages == 2


async def test_pagination_in_arrival_order_since_last_hash(tmp_path: Path) -> None:
    async with open_store(tmp_path / "m.db", clock=Clock()) as store:
        sent = [f"m{i}".encode() for i in range(10)]
        for data in sent:
            await put(store, data)
        pages, last, more = [], None, True
        while more:
            page = await store.retrieve(ALICE, 0, after_hash=last, limit=3, max_bytes=10**6)
            assert 1 <= len(page.messages) <= 3
            pages.append([m.data for m in page.messages])
            last, more = page.messages[-1].hash, page.more
        assert pages == [sent[0:3], sent[3:6], sent[6:9], sent[9:10]]
        # Nothing after the last one, and an unknown hash starts from the beginning.
        assert (await store.retrieve(ALICE, 0, after_hash=last, limit=3, max_bytes=10**6)) == (
            type(page)([], False)
        )
        restart = await store.retrieve(ALICE, 0, after_hash=bytes(32), limit=3, max_bytes=10**6)
        assert [m.data for m in restart.messages] == sent[0:3]


async def test_pages_stop_at_the_byte_budget_but_always_hold_one_message(
    tmp_path: Path,
) -> None:
    async with open_store(tmp_path / "m.db", clock=Clock()) as store:
        big = b"B" * 5000
        small = [bytes([i]) * 1000 for i in range(4)]
        await put(store, big)
        for data in small:
            await put(store, data)
        first = await store.retrieve(
            ALICE, 0, limit=100, max_bytes=2500, item_overhead=100
        )  # the first message alone is over the budget: returned anyway, alone
        assert [m.data for m in first.messages] == [big] and first.more
        second = await store.retrieve(
            ALICE, 0, after_hash=h(big), limit=100, max_bytes=2500, item_overhead=100
        )
        # 1100 + 1100 fits in 2500, a third would not.
        assert [m.data for m in second.messages] == small[:2] and second.more


async def test_expired_messages_are_hidden_before_any_sweep(tmp_path: Path) -> None:
    clock = Clock()
    async with open_store(tmp_path / "m.db", clock=clock, sweep_interval=10**6) as store:
        await put(store, b"short", expiry=T0 + 10_000)
        await put(store, b"long", expiry=T0 + HOUR)
        clock.now = T0 + 10_000  # expiry is exclusive: at the instant, it is gone
        got = await store.retrieve(ALICE, 0, limit=10, max_bytes=10**6)
        assert [m.data for m in got.messages] == [b"long"]
        assert await store.get(ALICE, 0, h(b"short")) is None
        assert store.stats().messages == 2  # still on disk until swept
        assert await store.sweep() == 1
        assert store.stats().messages == 1


async def test_sweep_deletes_in_bounded_batches(tmp_path: Path) -> None:
    clock = Clock()
    async with open_store(
        tmp_path / "m.db", clock=clock, sweep_batch=10, sweep_interval=10**6
    ) as store:
        for i in range(35):
            await put(store, b"x%d" % i, expiry=T0 + 1000)
        for i in range(5):
            await put(store, b"keep%d" % i, expiry=T0 + HOUR)
        clock.now = T0 + 5000
        before = store.stats()
        assert await store.sweep() == 35
        after = store.stats()
        # 10 + 10 + 10 + 5: four transactions of at most 10 rows.
        assert after.sweep_batches - before.sweep_batches == 4
        assert after.swept - before.swept == 35
        assert after.messages == 5
    with sqlite3.connect(tmp_path / "m.db") as db:
        assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 5


async def test_the_sweeper_runs_on_its_timer(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # The writer's thread calls take real time; with the default threshold of 0 the mock
    # clock would jump ahead while a thread runs and the deadline below could pass.
    autojump_clock.autojump_threshold = 0.05
    clock = Clock()
    async with open_store(
        tmp_path / "m.db", clock=clock, sweep_batch=7, sweep_interval=30
    ) as store:
        for i in range(20):
            await put(store, b"x%d" % i, expiry=T0 + 1000)
        clock.now = T0 + 2000
        start = trio.current_time()
        with trio.fail_after(300):  # virtual seconds (autojump clock)
            while store.stats().messages:
                await trio.sleep(1)
        assert trio.current_time() - start >= 29  # not before the first tick
        assert store.stats().swept == 20
        assert store.stats().sweep_batches >= 3  # 7 + 7 + 6


async def test_many_concurrent_stores_are_all_acked_in_few_batches(tmp_path: Path) -> None:
    results: list[StoreOutcome] = []
    async with open_store(tmp_path / "m.db", clock=Clock()) as store:
        batches_before = store.stats().write_batches

        async def one(i: int) -> None:
            results.append(await put(store, b"c%d" % i))

        async with trio.open_nursery() as nursery:
            for i in range(400):
                nursery.start_soon(one, i)
        assert len(results) == 400 and all(r.created for r in results)
        assert store.stats().messages == 400
        # Batched: far fewer transactions than writes.
        assert store.stats().write_batches - batches_before < 100
        got = await store.retrieve(ALICE, 0, limit=256, max_bytes=10**6)
        assert len(got.messages) == 256 and got.more


async def test_a_small_queue_applies_backpressure_and_loses_nothing(tmp_path: Path) -> None:
    async with open_store(tmp_path / "m.db", clock=Clock(), queue_size=4, max_batch=3) as store:
        async with trio.open_nursery() as nursery:
            for i in range(100):
                nursery.start_soon(put, store, b"p%d" % i)
        assert store.stats().messages == 100
        assert store.stats().write_batches >= 34  # at most 3 writes per batch


async def test_a_failing_write_fails_alone_in_its_batch(tmp_path: Path) -> None:
    outcomes: dict[int, object] = {}
    async with open_store(tmp_path / "m.db", clock=Clock()) as store:

        async def one(i: int) -> None:
            # An unbindable value makes SQLite refuse this one write.
            data: object = ["not bytes"] if i == 5 else b"ok%d" % i
            try:
                outcomes[i] = await store.store(ALICE, 0, h(b"%d" % i), data, T0 + HOUR)  # type: ignore[arg-type]
            except sqlite3.Error as exc:
                outcomes[i] = exc

        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(one, i)
        assert isinstance(outcomes.pop(5), sqlite3.Error)
        assert all(isinstance(o, StoreOutcome) and o.created for o in outcomes.values())
        assert store.stats().messages == 9


async def test_one_batch_with_failing_writes_commits_and_acks_exactly_the_good_ones(
    tmp_path: Path,
) -> None:
    # One batch (asserted below) that mixes new messages, a duplicate, an expired
    # duplicate replaced afresh, and two writes SQLite refuses, first and last in line.
    # The batch's first pass fails, so it runs again with a savepoint per write: the
    # good writes must get the outcomes a lone run gives, and the bad ones fail alone.
    clock = Clock()
    db = tmp_path / "m.db"
    unbindable: object = ["not bytes"]
    async with open_store(db, clock=clock) as store:
        await put(store, b"stale", expiry=T0 + 1000)
        await put(store, b"kept", expiry=T0 + HOUR)
        clock.now += 2000  # "stale" has expired, "kept" has not
        batches = store.stats().write_batches
        plan: list[tuple[str, object, int]] = [
            ("bad-first", unbindable, T0 + HOUR),
            ("new-1", b"new-1", T0 + HOUR),
            ("kept", b"kept", T0 + 2 * HOUR),  # alive duplicate: expiry extended
            ("stale", b"stale", T0 + HOUR),  # expired duplicate: stored afresh
            ("new-2", b"new-2", T0 + HOUR),
            ("new-2-again", b"new-2", T0 + 3 * HOUR),  # duplicate of a write in this batch
            ("bad-last", unbindable, T0 + HOUR),
        ]
        outcomes: dict[str, object] = {}
        with store.watch(BOB, 0) as bob_inbox, store.watch(ALICE, 0) as alice_inbox:

            async def one(name: str, data: object, expiry: int) -> None:
                key = h(data) if isinstance(data, bytes) else h(name.encode())
                try:
                    outcomes[name] = await store.store(ALICE, 0, key, data, expiry)  # type: ignore[arg-type]
                except sqlite3.Error as exc:
                    outcomes[name] = exc

            async with trio.open_nursery() as nursery:
                for name, data, expiry in plan:
                    nursery.start_soon(one, name, data, expiry)
            assert store.stats().write_batches == batches + 1  # all in one batch
            assert alice_inbox.is_set() and not bob_inbox.is_set()
        assert isinstance(outcomes["bad-first"], sqlite3.Error)
        assert isinstance(outcomes["bad-last"], sqlite3.Error)
        now = clock.now
        assert outcomes["new-1"] == StoreOutcome(h(b"new-1"), T0 + HOUR, created=True)
        assert outcomes["kept"] == StoreOutcome(h(b"kept"), T0 + 2 * HOUR, created=False)
        assert outcomes["stale"] == StoreOutcome(h(b"stale"), T0 + HOUR, created=True)
        # Two stores of one message in one batch: the first to run creates it with its
        # expiry, the second finds it and leaves the later of the two expiries.
        first, second = sorted(
            [("new-2", T0 + HOUR), ("new-2-again", T0 + 3 * HOUR)],
            key=lambda item: not outcomes[item[0]].created,  # type: ignore[attr-defined]
        )
        assert outcomes[first[0]] == StoreOutcome(h(b"new-2"), first[1], created=True)
        assert outcomes[second[0]] == StoreOutcome(h(b"new-2"), T0 + 3 * HOUR, created=False)
        assert store.stats().messages == 4
    # Acknowledged means committed: all there after reopening the file, nothing else.
    with sqlite3.connect(db) as conn:
        rows = dict(conn.execute("SELECT data, expiry FROM messages").fetchall())
        stale_seq, kept_seq = (
            conn.execute("SELECT seq FROM messages WHERE data = ?", (d,)).fetchone()[0]
            for d in (b"stale", b"kept")
        )
    assert rows == {
        b"kept": T0 + 2 * HOUR,
        b"stale": T0 + HOUR,
        b"new-1": T0 + HOUR,
        b"new-2": T0 + 3 * HOUR,
    }
    assert stale_seq > kept_seq  # the expired one was stored afresh, after the others
    async with open_store(db, clock=clock) as store:
        assert store.stats().messages == 4
        assert (await store.get(ALICE, 0, h(b"stale"))) is not None
        assert now == clock.now


async def test_a_caller_cancelled_while_its_write_is_in_flight_leaves_the_write_committed(
    tmp_path: Path,
) -> None:
    db = tmp_path / "m.db"
    async with open_store(db, clock=Clock()) as store:
        await put(store, b"first")
        # Another connection holds the write lock: the writer's next batch blocks in its
        # thread (SQLite's busy timeout) with the write below in it.
        blocker = sqlite3.connect(db, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:

                    async def caller() -> None:
                        await put(store, b"given up")
                        raise AssertionError("the store answered a cancelled caller")

                    nursery.start_soon(caller)
                    await trio.testing.wait_all_tasks_blocked()
                    scope.cancel()
            assert scope.cancelled_caught
            blocker.execute("ROLLBACK")
        finally:
            blocker.close()
        # The writer goes on: the abandoned write is committed, and later callers are
        # answered as usual.
        assert (await put(store, b"after")).created
        assert await store.get(ALICE, 0, h(b"given up")) is not None
        assert store.stats().messages == 3


async def test_watch_is_set_by_a_commit_for_its_account_and_namespace(tmp_path: Path) -> None:
    async with open_store(tmp_path / "m.db", clock=Clock()) as store:
        with store.watch(ALICE, 0) as alice0, store.watch(ALICE, 1) as alice1:
            await put(store, b"to bob", who=BOB)
            await put(store, b"to alice 1", ns=1)
            assert not alice0.is_set() and alice1.is_set()
            await put(store, b"to alice 0")
            assert alice0.is_set()
        with store.watch(ALICE, 0) as fresh:  # a new watch waits for the next commit
            assert not fresh.is_set()
            await put(store, b"to alice 0")  # a duplicate: nothing new
            assert not fresh.is_set()


async def test_exit_drains_queued_writes_then_refuses_new_ones(tmp_path: Path) -> None:
    outcomes: list[object] = []

    async def one(store: MessageStore, i: int) -> None:
        try:
            outcomes.append(await put(store, b"d%d" % i))
        except StoreClosed as exc:
            outcomes.append(exc)

    async with trio.open_nursery() as outer:
        async with open_store(tmp_path / "m.db", clock=Clock(), max_batch=5) as store:
            for i in range(50):
                outer.start_soon(one, store, i)
            await trio.testing.wait_all_tasks_blocked()  # all queued or in flight
        with pytest.raises(StoreClosed):
            await put(store, b"late")
    assert len(outcomes) == 50
    assert all(isinstance(o, StoreOutcome) for o in outcomes)
    async with open_store(tmp_path / "m.db", clock=Clock()) as store:
        assert store.stats().messages == 50


async def test_cancel_fails_queued_writes_cleanly_and_keeps_acked_ones(tmp_path: Path) -> None:
    acked: list[bytes] = []
    refused = 0

    async def one(store: MessageStore, i: int) -> None:
        nonlocal refused
        try:
            out = await put(store, b"k%d" % i)
        except StoreClosed:
            refused += 1
        else:
            acked.append(out.hash)

    async with trio.open_nursery() as outer:
        with trio.CancelScope() as scope:
            async with open_store(
                tmp_path / "m.db", clock=Clock(), queue_size=200, max_batch=2
            ) as store:
                for i in range(100):
                    outer.start_soon(one, store, i)
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()
                await trio.sleep_forever()
    # Every writer got an answer (no one hangs): acked or refused.
    assert len(acked) + refused == 100
    assert refused > 0
    async with open_store(tmp_path / "m.db", clock=Clock()) as store:
        for hsh in acked:
            assert await store.get(ALICE, 0, hsh) is not None
        assert store.stats().messages == len(acked)


_CHILD = textwrap.dedent(
    """
    import sys, trio
    from veil.node.store import open_store
    from veil.onion.crypto import hash32
    from veil.onion.keys import Account

    path, sync = sys.argv[1], sys.argv[2]
    alice = Account(bytes([1]) * 32).id

    async def main():
        async with open_store(path, clock=lambda: 1_000, synchronous=sync) as store:
            async def writer(w):
                i = 0
                while True:
                    data = b"w%d-%d" % (w, i)
                    await store.store(alice, 0, hash32(data, b"test"), data, 10**15)
                    print(data.decode(), flush=True)  # the ack, only after COMMIT
                    i += 1
            async with trio.open_nursery() as nursery:
                for w in range(16):
                    nursery.start_soon(writer, w)

    trio.run(main)
    """
)


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
async def test_acked_writes_survive_sigkill_of_the_process(
    tmp_path: Path, synchronous: str
) -> None:
    db = tmp_path / "m.db"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(db), synchronous],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent,
    )
    acked: list[bytes] = []
    try:
        assert child.stdout is not None
        while len(acked) < 300:
            line = await trio.to_thread.run_sync(child.stdout.readline)
            if not line:
                raise AssertionError(f"child ended early: {child.stderr.read()!r}")  # type: ignore[union-attr]
            acked.append(line.strip())
        os.kill(child.pid, signal.SIGKILL)  # while it is still writing
    finally:
        child.kill()
        child.wait()
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()
    assert child.returncode == -signal.SIGKILL
    async with open_store(db, clock=lambda: 1_000) as store:
        for data in acked:
            msg = await store.get(ALICE, 0, h(data))
            assert msg is not None and msg.data == data, data
        assert store.stats().messages >= len(acked)


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        (
            lambda db: db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}"),
            f"has store schema {SCHEMA_VERSION + 1}",
        ),
        (lambda db: db.execute("PRAGMA user_version = -1"), "damaged"),
    ],
)
async def test_a_store_file_it_cannot_use_is_refused_with_store_error(
    tmp_path: Path, prepare: Callable[[sqlite3.Connection], object], message: str
) -> None:
    path = tmp_path / "m.db"
    with sqlite3.connect(path) as db:
        prepare(db)
    with pytest.raises(StoreError, match=message):
        async with open_store(path, clock=Clock()):
            pass


async def test_a_file_that_is_not_a_database_is_refused_with_store_error(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    path.write_bytes(b"not a database, " * 512)
    with pytest.raises(StoreError):
        async with open_store(path, clock=Clock()):
            pass


async def test_a_new_file_gets_every_migration_in_one_step(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    async with open_store(path, clock=Clock()) as store:
        await put(store, b"first")
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'messages'").fetchone()[0]
        assert "AUTOINCREMENT" in sql
        assert db.execute("SELECT seq FROM messages").fetchone()[0] == 1


async def test_revocations_survive_a_restart_and_are_swept_after_their_time(
    tmp_path: Path,
) -> None:
    """Schema 4 (issue 12): a revocation kept is answered by is_revoked at once, again
    after a restart (loaded from SQLite), listed for peers while its link lives, and
    swept (from the table and the index) after it is no longer needed."""
    path = tmp_path / "m.db"
    clock = Clock()
    link, other = bytes([1]) * 32, bytes([2]) * 32
    now = clock()
    async with open_store(path, clock=clock) as store:
        assert not store.is_revoked(link)
        assert await store.store_revocation(ALICE, link, b"record", now + 1_000, now + 5_000)
        assert not await store.store_revocation(ALICE, link, b"again", now + 1_000, now + 5_000)
        assert store.is_revoked(link) and not store.is_revoked(other)
    async with open_store(path, clock=clock) as store:
        assert store.is_revoked(link)
        page = await store.revocation_page(0, accept=lambda a: True, limit=10, max_bytes=10_000)
        assert page.revocations == (b"record",) and not page.messages
        clock.now += 2_000  # the link expired: not served, still kept
        page = await store.revocation_page(0, accept=lambda a: True, limit=10, max_bytes=10_000)
        assert page.revocations == ()
        assert store.is_revoked(link)
        clock.now += 4_000
        await store.sweep()
        assert not store.is_revoked(link)
    async with open_store(path, clock=clock) as store:
        assert not store.is_revoked(link)
