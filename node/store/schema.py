"""The store's SQLite file: connections, the schema, and its migrations.

Design note
-----------
``PRAGMA user_version`` is the schema version, in the client's style
(client/state.py): ``_MIGRATIONS[i]`` takes the schema from version ``i`` to ``i + 1``,
and :func:`migrate` applies the missing ones in ONE transaction (``BEGIN IMMEDIATE``), so
a crash mid-migration leaves the old version. A file of a newer version is refused with
:class:`~veil.node.errors.StoreError` rather than misread. Migrations only go forward;
each is a few SQL statements, never edited once released (add the next one instead).
:func:`migrate`'s dozen lines stand again in client/state_schema.py on purpose: the node
and the client share only veil.onion, which does no I/O and imports no sqlite3. A new
file runs them all: it is created as version 1, then rebuilt as version 2, which
costs a few milliseconds once and gives exactly the tables and indexes an upgraded file
has.

Version 2: ``seq`` is AUTOINCREMENT, so a seq is never given out twice, even after the
newest rows were deleted (plain rowids reuse max(rowid) + 1). Replication cursors
("every row after seq C") rely on it: a reused seq at or below a peer's cursor would
never be pulled. The seqs of a version 1 file are kept; AUTOINCREMENT starts after the
largest one. Version 2 also adds ``sync_cursors`` (node/replication/).

Version 3 (issue 11, items 5 and 6): ``messages.proof``, the owner's signed store of a
message in an owner-written namespace (onion/rpc/proof.py), which replication carries
and every receiving member checks; ``tombstones``, one per deleted message, which
replication honours until the deleted message would have expired; and
``executed_requests``, the digests of the signed ``delete_all`` requests executed, kept
while their signature is fresh, so that one sent again deletes nothing stored after it;
``deletions``, the owner's signed delete and delete_all requests executed here, which
anti-entropy carries to members that missed them (node/replication/).
Rows of a version 2 file have no proof: outside the inbox they are served but not
replicated (a member would refuse them), until they expire.

Version 4 (issue 12, delegated session keys): ``revocations``, the verified revocation
records of delegated links of this swarm's accounts (one per revoked link), which the
storage service consults on every delegated request (through an index in memory,
loaded at start) and which anti-entropy carries to members that missed one. A record is
served to peers while the revoked link could still be used (``link_expiry``, its expiry
plus the clock skew) and kept, for the owner proofs of replicated messages, until every
message stored under the link could have expired (``expiry``).

Version 5 (issue 16, open groups): ``room_records``, an index of the room records kept
in the room namespace (-2): each record's kind, ID, a post's author, its own time and
when it was first stored, so that a moderator's delete finds the posts it names, a ban
with ``past`` the author's posts, the per-author rate the author's recent posts, and a
room's state its metadata and moderation records, without reading the posts (a trigger
drops an index row with its message, whatever deletes it: a delete, a sweep, a
handover); and ``deferred_copies``, the copies a peer sent that this node could not judge
yet (a post before its room's metadata), kept until they can be or their time is up.

Connections: WAL mode or nothing (readers must never wait for the writer, see
node/store/message_store.py); a file system without WAL is refused with a
:class:`~veil.node.errors.StoreError`.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from ..errors import StoreError

__all__ = ["SCHEMA_VERSION", "connect", "migrate"]

_MESSAGES_V2 = """CREATE TABLE IF NOT EXISTS messages (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,  -- arrival order, never reused
    account   BLOB    NOT NULL,     -- the account's 32-byte X25519 key
    namespace INTEGER NOT NULL,
    hash      BLOB    NOT NULL,     -- 32-byte message hash (onion.rpc.message_hash)
    data      BLOB    NOT NULL,
    timestamp INTEGER NOT NULL,     -- ms, when stored
    expiry    INTEGER NOT NULL,     -- ms
    UNIQUE (account, namespace, hash)
)"""

# retrieve: WHERE account = ? AND namespace = ? AND seq > ? ORDER BY seq
_BY_OWNER = "CREATE INDEX IF NOT EXISTS messages_by_owner ON messages (account, namespace, seq)"
# sweeps: WHERE expiry <= ?
_BY_EXPIRY = "CREATE INDEX IF NOT EXISTS messages_by_expiry ON messages (expiry)"

# _MIGRATIONS[i] takes the schema from version i to i + 1. Never edit a released one: add
# the next. Statements run one by one inside migrate()'s transaction (not through
# executescript, which would COMMIT first).
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 0 -> 1: the messages table, with plain rowids.
    (
        """CREATE TABLE IF NOT EXISTS messages (
    seq       INTEGER PRIMARY KEY,  -- rowid: arrival order
    account   BLOB    NOT NULL,     -- the account's 32-byte X25519 key
    namespace INTEGER NOT NULL,
    hash      BLOB    NOT NULL,     -- 32-byte message hash (onion.rpc.message_hash)
    data      BLOB    NOT NULL,
    timestamp INTEGER NOT NULL,     -- ms, when stored
    expiry    INTEGER NOT NULL,     -- ms
    UNIQUE (account, namespace, hash)
)""",
        _BY_OWNER,
        _BY_EXPIRY,
    ),
    # 1 -> 2: seq AUTOINCREMENT (the table rebuilt, its seqs kept), and the pull cursors.
    (
        "ALTER TABLE messages RENAME TO messages_v1",
        "DROP INDEX IF EXISTS messages_by_owner",
        "DROP INDEX IF EXISTS messages_by_expiry",
        _MESSAGES_V2,
        "INSERT INTO messages (seq, account, namespace, hash, data, timestamp, expiry)"
        " SELECT seq, account, namespace, hash, data, timestamp, expiry FROM messages_v1",
        "DROP TABLE messages_v1",
        # Copying no rows still leaves a ("messages", 0) counter; drop it, so that a new
        # file is the same as one created directly at version 2 (seqs start at 1 either way).
        "DELETE FROM sqlite_sequence WHERE name = 'messages' AND seq = 0",
        _BY_OWNER,
        _BY_EXPIRY,
        # anti-entropy: how far this node has pulled each peer's rows (node/replication/)
        """CREATE TABLE IF NOT EXISTS sync_cursors (
    peer  BLOB    NOT NULL,  -- the peer's node ID
    scope BLOB    NOT NULL,  -- which accounts the pull covered (the replicator's key)
    seq   INTEGER NOT NULL,  -- the peer's last seq looked at
    PRIMARY KEY (peer, scope)
) WITHOUT ROWID""",
    ),
    # 2 -> 3 (issue 11, items 5 and 6): each message's owner proof, and tombstones.
    (
        # The owner's signed store (onion/rpc/proof.py) of a message in an owner-written
        # namespace; NULL in the inbox, and for rows stored before version 3 (those are
        # served here but never replicated: no member would accept them).
        "ALTER TABLE messages ADD COLUMN proof BLOB",
        # A deleted message's tombstone: replication (push, pull, handover) does not
        # bring back a copy first stored at or before ``deleted`` while it lives (until
        # the latest expiry any copy could have); swept with expired rows.
        """CREATE TABLE IF NOT EXISTS tombstones (
    account   BLOB    NOT NULL,
    namespace INTEGER NOT NULL,
    hash      BLOB    NOT NULL,
    deleted   INTEGER NOT NULL,  -- ms, the node's clock when it was deleted
    expiry    INTEGER NOT NULL,  -- ms, when the tombstone may go
    PRIMARY KEY (account, namespace, hash)
) WITHOUT ROWID""",
        "CREATE INDEX IF NOT EXISTS tombstones_by_expiry ON tombstones (expiry)",
        # Signed requests that must not act twice (a delete_all), by digest, for as long
        # as their signature passes the clock-skew check; swept with expired rows.
        """CREATE TABLE IF NOT EXISTS executed_requests (
    digest BLOB    NOT NULL PRIMARY KEY,
    expiry INTEGER NOT NULL
) WITHOUT ROWID""",
        # The owner's signed delete and delete_all requests executed here, as sent, for
        # anti-entropy: a member that missed one pulls it, checks the signature, and
        # applies it as of its signed time. Kept until every message it could have
        # deleted has expired; swept with expired rows.
        """CREATE TABLE IF NOT EXISTS deletions (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,  -- arrival order, never reused
    account BLOB    NOT NULL,
    digest  BLOB    NOT NULL UNIQUE,  -- of the request's signature
    request BLOB    NOT NULL,         -- the signed storage request, as sent
    expiry  INTEGER NOT NULL
)""",
        "CREATE INDEX IF NOT EXISTS deletions_by_expiry ON deletions (expiry)",
    ),
    # 3 -> 4 (issue 12): the revocations of delegated links, kept and replicated.
    (
        """CREATE TABLE IF NOT EXISTS revocations (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,  -- arrival order, never reused
    account     BLOB    NOT NULL,         -- the owner's 32-byte X25519 key
    link        BLOB    NOT NULL UNIQUE,  -- digest of the revoked link
    record      BLOB    NOT NULL,         -- the signed revocation record, as verified
    link_expiry INTEGER NOT NULL,         -- ms: served to peers until then
    expiry      INTEGER NOT NULL          -- ms: kept until then; swept after
)""",
        "CREATE INDEX IF NOT EXISTS revocations_by_expiry ON revocations (expiry)",
        # handover: one account's revocations
        "CREATE INDEX IF NOT EXISTS revocations_by_account ON revocations (account)",
    ),
    # 4 -> 5 (issue 16): the index of room records, and copies kept for later.
    (
        """CREATE TABLE IF NOT EXISTS room_records (
    account   BLOB    NOT NULL,  -- the room (its owner's 32-byte X25519 key)
    hash      BLOB    NOT NULL,  -- the message's hash (messages.hash, namespace -2)
    kind      INTEGER NOT NULL,  -- 0 metadata, 1 post, 2 moderation
    record_id BLOB    NOT NULL,  -- the record's ID (a post's ID)
    author    BLOB,              -- a post's author (X25519), NULL otherwise
    ts        INTEGER NOT NULL,  -- ms, the record's own time (0 for metadata)
    stored    INTEGER NOT NULL,  -- ms, when it was first stored (messages.timestamp)
    PRIMARY KEY (account, hash)
) WITHOUT ROWID""",
        "CREATE INDEX IF NOT EXISTS room_records_by_kind ON room_records (account, kind)",
        "CREATE INDEX IF NOT EXISTS room_records_by_id ON room_records (account, record_id)",
        "CREATE INDEX IF NOT EXISTS room_records_by_author"
        " ON room_records (account, author, stored)",
        """CREATE TRIGGER IF NOT EXISTS room_records_gone AFTER DELETE ON messages
    WHEN old.namespace = -2
BEGIN
    DELETE FROM room_records WHERE account = old.account AND hash = old.hash;
END""",
        """CREATE TABLE IF NOT EXISTS deferred_copies (
    account   BLOB    NOT NULL,
    namespace INTEGER NOT NULL,
    hash      BLOB    NOT NULL,
    data      BLOB    NOT NULL,
    timestamp INTEGER NOT NULL,  -- as the copy came (ReplicaMessage)
    expiry    INTEGER NOT NULL,
    proof     BLOB,
    source    BLOB    NOT NULL,  -- the peer that sent it (its share of the table)
    until     INTEGER NOT NULL,  -- ms: given up after
    PRIMARY KEY (account, namespace, hash)
) WITHOUT ROWID""",
        "CREATE INDEX IF NOT EXISTS deferred_copies_by_until ON deferred_copies (until)",
        "CREATE INDEX IF NOT EXISTS deferred_copies_by_source ON deferred_copies (source)",
    ),
)

SCHEMA_VERSION = len(_MIGRATIONS)


def connect(path: Path, synchronous: str, *, read_only: bool) -> sqlite3.Connection:
    """A connection in WAL mode (else :class:`StoreError`); ``sqlite3.Error`` if the file
    cannot be opened."""
    # isolation_level=None: we issue BEGIN/COMMIT ourselves. check_same_thread=False:
    # the write connection is used from trio's worker threads, one call at a time (only
    # the writer task uses it), never concurrently.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"could not put {path} in WAL mode (got {mode!r})")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        if read_only:
            conn.execute("PRAGMA query_only=ON")
    except BaseException:
        conn.close()
        raise
    return conn


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the file to :data:`SCHEMA_VERSION` in one transaction (worker thread).

    Raises :class:`StoreError` for a newer (or damaged) version, ``sqlite3.Error`` if
    the file cannot be read or written.
    """
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version == SCHEMA_VERSION:
        return  # the common case: no write lock taken
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Read again under the write lock (one node per data directory holds its lock,
        # but a copy of the file may be opened by hand).
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise StoreError(f"{path} has store schema {version}; this node knows {SCHEMA_VERSION}")
        if version < 0:
            raise StoreError(f"{path} is damaged: store schema {version}")
        for step in _MIGRATIONS[version:]:
            for statement in step:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
