"""Group chat on a session: signed messages, long-polled, exactly once across restarts.

Design note
-----------
:meth:`EncryptionSession.send` encrypts the text under the session's current epoch,
signed by its author (the core's signed message: the reader checks the author was a
member with ``read`` at the date it signed), and stores it in the session's messages
namespace (2) at its swarm. The node names a message by the hash of its bytes, so a
retried send never delivers twice.

:meth:`EncryptionSession.messages` follows the 1:1 receiver's promise
(:mod:`veil.client.messaging`): each message is recorded in the home *and* the position
moved past it in one SQLite transaction, then yielded, so a restarted client neither
loses nor repeats one. A message that does not open (an epoch this member holds no key
of, tampered, an author not a member at its date) is recorded unreadable and not
yielded. The store is ``HOME/group-chat.sqlite`` (mode 0600), one row per message and
one position per (account, session); it holds plaintexts, as the state file holds 1:1
messages.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from veil.client.state_schema import create_private
from veil.onion import group as core
from veil.onion.errors import GroupError
from veil.onion.keys import AccountId, GroupId

if TYPE_CHECKING:
    from veil.client.sessions.session import EncryptionSession

__all__ = ["ChatStore", "GroupMessage", "history", "messages", "send"]

#: A long-poll's wait at the node, seconds.
WAIT_S = 20.0
MAX_BACKOFF_S = 30.0

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS group_messages (
        account  TEXT NOT NULL,
        session  TEXT NOT NULL,
        seq      INTEGER NOT NULL,
        hash     BLOB NOT NULL,
        author   TEXT,
        ts       INTEGER,
        body     BLOB,
        PRIMARY KEY (account, session, hash)
    )""",
    """CREATE TABLE IF NOT EXISTS group_positions (
        account   TEXT NOT NULL,
        session   TEXT NOT NULL,
        last_hash BLOB,
        PRIMARY KEY (account, session)
    )""",
)


@dataclass(frozen=True, slots=True)
class GroupMessage:
    """A chat message: its session, hash, author (account ID), date (ms) and text."""

    session_id: GroupId
    hash: bytes
    seq: int
    author: AccountId | None
    timestamp_ms: int | None
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def to_json(self) -> dict[str, Any]:
        return {
            "session_id": str(self.session_id),
            "hash": self.hash.hex(),
            "seq": self.seq,
            "author": str(self.author) if self.author else None,
            "timestamp_ms": self.timestamp_ms,
            "text": self.text,
        }


class ChatStore:
    """The recorded chat messages and positions (see the module note)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            create_private(self.path)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA busy_timeout = 5000")
        for statement in _SCHEMA:
            self._conn.execute(statement)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def position(self, account: str, session: str) -> bytes | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT last_hash FROM group_positions WHERE account = ? AND session = ?",
                (account, session),
            ).fetchone()
        return row[0] if row else None

    def record(
        self,
        account: str,
        session: str,
        hash: bytes,
        author: str | None,
        ts: int | None,
        body: bytes | None,
    ) -> int | None:
        """Record one message and move the position past it, in one transaction; its
        seq, or None if it was already recorded."""
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                seen = conn.execute(
                    "SELECT 1 FROM group_messages WHERE account=? AND session=? AND hash=?",
                    (account, session, hash),
                ).fetchone()
                seq = None
                if not seen:
                    (top,) = conn.execute(
                        "SELECT COALESCE(MAX(seq), 0) FROM group_messages WHERE account=?",
                        (account,),
                    ).fetchone()
                    seq = top + 1
                    conn.execute(
                        "INSERT INTO group_messages VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (account, session, seq, hash, author, ts, body),
                    )
                conn.execute(
                    "INSERT INTO group_positions VALUES (?, ?, ?) ON CONFLICT(account, session)"
                    " DO UPDATE SET last_hash = excluded.last_hash",
                    (account, session, hash),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return seq

    def listed(self, account: str, session: str, limit: int) -> list[tuple[Any, ...]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, hash, author, ts, body FROM group_messages"
                " WHERE account=? AND session=? AND body IS NOT NULL ORDER BY seq DESC LIMIT ?",
                (account, session, limit),
            ).fetchall()
        return list(reversed(rows))


async def send(session: EncryptionSession, text: str | bytes, *, ttl_s: float) -> str:
    epoch, key = session._current()
    manager = session._manager
    now = manager.now_ms()
    data = core.encrypt_message(
        session.session_id, epoch, key, text, author=manager.account, timestamp_ms=now
    )
    digest = await manager._guard(
        session.session_id,
        manager.backend.post_message(
            session._actor, session.state, data.encode(), ttl_ms=int(ttl_s * 1000)
        ),
    )
    return bytes(digest).hex()


def _store(session: EncryptionSession) -> ChatStore:
    manager = session._manager
    if manager.chat is None:
        path = manager.chat_path
        manager.chat = ChatStore(path) if path is not None else _memory_store()
    return manager.chat


_MEMORY: ChatStore | None = None


def _memory_store() -> ChatStore:
    import tempfile

    global _MEMORY
    if _MEMORY is None:
        _MEMORY = ChatStore(Path(tempfile.mkdtemp(prefix="veil-chat-")) / "chat.sqlite")
    return _MEMORY


async def messages(session: EncryptionSession, *, follow: bool) -> AsyncIterator[GroupMessage]:
    manager = session._manager
    store = _store(session)
    account, sid = str(manager.account.id), session.id
    after = await trio.to_thread.run_sync(store.position, account, sid)
    backoff = 1.0
    while True:
        try:
            page = await manager._guard(
                session.session_id,
                manager.backend.fetch_messages(
                    session._actor, session.state, after=after, wait_s=WAIT_S if follow else 0
                ),
            )
        except GroupError:
            raise
        except Exception:
            if not follow:
                raise
            await trio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
            continue
        backoff = 1.0
        before = after
        for stored in page:
            try:
                opened = session.open_message(stored.data)
            except core_errors() as exc:
                if isinstance(exc, core_unknown_epoch()):
                    try:
                        await session.refresh()
                        opened = session.open_message(stored.data)
                    except core_errors():
                        opened = None
                else:
                    opened = None
            author = str(opened.author_id) if opened and opened.author_id else None
            ts = opened.timestamp_ms if opened else None
            body = opened.body if opened else None
            seq = await trio.to_thread.run_sync(
                store.record, account, sid, stored.hash, author, ts, body
            )
            after = stored.hash
            if seq is not None and opened is not None:
                yield GroupMessage(
                    session.session_id,
                    stored.hash,
                    seq,
                    opened.author_id,
                    opened.timestamp_ms,
                    opened.body,
                )
        if not follow and (not page or (page and page[-1].hash == before)):
            return


def core_errors() -> type[GroupError]:
    return GroupError


def core_unknown_epoch() -> type[GroupError]:
    from veil.onion.errors import UnknownEpoch

    return UnknownEpoch


def history(session: EncryptionSession, *, limit: int) -> list[GroupMessage]:
    store = _store(session)
    rows = store.listed(str(session._manager.account.id), session.id, limit)
    return [
        GroupMessage(
            session.session_id,
            h,
            seq,
            AccountId.parse(author) if author else None,
            ts,
            body,
        )
        for seq, h, author, ts, body in rows
    ]
