"""Tests of the client's SQLite state (client/state.py and its state_records.py,
state_schema.py), on real files.

Round trips of every table through the public API and across a reopen; the one
transaction that records messages and moves the position, checked by SIGKILLing a
writing subprocess; two processes writing one new file at once; several threads sharing
one ``ClientState``; file modes whatever the umask; and the schema's version checks.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from veil.client.errors import InsecureFile, StateError
from veil.client.home import Home
from veil.client.state import (
    MAX_CONSENSUS_BYTES,
    MAX_GUARDS,
    SCHEMA_VERSION,
    CachedConsensus,
    ClientState,
    GuardRecord,
    InboundMessage,
    open_state,
)
from veil.onion.keys import Account, AccountId

ROOT = Path(__file__).resolve().parent.parent
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX modes and signals")

TABLES = {"guards", "node_failures", "consensus", "positions", "messages", "clock"}


def account(i: int) -> AccountId:
    return Account(bytes([i]) * 32).id


def node(i: int) -> bytes:
    return hashlib.blake2b(b"node%d" % i, digest_size=32).digest()


def h(label: str) -> bytes:
    return hashlib.blake2b(label.encode(), digest_size=32).digest()


def msg(label: str, *, sender: AccountId | None = None, received_at: int = 1_000) -> InboundMessage:
    return InboundMessage(
        hash=h(label),
        sender=sender,
        timestamp_ms=received_at // 2,  # the sender's claim
        content=f"content of {label}".encode(),
        received_at_ms=received_at,
    )


class FakeClock:
    def __init__(self, now: int = 1_700_000_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state.sqlite3"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def run_child(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


# --- opening, files and modes ----------------------------------------------------------------


@posix_only
def test_open_state_creates_a_private_home_and_file(tmp_path: Path) -> None:
    home = Home(tmp_path / "deep" / "home")
    with open_state(home) as state:
        state.set_clock_offset(5)  # a write: the -wal and -shm files exist now
        assert mode(home.path) == 0o700
        assert home.state_path.name == "state.sqlite3"
        for name in ("state.sqlite3", "state.sqlite3-wal", "state.sqlite3-shm"):
            assert mode(home.path / name) == 0o600, name
    conn = sqlite3.connect(home.state_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert names >= TABLES
    finally:
        conn.close()


@posix_only
@pytest.mark.parametrize("umask", [0o000, 0o277], ids=["umask000", "umask277"])
def test_modes_do_not_depend_on_the_umask(tmp_path: Path, umask: int) -> None:
    # umask 000 would leave a naive SQLite file 0666 (and its -wal, -shm); 0277 would
    # leave it read-only 0400 and the home 0500.
    code = """
        import json, os, stat, sys
        os.umask(int(sys.argv[2]))
        from veil.client.home import Home
        from veil.client.state import open_state
        home = Home(sys.argv[1])
        with open_state(home) as state:
            state.set_clock_offset(1)
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in home.path.iterdir()}
            modes["HOME"] = stat.S_IMODE(home.path.stat().st_mode)
        print(json.dumps(modes))
    """
    r = run_child(code, str(tmp_path / "home"), str(umask))
    assert r.returncode == 0, r.stderr
    modes = json.loads(r.stdout)
    assert modes == {
        "HOME": 0o700,
        "state.sqlite3": 0o600,
        "state.sqlite3-wal": 0o600,
        "state.sqlite3-shm": 0o600,
    }


@posix_only
@pytest.mark.parametrize("bad_mode", [0o644, 0o640, 0o604])
def test_a_state_file_others_can_read_is_refused(db: Path, bad_mode: int) -> None:
    with ClientState.open(db) as state:
        state.set_clock_offset(7)
    db.chmod(bad_mode)
    with pytest.raises(InsecureFile, match="chmod 600"):
        ClientState.open(db)
    assert mode(db) == bad_mode  # refused, not silently changed
    db.chmod(0o600)
    with ClientState.open(db) as state:
        assert state.get_clock_offset() == 7


@posix_only
def test_wider_wal_and_shm_files_are_narrowed(db: Path) -> None:
    # SQLite gives -wal/-shm the database's mode; these could only come from elsewhere
    # (an older veil, another tool). Keep a connection open so they are not deleted.
    with ClientState.open(db) as first:
        first.set_clock_offset(1)
        for side in ("-wal", "-shm"):
            os.chmod(str(db) + side, 0o644)
        with ClientState.open(db) as second:
            assert second.get_clock_offset() == 1
        assert mode(Path(str(db) + "-wal")) == 0o600
        assert mode(Path(str(db) + "-shm")) == 0o600


def test_missing_directory_and_non_database_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="no such directory"):
        ClientState.open(tmp_path / "absent" / "state.sqlite3")

    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"this is not a database, just some bytes " * 100)
    junk.chmod(0o600)
    before = junk.read_bytes()
    with pytest.raises(StateError, match="not a database"):
        ClientState.open(junk)
    assert junk.read_bytes() == before

    (tmp_path / "dir.sqlite3").mkdir()
    with pytest.raises(StateError):
        ClientState.open(tmp_path / "dir.sqlite3")


def test_closed_state_refuses_use_and_close_is_idempotent(db: Path) -> None:
    state = ClientState.open(db)
    state.close()
    state.close()
    with pytest.raises(StateError, match="closed"):
        state.get_guards()
    with pytest.raises(StateError, match="closed"):
        state.set_clock_offset(1)


# --- schema versions ---------------------------------------------------------------------


def test_an_empty_file_is_migrated_to_the_current_schema(db: Path) -> None:
    db.touch(mode=0o600)
    with ClientState.open(db) as state:
        assert state.get_guards() == []
        assert state.load_consensus() is None
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_a_version_0_database_gains_the_tables_and_keeps_its_other_data(db: Path) -> None:
    # A database at version 0 (created by hand, or by a tool) is migrated in place.
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE notes (x TEXT)")
    conn.execute("INSERT INTO notes VALUES ('kept')")
    conn.commit()
    conn.close()
    db.chmod(0o600)
    with ClientState.open(db) as state:
        state.set_clock_offset(3)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("SELECT x FROM notes").fetchall() == [("kept",)]
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert names >= TABLES
    finally:
        conn.close()


def test_reopening_keeps_the_schema_and_does_not_migrate_again(db: Path) -> None:
    with ClientState.open(db) as state:
        state.set_clock_offset(11)
    with ClientState.open(db) as state:  # would fail ("table exists") if it re-ran v1
        assert state.get_clock_offset() == 11


def test_a_file_from_a_newer_veil_is_refused_untouched(db: Path) -> None:
    with ClientState.open(db) as state:
        state.set_clock_offset(1)
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StateError, match="upgrade veil"):
        ClientState.open(db)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    conn.close()


# --- guards and failures -----------------------------------------------------------------


def test_guards_round_trip_and_replace(db: Path) -> None:
    clock = FakeClock()
    g1 = GuardRecord(node(1), chosen_at_ms=100, failures=0, last_used_ms=None)
    g2 = GuardRecord(node(2), chosen_at_ms=200, failures=1, last_used_ms=150)
    with ClientState.open(db, clock=clock) as state:
        assert state.get_guards() == []
        state.set_guards([g2, g1])
        assert state.get_guards() == [g1, g2]  # oldest chosen first
    with ClientState.open(db, clock=clock) as state:
        assert state.get_guards() == [g1, g2]
        g3 = GuardRecord(node(3), chosen_at_ms=300)
        state.set_guards([g1, g3])
        assert state.get_guards() == [g1, g3]
        state.set_guards([])
        assert state.get_guards() == []


def test_set_guards_refuses_bad_input_and_changes_nothing(db: Path) -> None:
    g1 = GuardRecord(node(1), chosen_at_ms=100)
    with ClientState.open(db) as state:
        state.set_guards([g1])
        too_many = [GuardRecord(node(i), chosen_at_ms=i) for i in range(MAX_GUARDS + 1)]
        with pytest.raises(ValueError, match="at most"):
            state.set_guards(too_many)
        with pytest.raises(ValueError, match="twice"):
            state.set_guards([g1, g1])
        with pytest.raises(ValueError, match="32 bytes"):
            state.set_guards([GuardRecord(b"short", chosen_at_ms=1)])
        with pytest.raises(ValueError, match="failures"):
            state.set_guards([GuardRecord(node(4), chosen_at_ms=1, failures=-1)])
        assert state.get_guards() == [g1]


def test_failures_count_up_reset_on_success_and_track_guards(db: Path) -> None:
    clock = FakeClock(5_000)
    guard, other = node(1), node(2)
    with ClientState.open(db, clock=clock) as state:
        state.set_guards([GuardRecord(guard, chosen_at_ms=1)])
        assert state.node_failures().get(guard, 0) == 0
        assert [state.record_failure(guard) for _ in range(3)] == [1, 2, 3]
        assert state.record_failure(other) == 1
        assert state.node_failures().get(guard, 0) == 3
        assert state.node_failures() == {guard: 3, other: 1}
        assert state.get_guards()[0].failures == 3

        clock.now = 6_000
        state.record_success(guard)
        assert state.node_failures().get(guard, 0) == 0
        assert state.get_guards() == [
            GuardRecord(guard, chosen_at_ms=1, failures=0, last_used_ms=6_000)
        ]
        assert state.node_failures() == {other: 1}
    with ClientState.open(db) as state:
        assert state.node_failures().get(other, 0) == 1


def test_forget_failures_drops_only_old_ones(db: Path) -> None:
    clock = FakeClock(1_000)
    with ClientState.open(db, clock=clock) as state:
        state.record_failure(node(1))
        clock.now = 9_000
        state.record_failure(node(2))
        state.record_failure(node(1))  # a newer failure keeps node 1 too
        clock.now = 10_000
        state.record_failure(node(3))
        assert state.forget_failures(before_ms=9_500) == 2
        assert state.node_failures() == {node(3): 1}


def test_node_ids_are_checked(db: Path) -> None:
    with ClientState.open(db) as state:
        for bad in (b"", b"x" * 31, b"x" * 33, "05" + "ab" * 32):
            with pytest.raises(ValueError):
                state.record_failure(bad)  # type: ignore[arg-type]
        assert state.node_failures() == {}


# --- consensus cache ---------------------------------------------------------------------


def test_consensus_round_trip_keeps_the_newest_epoch(db: Path) -> None:
    with ClientState.open(db) as state:
        assert state.load_consensus() is None
        assert state.save_consensus(b"epoch 5 document", 5, 1_000) is True
        assert state.load_consensus() == CachedConsensus(b"epoch 5 document", 5, 1_000)
        # An older epoch never replaces a newer one (a stale fetch, or a racing process).
        assert state.save_consensus(b"epoch 4 document", 4, 2_000) is False
        assert state.load_consensus() == (b"epoch 5 document", 5, 1_000)
        # The same epoch again (a refetch) and a newer one replace it.
        assert state.save_consensus(b"epoch 5 again", 5, 3_000) is True
        assert state.save_consensus(b"epoch 6", 6, 4_000) is True
    with ClientState.open(db) as state:
        raw, epoch, fetched_at = state.load_consensus() or (b"", 0, 0)
        assert (raw, epoch, fetched_at) == (b"epoch 6", 6, 4_000)


def test_a_large_consensus_round_trips_and_oversize_is_refused(db: Path) -> None:
    big = random.Random(1).randbytes(3 * 1024 * 1024)
    with ClientState.open(db) as state:
        state.save_consensus(big, 1, 1)
        with pytest.raises(ValueError):
            state.save_consensus(b"x" * (MAX_CONSENSUS_BYTES + 1), 2, 2)
        with pytest.raises(ValueError):
            state.save_consensus(b"", 2, 2)
        with pytest.raises(ValueError):
            state.save_consensus(b"doc", -1, 2)
        cached = state.load_consensus()
        assert cached is not None and cached.raw == big and cached.epoch == 1


# --- positions and messages ----------------------------------------------------------------


def test_messages_and_position_round_trip(db: Path) -> None:
    me, alice, chan = account(1), account(2), account(3)
    clock = FakeClock(50_000)
    with ClientState.open(db, clock=clock) as state:
        assert state.get_position(me, 0) is None
        page = [msg("a", sender=alice, received_at=10), msg("b", sender=None, received_at=20)]
        assert state.save_messages_and_position(me, 0, page, h("b")) == [h("a"), h("b")]
        assert state.get_position(me, 0) == h("b")
        assert state.get_position(me, 1) is None  # positions are per namespace
        assert state.get_position(chan, 0) is None  # and per account
        assert state.has_message(h("a")) and not state.has_message(h("zzz"))

    with ClientState.open(db) as state:
        got = state.list_messages(me)
        assert [(m.hash, m.sender, m.content, m.received_at_ms) for m in got] == [
            (h("a"), alice, b"content of a", 10),
            (h("b"), None, b"content of b", 20),
        ]
        assert all(m.account == me and m.namespace == 0 for m in got)
        assert got[0].timestamp_ms == 5 and got[0].seq < got[1].seq
        assert state.get_position(me, 0) == h("b")


def test_a_message_seen_again_is_not_recorded_twice(db: Path) -> None:
    me = account(1)
    with ClientState.open(db) as state:
        state.save_messages_and_position(me, 0, [msg("a"), msg("b")], h("b"))
        # The node answers from an older position (ours was lost, or it forgot it).
        new = state.save_messages_and_position(me, 0, [msg("a"), msg("b"), msg("c")], h("c"))
        assert new == [h("c")]
        assert [m.hash for m in state.list_messages(me)] == [h("a"), h("b"), h("c")]
        # A page with the same message twice records it once.
        assert state.save_messages_and_position(me, 0, [msg("d"), msg("d")], None) == [h("d")]
        assert state.get_position(me, 0) == h("c")  # None left the position alone


def test_moving_the_position_alone(db: Path) -> None:
    me = account(1)
    with ClientState.open(db) as state:
        assert state.save_messages_and_position(me, 5, [], h("skipped")) == []
        assert state.get_position(me, 5) == h("skipped")
        assert state.list_messages(me) == []


def test_list_messages_filters_and_pages(db: Path) -> None:
    me, other = account(1), account(2)
    with ClientState.open(db) as state:
        for i in range(10):
            ns = 0 if i % 2 == 0 else -3
            state.save_messages_and_position(me, ns, [msg(f"m{i}", received_at=100 * i)], None)
        state.save_messages_and_position(other, 0, [msg("theirs")], None)

        everything = state.list_messages(me, limit=100)
        assert [m.hash for m in everything] == [h(f"m{i}") for i in range(10)]
        assert [m.hash for m in state.list_messages(me, namespace=-3)] == [
            h(f"m{i}") for i in (1, 3, 5, 7, 9)
        ]
        assert [m.received_at_ms for m in state.list_messages(me, since_ms=600)] == [
            600,
            700,
            800,
            900,
        ]
        assert [m.hash for m in state.list_messages(other)] == [h("theirs")]

        pages, after = [], 0
        while batch := state.list_messages(me, after_seq=after, limit=3):
            pages.append([m.hash for m in batch])
            after = batch[-1].seq
        assert [len(p) for p in pages] == [3, 3, 3, 1]
        assert [x for page in pages for x in page] == [m.hash for m in everything]

        for bad_limit in (0, -1, 10**6):
            with pytest.raises(ValueError):
                state.list_messages(me, limit=bad_limit)


def test_bad_message_input_records_nothing(db: Path) -> None:
    me = account(1)
    huge = InboundMessage(h("huge"), None, 1, b"x" * (256 * 1024 + 1), 1)
    short_hash = InboundMessage(b"short", None, 1, b"", 1)
    with ClientState.open(db) as state:
        for page in ([msg("ok"), huge], [msg("ok"), short_hash]):
            with pytest.raises(ValueError):
                state.save_messages_and_position(me, 0, page, h("ok"))
        with pytest.raises(ValueError, match="namespace"):
            state.save_messages_and_position(me, 40_000, [msg("ok")], h("ok"))
        with pytest.raises(ValueError):
            state.save_messages_and_position(me, 0, [msg("ok")], b"short")
        # Nothing of any failed call was written, not even the valid message.
        assert not state.has_message(h("ok"))
        assert state.get_position(me, 0) is None


def test_clock_offset_round_trip(db: Path) -> None:
    with ClientState.open(db) as state:
        assert state.get_clock_offset() is None
        state.set_clock_offset(-1234)
        assert state.get_clock_offset() == -1234
        state.set_clock_offset(56)
    with ClientState.open(db) as state:
        assert state.get_clock_offset() == 56


# --- crashes and concurrency -------------------------------------------------------------

PER_BATCH = 40

# A client that polls forever: each "page" is PER_BATCH messages, saved with the position
# at its last message; it prints "saved N" after each save returns (an acknowledgement).
# Large contents make each transaction long, so a kill often lands inside one.
_POLLER = """
    import hashlib, sys
    from veil.client.state import ClientState, InboundMessage
    from veil.onion.keys import Account
    path, first, per_batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    me = Account(bytes([1]) * 32).id
    def h(b, j):
        return hashlib.blake2b(f"{b}:{j}".encode(), digest_size=32).digest()
    state = ClientState.open(path)
    batch = first
    while True:
        page = [InboundMessage(h(batch, j), None, 1, bytes([j]) * 16384, 2)
                for j in range(per_batch)]
        state.save_messages_and_position(me, 0, page, page[-1].hash)
        print("saved", batch, flush=True)
        batch += 1
"""


def _batch_hashes(batch: int) -> list[bytes]:
    return [hashlib.blake2b(f"{batch}:{j}".encode(), digest_size=32).digest() for j in range(40)]


@posix_only
def test_sigkill_mid_loop_neither_loses_nor_repeats(db: Path) -> None:
    me = account(1)
    rng = random.Random(7)
    acknowledged = -1  # the last batch the child said was saved
    next_batch = 0
    for _ in range(8):  # kill, "restart" from the stored position, kill again...
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_POLLER), str(db), str(next_batch), "40"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()  # it is running and has saved once
            assert first.startswith("saved "), (first, proc.stderr and proc.stderr.read())
            # A save takes a few ms; most of the child's time is inside one, so a kill
            # at a random moment usually lands mid-transaction.
            threading.Event().wait(rng.uniform(0, 0.05))
            os.kill(proc.pid, signal.SIGKILL)
            out = first + proc.stdout.read()
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        assert proc.returncode == -signal.SIGKILL
        # The last whole line: a kill can land while the child writes one.
        whole = [line for line in out.splitlines(keepends=True) if line.endswith("\n")]
        acknowledged = int(whole[-1].split()[1])

        with ClientState.open(db) as state:
            position = state.get_position(me, 0)
            stored = [m.hash for m in state.list_messages(me, limit=10_000)]
        # The position is the last message of some batch k, and exactly the batches
        # 0..k are stored, each whole and once: nothing past the position, nothing lost.
        ends = {_batch_hashes(k)[-1]: k for k in range(acknowledged, acknowledged + 2)}
        assert position in ends, "the position is not the end of an acknowledged batch"
        last = ends[position]  # acknowledged, or the next one if the kill beat the print
        assert stored == [x for k in range(last + 1) for x in _batch_hashes(k)]
        next_batch = last + 1


_WRITER = """
    import hashlib, sys
    from veil.client.state import ClientState, InboundMessage
    from veil.onion.keys import Account
    path, who, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    sys.stdin.readline()  # wait for "go", so both start together
    shared = hashlib.blake2b(b"shared node", digest_size=32).digest()
    me = Account(bytes([who]) * 32).id
    with ClientState.open(path, busy_timeout_s=60) as state:
        for i in range(rounds):
            state.record_failure(shared)
            digest = hashlib.blake2b(f"{who}:{i}".encode(), digest_size=32).digest()
            page = [InboundMessage(digest, None, i, b"x", i)]
            state.save_messages_and_position(me, 0, page, digest)
            state.save_consensus(b"doc %d" % i, i, who)
    print("done")
"""


@posix_only
def test_two_processes_writing_one_new_file(db: Path) -> None:
    rounds = 60
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_WRITER), str(db), str(who), str(rounds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for who in (1, 2)
    ]
    for p in procs:  # both are started (and importing) before either may open the file
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    outputs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
        assert out.strip() == "done"

    with ClientState.open(db) as state:
        shared = hashlib.blake2b(b"shared node", digest_size=32).digest()
        assert state.node_failures().get(shared, 0) == 2 * rounds  # no increment lost
        for who in (1, 2):
            me = Account(bytes([who]) * 32).id
            hashes = [m.hash for m in state.list_messages(me, limit=1000)]
            expected = [
                hashlib.blake2b(f"{who}:{i}".encode(), digest_size=32).digest()
                for i in range(rounds)
            ]
            assert hashes == expected
            assert state.get_position(me, 0) == expected[-1]
        cached = state.load_consensus()
        assert cached is not None and cached.epoch == rounds - 1
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_one_state_shared_by_threads(db: Path) -> None:
    # As the trio client does: some calls on the trio thread, others in worker threads.
    me = account(1)
    errors: list[BaseException] = []
    with ClientState.open(db) as state:

        def work(t: int) -> None:
            try:
                for i in range(25):
                    state.record_failure(node(0))
                    state.save_messages_and_position(me, 0, [msg(f"{t}:{i}")], h(f"{t}:{i}"))
                    state.list_messages(me, limit=5)
            except BaseException as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert state.node_failures().get(node(0), 0) == 100
        assert len(state.list_messages(me, limit=1000)) == 100


def test_a_senders_huge_timestamp_is_clamped_not_refused(db: Path) -> None:
    # An envelope's timestamp is a u64 that the sender chooses; it must not make the
    # page it came in fail to save.
    me = account(1)
    m = InboundMessage(h("far future"), account(2), 2**64 - 1, b"hi", 10)
    with ClientState.open(db) as state:
        assert state.save_messages_and_position(me, 0, [m], m.hash) == [m.hash]
        (got,) = state.list_messages(me)
        assert got.timestamp_ms == 2**63 - 1
        with pytest.raises(ValueError):
            state.save_messages_and_position(
                me, 0, [InboundMessage(h("x"), None, 2**64, b"", 1)], None
            )
