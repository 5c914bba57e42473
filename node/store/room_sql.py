"""The store's SQL for rooms (issue 16): the index of room records, and deferred copies.

Design note
-----------
``room_records`` indexes the records of the room namespace (-2) by kind, ID, author and
times (schema version 5); a row is written in the same transaction as its message (by
:func:`index_room_record`, called from the message writes) and dropped with it by a
trigger, so the index never names a message that is gone. The reads here answer the
node's room questions with index range scans: the metadata and moderation records of a
room (:func:`room_controls`, never the posts), the posts a delete names
(:func:`room_posts_named`), an author's posts up to a ban (:func:`room_posts_by`), and
an author's posts first stored since a time (:func:`room_recent_posts`, the rate).

``deferred_copies`` keeps copies a peer sent that could not be judged yet (see
node/rooms/), bounded in all, per sending peer and per room (:func:`defer_copies`
refuses one over a bound: it stays on the peer that sent it, which keeps offering it
by anti-entropy until its cursor passes). Reads run on the trio thread (bounded),
writes are :data:`~veil.node.store.writer.WriteFn` closures for the writer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from veil.onion.replica import ReplicaMessage

from .records import ROOM_POST, RoomIndex, StoredMessage
from .writer import WriteFn

__all__ = [
    "DeferLimits",
    "defer_copies",
    "deferred_of",
    "forget_deferred",
    "index_room_record",
    "room_controls",
    "room_posts_by",
    "room_posts_named",
    "room_recent_posts",
]

#: The room namespace (veil.onion.rpc.ROOM_NAMESPACE), as the trigger of schema.py says.
_ROOM_NS = -2


def index_room_record(
    db: sqlite3.Cursor, key: bytes, hash: bytes, index: RoomIndex, stored: int
) -> None:
    """Index the room record ``hash`` of the room ``key`` (its message was just
    inserted in this transaction)."""
    db.execute(
        "INSERT INTO room_records (account, hash, kind, record_id, author, ts, stored)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (account, hash) DO NOTHING",
        (key, hash, index.kind, index.record_id, index.author, index.ts, stored),
    )


def room_controls(
    conn: sqlite3.Connection, key: bytes, now: int, limit: int
) -> list[StoredMessage]:
    """The live metadata and moderation records of the room ``key`` (at most ``limit``,
    in arrival order): what its state is built from."""
    rows = conn.execute(
        "SELECT m.hash, m.data, m.timestamp, m.expiry FROM room_records r"
        " JOIN messages m ON m.account = r.account AND m.namespace = ? AND m.hash = r.hash"
        " WHERE r.account = ? AND r.kind != ? AND m.expiry > ? ORDER BY m.seq LIMIT ?",
        (_ROOM_NS, key, ROOM_POST, now, limit),
    ).fetchall()
    return [StoredMessage(bytes(h), bytes(d), t, e) for h, d, t, e in rows]


def room_posts_named(
    conn: sqlite3.Connection, key: bytes, post_ids: Sequence[bytes]
) -> list[bytes]:
    """The message hashes of the room's posts among ``post_ids`` (a delete names at most
    64)."""
    found: list[bytes] = []
    for post_id in post_ids:
        found.extend(
            bytes(row[0])
            for row in conn.execute(
                "SELECT hash FROM room_records WHERE account = ? AND record_id = ? AND kind = ?",
                (key, post_id, ROOM_POST),
            )
        )
    return found


def room_posts_by(
    conn: sqlite3.Connection, key: bytes, author: bytes, until_ts: int, limit: int
) -> list[bytes]:
    """The message hashes of ``author``'s posts in the room dated at or before
    ``until_ts`` (at most ``limit``; a ban with ``past`` deletes them page by page)."""
    return [
        bytes(row[0])
        for row in conn.execute(
            "SELECT hash FROM room_records"
            " WHERE account = ? AND author = ? AND kind = ? AND ts <= ? LIMIT ?",
            (key, author, ROOM_POST, until_ts, limit),
        )
    ]


def room_recent_posts(
    conn: sqlite3.Connection, key: bytes, author: bytes, since: int, limit: int
) -> int:
    """How many of ``author``'s posts in the room were first stored at or after
    ``since`` (counted up to ``limit``, the most the room's rate needs)."""
    row = conn.execute(
        "SELECT count(*) FROM (SELECT 1 FROM room_records"
        " WHERE account = ? AND author = ? AND stored >= ? LIMIT ?)",
        (key, author, since, limit),
    ).fetchone()
    return int(row[0])


class DeferLimits:
    """The bounds of ``deferred_copies``: in all, per sending peer, per room."""

    __slots__ = ("per_room", "per_source", "total")

    def __init__(self, total: int, per_source: int, per_room: int) -> None:
        self.total, self.per_source, self.per_room = total, per_source, per_room


def defer_copies(
    copies: Sequence[ReplicaMessage], source: bytes, until: int, limits: DeferLimits
) -> WriteFn[int]:
    """Keep ``copies`` (from the peer ``source``) for later, each until the earlier of
    ``until`` and its own expiry, within ``limits``; the result is how many were kept
    (a copy kept already counts as kept; one over a bound is not)."""

    def write(db: sqlite3.Cursor) -> tuple[int, int, list[tuple[bytes, int]]]:
        kept = 0
        total = db.execute("SELECT count(*) FROM deferred_copies").fetchone()[0]
        mine = db.execute(
            "SELECT count(*) FROM deferred_copies WHERE source = ?", (source,)
        ).fetchone()[0]
        for m in copies:
            held = db.execute(
                "SELECT 1 FROM deferred_copies WHERE account = ? AND namespace = ? AND hash = ?",
                (m.account, m.namespace, m.hash),
            ).fetchone()
            if held is not None:
                kept += 1
                continue
            room = db.execute(
                "SELECT count(*) FROM deferred_copies WHERE account = ?", (m.account,)
            ).fetchone()[0]
            if total >= limits.total or mine >= limits.per_source or room >= limits.per_room:
                continue
            db.execute(
                "INSERT INTO deferred_copies (account, namespace, hash, data, timestamp,"
                " expiry, proof, source, until) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    m.account,
                    m.namespace,
                    m.hash,
                    m.data,
                    m.timestamp_ms,
                    m.expiry_ms,
                    m.proof,
                    source,
                    min(until, m.expiry_ms),
                ),
            )
            total, mine, kept = total + 1, mine + 1, kept + 1
        return kept, 0, []

    return write


def deferred_of(conn: sqlite3.Connection, key: bytes, now: int, limit: int) -> list[ReplicaMessage]:
    """The copies kept for the owner ``key`` whose time is not up (at most ``limit``)."""
    rows = conn.execute(
        "SELECT account, namespace, hash, data, timestamp, expiry, proof FROM deferred_copies"
        " WHERE account = ? AND until > ? LIMIT ?",
        (key, now, limit),
    ).fetchall()
    return [
        ReplicaMessage(bytes(a), ns, bytes(h), bytes(d), t, e, None if p is None else bytes(p))
        for a, ns, h, d, t, e, p in rows
    ]


def forget_deferred(key: bytes, items: Sequence[tuple[int, bytes]]) -> WriteFn[int]:
    """Drop these ``(namespace, hash)`` copies kept for ``key`` (judged at last)."""

    def write(db: sqlite3.Cursor) -> tuple[int, int, list[tuple[bytes, int]]]:
        n = 0
        for namespace, h in items:
            n += db.execute(
                "DELETE FROM deferred_copies WHERE account = ? AND namespace = ? AND hash = ?",
                (key, namespace, h),
            ).rowcount
        return n, 0, []

    return write
