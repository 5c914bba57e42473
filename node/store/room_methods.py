"""The store's room methods (issue 16): the index of room records, and deferred copies.

Design note
-----------
A mixin of :class:`~veil.node.store.MessageStore` (on
:class:`~veil.node.store.base.StoreBase`), over room_sql.py: the reads node/rooms/ makes
to judge a room record (a room's metadata and moderation records, the posts a delete or
a ban names, an author's recent posts) and the copies kept until they can be judged.
Reads run on the trio thread, each one bounded; writes go through the writer.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio

from veil.onion.keys import OwnerId, owner_key
from veil.onion.replica import ReplicaMessage

from . import room_sql
from .base import StoreBase
from .records import StoredMessage

__all__ = ["RoomMethods"]


class RoomMethods(StoreBase):
    """The room methods of the message store (see the module note)."""

    async def room_controls(self, room: OwnerId, *, limit: int) -> list[StoredMessage]:
        """The room's live metadata and moderation records (at most ``limit``), never its
        posts: what its state is built from."""
        await trio.lowlevel.checkpoint()
        return room_sql.room_controls(self._reader_or_raise(), owner_key(room), self.clock(), limit)

    async def room_posts_named(self, room: OwnerId, post_ids: Sequence[bytes]) -> list[bytes]:
        """The message hashes of the room's posts among ``post_ids``."""
        await trio.lowlevel.checkpoint()
        return room_sql.room_posts_named(self._reader_or_raise(), owner_key(room), post_ids)

    async def room_posts_by(
        self, room: OwnerId, author: bytes, until_ts: int, *, limit: int
    ) -> list[bytes]:
        """The message hashes of ``author``'s posts dated at or before ``until_ts``."""
        await trio.lowlevel.checkpoint()
        return room_sql.room_posts_by(
            self._reader_or_raise(), owner_key(room), author, until_ts, limit
        )

    async def room_recent_posts(
        self, room: OwnerId, author: bytes, since_ms: int, *, limit: int
    ) -> int:
        """How many of ``author``'s posts were first stored since ``since_ms`` (counted up
        to ``limit``)."""
        await trio.lowlevel.checkpoint()
        return room_sql.room_recent_posts(
            self._reader_or_raise(), owner_key(room), author, since_ms, limit
        )

    async def defer_copies(
        self,
        copies: Sequence[ReplicaMessage],
        source: bytes,
        until_ms: int,
        limits: room_sql.DeferLimits,
    ) -> int:
        """Keep copies that cannot be judged yet (see room_sql.py); how many were kept."""
        return await self._submit(room_sql.defer_copies(list(copies), source, until_ms, limits))

    async def deferred_of(self, owner: bytes, *, limit: int) -> list[ReplicaMessage]:
        """The copies kept for ``owner`` (its store key) whose time is not up."""
        await trio.lowlevel.checkpoint()
        return room_sql.deferred_of(self._reader_or_raise(), owner, self.clock(), limit)

    async def forget_deferred(self, owner: bytes, items: Sequence[tuple[int, bytes]]) -> int:
        """Drop these ``(namespace, hash)`` copies kept for ``owner``."""
        return await self._submit(room_sql.forget_deferred(owner, list(items)))
