"""A client's encryption sessions: create, retrieve, the cache (:class:`SessionManager`).

Design note
-----------
* **Create** builds the genesis, a membership link for each member and the first key
  epoch (core), stores them in order, and keeps the session key (the creator's
  administrator key) sealed in the home (:mod:`veil.client.sessions.cache`'s
  :class:`~veil.client.sessions.cache.HomeCacheStore`, never expiring), so that a
  creator that did not encrypt for itself still administers it after a restart.
* **Retrieve** by ID or from a JSON message (a raw one cannot name its session:
  :class:`~veil.onion.errors.RawMessageHasNoSession`, as in Seald); the cache is asked
  first unless ``use_cache=False``. The records fetched are checked again here (the
  core's state judges every record), so a node serving forged ones gains nothing.

A session retrieved from the cache is its serialized records and keys, and building its
state verifies every record again, so the last :data:`PARSED_STATES` states built are
kept by their bytes (states are immutable). A backend call that finds the session
revoked, or this account no longer a member, drops the cache entry.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from veil.client.errors import InvalidArgument
from veil.client.sessions._core import core_member, core_reader
from veil.client.sessions.backend import Actor, SessionBackend
from veil.client.sessions.cache import (
    CacheConfig,
    CacheEntry,
    MemoryCacheStore,
    SessionCache,
    _maybe,
)
from veil.client.sessions.files import DecryptedFile, peek_header
from veil.client.sessions.session.encryption_session import EncryptionSession
from veil.client.sessions.session.naming import RecipientsLike, _account_id, _session_id
from veil.onion import group as core
from veil.onion.capability import SessionKey
from veil.onion.errors import InvalidId, NotAMember, SessionRevoked, UnknownEpoch, UnknownSession
from veil.onion.keys import Account, AccountId, GroupId

if TYPE_CHECKING:
    from veil.client.sessions.chat import ChatStore

__all__ = ["DEFAULT_REFRESH_AFTER_S", "PARSED_STATES", "SessionManager"]

#: send() and encrypt_file() refresh a session's state older than this, seconds.
DEFAULT_REFRESH_AFTER_S = 10.0
#: Session states kept built from their cache entries (see SessionManager._parse).
PARSED_STATES = 64


def _serialize(state: core.SessionState, keys: Mapping[bytes, bytes]) -> bytes:
    return json.dumps(
        {
            "sid": str(state.session_id),
            "records": [r.hex() for r in state.encoded()],
            "keys": {e.hex(): k.hex() for e, k in keys.items()},
        }
    ).encode()


def _deserialize(data: bytes) -> tuple[core.SessionState, dict[bytes, bytes]]:
    doc = json.loads(data)
    state = core.SessionState(GroupId.parse(doc["sid"]), [bytes.fromhex(r) for r in doc["records"]])
    keys = {bytes.fromhex(e): bytes.fromhex(k) for e, k in doc["keys"].items()}
    return state, keys


class SessionManager:
    """A client's sessions: create, retrieve, the cache, files by header. One per
    client (``client.sessions``); the client's methods of the same names call it."""

    def __init__(
        self,
        account: Account,
        backend: SessionBackend,
        *,
        cache: SessionCache | None = None,
        admin_keys: Any = None,
        chat: ChatStore | None = None,
        chat_path: str | os.PathLike[str] | None = None,
        clock_ms: Callable[[], int] | None = None,
        refresh_after_s: float | None = DEFAULT_REFRESH_AFTER_S,
    ) -> None:
        self.account = account
        self.backend = backend
        self.cache = cache or SessionCache(CacheConfig())
        self.admin_keys = admin_keys if admin_keys is not None else MemoryCacheStore()
        self.chat = chat
        #: The states last built from cache entries: sid -> (entry bytes, state, keys).
        self._parsed: dict[str, tuple[bytes, core.SessionState, dict[bytes, bytes]]] = {}
        self.chat_path = chat_path
        #: send() and encrypt_file() refresh a state older than this (None: never).
        self.refresh_after_s = refresh_after_s
        self._clock = clock_ms

    def now_ms(self) -> int:
        if self._clock is not None:
            return int(self._clock())
        return self.cache.now_ms()

    # --- Seald's API ---------------------------------------------------------------------

    async def create_encryption_session(
        self,
        recipients: RecipientsLike = (),
        *,
        metadata: str | None = None,
        encrypt_for_self: bool = True,
        policy: str = core.RIGHTS_POLICY,
        rights: Iterable[str] | None = None,
    ) -> EncryptionSession:
        """A new session for ``recipients`` (account IDs; a mapping gives each its
        rights, else ``rights`` or the default ``read`` and ``forward``); the creator
        holds every right (unless ``encrypt_for_self=False``: it then keeps only the
        session key, to administer a session it cannot read). ``policy`` says who may
        revoke: ``rights`` (holders of ``revoke``) or ``delegation`` (also adders, of
        those they added)."""
        if policy not in core.POLICIES:
            raise InvalidArgument(f"policy is one of {', '.join(sorted(core.POLICIES))}")
        wanted = self._members(recipients, rights)
        created = core.create_session(
            self.account,
            wanted,
            metadata=metadata,
            policy=policy,
            encrypt_for_self=encrypt_for_self,
            now_ms=self.now_ms(),
        )
        sid = str(created.session_id)
        seed_entry = CacheEntry(created.session_key.seed, self.now_ms())
        await _maybe(self.admin_keys.set(sid, seed_entry))
        actor = Actor(self.account, created.session_key)
        await self.backend.store_records(actor, created.state, [r.encoded for r in created.records])
        await self.backend.invite(
            actor,
            created.state,
            [r for r in created.records if isinstance(r, core.MemberRecord)],
        )
        # A creator that does not encrypt for itself forgets the key (as Seald's).
        keys = {created.epoch: created.epoch_key} if encrypt_for_self else {}
        session = EncryptionSession(self, created.state, keys, created.session_key)
        session._fetched_ms = self.now_ms()
        await self._cache_set(session)
        return session

    def _members(
        self, recipients: RecipientsLike, rights: Iterable[str] | None
    ) -> dict[Any, frozenset[str]]:
        if isinstance(recipients, str | AccountId):
            recipients = [recipients]
        default = core.check_rights(rights) if rights is not None else core.DEFAULT_RIGHTS
        out: dict[Any, frozenset[str]] = {}
        if isinstance(recipients, Mapping):
            for who, given in recipients.items():
                out[core_member(_account_id(who), self.account)] = core.check_rights(given)
        else:
            for who in recipients:
                out[core_member(_account_id(who), self.account)] = default
        return out

    async def retrieve_encryption_session(
        self,
        session_id: GroupId | str | None = None,
        *,
        encrypted_message: str | bytes | None = None,
        use_cache: bool = True,
    ) -> EncryptionSession:
        """The session named by ``session_id`` or by ``encrypted_message`` (its JSON
        form; a raw message is :class:`~veil.onion.errors.RawMessageHasNoSession`)."""
        if (session_id is None) == (encrypted_message is None):
            raise InvalidArgument("give a session ID or an encrypted message")
        sid = (
            _session_id(session_id)
            if session_id is not None
            else core.message_session_id(encrypted_message)  # type: ignore[arg-type]
        )
        if use_cache:
            cached = await self.cache.get(str(sid))
            if cached is not None:
                try:
                    state, keys = self._parse(str(sid), cached)
                except (ValueError, KeyError, TypeError, InvalidId):
                    await self.cache.delete(str(sid))
                else:
                    return EncryptionSession(self, state, keys, await self._admin_key(sid))
        session_key = await self._admin_key(sid)
        actor = Actor(self.account, session_key)
        records = await self._guard(sid, self.backend.fetch_records(actor, sid))
        state = core.SessionState(sid, records)
        if state.genesis is None:
            raise UnknownSession("the swarm holds no valid genesis for this session")
        session = EncryptionSession(self, state, {}, session_key)
        session._fetched_ms = self.now_ms()
        session._check_live()
        session._keys = state.epoch_keys(core_reader(self.account))
        if (
            not session._keys
            and session_key is None
            and core_member(self.account.id, self.account)
            not in state.members(now_ms=self.now_ms())
        ):
            raise NotAMember("this account is not a member of the session")
        await self._cache_set(session)
        return session

    async def decrypt_file(
        self, data: Any, out: Any = None, *, use_cache: bool = True, progress: Any = None
    ) -> DecryptedFile:
        """Decrypt a file of any session this account reads: the session is found from
        the file's header (as Seald's ``decryptFile``)."""
        header, source, first = await peek_header(data)
        session = await self.retrieve_encryption_session(header.session_id, use_cache=use_cache)
        if header.epoch not in session._keys and use_cache:
            session = await self.retrieve_encryption_session(header.session_id, use_cache=False)
        return await session.decrypt_file(source, out, progress=progress, _first=first)

    async def decrypt_message(self, text: str | bytes, *, use_cache: bool = True) -> str:
        """Decrypt a JSON message of any session this account reads (retrieved, and
        refreshed once if the message names an epoch it does not hold)."""
        session = await self.retrieve_encryption_session(
            encrypted_message=text, use_cache=use_cache
        )
        try:
            return session.decrypt_message(text)
        except UnknownEpoch:
            await session.refresh()
            return session.decrypt_message(text)

    async def clean_cache(self) -> int:
        """Drop the expired cache entries now; how many."""
        return await self.cache.clean()

    # --- inside -------------------------------------------------------------------------

    async def _admin_key(self, sid: GroupId) -> SessionKey | None:
        entry = await _maybe(self.admin_keys.get(str(sid)))
        data = getattr(entry, "data", None)
        if isinstance(data, bytes) and len(data) == 32:
            key = SessionKey(data)
            if key.ed25519_public == sid.ed25519_public:
                return key
        return None

    def _parse(self, sid: str, data: bytes) -> tuple[core.SessionState, dict[bytes, bytes]]:
        """A cached entry's state and keys. Building a state verifies every record, so
        the last one built from the same bytes is reused (states are immutable)."""
        hit = self._parsed.get(sid)
        if hit is not None and hit[0] == data:
            return hit[1], dict(hit[2])
        state, keys = _deserialize(data)
        self._remember(sid, data, state, keys)
        return state, dict(keys)

    def _remember(
        self, sid: str, data: bytes, state: core.SessionState, keys: dict[bytes, bytes]
    ) -> None:
        self._parsed.pop(sid, None)
        self._parsed[sid] = (data, state, dict(keys))
        while len(self._parsed) > PARSED_STATES:
            self._parsed.pop(next(iter(self._parsed)))

    async def _cache_set(self, session: EncryptionSession) -> None:
        if not self.cache.config.enabled:
            return
        data = _serialize(session.state, session._keys)
        self._remember(session.id, data, session.state, session._keys)
        await self.cache.set(session.id, data)

    async def _guard(self, sid: GroupId, awaitable: Any) -> Any:
        """Await a backend call; a revoked session is dropped from the cache."""
        try:
            return await awaitable
        except SessionRevoked:
            await self.cache.delete(str(sid))
            raise
        except NotAMember:
            await self.cache.delete(str(sid))
            raise
