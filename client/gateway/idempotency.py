"""``Idempotency-Key`` on the gateway's POSTs (as Stripe's and the IETF draft's).

A key is scoped to the token that sent it and names one request: its method, path and
body (their SHA-256). The first request with a key is marked ``running`` (persisted)
before its work starts; its answer is written when it ends. Then, for the same key:

* the same request again: the first answer again (status, body, ``Retry-After``), with
  ``Idempotent-Replayed: true``, however long ago (within :data:`KEEP_S`);
* another request (method, path or body differ): 422;
* while the first is still running: 409.

An answer that says "try again" (429, 503, 5xx) is not kept: the key is freed, so the
retry does the work (a code not sent is sent then). A process that dies mid-request
leaves a ``running`` row; it is cleared when the gateway starts (nothing is running).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Final

from veil.client.gateway.store import GatewayStore

__all__ = ["KEEP_S", "Conflict", "IdempotencyBook", "Mismatch", "Stored"]

#: Kept answers are forgotten after a day.
KEEP_S: Final = 86_400
MAX_KEY_CHARS: Final = 255


@dataclass(frozen=True, slots=True)
class Stored:
    status: int
    body: bytes
    headers: dict[str, str]


class Conflict(Exception):
    """The key's first request is still running."""


class Mismatch(Exception):
    """The key was used for another request."""


def request_digest(method: str, path: str, body: bytes) -> bytes:
    h = hashlib.sha256()
    for part in (method.encode(), path.encode(), body):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.digest()


class IdempotencyBook:
    def __init__(self, store: GatewayStore) -> None:
        self.store = store
        store.execute("DELETE FROM idempotency WHERE state = 'running'")

    def begin(self, token_id: str, key: str, digest: bytes) -> Stored | None:
        """None: the caller runs the request (the key is now ``running``). A
        :class:`Stored` answer to replay; :class:`Conflict`, :class:`Mismatch`."""
        now = int(time.time() * 1000)
        self.store.execute("DELETE FROM idempotency WHERE created_ms < ?", (now - KEEP_S * 1000,))
        cur = self.store.execute(
            "INSERT OR IGNORE INTO idempotency (token_id, key, request_digest, state, created_ms) "
            "VALUES (?, ?, ?, 'running', ?)",
            (token_id, key, digest, now),
        )
        if cur.rowcount == 1:
            return None
        row = self.store.one(
            "SELECT request_digest, state, status, body, headers FROM idempotency "
            "WHERE token_id = ? AND key = ?",
            (token_id, key),
        )
        if row is None:  # forgotten between the two statements: try once more
            return self.begin(token_id, key, digest)
        if bytes(row[0]) != digest:
            raise Mismatch
        if row[1] == "running":
            raise Conflict
        return Stored(int(row[2]), bytes(row[3]), json.loads(row[4] or "{}"))

    def finish(self, token_id: str, key: str, answer: Stored) -> None:
        if answer.status in (409, 429) or answer.status >= 500:
            self.abandon(token_id, key)
            return
        self.store.execute(
            "UPDATE idempotency SET state = 'done', status = ?, body = ?, headers = ? "
            "WHERE token_id = ? AND key = ?",
            (answer.status, answer.body, json.dumps(answer.headers), token_id, key),
        )

    def abandon(self, token_id: str, key: str) -> None:
        self.store.execute(
            "DELETE FROM idempotency WHERE token_id = ? AND key = ? AND state = 'running'",
            (token_id, key),
        )
