"""The gateway's SQLite database, ``gateway.sqlite`` in the bot's directory: its
tokens (hashed) and the answers kept for idempotency keys."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from veil.client.bot.errors import BotStoreError

__all__ = ["GatewayStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    token_id TEXT PRIMARY KEY,
    digest BLOB NOT NULL,
    scopes TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    created_ms INTEGER NOT NULL,
    revoked_ms INTEGER
);
CREATE TABLE IF NOT EXISTS idempotency (
    token_id TEXT NOT NULL,
    key TEXT NOT NULL,
    request_digest BLOB NOT NULL,
    state TEXT NOT NULL,
    status INTEGER,
    body BLOB,
    headers TEXT,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (token_id, key)
);
CREATE INDEX IF NOT EXISTS idempotency_by_age ON idempotency (created_ms);
"""


class GatewayStore:
    """``gateway.sqlite`` in ``directory`` (the bot's, mode 700), opened once per process."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.path = Path(directory)
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            file = self.path / "gateway.sqlite"
            self.db = sqlite3.connect(file, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA busy_timeout=5000")
            self.db.executescript(_SCHEMA)
            os.chmod(file, 0o600)
        except (OSError, sqlite3.Error) as exc:
            raise BotStoreError(
                f"cannot open the gateway's database in {self.path}: {exc}"
            ) from exc

    def close(self) -> None:
        self.db.close()

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        try:
            return self.db.execute(sql, params)
        except sqlite3.Error as exc:
            raise BotStoreError(f"the gateway's database: {exc}") from exc

    def one(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return self.execute(sql, params).fetchone()

    def all(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        return self.execute(sql, params).fetchall()
