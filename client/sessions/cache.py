"""The session cache, as Seald's ``encryptionSessionCacheTTL``: TTL, cleanup, pluggable.

Design note
-----------
Retrieving a session costs a round trip to its swarm (its records) and unwrapping its
keys; a client that decrypts many messages of a few sessions keeps them. Options, on
:class:`CacheConfig` (the client's ``encryption_session_cache_ttl`` and
``encryption_session_cache_cleanup_interval``):

* ``ttl_s``: 0 no cache (the default, as Seald's), -1 no expiry, else seconds;
* ``cleanup_interval_s``: how often expired entries are dropped (default the TTL, at
  least 10 s; -1 no automatic cleanup); :meth:`SessionCache.clean` does it now
  (the client's ``clean_cache()``).

The store is pluggable: any object with ``set(id, entry)``, ``get(id, date_only=False)``,
``keys()`` and ``delete(id)``, each a plain or an ``async`` method (:class:`CacheStore`).
An entry is a :class:`CacheEntry`: the session's serialized records and keys, and the
date it was stored; ``get(id, date_only=True)`` may return just that date (an ``int``,
ms), so that cleanup does not read or decrypt whole entries. Two are built in:

* :class:`MemoryCacheStore`, per client;
* :class:`HomeCacheStore`, a file in the home per account (``HOME/session-cache/
  05....json``, mode 0600), where each entry's data is sealed with XChaCha20-Poly1305
  under a key derived from the account's secret key (BLAKE2b, purpose
  ``veil/grp-cache``), with the account and session IDs as associated data: the file
  holds no key in clear, and an entry copied to another account's file (or home) does
  not decrypt (it is then dropped as a miss).

Time: dates are the wall clock in ms, read through trio's clock once the cache starts
(``wall at start + trio.current_time() elapsed``), so that tests drive expiry and
cleanup with trio's ``MockClock``.
"""

from __future__ import annotations

import inspect
import json
import os
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import trio

from veil.client.errors import InvalidArgument
from veil.client.files import write_atomically
from veil.onion import crypto
from veil.onion.errors import IntegrityError
from veil.onion.keys import Account

__all__ = [
    "CacheConfig",
    "CacheEntry",
    "CacheStore",
    "HomeCacheStore",
    "MemoryCacheStore",
    "SessionCache",
]

#: The shortest automatic cleanup interval (Seald's).
MIN_CLEANUP_INTERVAL_S = 10.0
_PURPOSE = b"veil/grp-cache"
_FORMAT = "veil-session-cache"


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """``ttl_s``: 0 no cache, -1 no expiry; ``cleanup_interval_s``: None the TTL (at
    least 10 s), -1 none (see the module note)."""

    ttl_s: float = 0
    cleanup_interval_s: float | None = None

    def __post_init__(self) -> None:
        if self.ttl_s != -1 and self.ttl_s < 0:
            raise InvalidArgument("encryption_session_cache_ttl is seconds, 0 (none) or -1")
        if self.cleanup_interval_s is not None and (
            self.cleanup_interval_s != -1 and self.cleanup_interval_s <= 0
        ):
            raise InvalidArgument("the cleanup interval is seconds, or -1 (none)")

    @property
    def enabled(self) -> bool:
        return self.ttl_s != 0

    @property
    def interval_s(self) -> float | None:
        """Seconds between automatic cleanups, or None for none."""
        if not self.enabled or (self.ttl_s == -1 and self.cleanup_interval_s is None):
            return None
        if self.cleanup_interval_s == -1:
            return None
        base = self.cleanup_interval_s if self.cleanup_interval_s is not None else self.ttl_s
        return max(base, MIN_CLEANUP_INTERVAL_S)


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One cached session: its serialized records and keys, and when it was stored."""

    data: bytes
    date_ms: int


class CacheStore(Protocol):
    """A pluggable store; each method may also be ``async`` (see the module note)."""

    def set(self, session_id: str, entry: CacheEntry) -> Awaitable[None] | None: ...

    def get(
        self, session_id: str, date_only: bool = False
    ) -> CacheEntry | int | Awaitable[CacheEntry | int | None] | None: ...

    def keys(self) -> Iterable[str] | Awaitable[Iterable[str]]: ...

    def delete(self, session_id: str) -> Awaitable[None] | None: ...


async def _maybe(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


class MemoryCacheStore:
    """Entries in a dict (per client)."""

    def __init__(self) -> None:
        self._entries: dict[str, CacheEntry] = {}

    def set(self, session_id: str, entry: CacheEntry) -> None:
        self._entries[session_id] = entry

    def get(self, session_id: str, date_only: bool = False) -> CacheEntry | int | None:
        entry = self._entries.get(session_id)
        if entry is None:
            return None
        return entry.date_ms if date_only else entry

    def keys(self) -> list[str]:
        return list(self._entries)

    def delete(self, session_id: str) -> None:
        self._entries.pop(session_id, None)


class HomeCacheStore:
    """Entries in ``DIR/<account>.json``, each sealed under a key of the account (the
    module note). Blocking file I/O, small files: called from trio it runs inline."""

    def __init__(self, directory: str | os.PathLike[str], account: Account) -> None:
        self.directory = Path(directory)
        self.account = account
        self.path = self.directory / f"{account.id}.json"
        self._key = crypto.kdf(account.x25519_secret, _PURPOSE, 32, account.x25519_public)

    def _ad(self, session_id: str) -> bytes:
        return f"{_FORMAT}/1\x00{self.account.id}\x00{session_id}".encode()

    def _read(self) -> dict[str, Any]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            doc = json.loads(raw)
        except ValueError:
            return {}
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
            return {}
        entries = doc.get("entries")
        return entries if isinstance(entries, dict) else {}

    def _write(self, entries: dict[str, Any]) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        doc = {"format": _FORMAT, "version": 1, "account": str(self.account.id), "entries": entries}
        write_atomically(self.path, json.dumps(doc, sort_keys=True).encode(), mode=0o600)

    def set(self, session_id: str, entry: CacheEntry) -> None:
        nonce = os.urandom(crypto.XNONCE_BYTES)
        sealed = nonce + crypto.aead_seal(self._key, nonce, entry.data, self._ad(session_id))
        entries = self._read()
        entries[session_id] = {"date": entry.date_ms, "sealed": sealed.hex()}
        self._write(entries)

    def get(self, session_id: str, date_only: bool = False) -> CacheEntry | int | None:
        item = self._read().get(session_id)
        if not isinstance(item, dict) or not isinstance(item.get("date"), int):
            return None
        if date_only:
            return int(item["date"])
        try:
            sealed = bytes.fromhex(item["sealed"])
            data = crypto.aead_open(
                self._key,
                sealed[: crypto.XNONCE_BYTES],
                sealed[crypto.XNONCE_BYTES :],
                self._ad(session_id),
            )
        except (ValueError, TypeError, KeyError, IntegrityError):
            return None
        return CacheEntry(data, int(item["date"]))

    def keys(self) -> list[str]:
        return list(self._read())

    def delete(self, session_id: str) -> None:
        entries = self._read()
        if entries.pop(session_id, None) is not None:
            self._write(entries)


class SessionCache:
    """The client's cache: TTL, cleanup, over a store (see the module note)."""

    def __init__(self, config: CacheConfig, store: Any | None = None) -> None:
        self.config = config
        self.store: Any = store if store is not None else MemoryCacheStore()
        self._wall0 = time.time() * 1000
        self._trio0: float | None = None

    def now_ms(self) -> int:
        """The wall clock in ms, advanced by trio's clock (so MockClock drives it)."""
        try:
            now = trio.current_time()
        except RuntimeError:
            return int(time.time() * 1000)
        if self._trio0 is None:
            self._trio0 = now
        return int(self._wall0 + (now - self._trio0) * 1000)

    def _expired(self, date_ms: int, now_ms: int) -> bool:
        ttl = self.config.ttl_s
        return ttl != -1 and now_ms - date_ms >= ttl * 1000

    async def get(self, session_id: str) -> bytes | None:
        """A live entry's data, or None (an expired one is dropped)."""
        if not self.config.enabled:
            return None
        entry = await _maybe(self.store.get(session_id))
        if not isinstance(entry, CacheEntry):
            return None
        if self._expired(entry.date_ms, self.now_ms()):
            await _maybe(self.store.delete(session_id))
            return None
        return entry.data

    async def set(self, session_id: str, data: bytes) -> None:
        if self.config.enabled:
            await _maybe(self.store.set(session_id, CacheEntry(data, self.now_ms())))

    async def delete(self, session_id: str) -> None:
        await _maybe(self.store.delete(session_id))

    async def clean(self) -> int:
        """Drop every expired entry now; how many were dropped."""
        now = self.now_ms()
        dropped = 0
        for session_id in list(await _maybe(self.store.keys())):
            date = await _maybe(self.store.get(session_id, True))
            if isinstance(date, CacheEntry):
                date = date.date_ms
            if date is None or self._expired(int(date), now):
                await _maybe(self.store.delete(session_id))
                dropped += 1
        return dropped

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The automatic cleanup, every interval (returns at once if there is none)."""
        self.now_ms()
        task_status.started()
        interval = self.config.interval_s
        if interval is None:
            return
        while True:
            await trio.sleep(interval)
            await self.clean()
