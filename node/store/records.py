"""What the message store gives back: plain frozen records, no behaviour.

Design note
-----------
The store's answers (:class:`StoredMessage`, :class:`StoredPage`, :class:`StoreOutcome`,
:class:`StoreStats`) and its clock type, in a module of their own so that the reads, the
writes and the store itself import them without importing each other. Times are ms of
the store's clock (:data:`Clock`). The records that travel between nodes
(:class:`~veil.onion.replica.ReplicaMessage`, :class:`~veil.onion.replica.ReplicaPage`)
are the protocol's, in onion/.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Clock", "RoomIndex", "StoreOutcome", "StoreStats", "StoredMessage", "StoredPage"]

#: Wall-clock milliseconds since the Unix epoch (injectable for tests).
Clock = Callable[[], int]


@dataclass(frozen=True, slots=True)
class StoredMessage:
    hash: bytes
    data: bytes
    #: When it was stored, and when it expires (ms, the store's clock).
    timestamp_ms: int
    expiry_ms: int


@dataclass(frozen=True, slots=True)
class StoredPage:
    """A page of one (account, namespace)'s messages, as :meth:`MessageStore.retrieve`
    reads it (the RPC's answer, :class:`veil.onion.rpc.RetrieveResult`, is built from it)."""

    messages: list[StoredMessage]
    #: True if more messages follow the last one returned (ask again with its hash).
    more: bool


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    """The result of :meth:`MessageStore.store`."""

    hash: bytes
    #: The message's expiry (ms) after this store (the later one if it was already there).
    expiry_ms: int
    #: False if the same message (same hash) was already stored and still alive.
    created: bool
    #: When it was stored (ms, the store's clock) if ``created``; else 0. For
    #: replication only, so not part of equality.
    timestamp_ms: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class CheckpointStats:
    """What the store's checkpointer did since the store opened (checkpointer.py)."""

    #: PASSIVE checkpoints run.
    passive: int
    #: RESTART checkpoints run (the WAL was past its bound).
    restarts: int
    #: Frames in the WAL after the last checkpoint.
    wal_frames: int


@dataclass(frozen=True, slots=True)
class StoreStats:
    #: Rows in the table, including expired rows that the sweeper has not deleted yet.
    messages: int
    #: Size of the database file in bytes (page_count * page_size).
    size_bytes: int
    #: Expired rows deleted by sweeps since the store was opened.
    swept: int
    #: Sweep transactions (batches of at most ``sweep_batch`` rows) since opened.
    sweep_batches: int
    #: Write transactions committed since opened.
    write_batches: int
    #: The WAL checkpoints made since opened (node/store/checkpointer.py).
    checkpoint: CheckpointStats = CheckpointStats(0, 0, 0)


#: A room record's kind, as the store's index keeps it (``room_records.kind``).
ROOM_META, ROOM_POST, ROOM_MODERATION = 0, 1, 2


@dataclass(frozen=True, slots=True)
class RoomIndex:
    """What the store indexes of a room record (namespace -2) it keeps, beside the
    message: given by the caller that judged the record (node/rooms/)."""

    #: :data:`ROOM_META`, :data:`ROOM_POST` or :data:`ROOM_MODERATION`.
    kind: int
    #: The record's ID (a post's ID, which a moderator's delete names).
    record_id: bytes
    #: A post's author (32-byte X25519 key); None for other kinds.
    author: bytes | None
    #: The record's own time (ms; 0 for metadata).
    ts: int
