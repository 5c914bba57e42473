"""Rooms (open groups, issue 16) on the client: anyone posts, anyone reads, the owner
and its moderators delete and ban; the room's swarm enforces its signed rules.

::

    room = await create_room(client, "lobby", description="say hi",
                             rules=RoomRules(rate=10, size=2048, pow_bits=16))
    await room.post("hello", reply_to=None)
    async for event in room.messages():          # RoomPost, or PostDeleted
        ...
    await room.delete(post_id); await room.ban(author, delete_past=True)
    await room.add_moderator(account_id)

One module per job:

* :mod:`~veil.client.rooms.room`: :class:`Room` (post, read, moderate, info);
* :mod:`~veil.client.rooms.owner`: what only the room's home does (metadata, moderators,
  keeping the room alive);
* :mod:`~veil.client.rooms.opening`: :func:`create_room`, :func:`open_room`,
  :func:`list_rooms`;
* :mod:`~veil.client.rooms.model`: :class:`RoomRules`, :class:`RoomInfo`,
  :class:`KnownRoom`;
* :mod:`~veil.client.rooms.reader`: :class:`RoomReader`, what :meth:`Room.messages`
  yields (verified, moderation applied, exactly once, unsigned reads);
* :mod:`~veil.client.rooms.errors`: :class:`RoomRefused` and one error per reason;
* :mod:`~veil.client.rooms.links`: ``veil://room/<id>``;
* :mod:`~veil.client.rooms.store`: ``HOME/rooms.sqlite``.
"""

from __future__ import annotations

from veil.client.rooms.errors import (
    AuthorIsBanned,
    NotModerator,
    PostForged,
    PostRemoved,
    RoomClockSkew,
    RoomMetadataStale,
    RoomNotFound,
    RoomPostTooLarge,
    RoomRateExceeded,
    RoomRecordRefused,
    RoomRefused,
    WorkMissing,
    room_error,
)
from veil.client.rooms.links import format_room_link, parse_room_link, room_id_of
from veil.client.rooms.model import RECORD_TTL_MS, KnownRoom, RoomInfo, RoomRules
from veil.client.rooms.opening import create_room, list_rooms, open_room
from veil.client.rooms.reader import PostDeleted, RoomEvent, RoomReader, post_json
from veil.client.rooms.room import ROOM_NAMESPACE, Room
from veil.onion.room import RoomPost

__all__ = [
    "RECORD_TTL_MS",
    "ROOM_NAMESPACE",
    "AuthorIsBanned",
    "KnownRoom",
    "NotModerator",
    "PostDeleted",
    "PostForged",
    "PostRemoved",
    "Room",
    "RoomClockSkew",
    "RoomEvent",
    "RoomInfo",
    "RoomMetadataStale",
    "RoomNotFound",
    "RoomPost",
    "RoomPostTooLarge",
    "RoomRateExceeded",
    "RoomReader",
    "RoomRecordRefused",
    "RoomRefused",
    "RoomRules",
    "WorkMissing",
    "create_room",
    "format_room_link",
    "list_rooms",
    "open_room",
    "parse_room_link",
    "post_json",
    "room_error",
    "room_id_of",
]
