"""The sessions' cache (issue 13, as Seald's encryptionSessionCacheTTL): expiry and
cleanup on trio's MockClock, the persistent cache in the home (survives a restart, no
key in its file, useless in another account's home), a custom async cache."""

from __future__ import annotations

import json
import shutil

import pytest
import trio
import trio.testing

from veil.client import MemoryBackend
from veil.client.sessions import CacheConfig, CacheEntry, SessionManager, make_cache
from veil.onion.keys import Account

pytestmark = pytest.mark.trio


class CountingBackend(MemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.fetches = 0

    async def fetch_records(self, actor, session_id, known=None):  # type: ignore[no-untyped-def]
        self.fetches += 1
        return await super().fetch_records(actor, session_id, known)


async def test_options() -> None:
    assert not CacheConfig().enabled  # 0: no cache, the default
    assert CacheConfig(60).interval_s == 60
    assert CacheConfig(3).interval_s == 10  # at least 10 s
    assert CacheConfig(60, 30).interval_s == 30
    assert CacheConfig(60, -1).interval_s is None
    assert CacheConfig(-1).interval_s is None  # no expiry, nothing to clean
    with pytest.raises(ValueError):
        CacheConfig(-5)


async def _setup(cache_ttl: float, interval: float | None = None, store=None):  # type: ignore[no-untyped-def]
    backend = CountingBackend()
    u1, u2 = Account.generate(), Account.generate()
    creator = SessionManager(u1, backend)
    session = await creator.create_encryption_session([u2.id])
    cache = make_cache(cache_ttl, interval, store)
    reader = SessionManager(u2, backend, cache=cache)
    return backend, session, reader


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_no_cache_by_default() -> None:
    backend, session, reader = await _setup(0)
    await reader.retrieve_encryption_session(session.id)
    await reader.retrieve_encryption_session(session.id)
    assert backend.fetches == 2


async def test_expiry_and_use_cache_false(autojump_clock: trio.testing.MockClock) -> None:
    backend, session, reader = await _setup(60, -1)
    await reader.retrieve_encryption_session(session.id)
    await reader.retrieve_encryption_session(session.id)
    assert backend.fetches == 1
    await reader.retrieve_encryption_session(session.id, use_cache=False)
    assert backend.fetches == 2
    await trio.sleep(59)
    await reader.retrieve_encryption_session(session.id)
    assert backend.fetches == 2
    await trio.sleep(61)  # past the TTL since the last store
    await reader.retrieve_encryption_session(session.id)
    assert backend.fetches == 3


async def test_cleanup_runs_every_interval(autojump_clock: trio.testing.MockClock) -> None:
    _backend, session, reader = await _setup(30, 15)
    store = reader.cache.store
    async with trio.open_nursery() as nursery:
        await nursery.start(reader.cache.run)
        await reader.retrieve_encryption_session(session.id)
        assert store.keys() == [session.id]
        await trio.sleep(20)  # one cleanup at 15 s: not expired yet
        assert store.keys() == [session.id]
        await trio.sleep(16)  # the cleanup at 30 s drops it
        assert store.keys() == []
        nursery.cancel_scope.cancel()


async def test_clean_cache_by_hand_and_no_expiry(autojump_clock: trio.testing.MockClock) -> None:
    _backend, session, reader = await _setup(10, -1)
    await reader.retrieve_encryption_session(session.id)
    await trio.sleep(5)
    assert await reader.clean_cache() == 0
    await trio.sleep(6)
    assert await reader.clean_cache() == 1
    _backend, session, reader = await _setup(-1)
    await reader.retrieve_encryption_session(session.id)
    await trio.sleep(10**7)
    assert await reader.clean_cache() == 0


async def test_a_custom_async_cache(autojump_clock: trio.testing.MockClock) -> None:
    calls: list[str] = []

    class AsyncStore:
        def __init__(self) -> None:
            self.entries: dict[str, CacheEntry] = {}

        async def set(self, session_id: str, entry: CacheEntry) -> None:
            calls.append("set")
            await trio.sleep(0)
            self.entries[session_id] = entry

        async def get(self, session_id: str, date_only: bool = False):  # type: ignore[no-untyped-def]
            calls.append("get-date" if date_only else "get")
            await trio.sleep(0)
            entry = self.entries.get(session_id)
            return entry.date_ms if entry and date_only else entry

        async def keys(self) -> list[str]:
            calls.append("keys")
            return list(self.entries)

        async def delete(self, session_id: str) -> None:
            calls.append("delete")
            self.entries.pop(session_id, None)

    backend, session, reader = await _setup(20, -1, AsyncStore())
    await reader.retrieve_encryption_session(session.id)
    same = await reader.retrieve_encryption_session(session.id)
    assert backend.fetches == 1
    assert same.decrypt_message(session.encrypt_message("cached")) == "cached"
    await trio.sleep(30)
    assert await reader.clean_cache() == 1
    assert calls == ["get", "set", "get", "keys", "get-date", "delete"]


async def test_persistent_cache_survives_restart_and_shows_no_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    backend = CountingBackend()
    u1, u2, u3 = (Account.generate() for _ in range(3))
    session = await SessionManager(u1, backend).create_encryption_session([u2.id, u3.id])

    def reader(account: Account, home) -> SessionManager:  # type: ignore[no-untyped-def]
        cache = make_cache(-1, None, "home", home=home, account=account)
        return SessionManager(account, backend, cache=cache)

    s2 = await reader(u2, tmp_path / "home2").retrieve_encryption_session(session.id)
    text = session.encrypt_message("from the cache")
    assert backend.fetches == 1
    # A restart: a new manager on the same home finds it without a fetch.
    again = await reader(u2, tmp_path / "home2").retrieve_encryption_session(session.id)
    assert backend.fetches == 1
    assert again.decrypt_message(text) == "from the cache"
    # The file holds no key: neither an epoch key nor the records' bytes in clear.
    path = tmp_path / "home2" / "session-cache" / f"{u2.id}.json"
    raw = path.read_bytes()
    assert (path.stat().st_mode & 0o777) == 0o600
    for key in s2._keys.values():
        assert key.hex().encode() not in raw and key not in raw
    assert str(session.id).encode() in raw  # named, not readable
    assert "records" not in json.dumps(json.loads(raw)["entries"])
    # Copied into another account's home, the entry does not decrypt: a miss.
    (tmp_path / "home3" / "session-cache").mkdir(parents=True)
    shutil.copy(path, tmp_path / "home3" / "session-cache" / f"{u3.id}.json")
    s3 = await reader(u3, tmp_path / "home3").retrieve_encryption_session(session.id)
    assert backend.fetches == 2  # fetched from the swarm: the copy was useless
    assert s3.decrypt_message(text) == "from the cache"
