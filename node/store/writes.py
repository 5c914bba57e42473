"""The store's writes: each builds the function that the writer runs in its batch.

Design note
-----------
Every function here returns a :data:`~veil.node.store.writer.WriteFn`: a closure over
its arguments that acts only on the cursor it is given (the writer may run it twice,
see node/store/writer.py) and returns ``(result, row_delta, notify)``. No I/O happens
here; :class:`~veil.node.store.message_store.MessageStore` submits them. Every time
(``now``, ``expiry``) is in ms of the store's clock, as in the table's columns.

Messages are keyed by (account, namespace, hash): storing the same message again does
not create a second row (a new message takes one ``INSERT ... ON CONFLICT DO NOTHING``;
only a duplicate is then read back); it extends the expiry to the later of the two
(unless the old row has already expired, in which case it is replaced by a fresh one,
so that a client polling "since my last hash" sees it again). ``seq`` is AUTOINCREMENT,
never reused; seqs may have gaps (a duplicate's insert that did nothing may use one
up), which no reader relies on.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import Any

from veil.onion import rpc
from veil.onion.errors import VeilError
from veil.onion.replica import ReplicaMessage

from .records import RoomIndex, StoreOutcome
from .room_sql import index_room_record
from .writer import WriteFn

__all__ = [
    "apply_deletion",
    "delete_all_batch",
    "delete_messages",
    "delete_replicas",
    "expire_messages",
    "forget_request",
    "record_deletion",
    "remember_request",
    "set_sync_cursor",
    "store_message",
    "store_replicas",
    "store_revocation",
    "sweep_rows",
]

_INSERT = (
    "INSERT INTO messages (account, namespace, hash, data, timestamp, expiry, proof)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
#: As _INSERT, but a row already there under the same (account, namespace, hash) makes it
#: do nothing (``rowcount`` 0) instead of failing.
_INSERT_NEW = _INSERT + " ON CONFLICT (account, namespace, hash) DO NOTHING"


def store_message(
    key: bytes,
    namespace: int,
    hash: bytes,
    data: bytes,
    now: int,
    expiry: int,
    proof: bytes | None = None,
    room: RoomIndex | None = None,
) -> WriteFn[StoreOutcome]:
    """Store a message of the account ``key`` (its 32-byte X25519 key) until ``expiry``,
    with the owner's ``proof`` (None in the inbox); ``room``: a room record's index
    entry, written with it (node/store/room_sql.py)."""
    notify = (key, namespace)

    def write(db: sqlite3.Cursor) -> tuple[StoreOutcome, int, list[tuple[bytes, int]]]:
        # A new message (the usual case) takes this one statement. A duplicate inserts
        # nothing (it may use up a seq, which is never reused anyway) and goes on below.
        if db.execute(_INSERT_NEW, (key, namespace, hash, data, now, expiry, proof)).rowcount:
            if room is not None:
                index_room_record(db, key, hash, room, now)
            return StoreOutcome(hash, expiry, created=True, timestamp_ms=now), 1, [notify]
        seq, old_expiry = db.execute(
            "SELECT seq, expiry FROM messages WHERE account = ? AND namespace = ? AND hash = ?",
            (key, namespace, hash),
        ).fetchone()
        if old_expiry > now:
            new_expiry = max(old_expiry, expiry)
            if new_expiry != old_expiry:
                # The later store's proof is the one that allows the later expiry.
                db.execute(
                    "UPDATE messages SET expiry = ?, proof = ? WHERE seq = ?",
                    (new_expiry, proof, seq),
                )
            return StoreOutcome(hash, new_expiry, created=False), 0, []
        # Expired: replaced by a fresh row (a new seq, so "since my last hash" sees it).
        db.execute("DELETE FROM messages WHERE seq = ?", (seq,))
        db.execute(_INSERT, (key, namespace, hash, data, now, expiry, proof))
        if room is not None:
            index_room_record(db, key, hash, room, now)
        return StoreOutcome(hash, expiry, created=True, timestamp_ms=now), 0, [notify]

    return write


def _tombstone_until(expiry: int, proof: bytes | None) -> int:
    """How long a deleted message's tombstone must live: until every copy that a peer
    could still send is expired (the row's expiry, or the latest its proof allows)."""
    if proof is None:
        return expiry
    try:
        return max(expiry, rpc.expiry_limit(rpc.decode_proof(proof)))
    except VeilError:  # pragma: no cover - proofs are checked before they are stored
        return expiry


def _bury(
    db: sqlite3.Cursor, key: bytes, namespace: int, hash: bytes, now: int, until: int
) -> None:
    db.execute(
        "INSERT INTO tombstones (account, namespace, hash, deleted, expiry)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (account, namespace, hash)"
        " DO UPDATE SET deleted = excluded.deleted, expiry = max(expiry, excluded.expiry)",
        (key, namespace, hash, now, until),
    )


def delete_messages(
    key: bytes, namespace: int, hashes: Sequence[bytes], now: int, unknown_until: int
) -> WriteFn[list[bytes]]:
    """Delete these messages and leave a tombstone for each (one not held here too: a
    copy may still be on its way, so its tombstone lives until ``unknown_until``, the
    latest expiry a message stored now could have); the result is the hashes that were
    there (expired too)."""

    def write(db: sqlite3.Cursor) -> tuple[list[bytes], int, list[tuple[bytes, int]]]:
        deleted: list[bytes] = []
        for h in dict.fromkeys(hashes):  # unique, in order
            row = db.execute(
                "SELECT seq, expiry, proof FROM messages"
                " WHERE account = ? AND namespace = ? AND hash = ?",
                (key, namespace, h),
            ).fetchone()
            if row is not None:
                seq, expiry, proof = row
                db.execute("DELETE FROM messages WHERE seq = ?", (seq,))
                deleted.append(h)
                _bury(db, key, namespace, h, now, _tombstone_until(expiry, proof))
            else:
                _bury(db, key, namespace, h, now, unknown_until)
        return deleted, -len(deleted), []

    return write


def _every_namespace(key: bytes, keep: int | None) -> tuple[str, tuple[Any, ...]]:
    """The WHERE clause of every namespace of the account ``key`` but ``keep`` (the
    storage service keeps an owner's room, whose records go by moderation or TTL only)."""
    if keep is None:
        return "account = ?", (key,)
    return "account = ? AND namespace != ?", (key, keep)


def delete_all_batch(
    key: bytes, namespace: int | None, now: int, limit: int, keep: int | None = None
) -> WriteFn[int]:
    """Delete at most ``limit`` of the account's messages in ``namespace`` (None: every
    namespace, but ``keep``), each leaving a tombstone; the result is how many were
    deleted."""
    if namespace is None:
        where, args = _every_namespace(key, keep)
    else:
        where, args = "account = ? AND namespace = ?", (key, namespace)
    select = f"SELECT seq, namespace, hash, expiry, proof FROM messages WHERE {where} LIMIT ?"  # noqa: S608

    def write(db: sqlite3.Cursor) -> tuple[int, int, list[tuple[bytes, int]]]:
        rows = db.execute(select, (*args, limit)).fetchall()
        for seq, ns, h, expiry, proof in rows:
            db.execute("DELETE FROM messages WHERE seq = ?", (seq,))
            _bury(db, key, ns, h, now, _tombstone_until(expiry, proof))
        return len(rows), -len(rows), []

    return write


#: Rows one statement of a sweep deletes, at most: small enough that the time budget
#: is checked often (about 100 random deletes at 1 million messages take ~10 ms here).
SWEEP_CHUNK_ROWS = 50


def sweep_rows(
    table: str,
    key: str,
    until: str,
    now: int,
    max_rows: int,
    budget_s: float,
    *,
    counted: bool = True,
) -> WriteFn[tuple[int, bool]]:
    """Delete rows of ``table`` whose ``until`` column is at or before ``now`` (``key``:
    the columns that name a row), in statements of :data:`SWEEP_CHUNK_ROWS`, until
    ``max_rows`` are deleted, none is left, or ``budget_s`` seconds of work are spent
    (at least one statement runs). The result: (rows deleted, whether none is left).
    ``counted``: rows of ``messages``, which the writer counts."""
    sql = (
        f"DELETE FROM {table} WHERE ({key}) IN"  # noqa: S608
        f" (SELECT {key} FROM {table} WHERE {until} <= ? LIMIT ?)"
    )

    def write(db: sqlite3.Cursor) -> tuple[tuple[int, bool], int, list[tuple[bytes, int]]]:
        deadline = time.perf_counter() + budget_s
        n = 0
        done = False
        while n < max_rows:
            chunk = min(SWEEP_CHUNK_ROWS, max_rows - n)
            k = db.execute(sql, (now, chunk)).rowcount
            n += k
            if k < chunk:
                done = True
                break
            if time.perf_counter() >= deadline:
                break
        return (n, done), -n if counted else 0, []

    return write


def record_deletion(account: bytes, digest: bytes, request: bytes, until: int) -> WriteFn[bool]:
    """Keep the owner's signed delete or delete_all ``request`` (named by ``digest``)
    for anti-entropy until ``until``; False if it was kept already."""

    def write(db: sqlite3.Cursor) -> tuple[bool, int, list[tuple[bytes, int]]]:
        cur = db.execute(
            "INSERT INTO deletions (account, digest, request, expiry) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (digest) DO NOTHING",
            (account, digest, request, until),
        )
        return bool(cur.rowcount), 0, []

    return write


def apply_deletion(
    key: bytes,
    namespace: int | None,
    hashes: Sequence[bytes] | None,
    signed: int,
    digest: bytes,
    request: bytes,
    until: int,
    now: int,
    keep: int | None = None,
) -> WriteFn[int]:
    """Apply, as of its signed time ``signed``, an owner's delete (``hashes``) or
    delete_all (``hashes`` None; ``namespace`` None: every namespace but ``keep``) that another
    member executed and this node missed: delete the messages it covers that were first
    stored no later than ``signed`` plus the clock skew (not a later store of the same
    bytes), leave their tombstones, and keep the request (``digest``) for anti-entropy.
    Nothing if the request is kept already. The result: how many rows were deleted."""
    limit = signed + rpc.CLOCK_SKEW_MS

    def write(db: sqlite3.Cursor) -> tuple[int, int, list[tuple[bytes, int]]]:
        known = db.execute(
            "INSERT INTO deletions (account, digest, request, expiry) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (digest) DO NOTHING",
            (key, digest, request, until),
        ).rowcount
        if not known:
            return 0, 0, []
        if hashes is None:
            where, args = _every_namespace(key, keep)
            if namespace is not None:
                where, args = "account = ? AND namespace = ?", (key, namespace)
            rows = db.execute(
                f"SELECT seq, namespace, hash, timestamp, expiry, proof FROM messages"  # noqa: S608
                f" WHERE {where}",
                args,
            ).fetchall()
        else:
            assert namespace is not None
            rows = []
            for h in dict.fromkeys(hashes):
                row = db.execute(
                    "SELECT seq, namespace, hash, timestamp, expiry, proof FROM messages"
                    " WHERE account = ? AND namespace = ? AND hash = ?",
                    (key, namespace, h),
                ).fetchone()
                if row is None:  # not held: its copy may still come
                    _bury(db, key, namespace, h, signed, until)
                else:
                    rows.append(row)
        deleted = 0
        for seq, ns, h, timestamp, expiry, proof in rows:
            if _stored_at(timestamp, proof) > limit:
                continue  # stored after the request: not what the owner deleted
            db.execute("DELETE FROM messages WHERE seq = ?", (seq,))
            _bury(db, key, ns, h, signed, _tombstone_until(expiry, proof))
            deleted += 1
        return deleted, -deleted, []

    return write


def _stored_at(timestamp: int, proof: bytes | None) -> int:
    """When a message was stored: its proof's signed time, else (the inbox) the first
    storing node's clock."""
    if proof is None:
        return timestamp
    try:
        return rpc.decode_proof(proof).timestamp_ms
    except VeilError:  # pragma: no cover - proofs are checked before they are stored
        return timestamp


def forget_request(digest: bytes) -> WriteFn[None]:
    """Undo :func:`remember_request` (the request failed: it may be sent again)."""

    def write(db: sqlite3.Cursor) -> tuple[None, int, list[tuple[bytes, int]]]:
        db.execute("DELETE FROM executed_requests WHERE digest = ?", (digest,))
        return None, 0, []

    return write


def remember_request(digest: bytes, until: int, now: int) -> WriteFn[bool]:
    """Note that the signed request ``digest`` was executed (kept until ``until``); the
    result is False if it was already noted and still kept (do not execute it again)."""

    def write(db: sqlite3.Cursor) -> tuple[bool, int, list[tuple[bytes, int]]]:
        row = db.execute(
            "SELECT expiry FROM executed_requests WHERE digest = ?", (digest,)
        ).fetchone()
        if row is not None and row[0] > now:
            return False, 0, []
        db.execute(
            "INSERT INTO executed_requests (digest, expiry) VALUES (?, ?)"
            " ON CONFLICT (digest) DO UPDATE SET expiry = excluded.expiry",
            (digest, until),
        )
        return True, 0, []

    return write


def expire_messages(
    key: bytes, namespace: int, hashes: Sequence[bytes], expiry: int, now: int
) -> WriteFn[list[bytes]]:
    """Set the expiry of these (unexpired) messages; the result is the hashes updated."""

    def write(db: sqlite3.Cursor) -> tuple[list[bytes], int, list[tuple[bytes, int]]]:
        updated: list[bytes] = []
        for h in dict.fromkeys(hashes):
            cur = db.execute(
                "UPDATE messages SET expiry = ?"
                " WHERE account = ? AND namespace = ? AND hash = ? AND expiry > ?",
                (expiry, key, namespace, h, now),
            )
            if cur.rowcount:
                updated.append(h)
        return updated, 0, []

    return write


def store_replicas(
    items: Sequence[ReplicaMessage], now: int, rooms: Mapping[bytes, RoomIndex] | None = None
) -> WriteFn[list[bool]]:
    """Store messages another node holds, keeping their timestamp and expiry; the result
    says, per message, whether it was new here (see :meth:`MessageStore.store_replicated`).
    ``rooms``: the index entries of room records, by message hash."""

    def write(db: sqlite3.Cursor) -> tuple[list[bool], int, list[tuple[bytes, int]]]:
        created: list[bool] = []
        notify: list[tuple[bytes, int]] = []
        delta = 0
        for m in items:
            if m.expiry_ms <= now or _buried(db, m, now):
                created.append(False)
                continue
            row = db.execute(
                "SELECT seq, expiry FROM messages WHERE account = ? AND namespace = ? AND hash = ?",
                (m.account, m.namespace, m.hash),
            ).fetchone()
            if row is not None:
                seq, old_expiry = row
                if old_expiry > now:
                    if m.expiry_ms > old_expiry:
                        db.execute(
                            "UPDATE messages SET expiry = ?, proof = ? WHERE seq = ?",
                            (m.expiry_ms, m.proof, seq),
                        )
                    created.append(False)
                    continue
                db.execute("DELETE FROM messages WHERE seq = ?", (seq,))
                delta -= 1
            db.execute(
                _INSERT,
                (m.account, m.namespace, m.hash, m.data, m.timestamp_ms, m.expiry_ms, m.proof),
            )
            index = None if rooms is None else rooms.get(m.hash)
            if index is not None:
                index_room_record(db, m.account, m.hash, index, m.timestamp_ms)
            delta += 1
            created.append(True)
            notify.append((m.account, m.namespace))
        return created, delta, notify

    return write


def _buried(db: sqlite3.Cursor, m: ReplicaMessage, now: int) -> bool:
    """True if a live tombstone forbids storing ``m``: it was deleted here, and ``m`` is
    a copy of that message, not a later store of the same bytes. A copy's store time is
    its proof's signed time (the inbox: ``ts``, the first storing node's clock); within
    :data:`~veil.onion.rpc.CLOCK_SKEW_MS` after the deletion counts as before it, since
    the clocks involved may differ by that much."""
    row = db.execute(
        "SELECT deleted FROM tombstones"
        " WHERE account = ? AND namespace = ? AND hash = ? AND expiry > ?",
        (m.account, m.namespace, m.hash, now),
    ).fetchone()
    if row is None:
        return False
    return bool(_stored_at(m.timestamp_ms, m.proof) <= row[0] + rpc.CLOCK_SKEW_MS)


def delete_replicas(account: bytes, pairs: Sequence[tuple[int, bytes]]) -> WriteFn[int]:
    """Delete these ``(namespace, hash)`` messages of ``account``; the result is how many
    were there."""

    def write(db: sqlite3.Cursor) -> tuple[int, int, list[tuple[bytes, int]]]:
        n = 0
        for namespace, h in pairs:
            n += db.execute(
                "DELETE FROM messages WHERE account = ? AND namespace = ? AND hash = ?",
                (account, namespace, h),
            ).rowcount
        return n, -n, []

    return write


def set_sync_cursor(peer: bytes, scope: bytes, seq: int) -> WriteFn[None]:
    """Remember ``peer``'s cursor for ``scope``, dropping its cursors for other scopes."""

    def write(db: sqlite3.Cursor) -> tuple[None, int, list[tuple[bytes, int]]]:
        db.execute("DELETE FROM sync_cursors WHERE peer = ? AND scope != ?", (peer, scope))
        db.execute(
            "INSERT INTO sync_cursors (peer, scope, seq) VALUES (?, ?, ?)"
            " ON CONFLICT (peer, scope) DO UPDATE SET seq = excluded.seq",
            (peer, scope, seq),
        )
        return None, 0, []

    return write


def store_revocation(
    account: bytes, link: bytes, record: bytes, link_expiry: int, until: int
) -> WriteFn[bool]:
    """Keep a verified revocation ``record`` of the link ``link`` of ``account`` (served
    to peers until ``link_expiry``, kept until ``until``); False if a revocation of that
    link is kept already (the first one stays: one record per link is enough)."""

    def write(db: sqlite3.Cursor) -> tuple[bool, int, list[tuple[bytes, int]]]:
        cur = db.execute(
            "INSERT INTO revocations (account, link, record, link_expiry, expiry)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (link) DO NOTHING",
            (account, link, record, link_expiry, until),
        )
        return bool(cur.rowcount), 0, []

    return write
