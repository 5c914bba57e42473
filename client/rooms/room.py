"""A room (open groups, issue 16) on the client: post, read, moderate, and its info.

Design note
-----------
A room is an account (its ID is the room's) whose room namespace
(:data:`ROOM_NAMESPACE`) holds one room record per message
(:mod:`veil.onion.room`): the owner's signed metadata (name, description, rules,
moderators), posts signed by their authors, and moderators' deletes and bans. The nodes
of the room's swarm judge every record before they store it
(:class:`~veil.onion.room.RoomState`), so a store there needs no request signature:
the record is signed. Every record is stored for the namespace's longest TTL (30 days).

* **Creating and opening** a room: :mod:`veil.client.rooms.opening`.
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
* **Its home's part** (metadata, and keeping the room alive past its records' TTL):
  :mod:`veil.client.rooms.owner`.
* **Reading** (:meth:`Room.messages`) is :class:`~veil.client.rooms.reader.RoomReader`:
  unsigned long-polls, verified, moderation applied, exactly once across restarts.
  The reads a post or a moderation needs (the room's rules and moderators, cached for
  :data:`STATE_MAX_AGE_S`) go the same unsigned way, on the room's own paths.

Every refusal is a typed :class:`~veil.client.rooms.errors.RoomRefused` saying which
(``local`` when this client refused before sending).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import trio

from veil.client.channels.polling import PublicPoller
from veil.client.errors import InvalidArgument
from veil.client.rooms.errors import (
    AuthorIsBanned,
    NotModerator,
    RoomPostTooLarge,
    RoomRateExceeded,
    room_error,
)
from veil.client.rooms.links import format_room_link
from veil.client.rooms.model import (
    RECORD_TTL_MS,
    STATE_MAX_AGE_S,
    RoomInfo,
    RoomRules,
    account_of,
    decoded_records,
    meta_of,
    moderations_of,
    post_id_of,
)
from veil.client.rooms.owner import Ownership
from veil.client.rooms.reader import USER_READER, RoomEvent, RoomReader
from veil.client.rooms.store import open_rooms_db
from veil.onion import rpc
from veil.onion.capability import DelegatedSigner
from veil.onion.errors import InvalidValue, VeilError
from veil.onion.keys import Account, AccountId
from veil.onion.room import (
    RATE_WINDOW_MS,
    ROOM_NAMESPACE,
    Moderation,
    RoomPost,
    RoomState,
    make_moderation,
    make_room_post,
)

if TYPE_CHECKING:
    from veil.client.veil_client import VeilClient
    from veil.onion.packet import Hop

__all__ = ["RECORD_TTL_MS", "ROOM_NAMESPACE", "STATE_MAX_AGE_S", "Room"]


class Room(Ownership):
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
            state = RoomState(self.id, decoded_records(m.data for m in messages))
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
        meta = meta_of(state, self.id)
        banned = sorted(
            {r.who for r in moderations_of(state) if r.who is not None and state.is_banned(r.who)},
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
        parent = None if reply_to is None else post_id_of(reply_to)
        state = await self._current()
        meta = meta_of(state, self.id)
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
        return RoomRules.of(meta_of(await self._current(), self.id))

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
        meta_of(state, self.id)
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
        return await self._moderate("delete", post_ids=[post_id_of(p) for p in posts])

    async def ban(self, author: AccountId | str, *, delete_past: bool = False) -> Moderation:
        """Ban ``author``: nodes refuse its posts from now; ``delete_past`` also removes
        every post it made before."""
        return await self._moderate("ban", who=account_of(author), delete_past=delete_past)

    async def unban(self, author: AccountId | str) -> Moderation:
        """Lift ``author``'s ban (posts a ban with ``delete_past`` removed stay removed)."""
        return await self._moderate("unban", who=account_of(author))
