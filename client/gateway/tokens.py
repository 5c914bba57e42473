"""Bearer tokens with scopes, stored hashed.

A token is ``vgw_<id>_<secret>``: ``id`` (12 random characters) names its row, and
``secret`` (32 random bytes, base64url) is kept only as its SHA-256 (a secret of 256
random bits needs no slow hash), compared in constant time. The token is shown once,
when made (``veil bot token create``); a revoked token is refused from the next request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Final

from veil.client.errors import InvalidArgument
from veil.client.gateway.store import GatewayStore

__all__ = ["SCOPES", "TokenBook", "TokenInfo"]

#: What a token may do: send codes (and check them), messages, channel posts,
#: broadcasts, and read (statuses, subscribers, broadcast progress).
SCOPES: Final = ("codes", "messages", "channels", "broadcast", "read")
PREFIX: Final = "vgw_"


@dataclass(frozen=True, slots=True)
class TokenInfo:
    token_id: str
    scopes: tuple[str, ...]
    name: str
    created_ms: int
    revoked_ms: int | None

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.token_id,
            "scopes": list(self.scopes),
            "name": self.name,
            "created_ms": self.created_ms,
            "revoked": self.revoked_ms is not None,
        }


def _digest(secret: str) -> bytes:
    return hashlib.sha256(b"veil/gateway-token/v1\x00" + secret.encode()).digest()


class TokenBook:
    def __init__(self, store: GatewayStore) -> None:
        self.store = store

    def create(self, scopes: list[str] | tuple[str, ...], name: str = "") -> tuple[str, TokenInfo]:
        """A new token (its text, shown once) with ``scopes``."""
        wanted = tuple(dict.fromkeys(scopes))
        if not wanted:
            raise InvalidArgument("a token needs at least one scope: " + ", ".join(SCOPES))
        for scope in wanted:
            if scope not in SCOPES:
                raise InvalidArgument(f"no scope {scope!r} (scopes: {', '.join(SCOPES)})")
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        now = int(time.time() * 1000)
        self.store.execute(
            "INSERT INTO tokens (token_id, digest, scopes, name, created_ms) "
            "VALUES (?, ?, ?, ?, ?)",
            (token_id, _digest(secret), " ".join(wanted), name[:80], now),
        )
        return f"{PREFIX}{token_id}_{secret}", TokenInfo(token_id, wanted, name[:80], now, None)

    def verify(self, token: str) -> TokenInfo | None:
        """The token's row if ``token`` is one of ours and not revoked; else None."""
        if not token.startswith(PREFIX) or len(token) > 200:
            return None
        token_id, _, secret = token[len(PREFIX) :].partition("_")
        row = self.store.one(
            "SELECT digest, scopes, name, created_ms, revoked_ms FROM tokens WHERE token_id = ?",
            (token_id,),
        )
        # Compare even when there is no row, so a wrong ID costs as long as a wrong secret.
        expected = row[0] if row is not None else b"\x00" * 32
        if not hmac.compare_digest(expected, _digest(secret)) or row is None or row[4]:
            return None
        return TokenInfo(token_id, tuple(row[1].split()), row[2], row[3], row[4])

    def list(self) -> list[TokenInfo]:
        rows = self.store.all(
            "SELECT token_id, scopes, name, created_ms, revoked_ms FROM tokens ORDER BY created_ms"
        )
        return [TokenInfo(r[0], tuple(r[1].split()), r[2], r[3], r[4]) for r in rows]

    def revoke(self, token_id: str) -> bool:
        """Revoke by ID (or by the whole token); False if no such live token."""
        if token_id.startswith(PREFIX):
            token_id = token_id[len(PREFIX) :].partition("_")[0]
        cur = self.store.execute(
            "UPDATE tokens SET revoked_ms = ? WHERE token_id = ? AND revoked_ms IS NULL",
            (int(time.time() * 1000), token_id),
        )
        return cur.rowcount > 0
