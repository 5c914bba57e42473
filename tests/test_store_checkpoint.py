"""WAL checkpoints off the writer's path (issue 17), on real SQLite files: the WAL is
checkpointed and stays bounded after many writes, the writer's connection never
checkpoints by itself, and a SIGKILL while checkpoints and rewinds run loses nothing
acknowledged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import trio

from veil.node.store import MessageStore, open_store

from .test_store import ALICE, Clock, h, put

LIMIT_PAGES = 64
FRAME_BYTES = 4096 + 24  # a WAL frame: a page and its header


async def next_checkpoint(store: MessageStore) -> None:
    """Wait until the checkpointer has checkpointed once more (it does after a commit)."""
    start = store.stats().checkpoint.passive
    with trio.fail_after(60):
        while store.stats().checkpoint.passive == start:
            await trio.sleep(0.005)


async def test_the_wal_is_checkpointed_and_stays_bounded(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    wal = tmp_path / "m.db-wal"
    async with open_store(
        db, clock=Clock(), checkpoint_interval_s=0.01, wal_limit_pages=LIMIT_PAGES
    ) as store:
        conn = store._writer_conn
        assert conn is not None
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        largest = 0
        for round in range(30):
            # 20 transactions of one message: a few pages each, about 100 frames.
            for i in range(20):
                await put(store, b"r%d-%d" % (round, i) + bytes(2000))
            largest = max(largest, wal.stat().st_size)
            await next_checkpoint(store)
            # After any checkpoint the WAL holds at most its bound (else it is rewound).
            assert store.stats().checkpoint.wal_frames <= LIMIT_PAGES
        stats = store.stats().checkpoint
        assert stats.restarts >= 1  # 600 commits went past the bound more than once
        # The file never held more than the bound plus the frames of the rounds since
        # the last checkpoint (two at most, about 100 frames each), where 30 rounds
        # would be about 3,000 frames without rewinding.
        assert largest <= (LIMIT_PAGES + 500) * FRAME_BYTES
    async with open_store(db, clock=Clock()) as store:
        assert store.stats().messages == 600
        assert await store.get(ALICE, 0, h(b"r29-19" + bytes(2000))) is not None


_CHILD = textwrap.dedent(
    """
    import sys, trio
    from veil.node.store import open_store
    from veil.onion.crypto import hash32
    from veil.onion.keys import Account

    path = sys.argv[1]
    alice = Account(bytes([1]) * 32).id
    bob = Account(bytes([2]) * 32).id
    now = [1_000]

    async def main():
        # Checkpoints every 2 ms and a WAL rewound past 16 pages: the kill lands in or
        # near one; a sweep of expiring messages runs all the time beside the stores.
        async with open_store(
            path, clock=lambda: now[0], checkpoint_interval_s=0.002, wal_limit_pages=16,
            sweep_interval=0.01, sweep_batch=5,
        ) as store:
            async def writer(w):
                i = 0
                while True:
                    data = b"w%d-%d" % (w, i) + bytes(1000)
                    await store.store(alice, 0, hash32(data, b"test"), data, 10**15)
                    restarts = store.stats().checkpoint.restarts
                    print("%d %d %d" % (w, i, restarts), flush=True)  # the ack, after COMMIT
                    short = b"s%d-%d" % (w, i)
                    await store.store(bob, 0, hash32(short, b"test"), short, now[0] + 5)
                    now[0] += 1
                    i += 1
            async with trio.open_nursery() as nursery:
                for w in range(8):
                    nursery.start_soon(writer, w)

    trio.run(main)
    """
)


async def test_acked_writes_survive_sigkill_amid_checkpoints(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent,
    )
    acked: list[bytes] = []
    restarts = 0
    try:
        assert child.stdout is not None
        while len(acked) < 1500 or restarts < 3:
            line = await trio.to_thread.run_sync(child.stdout.readline)
            if not line:
                raise AssertionError(f"child ended early: {child.stderr.read()!r}")  # type: ignore[union-attr]
            w, i, r = line.split()
            restarts = int(r)
            acked.append(b"w%s-%s" % (w, i) + bytes(1000))
        os.kill(child.pid, signal.SIGKILL)  # while it is still writing and checkpointing
    finally:
        child.kill()
        child.wait()
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()
    assert child.returncode == -signal.SIGKILL
    assert restarts >= 3  # the WAL was rewound (checkpoints ran) before the kill
    async with open_store(db, clock=lambda: 1_000) as store:
        for data in acked:
            msg = await store.get(ALICE, 0, h(data))
            assert msg is not None and msg.data == data, data[:12]
