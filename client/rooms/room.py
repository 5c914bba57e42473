"""Rooms (open groups, issue 16) on the client: create, open, post, moderate, read.

Design note
-----------
A room is an account (its ID is the room's) whose room namespace
(:data:`ROOM_NAMESPACE`) holds one room record per message
(:mod:`veil.onion.room`): the owner's signed metadata (name, description, rules,
moderators), posts signed by their authors, and moderators' deletes and bans. The nodes
of the room's swarm judge every record before they store it
(:class:`~veil.onion.room.RoomState`), so a store there needs no request signature:
the record is signed. Every record is stored for the namespace's longest TTL (30 days).

* **Creating** (:func:`create_room`) makes a fresh account whose seed this home keeps
  sealed (``HOME/rooms.sqlite``, as channels keep theirs) with the metadata it signed,
  *then* stores the metadata: a room whose first store failed is not lost, and
  :meth:`Room.info` (or any call that reads the room) by its owner stores it again.
* **Posting** (:meth:`Room.post`) checks what it can first, with nothing sent: the
  room's size rule, its rate (this home's own posts in the last minute, kept in
  ``rooms.sqlite``), a ban of the author. It then signs the post as the client's
  account (or its delegated key, whose capability must hold ``post`` in the account's
  own room namespace: ``self:-2:post``, good in every room) and solves the room's
  proof of work in a worker thread (``trio.to_thread``: the trio thread keeps
  serving; a cancelled post abandons the thread, which finishes its hashing and is
  dropped), and stores it through an onion path. A retry after a lost reply stores
  the same bytes, which the nodes take once.
* **Moderating** (:meth:`Room.delete`, :meth:`Room.ban`, :meth:`Room.unban`) signs a
  moderation record as the room's account when this home owns the room, else as the
  client's account, which the metadata must list as a moderator. Changing the
  moderators or rules (:meth:`Room.add_moderator`, :meth:`Room.update`) is new metadata
  with the next ``seq``, signed by the room's account: only its home can.
* **Keeping the room alive.** Records expire with their TTL, metadata and bans too.
  Whenever the owner's home reads the room's records (:meth:`Room.info`, a post, a
  moderation), it signs the metadata anew with the next ``seq`` once the held copy is
  past half its TTL (or gone), and re-issues each ban in force past half its TTL.
* **Reading** (:meth:`Room.messages`) is :class:`~veil.client.rooms.reader.RoomReader`:
  unsigned long-polls, verified, moderation applied, exactly once across restarts.
  The reads a post or a moderation needs (the room's rules and moderators, cached for
  :data:`STATE_MAX_AGE_S`) go the same unsigned way, on the room's own paths.

Every refusal is a typed :class:`~veil.client.rooms.errors.RoomRefused` saying which
(``local`` when this client refused before sending).
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import trio

from veil.client.channels.keys import open_account_seed, seal_account_seed
from veil.client.channels.polling import PublicPoller
from veil.client.channels.store import transaction
from veil.client.errors import InvalidArgument
from veil.client.rooms.errors import (
    AuthorIsBanned,
    NotModerator,
    RoomNotFound,
    RoomPostTooLarge,
    RoomRateExceeded,
    room_error,
)
from veil.client.rooms.links import format_room_link, room_id_of
from veil.client.rooms.reader import USER_READER, RoomEvent, RoomReader
from veil.client.rooms.store import open_rooms_db
from veil.onion import rpc
from veil.onion.capability import DelegatedSigner
from veil.onion.errors import InvalidId, InvalidValue, RoomError, VeilError
from veil.onion.keys import Account, AccountId
from veil.onion.room import (
    DEFAULT_RATE,
    DEFAULT_SIZE,
    MAX_POW_BITS,
    MAX_RATE,
    MAX_TEXT_BYTES,
    RATE_WINDOW_MS,
    ROOM_NAMESPACE,
    Moderation,
    RoomMeta,
    RoomPost,
    RoomRecord,
    RoomState,
    decode_room_record,
    make_meta,
    make_moderation,
    make_room_post,
)

if TYPE_CHECKING:
    from veil.client.home import Home
    from veil.client.veil_client import VeilClient
    from veil.onion.packet import Hop

__all__ = [
    "RECORD_TTL_MS",
    "ROOM_NAMESPACE",
    "STATE_MAX_AGE_S",
    "KnownRoom",
    "Room",
    "RoomInfo",
    "RoomRules",
    "create_room",
    "list_rooms",
    "open_room",
]

#: Every room record is stored for the namespace's longest TTL.
RECORD_TTL_MS: Final = rpc.max_ttl_ms(ROOM_NAMESPACE)
#: How long the room's rules and moderators read for a post or a moderation are used.
STATE_MAX_AGE_S: Final = 60.0
_SEED_PURPOSE: Final = b"veil/room-seed"
_SEED_WHY: Final = "a room's seed (kept sealed under the home account's key)"


@dataclass(frozen=True, slots=True)
class RoomRules:
    """What a room asks of a post: at most ``rate`` posts per author a minute, texts of
    at most ``size`` UTF-8 bytes, ``pow_bits`` bits of proof of work (0: none; each bit
    doubles an honest poster's CPU: see the README for this machine's figures)."""

    rate: int = DEFAULT_RATE
    size: int = DEFAULT_SIZE
    pow_bits: int = 0

    def __post_init__(self) -> None:
        for value, low, high, what in (
            (self.rate, 1, MAX_RATE, "rate (posts a minute)"),
            (self.size, 1, MAX_TEXT_BYTES, "size (bytes)"),
            (self.pow_bits, 0, MAX_POW_BITS, "pow_bits"),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InvalidArgument(f"a room's {what} is {low} to {high}")

    @classmethod
    def of(cls, meta: RoomMeta) -> RoomRules:
        return cls(meta.rate, meta.size, meta.pow_bits)


@dataclass(frozen=True, slots=True)
class RoomInfo:
    """A room as its records say now (:meth:`Room.info`)."""

    id: AccountId
    name: str
    description: str
    rules: RoomRules
    moderators: tuple[AccountId, ...]
    seq: int
    banned: tuple[AccountId, ...]
    posts: int
    owned: bool
    conflict: bool = False
    link: str = field(default="")

    def to_json(self) -> dict[str, object]:
        return {
            "id": str(self.id),
            "link": self.link or format_room_link(self.id),
            "name": self.name,
            "description": self.description,
            "rules": {
                "rate": self.rules.rate,
                "size": self.rules.size,
                "pow_bits": self.rules.pow_bits,
            },
            "moderators": [str(m) for m in self.moderators],
            "seq": self.seq,
            "banned": [str(b) for b in self.banned],
            "posts": self.posts,
            "owned": self.owned,
            "conflict": self.conflict,
        }


def _post_id(post: bytes | str | RoomPost) -> bytes:
    if isinstance(post, RoomPost):
        return post.post_id
    if isinstance(post, str):
        try:
            post = bytes.fromhex(post)
        except ValueError:
            raise InvalidArgument("a post ID is 64 hex digits") from None
    if not isinstance(post, bytes) or len(post) != 32:
        raise InvalidArgument("a post ID is 32 bytes (64 hex digits)")
    return post


def _account(who: AccountId | str) -> AccountId:
    if isinstance(who, AccountId):
        return who
    try:
        return AccountId.parse(who)
    except InvalidId as exc:
        raise InvalidArgument(f"not an account ID: {exc}") from None


class Room:
    """A room, to post in, read and (for its home and moderators) moderate. Make one
    with :func:`create_room` or :func:`open_room`. ``owner`` is the room's account when
    this home created it (None otherwise)."""

    def __init__(
        self,
        client: VeilClient,
        room: AccountId,
        *,
        owner: Account | None = None,
        name: str | None = None,
    ) -> None:
        if owner is not None and owner.id != room:
            raise InvalidArgument("the owner's account is the room's")
        self.client = client
        self.id = room
        self.owner = owner
        self.name = name
        self._poller = PublicPoller(client, room, ROOM_NAMESPACE)
        self._state: RoomState | None = None
        self._state_at = 0.0
        self._lock = trio.Lock()
        self._conn: sqlite3.Connection | None = None

    @property
    def link(self) -> str:
        """``veil://room/<id>``: what one gives to people to join."""
        return format_room_link(self.id)

    # --- the room's records ------------------------------------------------------------

    async def fetch_state(self) -> RoomState:
        """Read every record of the room now (unsigned, on the room's own paths) and
        the state they make; the owner's home renews what is past half its TTL."""
        async with self._lock:
            messages = await self._poller.read_all()
            state = RoomState(self.id, _decoded(m.data for m in messages))
            if self.owner is not None:
                state = await self._renew(state, messages)
            self._state, self._state_at = state, trio.current_time()
            if state.meta is not None:
                self.name = state.meta.name
            return state

    async def _current(self) -> RoomState:
        if self._state is None or trio.current_time() - self._state_at > STATE_MAX_AGE_S:
            return await self.fetch_state()
        return self._state

    async def info(self) -> RoomInfo:
        """The room's metadata, moderators, bans and visible posts now.
        :class:`~veil.client.rooms.errors.RoomNotFound` if it has no metadata."""
        state = await self.fetch_state()
        meta = _meta_of(state, self.id)
        banned = sorted(
            {r.who for r in _moderations(state) if r.who is not None and state.is_banned(r.who)},
            key=str,
        )
        return RoomInfo(
            id=self.id,
            name=meta.name,
            description=meta.description,
            rules=RoomRules.of(meta),
            moderators=tuple(sorted(meta.moderators, key=str)),
            seq=meta.seq,
            banned=tuple(banned),
            posts=len(state.posts()),
            owned=self.owner is not None,
            conflict=state.conflict,
            link=self.link,
        )

    async def send_record(self, record: bytes, *, node: Hop | None = None) -> rpc.StoreResult:
        """Store one room record (made here, or with :mod:`veil.onion.room`'s
        ``make_*``) at a node of the room's swarm, or at ``node``; no request signature
        (the record is signed). A refusal is the typed
        :class:`~veil.client.rooms.errors.RoomRefused` of its reason."""
        room = self.id

        def build(now_ms: int) -> bytes:
            return rpc.make_store(
                room, record, RECORD_TTL_MS, now_ms=now_ms, namespace=ROOM_NAMESPACE
            )

        try:
            if node is None:
                reply = await self.client.call(build, account=room)
            else:
                reply = await self.client.call(build, destination=node)
        except VeilError as exc:
            typed = room_error(exc)
            if typed is exc:
                raise
            raise typed from exc
        assert reply.result is not None
        return rpc.StoreResult.from_wire(reply.result)

    # --- posting -----------------------------------------------------------------------

    def _author(self) -> tuple[Account | DelegatedSigner, AccountId]:
        """The post's signer (the account, or its delegated key) and the author."""
        return self.client.signer("store", ROOM_NAMESPACE), self.client.account_id

    async def make_post(
        self, text: str, *, reply_to: bytes | str | RoomPost | None = None
    ) -> RoomPost:
        """A post by this client's account, checked against the room's rules and with
        its work done (in a worker thread), not sent: :meth:`send_record` sends it."""
        if not isinstance(text, str):
            raise InvalidArgument("a post's text is a str")
        parent = None if reply_to is None else _post_id(reply_to)
        state = await self._current()
        meta = _meta_of(state, self.id)
        signer, author = self._author()
        size = len(text.encode())
        if size > meta.size:
            raise RoomPostTooLarge(
                f"the room takes posts of {meta.size} bytes at most; this one is {size}",
                local=True,
            )
        if state.is_banned(author):
            raise AuthorIsBanned("this account is banned from the room", local=True)
        self._check_rate(author, meta.rate)
        now_ms = self.client.clock.now()
        make = functools.partial(
            make_room_post,
            signer,
            self.id,
            text,
            now_ms=now_ms,
            reply_to=parent,
            pow_bits=meta.pow_bits,
        )
        if meta.pow_bits:
            return await trio.to_thread.run_sync(make, abandon_on_cancel=True)
        return make()

    async def post(self, text: str, *, reply_to: bytes | str | RoomPost | None = None) -> RoomPost:
        """Post ``text`` (a reply to ``reply_to``, a post or its ID) as this client's
        account; the post once the room's swarm took it. Refusals: see the module note."""
        post = await self.make_post(text, reply_to=reply_to)
        await self.send_post(post)
        return post

    async def send_post(self, post: RoomPost) -> rpc.StoreResult:
        """Store a post made by :meth:`make_post` (again, after a lost reply: the nodes
        take the same bytes once), and count it for the local rate check."""
        result = await self.send_record(post.encoded)
        self._sent(post)
        return result

    async def rules(self) -> RoomRules:
        """The room's rules (read at most :data:`STATE_MAX_AGE_S` ago)."""
        return RoomRules.of(_meta_of(await self._current(), self.id))

    async def holds(self, record: bytes) -> bool:
        """Whether a node of the room's swarm holds ``record`` now (unsigned read)."""
        return any(m.data == record for m in await self._poller.read_all())

    def _db(self) -> sqlite3.Connection:
        """This room's connection to ``HOME/rooms.sqlite`` for its own bookkeeping (the
        posts sent for the rate check, the owner's latest metadata), opened once. Its
        writes do not wait for the disk (``synchronous=NORMAL`` under WAL: they survive
        the process's crash, not a power cut): losing the last of them costs at most a
        post the nodes refuse for the rate, or metadata the nodes hold anyway; and a
        write that waited would hold the trio thread for milliseconds a post."""
        if self._conn is None:
            self._conn = open_rooms_db(self.client)
            self._conn.execute("PRAGMA synchronous=NORMAL")
        return self._conn

    def close(self) -> None:
        """Close this room's database connection (opened again if the room is used)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _check_rate(self, author: AccountId, rate: int) -> None:
        now = self.client.clock.now()
        rows = (
            self._db()
            .execute(
                "SELECT ts_ms FROM sent WHERE room = ? AND author = ? AND ts_ms >= ? "
                "ORDER BY ts_ms",
                (str(self.id), str(author), now - RATE_WINDOW_MS),
            )
            .fetchall()
        )
        if len(rows) >= rate:
            wait_ms = rows[len(rows) - rate][0] + RATE_WINDOW_MS - now
            raise RoomRateExceeded(
                f"the room takes {rate} posts a minute from an author",
                local=True,
                retry_after_s=max(wait_ms, 0) / 1000,
            )

    def _sent(self, post: RoomPost) -> None:
        db = self._db()
        db.execute("DELETE FROM sent WHERE ts_ms < ?", (post.timestamp_ms - 2 * RATE_WINDOW_MS,))
        db.execute(
            "INSERT OR IGNORE INTO sent (post_id, room, author, ts_ms) VALUES (?, ?, ?, ?)",
            (post.post_id, str(self.id), str(post.author), post.timestamp_ms),
        )

    # --- reading -----------------------------------------------------------------------

    def messages(
        self, since: int | None = None, *, reader: str = USER_READER
    ) -> AsyncIterator[RoomEvent]:
        """The room's posts (:class:`~veil.onion.room.RoomPost`) and the deletions of
        posts given earlier (:class:`~veil.client.rooms.reader.PostDeleted`), as they
        come, exactly once across restarts of this home; ``since`` (ms) passes over
        posts dated before it; ``reader`` names whose position it is (a bot's is its
        own). Forever; unsigned reads only (see :mod:`veil.client.rooms.reader`)."""
        return RoomReader(self.client, self.id, ROOM_NAMESPACE, since=since, reader=reader).events()

    async def read(self, since: int | None = None, *, reader: str = USER_READER) -> list[RoomEvent]:
        """What :meth:`messages` has for this reader now, without waiting for more:
        the posts and deletions not yet taken, each recorded as taken."""
        events = RoomReader(self.client, self.id, ROOM_NAMESPACE, since=since, reader=reader)
        async with aclosing(events.events(follow=False)) as each:
            return [event async for event in each]

    # --- moderating --------------------------------------------------------------------

    def _moderator(self) -> tuple[Account | DelegatedSigner, AccountId]:
        if self.owner is not None:
            return self.owner, self.owner.id
        return self.client.signer("store", ROOM_NAMESPACE), self.client.account_id

    async def _moderate(self, op: str, **kwargs: Any) -> Moderation:
        state = await self._current()
        signer, who = self._moderator()
        _meta_of(state, self.id)
        if not state.may_moderate(who):
            raise NotModerator(
                f"{who} is neither the room's owner nor one of its moderators", local=True
            )
        try:
            record = make_moderation(signer, self.id, op, now_ms=self.client.clock.now(), **kwargs)
        except InvalidValue as exc:
            raise InvalidArgument(str(exc)) from None
        await self.send_record(record.encoded)
        self._state = state.add(record)
        return record

    async def delete(self, *posts: bytes | str | RoomPost) -> Moderation:
        """Delete posts (by post or ID) for everyone: nodes drop them, readers hide
        them (a reader that showed one yields its deletion)."""
        if not posts:
            raise InvalidArgument("name at least one post to delete")
        return await self._moderate("delete", post_ids=[_post_id(p) for p in posts])

    async def ban(self, author: AccountId | str, *, delete_past: bool = False) -> Moderation:
        """Ban ``author``: nodes refuse its posts from now; ``delete_past`` also removes
        every post it made before."""
        return await self._moderate("ban", who=_account(author), delete_past=delete_past)

    async def unban(self, author: AccountId | str) -> Moderation:
        """Lift ``author``'s ban (posts a ban with ``delete_past`` removed stay removed)."""
        return await self._moderate("unban", who=_account(author))

    # --- metadata (the room's home only) -----------------------------------------------

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
        who = _account(account)
        meta = _meta_of(await self.fetch_state(), self.id)
        return await self.update(moderators=meta.moderators | {who})

    async def remove_moderator(self, account: AccountId | str) -> RoomMeta:
        """Drop a moderator; what it did is void from then on (the owner re-issues what
        it wants kept), as :class:`~veil.onion.room.RoomState` reads it."""
        who = _account(account)
        meta = _meta_of(await self.fetch_state(), self.id)
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
        for mod in _moderations(state):
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


def _meta_of(state: RoomState, room: AccountId) -> RoomMeta:
    if state.meta is None:
        raise RoomNotFound(
            f"room {room} has no metadata: not created, expired, or not a room", local=True
        )
    return state.meta


def _decoded(data: Iterable[bytes]) -> list[RoomRecord]:
    """The records that parse and verify (RoomState counts the others as rejected)."""
    out: list[RoomRecord] = []
    for each in data:
        with contextlib.suppress(RoomError):
            out.append(decode_room_record(each))
    return out


def _moderations(state: RoomState) -> list[Moderation]:
    """The moderation records a state holds (decoded again: a few, beside the posts)."""
    kinds = (b"\x61t\x63mod",)  # the canonical encoding of "t": "mod"
    return [
        r
        for r in _decoded(e for e in state.encoded() if any(k in e for k in kinds))
        if isinstance(r, Moderation)
    ]


# --- making and opening rooms ----------------------------------------------------------


async def create_room(
    client: VeilClient,
    name: str,
    *,
    description: str = "",
    rules: RoomRules | None = None,
) -> Room:
    """A new room (a fresh account kept in this home) named ``name``, with its
    ``description`` and ``rules``; its metadata stored in its swarm."""
    rules = rules or RoomRules()
    home_account = client.require_seed(_SEED_WHY)
    account = Account.generate()
    try:
        meta = make_meta(
            account,
            seq=1,
            name=name,
            description=description,
            rate=rules.rate,
            size=rules.size,
            pow_bits=rules.pow_bits,
        )
    except InvalidValue as exc:
        raise InvalidArgument(str(exc)) from None
    db = open_rooms_db(client)
    try:
        with transaction(db):
            db.execute(
                "INSERT INTO owned (room, name, seed, created_ms, meta, meta_seq) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    str(account.id),
                    name,
                    seal_account_seed(home_account, _SEED_PURPOSE, account),
                    int(time.time() * 1000),
                    meta.encoded,
                    meta.seq,
                ),
            )
    except sqlite3.IntegrityError:
        raise InvalidArgument(f"this home has a room named {name!r} already") from None
    finally:
        db.close()
    room = Room(client, account.id, owner=account, name=name)
    await room.send_record(meta.encoded)
    room._state, room._state_at = RoomState(account.id, [meta]), trio.current_time()
    return room


def open_room(client: VeilClient, room: AccountId | str, *, as_owner: bool = True) -> Room:
    """A room by the name this home gave it, or by its ID or link (no network). A room
    this home created comes with its key (for metadata changes and the owner's upkeep)
    when ``as_owner`` and the client holds the home account's seed."""
    db = open_rooms_db(client)
    try:
        row = db.execute(
            "SELECT name, room, seed FROM owned WHERE name = ? OR room = ?",
            (str(room), str(room)),
        ).fetchone()
    finally:
        db.close()
    if row is None:
        return Room(client, room_id_of(room))
    name, ident, sealed = row[0], AccountId.parse(row[1]), row[2]
    if client.account is None or not as_owner:  # e.g. a delegated client: a member
        return Room(client, ident, name=name)
    owner = open_account_seed(
        client.require_seed(_SEED_WHY), _SEED_PURPOSE, ident, sealed, f"room {name!r}"
    )
    return Room(client, ident, owner=owner, name=name)


@dataclass(frozen=True, slots=True)
class KnownRoom:
    """A room this home created or reads (no network): name (its own rooms'), posts
    its user's reader has taken, records dropped."""

    id: AccountId
    name: str | None
    owned: bool
    taken: int = 0
    dropped: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "id": str(self.id),
            "link": format_room_link(self.id),
            "name": self.name,
            "owned": self.owned,
            "taken": self.taken,
            "dropped": self.dropped,
        }


def list_rooms(where: VeilClient | Home) -> list[KnownRoom]:
    """The rooms this home created, then the others it reads (no network)."""
    db = open_rooms_db(where)
    try:
        owned = db.execute("SELECT room, name FROM owned ORDER BY created_ms").fetchall()
        read = db.execute(
            "SELECT r.room, "
            "(SELECT COUNT(*) FROM shown s WHERE s.room = r.room AND s.reader = r.reader "
            " AND s.state != 'skipped'), "
            "(SELECT COUNT(*) FROM records d WHERE d.room = r.room AND d.data IS NULL) "
            "FROM readers r WHERE r.reader = ? ORDER BY r.room",
            (USER_READER,),
        ).fetchall()
    finally:
        db.close()
    counts = {room: (taken, dropped) for room, taken, dropped in read}
    out = [KnownRoom(AccountId.parse(r), n, True, *counts.pop(r, (0, 0))) for r, n in owned]
    out += [KnownRoom(AccountId.parse(r), None, False, t, d) for r, (t, d) in counts.items()]
    return out
