"""The node's message store: SQLite in WAL mode, one writer task, expired rows swept.

Design note
-----------
SQLite calls block, and trio must not block: writes go through one writer task that
commits them in batches in a worker thread (group commit, persist-then-wake), and
reads are small bounded queries on a second, read-only connection on the trio thread
(in WAL mode readers never wait for the writer). Where each part lives:

* ``message_store.py``: :class:`MessageStore` (a client's messages, the sweeper) and
  :func:`open_store`, which owns the nursery of the writer and sweeper; the class is
  put together from ``base.py`` (the connections, the writer, long-poll watches),
  ``replication_methods.py`` (copies, pages, deletions and revocations that travel)
  and ``room_methods.py`` (rooms' index and deferred copies, over ``room_sql.py``);
* ``writer.py``: the batching writer (the queue, one transaction per batch, savepoints
  only after a failure, direct wakes);
* ``writes.py``: what each write does in SQL (store, delete, expire, replicas, cursors);
* ``reads.py``: retrieve, get, and the walks that replication and handover make;
* ``checkpointer.py``: WAL checkpoints from a connection of their own, off the
  writer's commit path, with the WAL bounded;
* ``schema.py``: connections, the schema and its ordered migrations (user_version);
* ``records.py``: the records the store returns.

The modules import their siblings, never this package, so there is no import circle.
This package re-exports the public names, as before the split.
"""

from __future__ import annotations

from veil.onion.replica import ReplicaMessage, ReplicaPage

from ..errors import StoreClosed, StoreError
from .message_store import MessageStore, deletion_digest, deletion_until, open_store
from .records import (
    ROOM_META,
    ROOM_MODERATION,
    ROOM_POST,
    Clock,
    RoomIndex,
    StoredMessage,
    StoredPage,
    StoreOutcome,
    StoreStats,
)
from .room_sql import DeferLimits

__all__ = [
    "ROOM_META",
    "ROOM_MODERATION",
    "ROOM_POST",
    "Clock",
    "DeferLimits",
    "MessageStore",
    "ReplicaMessage",
    "ReplicaPage",
    "RoomIndex",
    "StoreClosed",
    "StoreError",
    "StoreOutcome",
    "StoreStats",
    "StoredMessage",
    "StoredPage",
    "deletion_digest",
    "deletion_until",
    "open_store",
]
