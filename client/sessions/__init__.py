"""Encryption sessions on the client (issue #13), Seald-style: one module per job.

* :mod:`~veil.client.sessions.session`: :class:`EncryptionSession`, create and retrieve
  (:class:`SessionManager`, the client's ``sessions``), a sub-package: ``naming``,
  ``encryption_session``, ``manager``;
* :mod:`~veil.client.sessions.backend`: where records and messages live, a sub-package:
  ``protocol`` (the five calls), ``memory``, ``network`` (the session's swarm through
  onion requests);
* :mod:`~veil.client.sessions.cache`: the TTL cache, pluggable, in memory or in the home;
* :mod:`~veil.client.sessions.files`: files over bytes, file objects, paths and streams;
* :mod:`~veil.client.sessions.chat`: group chat, exactly once across restarts;
* :mod:`~veil.client.sessions.invites`: how a new member learns its membership chain.

The rules (records, state, rights, messages, files) are the sans-IO core's,
:mod:`veil.onion.group`.
"""

from __future__ import annotations

import os
from typing import Any

from veil.client.sessions.backend import Actor, MemoryBackend, NetworkBackend, SessionBackend
from veil.client.sessions.cache import (
    CacheConfig,
    CacheEntry,
    CacheStore,
    HomeCacheStore,
    MemoryCacheStore,
    SessionCache,
)
from veil.client.sessions.chat import ChatStore, GroupMessage
from veil.client.sessions.files import DecryptedFile
from veil.client.sessions.session import EncryptionSession, SessionManager
from veil.onion.keys import Account

__all__ = [
    "Actor",
    "CacheConfig",
    "CacheEntry",
    "CacheStore",
    "ChatStore",
    "DecryptedFile",
    "EncryptionSession",
    "GroupMessage",
    "HomeCacheStore",
    "MemoryBackend",
    "MemoryCacheStore",
    "NetworkBackend",
    "SessionBackend",
    "SessionCache",
    "SessionManager",
    "local_sessions",
    "make_cache",
]


def make_cache(
    ttl_s: float = 0,
    cleanup_interval_s: float | None = None,
    store: Any = None,
    *,
    home: str | os.PathLike[str] | None = None,
    account: Account | None = None,
) -> SessionCache:
    """A cache as the client's options say: ``store`` is ``"memory"`` (default),
    ``"home"`` (persistent: ``HOME/session-cache/``, needs ``home`` and ``account``), or
    any object with set/get/keys/delete (plain or async)."""
    config = CacheConfig(ttl_s, cleanup_interval_s)
    if store is None or store == "memory":
        return SessionCache(config, MemoryCacheStore())
    if store == "home":
        if home is None or account is None:
            raise ValueError("a persistent cache needs the home and the account")
        return SessionCache(config, HomeCacheStore(os.path.join(home, "session-cache"), account))
    return SessionCache(config, store)


def local_sessions(
    account: Account,
    backend: MemoryBackend | None = None,
    *,
    cache: SessionCache | None = None,
) -> SessionManager:
    """Sessions over memory (no network): for files and messages encrypted locally,
    tests and benchmarks. Several accounts share one ``backend`` to share sessions."""
    return SessionManager(account, backend or MemoryBackend(), cache=cache)
