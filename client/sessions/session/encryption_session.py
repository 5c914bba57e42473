"""One encryption session as a member sees it: :class:`EncryptionSession`.

Design note
-----------
* **Revoking members** writes revocation records (by the session key, a holder of
  ``revoke``, or under the ``delegation`` policy an upstream adder), then at once a new
  key epoch wrapped for the remaining readers, by the revoker itself (an adder without
  ``revoke`` names its revocations in the epoch, which entitles it): what is encrypted
  afterwards is under a key the revoked member never held. Nodes stop serving it the
  session. The members it had added lose their membership *through it* too (a revoked
  link revokes what is below it), unless another live chain holds them;
  ``keep_added=True`` re-adds them (by the revoker, with their rights) before the
  rotation.
* **Revoking the session** stores its end record: nodes then refuse its stores and
  reads, delete its messages, and every member's next use fails with
  :class:`~veil.onion.errors.SessionRevoked`; the cache entries are dropped.

Message and file encryption are local (the session's current epoch key): no request.
Group chat (:meth:`EncryptionSession.send`, :meth:`EncryptionSession.messages`) is in
:mod:`veil.client.sessions.chat`.

Every change goes through the session's manager
(:mod:`~veil.client.sessions.session.manager`): its backend stores the records, its
cache keeps the new state.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

from veil.client.errors import InvalidArgument
from veil.client.sessions._core import account_of, core_member, core_reader
from veil.client.sessions.backend import Actor
from veil.client.sessions.cache import _maybe
from veil.client.sessions.files import (
    DecryptedFile,
    decrypt_stream,
    default_name,
    encrypt_stream,
    source_size,
)
from veil.client.sessions.session.naming import RecipientsLike, _account_id
from veil.onion import group as core
from veil.onion.capability import SessionKey
from veil.onion.errors import InvalidValue, NotAMember, SessionRevoked, UnknownEpoch
from veil.onion.group import REVOKE_RIGHT
from veil.onion.keys import AccountId, GroupId

if TYPE_CHECKING:
    from veil.client.sessions.chat import GroupMessage
    from veil.client.sessions.session.manager import SessionManager

__all__ = ["DEFAULT_MESSAGE_TTL_S", "EncryptionSession"]

#: Group messages wait this long in the session's swarm by default (as 1:1 messages).
DEFAULT_MESSAGE_TTL_S = 14 * 24 * 3600


class EncryptionSession:
    """One session as a member (or its creator) sees it (see the module note)."""

    def __init__(
        self,
        manager: SessionManager,
        state: core.SessionState,
        keys: dict[bytes, bytes],
        session_key: SessionKey | None,
    ) -> None:
        self._manager = manager
        self.state = state
        self._keys = keys
        self._session_key = session_key
        self._current_cache: tuple[core.SessionState, int, bytes, bytes] | None = None
        #: When the state was last read from (or written to) the swarm; None: from a cache.
        self._fetched_ms: int | None = None

    def __repr__(self) -> str:
        return f"EncryptionSession({self.session_id}, {len(self.members)} member(s))"

    # --- what it is -------------------------------------------------------------------------

    @property
    def session_id(self) -> GroupId:
        return self.state.session_id

    @property
    def id(self) -> str:
        return str(self.state.session_id)

    @property
    def metadata(self) -> str | None:
        return self.state.metadata

    @property
    def policy(self) -> str | None:
        return self.state.policy

    @property
    def creator(self) -> AccountId | None:
        creator = self.state.creator
        return account_of(creator) if creator is not None else None

    @property
    def members(self) -> dict[AccountId, frozenset[str]]:
        """The live members and their rights (the creator, when it encrypted for
        itself, holds every right)."""
        live = self.state.members(now_ms=self._now())
        return {account_of(key): frozenset(m.rights) for key, m in live.items()}

    @property
    def added_by(self) -> dict[AccountId, tuple[AccountId, ...]]:
        """Who added each live member (the creator for the session key)."""
        live = self.state.members(now_ms=self._now())
        return {account_of(k): tuple(account_of(a) for a in m.added_by) for k, m in live.items()}

    @property
    def revoked(self) -> tuple[AccountId, ...]:
        return tuple(account_of(k) for k in self.state.revoked_members(now_ms=self._now()))

    @property
    def ended(self) -> bool:
        return self.state.ended

    @property
    def rights(self) -> frozenset[str]:
        """This account's rights (all of them for the holder of the session key)."""
        if self._session_key is not None:
            return core.ALL_RIGHTS
        return frozenset(self.state.rights_of(self._me, now_ms=self._now()))

    def to_json(self) -> dict[str, Any]:
        return {
            "session_id": self.id,
            "metadata": self.metadata,
            "policy": self.policy,
            "creator": str(self.creator) if self.creator else None,
            "members": {
                str(a): sorted(r) for a, r in sorted(self.members.items(), key=lambda x: str(x[0]))
            },
            "added_by": {str(a): [str(b) for b in by] for a, by in self.added_by.items()},
            "revoked": [str(a) for a in self.revoked],
            "ended": self.ended,
            "epochs": len(self.state.epochs),
        }

    # --- inside -----------------------------------------------------------------------------

    def _now(self) -> int:
        return self._manager.now_ms()

    @property
    def _me(self) -> Any:
        return core_member(self._manager.account.id, self._manager.account)

    @property
    def _actor(self) -> Actor:
        return Actor(self._manager.account, self._session_key)

    @property
    def _signer(self) -> Any:
        """Who signs records: our account when it is a live member, else the session
        key (a creator that did not encrypt for itself)."""
        if self._session_key is not None and not self.state.live_chains(
            self._me, now_ms=self._now()
        ):
            return self._session_key
        return self._manager.account

    def _check_live(self) -> None:
        if self.state.ended:
            raise SessionRevoked("the session was revoked")

    def _current(self) -> tuple[bytes, bytes]:
        self._check_live()
        now = self._now()
        cached = self._current_cache
        # The current epoch depends on the state (immutable: replaced on every change)
        # and, through expiries, on the time: kept for a second at most.
        if cached is not None and cached[0] is self.state and now < cached[1]:
            return cached[2], cached[3]
        epoch = self.state.current_epoch(now_ms=now)
        if epoch is None:
            raise UnknownEpoch(
                "no clean key epoch: a member was revoked and the key awaits its rotation "
                "by a holder of revoke (refresh)"
            )
        key = self._keys.get(epoch)
        if key is None:
            raise NotAMember("this account holds no key of the session's current epoch")
        self._current_cache = (self.state, now + 1000, epoch, key)
        return epoch, key

    async def _store(self, records: Iterable[core.Record]) -> None:
        encoded = [r.encoded for r in records]
        await self._manager._guard(
            self.session_id, self._manager.backend.store_records(self._actor, self.state, encoded)
        )
        self.state = self.state.add(*encoded)
        self._keys.update(self.state.epoch_keys(core_reader(self._manager.account)))
        await self._manager._cache_set(self)
        if self._fetched_ms is None:
            self._fetched_ms = self._now()

    async def refresh(self) -> EncryptionSession:
        """Fetch the session's records again (new members, epochs, revocations)."""
        records = await self._manager._guard(
            self.session_id,
            self._manager.backend.fetch_records(self._actor, self.session_id, self.state),
        )
        self.state = self.state.add(*records)
        self._fetched_ms = self._now()
        self._check_live()
        self._keys.update(self.state.epoch_keys(core_reader(self._manager.account)))
        await self._manager._cache_set(self)
        await self._rotate_if_needed()
        return self

    async def _fresh(self) -> None:
        """Refresh a state older than the manager's ``refresh_after_s`` (or from a
        cache): encrypting under an epoch rotated since would give a revoked member
        what is sent."""
        limit = self._manager.refresh_after_s
        if limit is None:
            return
        fetched = self._fetched_ms
        if fetched is None or self._now() - fetched > limit * 1000:
            await self.refresh()

    # --- messages -----------------------------------------------------------------------

    def encrypt_message(self, text: str | bytes, *, raw: bool = False) -> str:
        """``{"sessionId": ..., "data": ...}`` (JSON text), or the base64 data alone
        with ``raw=True``. Local: it uses the state this object holds, so after another
        member's revocation :meth:`refresh` first (:meth:`send` and :meth:`encrypt_file`
        refresh a state older than ``refresh_after_s`` by themselves)."""
        epoch, key = self._current()
        return core.encrypt_message(self.session_id, epoch, key, text, raw=raw)

    def decrypt_message(self, message: str | bytes) -> str:
        """The text of a message of this session (JSON or raw)."""
        return self.open_message(message).text

    def open_message(self, message: str | bytes) -> core.DecryptedMessage:
        """A message of this session, decrypted, with its epoch and (signed) author."""
        text = message.decode("utf-8", errors="replace") if isinstance(message, bytes) else message
        if isinstance(text, str) and text.lstrip().startswith("{") and len(text) < 100_000:
            # The JSON form naming this session: the data alone, to the core (its AEAD
            # binds the session anyway), so the ID's point check is not paid per message.
            try:
                doc = json.loads(text)
            except ValueError:
                doc = None
            if (
                isinstance(doc, dict)
                and set(doc) == {"sessionId", "data"}
                and doc["sessionId"] == self.id
                and isinstance(doc["data"], str)
            ):
                text = doc["data"]
        return core.decrypt_message(text, self.state, self._keys, now_ms=self._now())

    # --- members ------------------------------------------------------------------------

    async def add_recipients(
        self, recipients: RecipientsLike, *, rights: Iterable[str] | None = None
    ) -> None:
        """Add members (right ``forward``; a member gives no right it lacks). Each new
        member gets the current keys, so it reads the whole session (as in Seald)."""
        self._check_live()
        wanted = self._manager._members(recipients, rights)
        records = core.add_members(
            self.state, self._signer, wanted, keys=self._keys, now_ms=self._now()
        )
        await self._store(records)
        await self._manager.backend.invite(self._actor, self.state, records)

    async def revoke_recipients(
        self, recipients: Iterable[AccountId | str] | AccountId | str, *, keep_added: bool = False
    ) -> None:
        """Revoke members (see the module note: the policy says who may), then rotate
        the key for the remaining readers. ``keep_added``: re-add, by us, the members the
        revoked ones had added (who would otherwise lose their membership with them)."""
        self._check_live()
        if isinstance(recipients, str | AccountId):
            recipients = [recipients]
        now = self._now()
        targets = [core_member(_account_id(r), self._manager.account) for r in recipients]
        signer = self._signer
        readd: dict[Any, frozenset[str]] = {}
        if keep_added:
            before = self.state.members(now_ms=now)
        records: list[core.Record] = list(
            core.revoke_members(self.state, signer, targets, now_ms=now)
        )
        after = self.state.add(*records)
        if keep_added:
            still = after.members(now_ms=now)
            readd = {
                k: frozenset(m.rights)
                for k, m in before.items()
                if k not in still and k not in targets
            }
            if readd:
                records += core.add_members(after, signer, readd, keys=self._keys, now_ms=now)
                after = after.add(*records[-len(readd) :])
        # The new epoch in the same step. Without revoke (an adder revoking whom it added,
        # under the delegation policy), the revocations just made entitle us to it: the
        # epoch names them (veil.onion.group.state.session_state, "Rotation after a delegated
        # revocation").
        made = (
            []
            if REVOKE_RIGHT in self.rights
            else [r for r in records if isinstance(r, core.RevokeRecord)]
        )
        if REVOKE_RIGHT in self.rights or made:
            epoch, _key = core.rotate(
                after,
                signer,
                keys=self._keys,
                now_ms=now,
                carry_history=all(h in self._keys for h in after.heads),
                follows=made,
            )
            records.append(epoch)
        await self._store(records)

    async def _rotate_if_needed(self) -> None:
        now = self._now()
        if not self.state.needs_rotation(now_ms=now) or REVOKE_RIGHT not in self.rights:
            return
        epoch, _key = core.rotate(
            self.state,
            self._signer,
            keys=self._keys,
            now_ms=now,
            carry_history=all(h in self._keys for h in self.state.heads),
        )
        await self._store([epoch])

    async def revoke(self) -> None:
        """Revoke the whole session: nodes refuse it from now on and delete its
        messages; every member's next use fails with ``SessionRevoked``."""
        self._check_live()
        record = core.end_session(self.state, self._signer, now_ms=self._now())
        state = self.state
        await self._store([record])
        # The nodes drop the content on the end record; this is a courtesy.
        with contextlib.suppress(Exception):
            await self._manager.backend.delete_all(self._actor, state)
        await self._manager.cache.delete(self.id)
        await _maybe(self._manager.admin_keys.delete(self.id))

    # --- files --------------------------------------------------------------------------

    async def encrypt_file(
        self,
        data: Any,
        filename: str | None = None,
        size: int | None = None,
        *,
        out: Any = None,
        progress: Any = None,
    ) -> bytes | int:
        """Encrypt a file (bytes, binary file object, path, trio stream or async
        iterator of bytes) in constant memory; the encrypted bytes, or with ``out`` (a
        path, file object or trio stream) the number of bytes written. The header
        names the session, the file name and (if known) its size."""
        await self._fresh()
        epoch, key = self._current()
        name = filename or default_name(data)
        if name is None:
            raise InvalidArgument("give the file's name (it travels in the header)")
        if size is None:
            size = source_size(data)
        return await encrypt_stream(
            self.session_id, epoch, key, data, name, size, out, progress=progress
        )

    async def decrypt_file(
        self, data: Any, out: Any = None, *, progress: Any = None, _first: bytes = b""
    ) -> DecryptedFile:
        """Decrypt a file of this session (a file of another is ``WrongSession``);
        the data (or written to ``out``), its name, size and session."""
        self._check_live()
        return await decrypt_stream(
            self._keys, data, out, session=self.session_id, progress=progress, first=_first
        )

    # --- group chat ---------------------------------------------------------------------

    async def send(self, text: str | bytes, *, ttl_s: float = DEFAULT_MESSAGE_TTL_S) -> str:
        """Post a signed message to the session's group chat; its hash (hex)."""
        from veil.client.sessions.chat import send

        await self._fresh()
        return await send(self, text, ttl_s=ttl_s)

    def messages(self, *, follow: bool = True) -> AsyncIterator[GroupMessage]:
        """The chat's new messages, exactly once across restarts (recorded before they
        are yielded); long-polled, endless unless ``follow=False``."""
        from veil.client.sessions.chat import messages

        return messages(self, follow=follow)

    def history(self, *, limit: int = 100) -> list[GroupMessage]:
        """The chat messages this home has recorded, oldest first (no network)."""
        from veil.client.sessions.chat import history

        return history(self, limit=limit)

    def _require_value(self, value: object) -> None:
        if value is None:
            raise InvalidValue("missing value")
