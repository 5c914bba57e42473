"""Open groups (issue 16) at the node: the rooms' rules enforced on stores and copies.

* ``guard.py``: :class:`RoomGuard`, the checks of a client's store and a peer's copy,
  moderation's effects on the store, the copies kept until they can be judged;
* ``states.py``: :class:`RoomStates`, the rooms' states kept in memory (LRU, bounded,
  built from the store's index of room records);
* ``policy.py``: :class:`RoomPolicy`, what a node lets rooms take of it.

The rules themselves are :mod:`veil.onion.room`'s (sans-IO), shared with clients.
"""

from __future__ import annotations

from .guard import Judged, RoomCounters, RoomGuard, index_of
from .policy import DEFAULT_POLICY, RoomPolicy
from .states import RoomStates

__all__ = [
    "DEFAULT_POLICY",
    "Judged",
    "RoomCounters",
    "RoomGuard",
    "RoomPolicy",
    "RoomStates",
    "index_of",
]
