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
  writers queue on SQLite's lock for up to ``busy_timeout_s`` seconds. Every write
  transaction starts with ``BEGIN IMMEDIATE``: a deferred transaction that read first
  could fail at once with "database is locked" when it tries to write, without waiting
  (SQLite cannot let it wait: its snapshot may be stale). Counters are incremented in
  SQL (``failures = failures + 1``), never read-modify-written in Python.
* **Threads.** One connection, guarded by a lock, so a ``ClientState`` may be used from
  the trio thread and from ``trio.to_thread.run_sync`` workers (never two at once: a
  call waits for the one in progress). What each method costs:

  - *cheap* (one indexed row or a handful, no commit: fine on the trio thread):
    :meth:`~ClientState.get_guards`, :meth:`~ClientState.node_failures`,
    :meth:`~ClientState.get_position`,
    :meth:`~ClientState.has_message`, :meth:`~ClientState.list_messages` with a small
    ``limit``, :meth:`~ClientState.get_clock_offset`;
  - *blocking* (a commit, so an fsync, and possibly a wait of up to ``busy_timeout_s``
    for another process's write; or megabytes of data): every other method; call these
    through ``trio.to_thread.run_sync``. :meth:`~ClientState.open` and
    :meth:`~ClientState.load_consensus` (up to a few MB) are blocking too.

  On cancel: a thread call that trio abandons still runs to its end (commit or
  rollback); the state is never left half written.
* **Schema versions.** ``PRAGMA user_version`` is the schema version; ``MIGRATIONS[i]``
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

Errors: bad arguments raise :class:`~veil.client.errors.InvalidArgument` (a
:class:`ValueError`: a bug in the caller) before anything is written; a problem with the
file (not a database, damaged, from a newer veil, locked for longer than
``busy_timeout_s``, disk full) raises :class:`~veil.client.errors.StateError`, a
:class:`~veil.client.errors.HomeError`, which the ``veil`` command prints as one line.

Modules: this one is :class:`ClientState` (the queries); the records it takes and returns
and its argument checks are in :mod:`veil.client.state_records`, the schema and how the
file is opened in :mod:`veil.client.state_schema`. Their public names are re-exported
here.

Why this one is about 590 lines: :class:`ClientState` is one object over one connection,
one lock and one pair of transaction helpers (``_reading``, ``_writing``), and each of
its 18 queries is one to three SQL statements with the checks of their arguments (the
design notes above are the rules they all keep). What is not a query has left already
(records, checks, schema, opening); split by table, the rest would be one class's
methods in several files, each reaching for the same private connection. Measured:
this note is about 80 lines, the methods' docstrings and comments about 70, blank
lines about 50; the code is about 390 lines, of which about 75 are SQL text.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Self

from veil.client.errors import InvalidArgument, StateError
from veil.client.home import Home
from veil.client.state_records import (
    HASH_BYTES,
    MAX_CONSENSUS_BYTES,
    MAX_CONTENT_BYTES,
    MAX_GUARDS,
    MAX_INT64,
    MAX_LIST_LIMIT,
    NODE_ID_BYTES,
    CachedConsensus,
    GuardRecord,
    InboundMessage,
    IssuedDelegation,
    ReceivedMessage,
    account_key,
    check_bytes,
    check_hash,
    check_int,
    check_namespace,
    check_node_id,
    message_row,
)
from veil.client.state_schema import (
    SCHEMA_VERSION,
    configure,
    create_private,
    migrate,
    narrow_sidecar_modes,
    sqlite_errors,
)
from veil.onion.errors import InvalidId
from veil.onion.keys import AccountId
from veil.onion.wallclock import wall_clock_ms

__all__ = [
    "DEFAULT_BUSY_TIMEOUT_S",
    "HASH_BYTES",
    "MAX_CONSENSUS_BYTES",
    "MAX_CONTENT_BYTES",
    "MAX_GUARDS",
    "MAX_LIST_LIMIT",
    "NODE_ID_BYTES",
    "SCHEMA_VERSION",
    "CachedConsensus",
    "ClientState",
    "Clock",
    "GuardRecord",
    "InboundMessage",
    "IssuedDelegation",
    "ReceivedMessage",
    "open_state",
]

#: Wall-clock milliseconds since the Unix epoch (injectable for tests).
Clock = Callable[[], int]

#: How long a write waits for another process's write, by default.
DEFAULT_BUSY_TIMEOUT_S = 10.0


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
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        clock: Clock | None = None,
    ) -> ClientState:
        """Open (creating it, mode 0600) the state file at ``path`` and bring its schema
        up to date. Blocking.

        ``busy_timeout_s`` (seconds) is how long a write waits for another process's
        write. ``clock`` gives the ms stamped on rows (``updated_at``, ``last_failure``,
        ...); default the wall clock. Raises :class:`StateError` and
        :class:`~veil.client.home.InsecureFile`; the directory must exist.
        """
        path = Path(path)
        create_private(path)
        try:
            conn = sqlite3.connect(
                path,
                timeout=busy_timeout_s,
                isolation_level=None,  # autocommit: transactions are explicit
                check_same_thread=False,  # guarded by self._lock instead
            )
        except sqlite3.Error as e:
            raise StateError(f"cannot open {path}: {e}") from None
        try:
            configure(conn, path, busy_timeout_s)
            migrate(conn, path)
            narrow_sidecar_modes(path)
        except BaseException:
            conn.close()
            raise
        return cls(conn, path, clock or wall_clock_ms)

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
            with sqlite_errors(self.path):
                yield conn

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error."""
        with self._lock:
            conn = self._open_conn()
            with sqlite_errors(self.path):
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
            raise InvalidArgument(f"at most {MAX_GUARDS} guards, got {len(guards)}")
        ids = [check_node_id(g.node_id) for g in guards]
        if len(set(ids)) != len(ids):
            raise InvalidArgument("the same guard twice")
        rows = [
            (
                g.node_id,
                check_int(g.chosen_at_ms, "chosen_at_ms"),
                check_int(g.failures, "failures", minimum=0),
                None if g.last_used_ms is None else check_int(g.last_used_ms, "last_used_ms"),
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
        node_id = check_node_id(node_id)
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
        node_id = check_node_id(node_id)
        now = self._clock()
        with self._writing() as conn:
            conn.execute("DELETE FROM node_failures WHERE node_id = ?", (node_id,))
            conn.execute(
                "UPDATE guards SET failures = 0, last_used = ? WHERE node_id = ?", (now, node_id)
            )

    def node_failures(self) -> dict[bytes, int]:
        """Every node with a failure count, and the count. Cheap (one row per failing
        node; :meth:`forget_failures` keeps it short)."""
        with self._reading() as conn:
            rows = conn.execute("SELECT node_id, failures FROM node_failures").fetchall()
        return {bytes(node_id): int(n) for node_id, n in rows}

    def forget_failures(self, before_ms: int) -> int:
        """Drop the counts of nodes whose last failure is older than ``before_ms`` (so a
        node that failed once long ago gets another chance); return how many. Blocking."""
        before_ms = check_int(before_ms, "before_ms")
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
        raw = check_bytes(raw, "raw")
        if not raw or len(raw) > MAX_CONSENSUS_BYTES:
            raise InvalidArgument(f"a consensus is 1 to {MAX_CONSENSUS_BYTES} bytes")
        epoch = check_int(epoch, "epoch")
        fetched_at_ms = check_int(fetched_at_ms, "fetched_at_ms")
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
        key, namespace = account_key(account), check_namespace(namespace)
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
        key, namespace = account_key(account), check_namespace(namespace)
        if last_hash is not None:
            last_hash = check_hash(last_hash)
        rows = [message_row(m, key, namespace) for m in messages]
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
        hash = check_hash(hash)
        with self._reading() as conn:
            row = conn.execute("SELECT 1 FROM messages WHERE hash = ?", (hash,)).fetchone()
        return row is not None

    def list_messages(
        self,
        account: AccountId,
        *,
        namespace: int | None = None,
        since_ms: int | None = None,
        after_seq: int = 0,
        limit: int = 100,
    ) -> list[ReceivedMessage]:
        """Recorded messages of ``account`` in arrival order: at most ``limit``, with a
        ``seq`` above ``after_seq`` (to page: pass the last one's ``seq``), received at
        or after ``since_ms``, of ``namespace`` if given (else all). Cheap for a small
        ``limit``."""
        key = account_key(account)
        if not 1 <= check_int(limit, "limit") <= MAX_LIST_LIMIT:
            raise InvalidArgument(f"limit must be in [1, {MAX_LIST_LIMIT}]")
        sql = (
            "SELECT seq, hash, namespace, sender, timestamp, content, received_at "
            "FROM messages WHERE account = ? AND seq > ?"
        )
        params: list[object] = [key, check_int(after_seq, "after_seq")]
        if namespace is not None:
            sql += " AND namespace = ?"
            params.append(check_namespace(namespace))
        if since_ms is not None:
            sql += " AND received_at >= ?"
            params.append(check_int(since_ms, "since_ms"))
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
                timestamp_ms=ts,
                content=bytes(content),
                received_at_ms=received_at,
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

    # --- delegations issued ----------------------------------------------------------------

    def record_delegation(self, issued: IssuedDelegation) -> None:
        """Record a delegated session this home issued (again: nothing changes). Blocking."""
        for name, value, size in (
            ("link", issued.link, 32),
            ("owner", issued.owner, 33),
            ("issuer", issued.issuer, 32),
            ("audience", issued.audience, 32),
        ):
            if not isinstance(value, bytes) or len(value) != size:
                raise InvalidArgument(f"{name} must be {size} bytes")
        chain = check_bytes(issued.chain, "chain")
        with self._writing() as conn:
            conn.execute(
                "INSERT INTO delegations (link, owner, issuer, audience, chain, issued_at, "
                "expires_at, revoked_at) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (link) DO NOTHING",
                (
                    issued.link,
                    issued.owner,
                    issued.issuer,
                    issued.audience,
                    chain,
                    check_int(issued.issued_at_ms, "issued_at_ms"),
                    check_int(issued.expires_at_ms, "expires_at_ms"),
                    issued.revoked_at_ms,
                ),
            )

    def list_delegations(
        self, *, audience: bytes | None = None, link: bytes | None = None
    ) -> list[IssuedDelegation]:
        """The delegations issued, oldest first; only those to ``audience`` (a session's
        Ed25519 key) or of ``link`` (a digest) if given. Cheap (they are few)."""
        sql = (
            "SELECT link, owner, issuer, audience, chain, issued_at, expires_at, revoked_at "
            "FROM delegations"
        )
        params: list[object] = []
        if audience is not None:
            sql += " WHERE audience = ?"
            params.append(audience)
        elif link is not None:
            sql += " WHERE link = ?"
            params.append(link)
        sql += " ORDER BY issued_at, link"
        with self._reading() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [
            IssuedDelegation(
                link=bytes(r[0]),
                owner=bytes(r[1]),
                issuer=bytes(r[2]),
                audience=bytes(r[3]),
                chain=bytes(r[4]),
                issued_at_ms=r[5],
                expires_at_ms=r[6],
                revoked_at_ms=r[7],
            )
            for r in rows
        ]

    def mark_delegation_revoked(self, link: bytes, at_ms: int) -> bool:
        """Note that the link was revoked (the first time only); False if unknown.
        Blocking."""
        with self._writing() as conn:
            cur = conn.execute(
                "UPDATE delegations SET revoked_at = coalesce(revoked_at, ?) WHERE link = ?",
                (check_int(at_ms, "at_ms"), link),
            )
        return cur.rowcount > 0

    def is_delegation_revoked(self, link: bytes) -> bool:
        """True if this home revoked that link. Cheap."""
        with self._reading() as conn:
            row = conn.execute(
                "SELECT revoked_at FROM delegations WHERE link = ?", (link,)
            ).fetchone()
        return row is not None and row[0] is not None

    # --- clock offset ----------------------------------------------------------------------

    def get_clock_offset(self) -> int | None:
        """The last measured offset, in ms, of the network's clock from ours (add it to
        ours to get the network's time), or None if never measured. Cheap."""
        with self._reading() as conn:
            row = conn.execute("SELECT offset_ms FROM clock WHERE id = 1").fetchone()
        return None if row is None else int(row[0])

    def set_clock_offset(self, offset_ms: int) -> None:
        """Keep ``offset_ms`` as the network's clock minus ours. Blocking."""
        offset_ms = check_int(offset_ms, "offset_ms", minimum=-MAX_INT64)
        with self._writing() as conn:
            conn.execute(
                "INSERT INTO clock (id, offset_ms, measured_at) VALUES (1, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET offset_ms = excluded.offset_ms, "
                "measured_at = excluded.measured_at",
                (offset_ms, self._clock()),
            )


def open_state(
    home: Home, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S, clock: Clock | None = None
) -> ClientState:
    """Open the state in ``home`` (``HOME/state.sqlite3``), creating the home (0700) and
    the file (0600) if needed. Blocking; see :meth:`ClientState.open`."""
    home.ensure()
    return ClientState.open(home.state_path, busy_timeout_s=busy_timeout_s, clock=clock)
