"""The bot's SQLite database and code secret, in its home (``HOME/bot/``).

Design note
-----------
One file, ``bot.sqlite`` (WAL, ``synchronous=FULL``: a row written before a send is on
disk before the send starts, so a crash never forgets a ticket or a broadcast it
announced), holding:

* ``codes``: one-time-code tickets: recipient, purpose, the code's keyed hash (never
  the code), expiry, status and checks used;
* ``code_sends`` and ``code_failures``: timestamps per (recipient, purpose), for the
  send rate limit and the failure budget that survives new codes;
* ``subscribers``: (recipient, topic);
* ``conversations``: per-user state (JSON) with an expiry;
* ``broadcasts`` and ``broadcast_items``: a broadcast job and, per subscriber, the
  sealed envelope to send and whether it was sent;
* ``room_joins``, ``room_commands`` and ``room_replies``: the rooms the bot answers in
  (since when), each command post it took on, and its replies (text, the signed post
  once made, whether a node took it): :mod:`veil.client.bot.rooms`.

The code secret (32 bytes from the CSPRNG, the HMAC key of the codes' hashes) is a
separate file, ``code-secret``, mode 0600, so that a copy of the database alone does
not let anyone test guesses offline. Methods are synchronous and short (a few
statements each); the bot calls them from its trio task.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from pathlib import Path
from typing import Any, Final

from veil.client.bot.errors import BotStoreError

__all__ = ["SECRET_BYTES", "BotStore"]

SECRET_BYTES: Final = 32
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS codes (
    ticket TEXT PRIMARY KEY,
    recipient TEXT NOT NULL,
    purpose TEXT NOT NULL,
    code_mac BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    status TEXT NOT NULL,
    checks INTEGER NOT NULL DEFAULT 0,
    message_hash BLOB
);
CREATE TABLE IF NOT EXISTS code_sends (
    recipient TEXT NOT NULL, purpose TEXT NOT NULL, at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS code_sends_by ON code_sends (recipient, purpose, at_ms);
CREATE TABLE IF NOT EXISTS code_failures (
    recipient TEXT NOT NULL, purpose TEXT NOT NULL, at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS code_failures_by ON code_failures (recipient, purpose, at_ms);
CREATE TABLE IF NOT EXISTS subscribers (
    recipient TEXT NOT NULL,
    topic TEXT NOT NULL,
    since_ms INTEGER NOT NULL,
    PRIMARY KEY (recipient, topic)
);
CREATE INDEX IF NOT EXISTS subscribers_by_topic ON subscribers (topic, recipient);
CREATE TABLE IF NOT EXISTS conversations (
    user TEXT PRIMARY KEY, data TEXT NOT NULL, expires_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS broadcasts (
    job_id TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    text TEXT NOT NULL,
    ttl_ms INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    done INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS room_joins (room TEXT PRIMARY KEY, joined_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS room_commands (
    room TEXT NOT NULL,
    post_id BLOB NOT NULL,
    author TEXT NOT NULL,
    status TEXT NOT NULL,
    PRIMARY KEY (room, post_id)
);
CREATE TABLE IF NOT EXISTS room_replies (
    room TEXT NOT NULL,
    post_id BLOB NOT NULL,
    n INTEGER NOT NULL,
    text TEXT NOT NULL,
    record BLOB,
    status TEXT NOT NULL,
    PRIMARY KEY (room, post_id, n)
);
CREATE TABLE IF NOT EXISTS broadcast_items (
    job_id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    envelope BLOB NOT NULL,
    status TEXT NOT NULL,
    tries INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, recipient)
);
"""


class BotStore:
    """The bot's database (see the module note). ``path`` is the bot's directory."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.db = sqlite3.connect(
                self.path / "bot.sqlite", isolation_level=None, check_same_thread=False
            )
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA busy_timeout=5000")
            self.db.executescript(_SCHEMA)
            os.chmod(self.path / "bot.sqlite", 0o600)
        except (OSError, sqlite3.Error) as exc:
            raise BotStoreError(f"cannot open the bot's database in {self.path}: {exc}") from exc
        self.secret = self._secret()

    def _secret(self) -> bytes:
        path = self.path / "code-secret"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            st = path.stat()
            if st.st_mode & 0o077:
                raise BotStoreError(f"{path} may be read by others (chmod 600 it)") from None
            data = path.read_bytes()
            if len(data) != SECRET_BYTES:
                raise BotStoreError(f"{path} is not a code secret ({len(data)} bytes)") from None
            return data
        data = secrets.token_bytes(SECRET_BYTES)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return data

    def close(self) -> None:
        self.db.close()

    # --- plain helpers ---------------------------------------------------------------------

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        try:
            return self.db.execute(sql, params)
        except sqlite3.Error as exc:
            raise BotStoreError(f"the bot's database: {exc}") from exc

    def one(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return self.execute(sql, params).fetchone()

    def all(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        return self.execute(sql, params).fetchall()

    def transaction(self) -> _Transaction:
        """``with store.transaction():`` one atomic write (BEGIN IMMEDIATE ... COMMIT)."""
        return _Transaction(self)


class _Transaction:
    def __init__(self, store: BotStore) -> None:
        self.store = store

    def __enter__(self) -> BotStore:
        self.store.execute("BEGIN IMMEDIATE")
        return self.store

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if kind is None:
            self.store.execute("COMMIT")
        else:
            self.store.execute("ROLLBACK")
