"""The state file's layout and how it is opened: schema migrations, WAL, private modes.

The SQLite side of :class:`~veil.client.state.ClientState` that is not a query: the
schema (``PRAGMA user_version`` and :data:`MIGRATIONS`), creating the file with mode
0600 before SQLite does, the journal mode, and turning SQLite's errors into
:class:`~veil.client.errors.StateError`. See :mod:`veil.client.state` for why each is
so (the design notes there). The node's store migrates in the same way
(node/store/schema.py, a copy of the runner: node and client share only veil.onion,
which imports no sqlite3).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from veil.client.errors import StateError
from veil.client.home import check_private

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "configure",
    "create_private",
    "is_busy",
    "migrate",
    "narrow_sidecar_modes",
    "sqlite_errors",
]

# --- schema --------------------------------------------------------------------------------

# MIGRATIONS[i] takes the schema from version i to i + 1. Never edit a released one:
# add the next. Statements run one by one inside open()'s transaction (not through
# executescript, which would COMMIT first).
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE guards (
            node_id   BLOB PRIMARY KEY CHECK (length(node_id) = 32),
            chosen_at INTEGER NOT NULL,
            failures  INTEGER NOT NULL DEFAULT 0,
            last_used INTEGER
        )""",
        """CREATE TABLE node_failures (
            node_id      BLOB PRIMARY KEY CHECK (length(node_id) = 32),
            failures     INTEGER NOT NULL,
            last_failure INTEGER NOT NULL
        )""",
        # One row at most: the last consensus.
        """CREATE TABLE consensus (
            id         INTEGER PRIMARY KEY CHECK (id = 1),
            raw        BLOB NOT NULL,
            epoch      INTEGER NOT NULL,
            fetched_at INTEGER NOT NULL
        )""",
        """CREATE TABLE positions (
            account    BLOB NOT NULL,      -- the account's 32-byte X25519 key
            namespace  INTEGER NOT NULL,
            last_hash  BLOB NOT NULL,
            updated_at INTEGER NOT NULL,
            PRIMARY KEY (account, namespace)
        )""",
        """CREATE TABLE messages (
            seq         INTEGER PRIMARY KEY,  -- rowid: arrival order
            hash        BLOB NOT NULL UNIQUE CHECK (length(hash) = 32),
            account     BLOB NOT NULL,        -- 32-byte X25519 key
            namespace   INTEGER NOT NULL,
            sender      BLOB,                 -- 32-byte X25519 key, or NULL if unknown
            timestamp   INTEGER NOT NULL,
            content     BLOB NOT NULL,
            received_at INTEGER NOT NULL
        )""",
        # list_messages: WHERE account = ? [AND namespace = ?] AND seq > ? ORDER BY seq
        "CREATE INDEX messages_by_account ON messages (account, seq)",
        """CREATE TABLE clock (
            id          INTEGER PRIMARY KEY CHECK (id = 1),
            offset_ms   INTEGER NOT NULL,
            measured_at INTEGER NOT NULL
        )""",
    ),
    (
        # Delegated sessions this home issued (veil id delegations, revoke by DID or
        # hash): one row per issued link. The chain (account's link first, down to this
        # one) is public data, kept so that the link can be revoked; the session's key
        # is not here (it went to the holder).
        """CREATE TABLE delegations (
            link       BLOB PRIMARY KEY CHECK (length(link) = 32),  -- the link's digest
            owner      BLOB NOT NULL CHECK (length(owner) = 33),    -- 05|03 + key
            issuer     BLOB NOT NULL CHECK (length(issuer) = 32),   -- Ed25519 key
            audience   BLOB NOT NULL CHECK (length(audience) = 32), -- the session key
            chain      BLOB NOT NULL,
            issued_at  INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            revoked_at INTEGER
        )""",
        "CREATE INDEX delegations_by_audience ON delegations (audience)",
    ),
)
#: The schema version this code writes (and the newest it reads).
SCHEMA_VERSION = len(MIGRATIONS)


# --- opening -------------------------------------------------------------------------------


def create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist (SQLite would create it
    with 0644 & ~umask); refuse an existing one that is not private or not a file."""
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileNotFoundError:
        raise StateError(f"cannot create {path}: no such directory") from None
    except OSError as e:
        raise StateError(f"cannot open {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StateError(f"{path} is not a regular file")
        if st.st_size == 0 and os.name == "posix" and st.st_uid == os.geteuid():
            # New (or empty, so nothing in it was exposed): set the mode exactly, as the
            # umask may have changed it either way.
            os.fchmod(fd, 0o600)
            st = os.fstat(fd)
        check_private(path, st)
    finally:
        os.close(fd)


def configure(conn: sqlite3.Connection, path: Path, busy_timeout_s: float) -> None:
    with sqlite_errors(path):
        conn.execute(f"PRAGMA busy_timeout_s = {int(busy_timeout_s * 1000)}")
        # Changing the journal mode needs an exclusive lock; two processes opening a new
        # file at once may find it busy without SQLite's busy handler being called.
        deadline = time.monotonic() + busy_timeout_s
        while True:
            try:
                (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
                break
            except sqlite3.OperationalError as e:
                if not is_busy(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        if str(mode).lower() != "wal":
            raise StateError(f"{path}: the file system does not support SQLite's WAL mode")
        conn.execute("PRAGMA synchronous = FULL")


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    with sqlite_errors(path):
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version == SCHEMA_VERSION:
            return  # the common case: no write lock taken
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Read again under the write lock: another process may have migrated.
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise StateError(
                    f"{path} has state schema version {version}, newer than this veil "
                    f"understands ({SCHEMA_VERSION}); upgrade veil"
                )
            if version < 0:
                raise StateError(f"{path} is damaged: schema version {version}")
            for step in MIGRATIONS[version:]:
                for statement in step:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise


def narrow_sidecar_modes(path: Path) -> None:
    """Make the -wal and -shm files 0600 if something (an older file, another tool)
    left them wider. SQLite creates them with the database's mode, so usually a no-op."""
    if os.name != "posix":
        return
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        try:
            st = os.stat(side, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077 and st.st_uid == os.geteuid():
            os.chmod(side, 0o600)


def is_busy(e: sqlite3.Error) -> bool:
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(e) or "busy" in str(e)


@contextlib.contextmanager
def sqlite_errors(path: Path) -> Iterator[None]:
    """Turn SQLite's errors into :class:`StateError`: the file is the problem, and the
    ``veil`` command prints a StateError as one line."""
    try:
        yield
    except sqlite3.Error as e:
        if is_busy(e):
            raise StateError(f"{path} is busy (another veil is writing it): {e}") from None
        raise StateError(f"{path}: {e}") from None
