"""The limits a node keeps for rooms: one frozen policy, with the defaults.

Design note
-----------
A room's own rules (its rate, post size and work, in its signed metadata) are within the
protocol's bounds (:mod:`veil.onion.room.records`); these are the node's, on what rooms
may take of it. They are not config keys (yet): the node uses :data:`DEFAULT_POLICY`,
and tests may pass another :class:`RoomPolicy` to the storage service. Every shared
resource has a per-source share:

* memory: the rooms' states (their metadata and moderation records, never the posts)
  are kept for at most ``max_rooms`` rooms and ``max_cache_bytes`` in all, least recently
  used dropped first (rebuilt from the store when needed); one room's state holds at
  most ``max_controls`` records and ``max_control_bytes`` (a room over either takes no
  more of them, and is refused whole rather than loaded in part: a part could leave out
  a ban);
* writes and disk: an author's posts are bounded by its room's rate (counted in the
  store's index, copies from peers included, so roughly over the swarm), and a room's
  posts, all authors together, by a token bucket (``room_posts_per_s``,
  ``room_post_burst``), one per room, at most ``max_room_buckets`` kept (an idle bucket
  is full anyway, so dropping the least recently used loses nothing);
* copies that cannot be judged yet (``deferred_copies``): kept at most ``defer_ms``,
  ``max_deferred`` in all, ``max_deferred_per_source`` from one peer and
  ``max_deferred_per_room`` for one room.
"""

from __future__ import annotations

from dataclasses import dataclass

from veil.onion.room import DEFAULT_SKEW_MS

__all__ = ["DEFAULT_POLICY", "RoomPolicy"]


@dataclass(frozen=True, slots=True)
class RoomPolicy:
    """What a node lets rooms take of it (see the module note)."""

    #: Rooms whose state is kept in memory.
    max_rooms: int = 1024
    #: One room's metadata and moderation records, in number and bytes.
    max_controls: int = 4096
    max_control_bytes: int = 8 * 1024 * 1024
    #: The states kept, in bytes of records, all rooms together.
    max_cache_bytes: int = 64 * 1024 * 1024
    #: A room's posts (all authors) per second, sustained, and in a burst.
    room_posts_per_s: float = 20.0
    room_post_burst: int = 200
    #: Rooms' buckets kept.
    max_room_buckets: int = 100_000
    #: How far a post or moderation record's date may be from the node's clock.
    skew_ms: int = DEFAULT_SKEW_MS
    #: How long a copy that cannot be judged yet is kept, and how many.
    defer_ms: int = 3_600_000
    max_deferred: int = 20_000
    max_deferred_per_source: int = 5_000
    max_deferred_per_room: int = 2_000
    #: Posts deleted per write when a ban deletes an author's past.
    purge_batch: int = 500


DEFAULT_POLICY = RoomPolicy()
