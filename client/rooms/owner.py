"""What only a room's own home does: change its metadata (moderators, rules, name) and
keep the room alive.

Design note
-----------
Metadata is signed by the room's account, whose seed only the home that created the
room keeps (:mod:`veil.client.rooms.opening`): a change is new metadata with the next
``seq`` (:meth:`Ownership.update`, :meth:`Ownership.add_moderator`,
:meth:`Ownership.remove_moderator`), stored in the room's swarm and kept in the home.

**Keeping the room alive.** Records expire with their TTL (30 days), metadata and bans
too. Whenever the owner's home reads the room's records (:meth:`Room.info
<veil.client.rooms.room.Room.info>`, a post, a moderation), it signs the metadata anew
with the next ``seq`` once the copy the swarm holds is past half its TTL, or stores
the home's copy again if the swarm has none (a first store that failed, or the swarm
lost it), and issues again each ban in force whose copy is past half its TTL
(:meth:`Ownership._renew`).

:class:`Ownership` is a base class of :class:`~veil.client.rooms.room.Room`, kept apart
because it is one job; its methods are the room's.
"""

from __future__ import annotations

import contextlib
import sqlite3
from typing import TYPE_CHECKING

import trio

from veil.client.errors import InvalidArgument
from veil.client.rooms.errors import NotModerator, RoomNotFound
from veil.client.rooms.model import RECORD_TTL_MS, RoomRules, account_of, meta_of, moderations_of
from veil.onion import rpc
from veil.onion.errors import InvalidValue, VeilError
from veil.onion.keys import Account, AccountId
from veil.onion.room import RoomMeta, RoomState, decode_room_record, make_meta, make_moderation

if TYPE_CHECKING:
    from veil.client.veil_client import VeilClient
    from veil.onion.packet import Hop

__all__ = ["Ownership"]


class Ownership:
    """The room's home's part of :class:`~veil.client.rooms.room.Room` (see the module
    note). What it needs of the room:"""

    client: VeilClient
    id: AccountId
    owner: Account | None
    name: str | None
    _lock: trio.Lock
    _state: RoomState | None

    if TYPE_CHECKING:  # the class this is a base of defines these; declared for mypy

        async def fetch_state(self) -> RoomState: ...

        async def send_record(
            self, record: bytes, *, node: Hop | None = None
        ) -> rpc.StoreResult: ...

        def _db(self) -> sqlite3.Connection: ...

    def _owner(self) -> Account:
        if self.owner is None:
            raise NotModerator(
                "changing a room's metadata needs the room's own key, kept by the home "
                "that created it",
                local=True,
            )
        return self.owner

    async def update(
        self,
        *,
        name: str | None = None,
        description: str | None = None,
        rules: RoomRules | None = None,
        moderators: frozenset[AccountId] | None = None,
    ) -> RoomMeta:
        """New metadata (the next ``seq``), signed by the room's account; what is not
        given stays as it is."""
        owner = self._owner()
        state = await self.fetch_state()
        async with self._lock:
            meta = state.meta or self._stored_meta()
            if meta is None:
                raise RoomNotFound("the room has no metadata to change", local=True)
            new = self._sign_meta(
                owner,
                meta,
                name=name,
                description=description,
                rules=rules,
                moderators=moderators,
            )
            await self.send_record(new.encoded)
            self._store_meta(new)
            self._state = state.add(new)
            self.name = new.name
            return new

    async def add_moderator(self, account: AccountId | str) -> RoomMeta:
        who = account_of(account)
        meta = meta_of(await self.fetch_state(), self.id)
        return await self.update(moderators=meta.moderators | {who})

    async def remove_moderator(self, account: AccountId | str) -> RoomMeta:
        """Drop a moderator; what it did is void from then on (the owner re-issues what
        it wants kept), as :class:`~veil.onion.room.RoomState` reads it."""
        who = account_of(account)
        meta = meta_of(await self.fetch_state(), self.id)
        if who not in meta.moderators:
            raise InvalidArgument(f"{who} is not a moderator of this room")
        return await self.update(moderators=meta.moderators - {who})

    def _sign_meta(
        self,
        owner: Account,
        meta: RoomMeta,
        *,
        name: str | None = None,
        description: str | None = None,
        rules: RoomRules | None = None,
        moderators: frozenset[AccountId] | None = None,
    ) -> RoomMeta:
        rules = rules or RoomRules.of(meta)
        try:
            return make_meta(
                owner,
                seq=meta.seq + 1,
                name=meta.name if name is None else name,
                description=meta.description if description is None else description,
                rate=rules.rate,
                size=rules.size,
                pow_bits=rules.pow_bits,
                moderators=meta.moderators if moderators is None else moderators,
            )
        except InvalidValue as exc:
            raise InvalidArgument(str(exc)) from None

    def _stored_meta(self) -> RoomMeta | None:
        row = (
            self._db().execute("SELECT meta FROM owned WHERE room = ?", (str(self.id),)).fetchone()
        )
        if row is None or row[0] is None:
            return None
        record = decode_room_record(row[0])
        return record if isinstance(record, RoomMeta) else None

    def _store_meta(self, meta: RoomMeta) -> None:
        self._db().execute(
            "UPDATE owned SET meta = ?, meta_seq = ? WHERE room = ? "
            "AND (meta_seq IS NULL OR meta_seq < ?)",
            (meta.encoded, meta.seq, str(self.id), meta.seq),
        )

    async def _renew(self, state: RoomState, messages: list[rpc.Message]) -> RoomState:
        """The owner's upkeep (see the module note); the state with what it stored."""
        assert self.owner is not None
        now = self.client.clock.now()
        expiry = {m.data: m.expiry_ms for m in messages}
        half = RECORD_TTL_MS // 2
        meta = state.meta
        stored = self._stored_meta()
        if meta is None or (stored is not None and stored.seq > meta.seq):
            meta = stored  # the network lost it (or never took it): this home has it
            if meta is None:
                return state
            if expiry.get(meta.encoded) is None:
                with contextlib.suppress(VeilError):  # renewed below, with the next seq
                    await self.send_record(meta.encoded)
                    state = state.add(meta)
                    expiry[meta.encoded] = now + RECORD_TTL_MS
        if expiry.get(meta.encoded, 0) - now < half:
            renewed = self._sign_meta(self.owner, meta)
            await self.send_record(renewed.encoded)
            self._store_meta(renewed)
            state = state.add(renewed)
        for mod in moderations_of(state):
            if (
                mod.op == "ban"
                and mod.who is not None
                and state.banned_since(mod.who) == mod.timestamp_ms
                and expiry.get(mod.encoded, now + RECORD_TTL_MS) - now < half
            ):
                again = make_moderation(self.owner, self.id, "ban", now_ms=now, who=mod.who)
                await self.send_record(again.encoded)
                state = state.add(again)
        return state
