"""The store's reads: small indexed queries on the read-only connection, trio thread.

Design note
-----------
In WAL mode readers never wait for the writer, and each statement sees the last
committed state, so every read here runs on the trio thread without a thread hop: each
is bounded (at most ``limit`` rows, a byte budget, a scan limit), which is what keeps
it short enough not to block. Reads never return a row whose ``expiry`` (ms, the
store's clock, passed in as ``now``) has passed; the sweeper deletes such rows later.

The functions take the connection and ``now`` and do no checkpoint; the store's methods
(node/store/message_store.py) give each read its one checkpoint, before reading.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable

from veil.onion import rpc
from veil.onion.errors import VeilError
from veil.onion.replica import ReplicaMessage, ReplicaPage

from .records import StoredMessage, StoredPage

__all__ = [
    "account_replicas",
    "account_revocations",
    "accounts",
    "deletion_page",
    "get",
    "replica_page",
    "replica_summary",
    "retrieve",
    "revocation_page",
    "revoked_links",
    "size_bytes",
    "sync_cursor",
]


def retrieve(
    conn: sqlite3.Connection,
    key: bytes,
    namespace: int,
    now: int,
    after_hash: bytes | None,
    limit: int,
    max_bytes: int,
    item_overhead: int,
) -> StoredPage:
    """See :meth:`MessageStore.retrieve`."""
    after = 0
    if after_hash is not None:
        row = conn.execute(
            "SELECT seq FROM messages WHERE account = ? AND namespace = ? AND hash = ?",
            (key, namespace, after_hash),
        ).fetchone()
        if row is not None:
            after = row[0]
    cur = conn.execute(
        "SELECT hash, data, timestamp, expiry FROM messages"
        " WHERE account = ? AND namespace = ? AND seq > ? AND expiry > ?"
        " ORDER BY seq LIMIT ?",
        (key, namespace, after, now, limit + 1),
    )
    messages: list[StoredMessage] = []
    used = 0
    more = False
    try:
        for h, data, timestamp, expiry in cur:  # rows are fetched one at a time
            cost = len(data) + item_overhead
            if len(messages) >= limit or (messages and used + cost > max_bytes):
                more = True
                break
            used += cost
            messages.append(StoredMessage(h, data, timestamp, expiry))
    finally:
        cur.close()
    return StoredPage(messages, more)


def get(
    conn: sqlite3.Connection, key: bytes, namespace: int, hash: bytes, now: int
) -> StoredMessage | None:
    """One unexpired message by hash, or None."""
    row = conn.execute(
        "SELECT hash, data, timestamp, expiry FROM messages"
        " WHERE account = ? AND namespace = ? AND hash = ? AND expiry > ?",
        (key, namespace, hash, now),
    ).fetchone()
    return None if row is None else StoredMessage(*row)


#: One row a page may take: (seq, account, namespace, hash, timestamp, expiry, proof).
_Taken = tuple[int, bytes, int, bytes, int, int, bytes | None]


def _replica_rows(
    conn: sqlite3.Connection,
    after_seq: int,
    now: int,
    accept: Callable[[bytes], bool],
    limit: int,
    max_bytes: int,
    item_overhead: int,
    scan_limit: int,
) -> tuple[list[_Taken], int, bool]:
    """The rows a replica page takes (no data read: its length is a column function),
    the page's ``next_seq`` and ``more``. See :meth:`MessageStore.replica_page`."""
    rows = conn.execute(
        "SELECT seq, account, namespace, hash, timestamp, expiry, length(data), proof"
        " FROM messages WHERE seq > ? ORDER BY seq LIMIT ?",
        (after_seq, scan_limit),
    ).fetchall()
    taken: list[_Taken] = []
    used = 0
    next_seq = after_seq
    full = False
    for seq, account, namespace, h, timestamp, expiry, size, proof in rows:
        if expiry > now and _replicable(namespace, proof) and accept(account):
            cost = size + item_overhead + (0 if proof is None else len(proof))
            if len(taken) >= limit or (taken and used + cost > max_bytes):
                full = True
                break
            used += cost
            taken.append((seq, account, namespace, h, timestamp, expiry, proof))
        next_seq = seq
    return taken, next_seq, full or len(rows) == scan_limit


def replica_page(
    conn: sqlite3.Connection,
    after_seq: int,
    now: int,
    accept: Callable[[bytes], bool],
    limit: int,
    max_bytes: int,
    item_overhead: int,
    scan_limit: int,
) -> ReplicaPage:
    """See :meth:`MessageStore.replica_page`."""
    taken, next_seq, more = _replica_rows(
        conn, after_seq, now, accept, limit, max_bytes, item_overhead, scan_limit
    )
    messages: list[ReplicaMessage] = []
    for seq, account, namespace, h, timestamp, expiry, proof in taken:
        row = conn.execute("SELECT data FROM messages WHERE seq = ?", (seq,)).fetchone()
        if row is not None:  # deleted between the two reads: skip it
            messages.append(_replica(account, namespace, h, row[0], timestamp, expiry, proof))
    return ReplicaPage(messages, next_seq, more)


def replica_summary(
    conn: sqlite3.Connection,
    after_seq: int,
    now: int,
    accept: Callable[[bytes], bool],
    limit: int,
    max_bytes: int,
    item_overhead: int,
    scan_limit: int,
) -> tuple[list[tuple[bytes, int, bytes, int]], int, bool]:
    """See :meth:`MessageStore.replica_summary`."""
    taken, next_seq, more = _replica_rows(
        conn, after_seq, now, accept, limit, max_bytes, item_overhead, scan_limit
    )
    return [(t[1], t[2], t[3], t[5]) for t in taken], next_seq, more


def account_replicas(
    conn: sqlite3.Connection,
    account: bytes,
    after: tuple[int, int],
    now: int,
    limit: int,
    max_bytes: int,
    item_overhead: int,
) -> tuple[list[ReplicaMessage], tuple[int, int], bool]:
    """See :meth:`MessageStore.account_replicas`."""
    cur = conn.execute(
        "SELECT namespace, seq, hash, data, timestamp, expiry, proof FROM messages"
        " WHERE account = ? AND (namespace, seq) > (?, ?) AND expiry > ?"
        " ORDER BY namespace, seq LIMIT ?",
        (account, after[0], after[1], now, limit + 1),
    )
    messages: list[ReplicaMessage] = []
    cursor = after
    used = 0
    more = False
    seen = 0
    try:
        for namespace, seq, h, data, timestamp, expiry, proof in cur:
            seen += 1
            if not _replicable(namespace, proof):
                cursor = (namespace, seq)  # an unproven old row stays here (see below)
                continue
            cost = len(data) + item_overhead + (0 if proof is None else len(proof))
            if len(messages) >= limit or (messages and used + cost > max_bytes):
                more = True
                break
            used += cost
            messages.append(_replica(account, namespace, h, data, timestamp, expiry, proof))
            cursor = (namespace, seq)
    finally:
        cur.close()
    # Rows skipped may fill the read: then the page can be short (even empty) with more.
    return messages, cursor, more or seen > limit


def _replicable(namespace: int, proof: bytes | None) -> bool:
    """Whether a row may be sent to a peer: an inbox message, or one with its owner's
    proof. Rows stored before proofs were kept (schema version 2) have none outside the
    inbox: no member would accept them, so they stay here (served) until they expire."""
    return proof is not None or not rpc.store_needs_auth(namespace)


def _replica(
    account: bytes,
    namespace: int,
    h: bytes,
    data: bytes,
    timestamp: int,
    expiry: int,
    proof: bytes | None,
) -> ReplicaMessage:
    """A row as it travels: its expiry no later than its proof allows (an owner's
    ``expire`` may have moved it further here; a copy carries the signed store's bound,
    which is what every receiver checks)."""
    if proof is not None:
        # A proof that does not decode was never stored (proofs are checked first).
        with contextlib.suppress(VeilError):
            expiry = min(expiry, rpc.expiry_limit(rpc.decode_proof(proof)))
    return ReplicaMessage(account, namespace, h, data, timestamp, expiry, proof)


def _blob_page(
    conn: sqlite3.Connection,
    query: tuple[str, str],
    after_seq: int,
    now: int,
    accept: Callable[[bytes], bool],
    limit: int,
    max_bytes: int,
    scan_limit: int,
) -> tuple[list[bytes], int, bool]:
    """One page of signed blobs kept for replication (deletions, revocations): the
    blobs of live rows of accepted accounts after ``after_seq``, at most ``limit`` and
    ``max_bytes``, looking at ``scan_limit`` rows at most; and where the next page
    starts, and whether rows may remain. ``query`` is (the scan, the fetch of one blob
    by seq), fixed strings of this module."""
    scan, fetch = query
    rows = conn.execute(scan, (after_seq, scan_limit)).fetchall()
    taken: list[int] = []
    used = 0
    next_seq = after_seq
    full = False
    for seq, account, live_until, size in rows:
        if live_until > now and accept(account):
            if len(taken) >= limit or (taken and used + size > max_bytes):
                full = True
                break
            used += size
            taken.append(seq)
        next_seq = seq
    blobs: list[bytes] = []
    for seq in taken:
        row = conn.execute(fetch, (seq,)).fetchone()
        if row is not None:
            blobs.append(row[0])
    return blobs, next_seq, full or len(rows) == scan_limit


_DELETIONS_QUERY = (
    "SELECT seq, account, expiry, length(request) FROM deletions"
    " WHERE seq > ? ORDER BY seq LIMIT ?",
    "SELECT request FROM deletions WHERE seq = ?",
)
_REVOCATIONS_QUERY = (
    "SELECT seq, account, link_expiry, length(record) FROM revocations"
    " WHERE seq > ? ORDER BY seq LIMIT ?",
    "SELECT record FROM revocations WHERE seq = ?",
)


def deletion_page(
    conn: sqlite3.Connection,
    after_seq: int,
    now: int,
    accept: Callable[[bytes], bool],
    limit: int,
    max_bytes: int,
    scan_limit: int,
) -> ReplicaPage:
    """See :meth:`MessageStore.deletion_page`."""
    deletes, next_seq, more = _blob_page(
        conn, _DELETIONS_QUERY, after_seq, now, accept, limit, max_bytes, scan_limit
    )
    return ReplicaPage([], next_seq, more, tuple(deletes))


def revocation_page(
    conn: sqlite3.Connection,
    after_seq: int,
    now: int,
    accept: Callable[[bytes], bool],
    limit: int,
    max_bytes: int,
    scan_limit: int,
) -> ReplicaPage:
    """See :meth:`MessageStore.revocation_page`."""
    records, next_seq, more = _blob_page(
        conn, _REVOCATIONS_QUERY, after_seq, now, accept, limit, max_bytes, scan_limit
    )
    return ReplicaPage([], next_seq, more, revocations=tuple(records))


def account_revocations(conn: sqlite3.Connection, account: bytes, now: int) -> list[bytes]:
    """See :meth:`MessageStore.account_revocations`."""
    return [
        bytes(row[0])
        for row in conn.execute(
            "SELECT record FROM revocations WHERE account = ? AND link_expiry > ? ORDER BY seq",
            (account, now),
        )
    ]


def revoked_links(conn: sqlite3.Connection, now: int) -> list[tuple[bytes, bytes, int]]:
    """Every revocation kept and not yet swept: (account, link digest, kept until)."""
    return [
        (bytes(a), bytes(link), int(until))
        for a, link, until in conn.execute(
            "SELECT account, link, expiry FROM revocations WHERE expiry > ?", (now,)
        )
    ]


def accounts(conn: sqlite3.Connection, after: bytes | None, limit: int) -> list[bytes]:
    """See :meth:`MessageStore.accounts`."""
    found: list[bytes] = []
    last = b"" if after is None else after
    for _ in range(limit):
        row = conn.execute(
            "SELECT account FROM messages WHERE account > ? ORDER BY account LIMIT 1",
            (last,),
        ).fetchone()
        if row is None:
            break
        last = row[0]
        found.append(last)
    return found


def sync_cursor(conn: sqlite3.Connection, peer: bytes, scope: bytes) -> int:
    """See :meth:`MessageStore.sync_cursor`."""
    row = conn.execute(
        "SELECT seq FROM sync_cursors WHERE peer = ? AND scope = ?", (peer, scope)
    ).fetchone()
    return 0 if row is None else int(row[0])


def size_bytes(conn: sqlite3.Connection) -> int:
    """The database file's size (page_count * page_size); no table scan."""
    page_count = conn.execute("PRAGMA page_count").fetchone()[0]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    return int(page_count * page_size)
