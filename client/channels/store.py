"""What a home knows of channels: ``HOME/channels.sqlite`` (mode 0600).

Tables: ``owned`` (channels this home publishes: name, seed sealed by
:mod:`veil.client.channels.keys`), ``private`` (a private channel's current epoch key,
sealed, and the epoch ID before it), ``following`` (per channel followed: position,
counts, the invite's epoch) and ``taken`` (the hashes a follower has taken, so a
restart neither repeats nor loses a post: :mod:`veil.client.channels.following`).

Each call opens its own connection (WAL, a busy timeout), so the CLI, a posting job and
a follower of one home may run at once.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from veil.client.errors import StateError
from veil.client.home import Home
from veil.onion.channel import format_channel_invite
from veil.onion.keys import AccountId

if TYPE_CHECKING:
    from veil.client.veil_client import VeilClient

__all__ = ["ChannelInfo", "home_of", "list_channels", "open_db", "open_sqlite", "transaction"]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS owned (
    channel TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, seed BLOB NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS following (
    channel TEXT PRIMARY KEY, last_hash BLOB, dropped INTEGER NOT NULL DEFAULT 0,
    taken INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS taken (
    channel TEXT NOT NULL, hash BLOB NOT NULL, PRIMARY KEY (channel, hash)
);
CREATE TABLE IF NOT EXISTS private (
    channel TEXT PRIMARY KEY, key BLOB NOT NULL, previous BLOB, rotated_ms INTEGER NOT NULL
);
"""
#: Columns added for private channels to tables of homes made before them.
_MIGRATIONS: Final = (
    "ALTER TABLE following ADD COLUMN locked INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE following ADD COLUMN epoch BLOB",
    "ALTER TABLE following ADD COLUMN epoch_ts INTEGER",
    "ALTER TABLE following ADD COLUMN revoked INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE taken ADD COLUMN locked INTEGER NOT NULL DEFAULT 0",
)


def home_of(where: VeilClient | Home) -> Home:
    return where if isinstance(where, Home) else where.home


def open_sqlite(path: Path, schema: str, migrations: tuple[str, ...] = ()) -> sqlite3.Connection:
    """A connection to the home database ``path`` (made 0600 if new; WAL, busy timeout
    of 5 s), with ``schema`` applied and each of ``migrations`` tried (one that fails
    was applied before). :class:`StateError` if it cannot be opened."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(schema)
        for statement in migrations:
            with contextlib.suppress(sqlite3.OperationalError):  # the column is there
                db.execute(statement)
    except (OSError, sqlite3.Error) as exc:
        raise StateError(f"cannot open {path}: {exc}") from exc
    return db


def open_db(where: VeilClient | Home) -> sqlite3.Connection:
    """The home's channel database (``where``: a client or a :class:`Home`)."""
    return open_sqlite(Path(home_of(where).path) / "channels.sqlite", _SCHEMA, _MIGRATIONS)


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back on any exception (cancellation
    included), which propagates."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """A channel this home owns or follows."""

    id: AccountId
    name: str | None
    owned: bool
    taken: int = 0
    dropped: int = 0
    private: bool = False
    locked: int = 0

    def to_json(self) -> dict[str, object]:
        """Never the key: ``invite`` is the public link (``veil channel invite`` gives
        a private channel's)."""
        return {
            "id": str(self.id),
            "name": self.name,
            "owned": self.owned,
            "private": self.private,
            "invite": format_channel_invite(self.id),
            "taken": self.taken,
            "dropped": self.dropped,
            "locked": self.locked,
        }


def list_channels(client: VeilClient | Home) -> list[ChannelInfo]:
    """The channels this home owns, then those it follows (no network)."""
    db = open_db(client)
    try:
        owned = db.execute(
            "SELECT o.channel, o.name, p.channel IS NOT NULL FROM owned o "
            "LEFT JOIN private p ON p.channel = o.channel ORDER BY o.created_ms"
        ).fetchall()
        followed = db.execute(
            "SELECT channel, taken, dropped, locked, epoch IS NOT NULL FROM following "
            "ORDER BY channel"
        ).fetchall()
    finally:
        db.close()
    out = [ChannelInfo(AccountId.parse(c), n, True, private=bool(p)) for c, n, p in owned]
    out += [
        ChannelInfo(AccountId.parse(c), None, False, t, d, private=bool(p), locked=x)
        for c, t, d, x, p in followed
    ]
    return out
