"""The rooms' states a node keeps in memory: built from the store, bounded, LRU.

Design note
-----------
A room's :class:`~veil.onion.room.RoomState` at the node is built from its metadata and
moderation records only, never its posts (a room holds many posts; judging one needs
the rules, the moderators, the bans and the deletes, which those records give). They
are read through the store's index of room records (node/store/room_sql.py), so a cold
load reads no post. Building a state checks every record's signature (and a delegated
key's chain), a fraction of a millisecond a record, so it runs in a worker thread.

Bounds (:class:`~veil.node.rooms.policy.RoomPolicy`): at most ``max_rooms`` states and
``max_cache_bytes`` of records in all (least recently used dropped first: it is built
again from the store when needed), each of at most ``max_controls`` records and
``max_control_bytes`` (a room over either is refused whole, :class:`TooLarge`, rather
than loaded in part: a part could leave out a ban or a delete).

Freshness. A kept state is replaced by :meth:`RoomStates.added` when this node stores
a record of the room, and dropped once its earliest record expires (the store no longer
serves it, and a ban that expired no longer holds). A load that raced with a store (it
read the records before the new one committed) is used for the request that made it
but not kept, so that the next one loads again.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import trio

from veil.onion.errors import TooLarge
from veil.onion.keys import AccountId
from veil.onion.room import RoomRecord, RoomState

from ..store import MessageStore
from .policy import RoomPolicy

__all__ = ["RoomStates"]

_NEVER = 2**63 - 1


@dataclass(slots=True)
class _Entry:
    state: RoomState
    #: Bytes of the records it was built from.
    size: int
    #: The earliest expiry of its records (ms): it is loaded again from then on.
    valid_until: int


class RoomStates:
    """The rooms' states this node keeps (see the module note)."""

    def __init__(self, store: MessageStore, policy: RoomPolicy, clock: Callable[[], int]) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        #: Records' bytes of the states kept (bounded by ``max_cache_bytes``).
        self.total_bytes = 0
        #: Cold loads, a counter (a metric, and the tests' view of the cache).
        self.loads = 0
        #: Bumped by every change, so that a load that raced with one is not kept.
        self._changes = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, room: AccountId) -> RoomState:
        """The room's state (built from the store if it is not kept or is out of date);
        :class:`TooLarge` for a room over the policy's bounds."""
        key = room.x25519_public
        entry = self._entries.get(key)
        if entry is not None and self.clock() < entry.valid_until:
            self._entries.move_to_end(key)
            return entry.state
        changes = self._changes
        policy = self.policy
        rows = await self.store.room_controls(room, limit=policy.max_controls + 1)
        size = sum(len(r.data) for r in rows)
        if len(rows) > policy.max_controls or size > policy.max_control_bytes:
            raise TooLarge("this room holds more moderation records than this node keeps")
        state = await trio.to_thread.run_sync(
            functools.partial(RoomState, room, [r.data for r in rows])
        )
        self.loads += 1
        if changes == self._changes:
            valid_until = min((r.expiry_ms for r in rows), default=_NEVER)
            self._put(key, _Entry(state, size, valid_until))
        return state

    def added(self, room: AccountId, record: RoomRecord, expiry_ms: int) -> None:
        """This node stored ``record`` (a metadata or moderation record, until
        ``expiry_ms``): the kept state, if any, takes it."""
        self._changes += 1
        key = room.x25519_public
        entry = self._entries.get(key)
        if entry is None:
            return
        size = entry.size + len(record.encoded)
        if size > self.policy.max_control_bytes:
            self.forget(room)  # the next get refuses it or loads what is left
            return
        self._put(key, _Entry(entry.state.add(record), size, min(entry.valid_until, expiry_ms)))

    def forget(self, room: AccountId) -> None:
        """Drop the room's kept state (its records changed under it)."""
        self._changes += 1
        old = self._entries.pop(room.x25519_public, None)
        if old is not None:
            self.total_bytes -= old.size

    def _put(self, key: bytes, entry: _Entry) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self.total_bytes -= old.size
        self._entries[key] = entry
        self.total_bytes += entry.size
        policy = self.policy
        while len(self._entries) > 1 and (
            len(self._entries) > policy.max_rooms or self.total_bytes > policy.max_cache_bytes
        ):
            _, dropped = self._entries.popitem(last=False)
            self.total_bytes -= dropped.size
