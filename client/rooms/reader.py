"""Reading a room: verified posts with moderation applied, exactly once, naming no one.

Design note
-----------
A :class:`RoomReader` reads the room's namespace
(:data:`~veil.client.rooms.room.ROOM_NAMESPACE`) with the follow machinery channels use
(:class:`~veil.client.channels.polling.PublicPoller`: unsigned long-polls through onion
paths of the reader's own, random timing), so a node sees that someone reads the room
and never who. It keeps every record it took in ``HOME/rooms.sqlite``
(:mod:`veil.client.rooms.store`) and the room's state is
:class:`~veil.onion.room.RoomState` over them: the reader applies the moderation
records itself, so a post a node failed to delete is not shown either.

**What is yielded** is a difference: the posts the state shows that this reader has not
handed over (:class:`~veil.onion.room.RoomPost`), and the posts it handed over that
the state no longer shows (:class:`PostDeleted`: a delete, or a ban with
``delete_past``, that came after the post). Changes are handed over once the reader
has caught up with the node (a page after which nothing more follows), so a post
deleted anywhere in the history a reader catches up on is never yielded. Each change is
written to the ``shown`` table just *before* it is yielded, so a post and its deletion
are each yielded at most once; and since the difference is computed from what is
stored, a reader stopped anywhere (cancelled, killed, or its caller stopped iterating)
resumes with what is left. (A process killed between a mark and its yield has that
post recorded as shown and not handed over: the inbox's promise, as
:mod:`veil.client.messaging` states it.) ``since`` (ms) passes over posts dated before
it (recorded as passed over).

**What a record must be to count**: it parses and its signature verifies, it names
this room (:func:`~veil.onion.room.decode_room_record`); a post also meets the rules of
the metadata held when it arrives (the room's size and proof of work), as a node would
have checked. Anything else is dropped and counted (:attr:`RoomReader.dropped`), never
shown: a node cannot inject posts, nor flood a reader with posts that cost no work.
A post that arrives before any metadata is judged by signature only.

Cost: a page read costs one transaction (its records and the position), and each post
or deletion handed over one more (its mark, made before it is yielded); a new post is
checked against the room's moderation records only, while a moderation or metadata
record rebuilds the state from every record held (rare). Opening a reader reads and
verifies the stored records once, in a worker thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import trio

from veil.client.channels.polling import PublicPoller
from veil.client.channels.store import transaction
from veil.client.rooms.store import open_rooms_db
from veil.onion import rpc
from veil.onion.errors import RoomError
from veil.onion.keys import AccountId
from veil.onion.room import (
    RoomMeta,
    RoomPost,
    RoomRecord,
    RoomState,
    check_pow,
    decode_room_record,
)

if TYPE_CHECKING:
    from veil.client.veil_client import VeilClient

__all__ = ["PostDeleted", "RoomEvent", "RoomReader", "post_json", "shown_posts"]

#: The user's reader; a bot reads under its own name, so each has its own position.
USER_READER: Final = ""


@dataclass(frozen=True, slots=True)
class PostDeleted:
    """A post yielded earlier that the room's moderators have since removed."""

    room: AccountId
    post_id: bytes

    def to_json(self) -> dict[str, object]:
        return {"type": "deleted", "room": str(self.room), "post_id": self.post_id.hex()}


RoomEvent = RoomPost | PostDeleted


def post_json(post: RoomPost) -> dict[str, object]:
    """A post as JSON (``veil room read --json``)."""
    return {
        "type": "post",
        "room": str(post.room),
        "post_id": post.post_id.hex(),
        "author": str(post.author),
        "ts": post.timestamp_ms,
        "text": post.text,
        "reply_to": post.reply_to.hex() if post.reply_to is not None else None,
    }


class RoomReader:
    """One room read by one reader of this home (see the module note). ``reader``
    names whose position and ``shown`` set this is (``""``: the user's)."""

    def __init__(
        self,
        client: VeilClient,
        room: AccountId,
        namespace: int,
        *,
        since: int | None = None,
        reader: str = USER_READER,
    ) -> None:
        self.client = client
        self.room = room
        self.since = since
        self.reader = reader
        self.poller = PublicPoller(client, room, namespace)
        #: Records taken that do not count (see the module note).
        self.dropped = 0
        #: Posts yielded by this reader (all its runs).
        self.taken = 0
        self._control: dict[bytes, RoomRecord] = {}
        self._posts: dict[bytes, RoomPost] = {}
        self._shown: dict[bytes, str] = {}
        self._state: RoomState | None = None
        #: Posts taken since the last hand-over; whether a moderation record came too.
        self._fresh: list[RoomPost] = []
        self._moderated = False
        self.db: sqlite3.Connection | None = None

    @property
    def state(self) -> RoomState:
        """The room's state over the records held (built when asked)."""
        if self._state is None:
            self._state = RoomState(self.room, [*self._control.values(), *self._posts.values()])
        return self._state

    # --- stored records ------------------------------------------------------------------

    def _load(self) -> None:
        """Open the database and read what this home holds of the room (a worker
        thread: it verifies every stored record)."""
        db = self.db = open_rooms_db(self.client)
        room = str(self.room)
        db.execute(
            "INSERT OR IGNORE INTO readers (room, reader) VALUES (?, ?)", (room, self.reader)
        )
        now = self.client.clock.now()
        with transaction(db):  # what the nodes have let go of, this home lets go of too
            gone = db.execute(
                "SELECT post_id FROM records WHERE room = ? AND expiry_ms < ? AND post_id "
                "IS NOT NULL",
                (room, now),
            ).fetchall()
            db.executemany(
                "DELETE FROM shown WHERE room = ? AND post_id = ?", [(room, g[0]) for g in gone]
            )
            db.execute("DELETE FROM records WHERE room = ? AND expiry_ms < ?", (room, now))
        for (data,) in db.execute(
            "SELECT data FROM records WHERE room = ? AND data IS NOT NULL ORDER BY rowid",
            (room,),
        ):
            try:
                self._keep(decode_room_record(data))
            except RoomError:
                continue  # stored by an older version's rules: not counted again
        (self.dropped,) = db.execute(
            "SELECT COUNT(*) FROM records WHERE room = ? AND data IS NULL", (room,)
        ).fetchone()
        self._shown = dict(
            db.execute(
                "SELECT post_id, state FROM shown WHERE room = ? AND reader = ?",
                (room, self.reader),
            ).fetchall()
        )
        self.taken = sum(1 for s in self._shown.values() if s != "skipped")

    def _keep(self, record: RoomRecord) -> None:
        if isinstance(record, RoomPost):
            self._posts[record.post_id] = record
        else:
            self._control[record.encoded] = record
        self._state = None

    def _counts(self, record: RoomRecord) -> bool:
        """Whether a record read counts (see the module note)."""
        if record.room != self.room:
            return False
        if not isinstance(record, RoomPost):
            return True
        meta = self._meta()
        if meta is None:
            return True
        if len(record.text.encode()) > meta.size:
            return False
        try:
            check_pow(record.work_bytes, record.pow_nonce, meta.pow_bits)
        except RoomError:
            return False
        return True

    def _meta(self) -> RoomMeta | None:
        metas = [r for r in self._control.values() if isinstance(r, RoomMeta)]
        return max(metas, key=lambda m: m.seq) if metas else None

    # --- the position (polling.Position) ---------------------------------------------

    def _db(self) -> sqlite3.Connection:
        assert self.db is not None, "the reader is not open"
        return self.db

    def position(self) -> bytes | None:
        row = (
            self._db()
            .execute(
                "SELECT last_hash FROM readers WHERE room = ? AND reader = ?",
                (str(self.room), self.reader),
            )
            .fetchone()
        )
        return row[0] if row else None

    def held(self, message_hash: bytes) -> bool:
        row = (
            self._db()
            .execute(
                "SELECT 1 FROM records WHERE room = ? AND hash = ?", (str(self.room), message_hash)
            )
            .fetchone()
        )
        return row is not None

    def move_to(self, message_hash: bytes) -> None:
        self._db().execute(
            "UPDATE readers SET last_hash = ? WHERE room = ? AND reader = ?",
            (message_hash, str(self.room), self.reader),
        )

    # --- events --------------------------------------------------------------------------

    def _mark(self, db: sqlite3.Connection, post_id: bytes, state: str) -> None:
        db.execute(
            "INSERT OR REPLACE INTO shown (room, reader, post_id, state) VALUES (?, ?, ?, ?)",
            (str(self.room), self.reader, post_id, state),
        )

    def _difference(self) -> list[tuple[RoomEvent, str]]:
        """What the state shows that this reader has not handed over, and what it
        handed over that the state no longer shows, with the ``shown`` state of each."""
        visible = self.state.posts()
        out: list[tuple[RoomEvent, str]] = []
        for post in visible:
            if post.post_id not in self._shown:
                out.append((post, self._verdict(post)))
        ids = {p.post_id for p in visible}
        for post_id, state in self._shown.items():
            if state == "shown" and post_id not in ids:
                out.append((PostDeleted(self.room, post_id), "deleted"))
        return out

    def _verdict(self, post: RoomPost) -> str:
        return "skipped" if self.since is not None and post.timestamp_ms < self.since else "shown"

    def _take(self, page: list[rpc.Message]) -> None:
        """Record a page's messages (one transaction: the records, the position) and
        keep those that count; what they change is handed over once the reader has
        caught up (:meth:`_changes`)."""
        rows = []
        for message in page:
            try:
                record: RoomRecord | None = decode_room_record(message.data)
            except RoomError:
                record = None
            if record is not None and not self._counts(record):
                record = None
            if record is None:
                self.dropped += 1
            else:
                self._keep(record)  # now: a later post of the page meets this metadata
                if isinstance(record, RoomPost):
                    self._fresh.append(record)
                else:
                    self._moderated = True
            post_id = record.post_id if isinstance(record, RoomPost) else None
            data = None if record is None else message.data
            rows.append((str(self.room), message.hash, data, post_id, message.expiry_ms))
        if not rows:
            return
        db = self._db()
        with transaction(db):
            db.executemany(
                "INSERT OR IGNORE INTO records (room, hash, data, post_id, expiry_ms) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            db.execute(
                "UPDATE readers SET last_hash = ? WHERE room = ? AND reader = ?",
                (page[-1].hash, str(self.room), self.reader),
            )

    def _changes(self) -> list[tuple[RoomEvent, str]]:
        """What the records taken since the last hand-over change for this reader: the
        whole difference after a moderation or metadata record, else the new posts
        the moderation held shows (checked against it alone, not every post)."""
        fresh, self._fresh = self._fresh, []
        if self._moderated:
            self._moderated = False
            return self._difference()
        control = list(self._control.values())
        return [
            (post, self._verdict(post))
            for post in fresh
            if post.post_id not in self._shown and RoomState(self.room, [*control, post]).posts()
        ]

    def _hand_over(self, pending: list[tuple[RoomEvent, str]]) -> Iterator[RoomEvent]:
        """Mark each change, then give it (persist, then yield); passed-over posts are
        marked and not given."""
        for event, state in pending:
            self._mark(self._db(), event.post_id, state)
            self._shown[event.post_id] = state
            if state != "skipped":
                self.taken += isinstance(event, RoomPost)
                yield event

    async def events(self, *, follow: bool = True) -> AsyncGenerator[RoomEvent, None]:
        """Posts and deletions as they come, each recorded before it is yielded;
        forever, or (``follow`` False) until the reader has caught up with the nodes
        (see the module note). Changes are handed over once the reader has caught up
        (a page that says nothing more follows), so a post deleted before then is not
        yielded at all."""
        try:
            await trio.to_thread.run_sync(self._load)
            for event in self._hand_over(self._difference()):  # what an earlier run left
                yield event
            async with aclosing(self.poller.pages(self)) as pages:
                async for page, more in pages:
                    self._take(page)
                    if more:
                        continue
                    for event in self._hand_over(self._changes()):
                        yield event
                    if not follow:
                        return
        finally:
            if self.db is not None:
                self.db.close()
            self.poller.close()


def shown_posts(client: VeilClient, room: AccountId, reader: str) -> list[RoomPost]:
    """The posts ``reader`` has been handed in ``room`` and that are still held (no
    network), oldest first: what a bot checks against its own record of answers."""
    db = open_rooms_db(client)
    try:
        rows = db.execute(
            "SELECT r.data FROM shown s JOIN records r ON r.room = s.room AND r.post_id = "
            "s.post_id WHERE s.room = ? AND s.reader = ? AND s.state = 'shown' "
            "AND r.data IS NOT NULL",
            (str(room), reader),
        ).fetchall()
    finally:
        db.close()
    posts = []
    for (data,) in rows:
        try:
            record = decode_room_record(data)
        except RoomError:
            continue
        if isinstance(record, RoomPost):
            posts.append(record)
    return sorted(posts, key=lambda p: (p.timestamp_ms, p.post_id))
