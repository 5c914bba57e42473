"""The client's persistent state: one SQLite file in the home (``HOME/state.sqlite3``).

What it keeps: the two guard nodes, the last consensus (raw signed bytes: the client
re-verifies them when it loads them, the cache is not trusted), failure counters of
nodes, the position reached in every (account, namespace) polled, the messages received
(to deduplicate, and for ``veil inbox``), and the last measured offset to the network's
clock.

Design notes
------------
* **A crash neither loses nor repeats a message.** :meth:`ClientState.
  save_messages_and_position` records a page of retrieved messages and advances the
  position to the page's last hash in ONE transaction. After a crash at any instant,
  either both happened or neither did: a restarted client asks again from the old
  position, and the node's answers are deduplicated by message hash (unique in the
  messages table; the call returns only the new ones, which are what the client shows),
  so nothing is shown twice and nothing is skipped.
* **Durable when a method returns.** WAL journal with ``synchronous=FULL``: every
  commit is fsynced, so a message the client has shown survives a kill -9 and a power
  cut. The client commits rarely (a page of messages at a time), so the fsync is
  affordable; it is also why writes are "blocking" below.
* **Two processes, one home.** Two ``veil`` commands may run on the same home (a
  ``veil inbox --follow`` and a ``veil send``). WAL lets readers run beside a writer;
  writers queue on SQLite's lock for up to ``busy_timeout`` seconds. Every write
  transaction starts with ``BEGIN IMMEDIATE``: a deferred transaction that read first
  could fail at once with "database is locked" when it tries to write, without waiting
  (SQLite cannot let it wait: its snapshot may be stale). Counters are incremented in
  SQL (``failures = failures + 1``), never read-modify-written in Python.
* **Threads.** One connection, guarded by a lock, so a ``ClientState`` may be used from
  the trio thread and from ``trio.to_thread.run_sync`` workers (never two at once: a
  call waits for the one in progress). What each method costs:

  - *cheap* (one indexed row or a handful, no commit: fine on the trio thread):
    :meth:`~ClientState.get_guards`, :meth:`~ClientState.failures`,
    :meth:`~ClientState.node_failures`, :meth:`~ClientState.get_position`,
    :meth:`~ClientState.has_message`, :meth:`~ClientState.list_messages` with a small
    ``limit``, :meth:`~ClientState.get_clock_offset`;
  - *blocking* (a commit, so an fsync, and possibly a wait of up to ``busy_timeout``
    for another process's write; or megabytes of data): every other method; call these
    through ``trio.to_thread.run_sync``. :meth:`~ClientState.open` and
    :meth:`~ClientState.load_consensus` (up to a few MB) are blocking too.

  On cancel: a thread call that trio abandons still runs to its end (commit or
  rollback); the state is never left half written.
* **Schema versions.** ``PRAGMA user_version`` is the schema version; ``_MIGRATIONS[i]``
  takes version ``i`` to ``i + 1``, and :meth:`ClientState.open` applies the missing
  ones in one transaction (so a crash mid-migration leaves the old version, and two
  processes opening a new file do not both migrate). A file from a newer veil is refused
  rather than misread. Migrations only go forward; each one is small SQL, never edited
  once released.
* **Private file.** The database is created with mode 0600 (exactly, whatever the
  umask), and an existing one readable by others, or owned by another user, is refused
  as the identity file is. SQLite creates its ``-wal`` and ``-shm`` files with the
  database's own mode; :meth:`ClientState.open` checks them and narrows them to 0600
  if needed. :func:`open_state` also creates the home with mode 0700.

Errors: bad arguments raise :class:`ValueError` (a bug in the caller) before anything is
written; a problem with the file (not a database, damaged, from a newer veil, locked
for longer than ``busy_timeout``, disk full) raises :class:`StateError`, a
:class:`~client.home.HomeError`, which the ``veil`` command prints as one line.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Self

from veil.client.errors import StateError
from veil.client.home import Home, check_private
from veil.onion.errors import InvalidId
from veil.onion.keys import AccountId

__all__ = [
    "HASH_BYTES",
    "MAX_CONSENSUS_BYTES",
    "MAX_CONTENT_BYTES",
    "MAX_GUARDS",
    "MAX_LIST_LIMIT",
    "NODE_ID_BYTES",
    "SCHEMA_VERSION",
    "CachedConsensus",
    "ClientState",
    "GuardRecord",
    "InboundMessage",
    "ReceivedMessage",
    "StateError",
    "open_state",
]

#: Wall-clock milliseconds since the Unix epoch (injectable for tests).
Clock = Callable[[], int]

#: A client keeps two guards (DESIGN.md, "Onion packets").
MAX_GUARDS = 2
NODE_ID_BYTES = 32  # an Ed25519 identity key
HASH_BYTES = 32  # onion.rpc.message_hash
# The namespaces of onion.rpc (a 16-bit signed int).
_NAMESPACE_MIN, _NAMESPACE_MAX = -32768, 32767
#: Room for the largest consensus onion.directory accepts (3 MiB body plus signatures).
MAX_CONSENSUS_BYTES = 4 * 1024 * 1024
#: A message's decrypted content: a node's body limit is 76,800 bytes; this is ample.
MAX_CONTENT_BYTES = 256 * 1024
#: The most rows one :meth:`ClientState.list_messages` returns.
MAX_LIST_LIMIT = 10_000
DEFAULT_BUSY_TIMEOUT = 10.0  # seconds
_MAX_INT64 = 2**63 - 1


# --- records -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GuardRecord:
    """A guard node: the first hop of every path the client builds."""

    node_id: bytes  # 32-byte Ed25519 identity key
    chosen_at: int  # ms
    #: Failures since it was chosen, reset by a success (consecutive failures).
    failures: int = 0
    last_used: int | None = None  # ms of the last success through it


class CachedConsensus(NamedTuple):
    """The last consensus saved: raw signed bytes, to be verified again before use."""

    raw: bytes
    epoch: int
    fetched_at: int  # ms


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message to record (:meth:`ClientState.save_messages_and_position`)."""

    hash: bytes  # the node's 32-byte message hash (onion.rpc.message_hash)
    #: Who sent it (from the opened envelope); None if unknown (for example a message
    #: that did not open, recorded only so that it is not fetched and tried again).
    sender: AccountId | None
    #: ms, the sender's claim: an envelope's u64, so anything up to 2**64 - 1; values
    #: past SQLite's 2**63 - 1 (a date some 292 million years away) are stored as that.
    timestamp: int
    content: bytes
    received_at: int  # ms, our clock


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """A recorded message, as :meth:`ClientState.list_messages` returns it."""

    seq: int  # arrival order in this state file (increasing); a cursor for after_seq
    hash: bytes
    account: AccountId  # whose namespace it came from
    namespace: int
    sender: AccountId | None
    timestamp: int
    content: bytes
    received_at: int


# --- schema --------------------------------------------------------------------------------

# _MIGRATIONS[i] takes the schema from version i to i + 1. Never edit a released one:
# add the next. Statements run one by one inside open()'s transaction (not through
# executescript, which would COMMIT first).
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
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
)
#: The schema version this code writes (and the newest it reads).
SCHEMA_VERSION = len(_MIGRATIONS)


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


# --- the state -----------------------------------------------------------------------------


class ClientState:
    """The client's state file. Make one with :meth:`open` (or :func:`open_state`)."""

    def __init__(self, conn: sqlite3.Connection, path: Path, clock: Clock) -> None:
        self._conn: sqlite3.Connection | None = conn
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        clock: Clock | None = None,
    ) -> ClientState:
        """Open (creating it, mode 0600) the state file at ``path`` and bring its schema
        up to date. Blocking.

        ``busy_timeout`` (seconds) is how long a write waits for another process's
        write. ``clock`` gives the ms stamped on rows (``updated_at``, ``last_failure``,
        ...); default the wall clock. Raises :class:`StateError` and
        :class:`~client.home.InsecureFile`; the directory must exist.
        """
        path = Path(path)
        _create_private(path)
        try:
            conn = sqlite3.connect(
                path,
                timeout=busy_timeout,
                isolation_level=None,  # autocommit: transactions are explicit
                check_same_thread=False,  # guarded by self._lock instead
            )
        except sqlite3.Error as e:
            raise StateError(f"cannot open {path}: {e}") from None
        try:
            _configure(conn, path, busy_timeout)
            _migrate(conn, path)
            _narrow_sidecar_modes(path)
        except BaseException:
            conn.close()
            raise
        return cls(conn, path, clock or _wall_clock_ms)

    def close(self) -> None:
        """Close the file (idempotent). Blocking: it may checkpoint the WAL."""
        with self._lock:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ClientState({str(self.path)!r})"

    # --- plumbing ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The connection, for statements that only read (each is its own snapshot)."""
        with self._lock:
            conn = self._open_conn()
            with _sqlite_errors(self.path):
                yield conn

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error."""
        with self._lock:
            conn = self._open_conn()
            with _sqlite_errors(self.path):
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    # Also after a failed COMMIT (disk full): leave no transaction open.
                    if conn.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    raise

    def _open_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StateError(f"{self.path} is closed")
        return self._conn

    # --- guards (DESIGN.md: a client keeps 2 guards) -------------------------------------

    def get_guards(self) -> list[GuardRecord]:
        """The guards, oldest chosen first. Cheap."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT node_id, chosen_at, failures, last_used FROM guards "
                "ORDER BY chosen_at, node_id"
            ).fetchall()
        return [GuardRecord(*row) for row in rows]

    def set_guards(self, guards: Sequence[GuardRecord]) -> None:
        """Replace the guards with ``guards`` (at most :data:`MAX_GUARDS`, distinct).

        Blocking. Raises :class:`ValueError` for too many, duplicates or a bad node ID.
        """
        if len(guards) > MAX_GUARDS:
            raise ValueError(f"at most {MAX_GUARDS} guards, got {len(guards)}")
        ids = [_node_id(g.node_id) for g in guards]
        if len(set(ids)) != len(ids):
            raise ValueError("the same guard twice")
        rows = [
            (
                g.node_id,
                _int(g.chosen_at, "chosen_at"),
                _int(g.failures, "failures", minimum=0),
                None if g.last_used is None else _int(g.last_used, "last_used"),
            )
            for g in guards
        ]
        with self._writing() as conn:
            conn.execute("DELETE FROM guards")
            conn.executemany(
                "INSERT INTO guards (node_id, chosen_at, failures, last_used) VALUES (?,?,?,?)",
                rows,
            )

    # --- node failures ---------------------------------------------------------------------

    def record_failure(self, node_id: bytes) -> int:
        """Count one more consecutive failure of ``node_id`` (and of its guard record if
        it is a guard); return the node's count. Blocking."""
        node_id = _node_id(node_id)
        now = self._clock()
        with self._writing() as conn:
            conn.execute(
                "INSERT INTO node_failures (node_id, failures, last_failure) VALUES (?, 1, ?) "
                "ON CONFLICT (node_id) DO UPDATE SET "
                "failures = failures + 1, last_failure = excluded.last_failure",
                (node_id, now),
            )
            conn.execute("UPDATE guards SET failures = failures + 1 WHERE node_id = ?", (node_id,))
            (count,) = conn.execute(
                "SELECT failures FROM node_failures WHERE node_id = ?", (node_id,)
            ).fetchone()
        return int(count)

    def record_success(self, node_id: bytes) -> None:
        """``node_id`` answered: its failure count goes back to 0 (counts are of
        consecutive failures) and, if it is a guard, its ``last_used`` is now. Blocking."""
        node_id = _node_id(node_id)
        now = self._clock()
        with self._writing() as conn:
            conn.execute("DELETE FROM node_failures WHERE node_id = ?", (node_id,))
            conn.execute(
                "UPDATE guards SET failures = 0, last_used = ? WHERE node_id = ?", (now, node_id)
            )

    def failures(self, node_id: bytes) -> int:
        """``node_id``'s consecutive failures (0 if none recorded). Cheap."""
        node_id = _node_id(node_id)
        with self._reading() as conn:
            row = conn.execute(
                "SELECT failures FROM node_failures WHERE node_id = ?", (node_id,)
            ).fetchone()
        return 0 if row is None else int(row[0])

    def node_failures(self) -> dict[bytes, int]:
        """Every node with a failure count, and the count. Cheap (one row per failing
        node; :meth:`forget_failures` keeps it short)."""
        with self._reading() as conn:
            rows = conn.execute("SELECT node_id, failures FROM node_failures").fetchall()
        return {bytes(node_id): int(n) for node_id, n in rows}

    def forget_failures(self, before_ms: int) -> int:
        """Drop the counts of nodes whose last failure is older than ``before_ms`` (so a
        node that failed once long ago gets another chance); return how many. Blocking."""
        before_ms = _int(before_ms, "before_ms")
        with self._writing() as conn:
            cur = conn.execute("DELETE FROM node_failures WHERE last_failure < ?", (before_ms,))
        return cur.rowcount

    # --- consensus cache -------------------------------------------------------------------

    def save_consensus(self, raw: bytes, epoch: int, fetched_at_ms: int) -> bool:
        """Keep ``raw`` (a signed consensus, already verified by the caller) as the last
        consensus, unless the one stored has a newer epoch (then nothing changes and
        the result is False: a stale document never replaces a fresher one, even when
        two processes race). Blocking. :class:`ValueError` if ``raw`` is over
        :data:`MAX_CONSENSUS_BYTES`."""
        raw = _bytes(raw, "raw")
        if not raw or len(raw) > MAX_CONSENSUS_BYTES:
            raise ValueError(f"a consensus is 1 to {MAX_CONSENSUS_BYTES} bytes")
        epoch = _int(epoch, "epoch")
        fetched_at_ms = _int(fetched_at_ms, "fetched_at_ms")
        with self._writing() as conn:
            cur = conn.execute(
                "INSERT INTO consensus (id, raw, epoch, fetched_at) VALUES (1, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET raw = excluded.raw, epoch = excluded.epoch, "
                "fetched_at = excluded.fetched_at WHERE excluded.epoch >= consensus.epoch",
                (raw, epoch, fetched_at_ms),
            )
        return cur.rowcount == 1

    def load_consensus(self) -> CachedConsensus | None:
        """The last consensus saved, or None. Its bytes come from a local file: verify
        them (signatures, validity times) before use. Blocking (up to a few MB)."""
        with self._reading() as conn:
            row = conn.execute(
                "SELECT raw, epoch, fetched_at FROM consensus "
                "WHERE id = 1 AND length(raw) <= ?",  # size checked before it is read
                (MAX_CONSENSUS_BYTES,),
            ).fetchone()
        if row is None:
            return None
        return CachedConsensus(bytes(row[0]), int(row[1]), int(row[2]))

    # --- positions and received messages ---------------------------------------------------

    def get_position(self, account: AccountId, namespace: int) -> bytes | None:
        """The hash of the last message retrieved from ``account``'s ``namespace`` (ask
        the node for what follows it), or None to start from the beginning. Cheap."""
        key, namespace = _account_key(account), _namespace(namespace)
        with self._reading() as conn:
            row = conn.execute(
                "SELECT last_hash FROM positions WHERE account = ? AND namespace = ?",
                (key, namespace),
            ).fetchone()
        return None if row is None else bytes(row[0])

    def save_messages_and_position(
        self,
        account: AccountId,
        namespace: int,
        messages: Sequence[InboundMessage],
        last_hash: bytes | None,
    ) -> list[bytes]:
        """Record ``messages`` (retrieved from ``account``'s ``namespace``) and move the
        position to ``last_hash``, in one transaction; return the hashes that were new.

        All or nothing: after a crash, either the messages are recorded and the position
        moved, or neither. A message already recorded (same hash) is not recorded again
        and is not in the result, so the caller shows only the result's messages.
        ``last_hash`` None leaves the position alone; ``messages`` may be empty to move
        the position only (for example past messages that are not for the user).
        Blocking. :class:`ValueError` for a bad hash, namespace or oversized content.
        """
        key, namespace = _account_key(account), _namespace(namespace)
        if last_hash is not None:
            last_hash = _hash(last_hash)
        rows = [_message_row(m, key, namespace) for m in messages]
        now = self._clock()
        new: list[bytes] = []
        with self._writing() as conn:
            for row in rows:
                cur = conn.execute(
                    "INSERT INTO messages (hash, account, namespace, sender, timestamp, "
                    "content, received_at) VALUES (?,?,?,?,?,?,?) "
                    "ON CONFLICT (hash) DO NOTHING",
                    row,
                )
                if cur.rowcount == 1:
                    new.append(row[0])
            if last_hash is not None:
                conn.execute(
                    "INSERT INTO positions (account, namespace, last_hash, updated_at) "
                    "VALUES (?,?,?,?) ON CONFLICT (account, namespace) DO UPDATE SET "
                    "last_hash = excluded.last_hash, updated_at = excluded.updated_at",
                    (key, namespace, last_hash, now),
                )
        return new

    def has_message(self, hash: bytes) -> bool:
        """True if a message with this hash is recorded. Cheap."""
        hash = _hash(hash)
        with self._reading() as conn:
            row = conn.execute("SELECT 1 FROM messages WHERE hash = ?", (hash,)).fetchone()
        return row is not None

    def list_messages(
        self,
        account: AccountId,
        *,
        namespace: int | None = None,
        since: int | None = None,
        after_seq: int = 0,
        limit: int = 100,
    ) -> list[ReceivedMessage]:
        """Recorded messages of ``account`` in arrival order: at most ``limit``, with a
        ``seq`` above ``after_seq`` (to page: pass the last one's ``seq``), received at
        or after ``since`` (ms), of ``namespace`` if given (else all). Cheap for a small
        ``limit``."""
        key = _account_key(account)
        if not 1 <= _int(limit, "limit") <= MAX_LIST_LIMIT:
            raise ValueError(f"limit must be in [1, {MAX_LIST_LIMIT}]")
        sql = (
            "SELECT seq, hash, namespace, sender, timestamp, content, received_at "
            "FROM messages WHERE account = ? AND seq > ?"
        )
        params: list[object] = [key, _int(after_seq, "after_seq")]
        if namespace is not None:
            sql += " AND namespace = ?"
            params.append(_namespace(namespace))
        if since is not None:
            sql += " AND received_at >= ?"
            params.append(_int(since, "since"))
        sql += " ORDER BY seq LIMIT ?"
        params.append(limit)
        with self._reading() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [
            ReceivedMessage(
                seq=seq,
                hash=bytes(h),
                account=account,
                namespace=ns,
                sender=self._sender(sender),
                timestamp=ts,
                content=bytes(content),
                received_at=received_at,
            )
            for seq, h, ns, sender, ts, content, received_at in rows
        ]

    def _sender(self, key: bytes | None) -> AccountId | None:
        if key is None:
            return None
        try:
            return AccountId(bytes(key))
        except InvalidId:
            raise StateError(f"{self.path} is damaged: a bad sender key") from None

    # --- clock offset ----------------------------------------------------------------------

    def get_clock_offset(self) -> int | None:
        """The last measured offset, in ms, of the network's clock from ours (add it to
        ours to get the network's time), or None if never measured. Cheap."""
        with self._reading() as conn:
            row = conn.execute("SELECT offset_ms FROM clock WHERE id = 1").fetchone()
        return None if row is None else int(row[0])

    def set_clock_offset(self, offset_ms: int) -> None:
        """Keep ``offset_ms`` as the network's clock minus ours. Blocking."""
        offset_ms = _int(offset_ms, "offset_ms", minimum=-_MAX_INT64)
        with self._writing() as conn:
            conn.execute(
                "INSERT INTO clock (id, offset_ms, measured_at) VALUES (1, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET offset_ms = excluded.offset_ms, "
                "measured_at = excluded.measured_at",
                (offset_ms, self._clock()),
            )


def open_state(
    home: Home, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT, clock: Clock | None = None
) -> ClientState:
    """Open the state in ``home`` (``HOME/state.sqlite3``), creating the home (0700) and
    the file (0600) if needed. Blocking; see :meth:`ClientState.open`."""
    home.ensure()
    return ClientState.open(home.state_path, busy_timeout=busy_timeout, clock=clock)


# --- opening -------------------------------------------------------------------------------


def _create_private(path: Path) -> None:
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


def _configure(conn: sqlite3.Connection, path: Path, busy_timeout: float) -> None:
    with _sqlite_errors(path):
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        # Changing the journal mode needs an exclusive lock; two processes opening a new
        # file at once may find it busy without SQLite's busy handler being called.
        deadline = time.monotonic() + busy_timeout
        while True:
            try:
                (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
                break
            except sqlite3.OperationalError as e:
                if not _is_busy(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        if str(mode).lower() != "wal":
            raise StateError(f"{path}: the file system does not support SQLite's WAL mode")
        conn.execute("PRAGMA synchronous = FULL")


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    with _sqlite_errors(path):
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
            for step in _MIGRATIONS[version:]:
                for statement in step:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise


def _narrow_sidecar_modes(path: Path) -> None:
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


def _is_busy(e: sqlite3.Error) -> bool:
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(e) or "busy" in str(e)


@contextlib.contextmanager
def _sqlite_errors(path: Path) -> Iterator[None]:
    """Turn SQLite's errors into :class:`StateError`: the file is the problem, and the
    ``veil`` command prints a StateError as one line."""
    try:
        yield
    except sqlite3.Error as e:
        if _is_busy(e):
            raise StateError(f"{path} is busy (another veil is writing it): {e}") from None
        raise StateError(f"{path}: {e}") from None


# --- argument checks (a bug in the caller: ValueError before anything is written) ---------


def _int(value: object, what: str, *, minimum: int = 0, maximum: int = _MAX_INT64) -> int:
    if type(value) is not int or not minimum <= value <= maximum:
        raise ValueError(f"{what} must be an int in [{minimum}, {maximum}], not {value!r}")
    return value


def _bytes(value: object, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise ValueError(f"{what} must be bytes")
    return bytes(value)


def _node_id(value: object) -> bytes:
    node_id = _bytes(value, "node_id")
    if len(node_id) != NODE_ID_BYTES:
        raise ValueError(f"a node ID is {NODE_ID_BYTES} bytes")
    return node_id


def _hash(value: object) -> bytes:
    h = _bytes(value, "hash")
    if len(h) != HASH_BYTES:
        raise ValueError(f"a message hash is {HASH_BYTES} bytes")
    return h


def _namespace(value: object) -> int:
    if type(value) is not int or not _NAMESPACE_MIN <= value <= _NAMESPACE_MAX:
        raise ValueError(f"a namespace is an int in [{_NAMESPACE_MIN}, {_NAMESPACE_MAX}]")
    return value


def _account_key(account: object) -> bytes:
    if not isinstance(account, AccountId):
        raise ValueError("account must be an AccountId")
    return account.x25519_public


def _message_row(
    m: InboundMessage, key: bytes, namespace: int
) -> tuple[bytes, bytes, int, bytes | None, int, bytes, int]:
    # (hash, account, namespace, sender, timestamp, content, received_at)
    content = _bytes(m.content, "content")
    if len(content) > MAX_CONTENT_BYTES:
        raise ValueError(f"message content over {MAX_CONTENT_BYTES} bytes")
    sender = None if m.sender is None else _account_key(m.sender)
    return (
        _hash(m.hash),
        key,
        namespace,
        sender,
        # A sender's claim must not make the whole page fail: clamp, don't refuse.
        min(_int(m.timestamp, "timestamp", maximum=2**64 - 1), _MAX_INT64),
        content,
        _int(m.received_at, "received_at"),
    )
