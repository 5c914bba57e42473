"""The storage figures a node's ``/metrics`` shows: the store, the storage RPC, rooms,
sessions' chains, and replication's (read at scrape time).

Design note
-----------
Each figure is a :class:`~veil.node.metrics.StorageFigure` read from the service's and
the replicator's counters when ``/metrics`` is scraped (node/metrics.py prints them), so
nothing on a request's path updates a metrics object.
"""

from __future__ import annotations

from .metrics import StorageFigure
from .replication import Replicator
from .service import StorageService

__all__ = ["storage_figures"]


def storage_figures(storage: StorageService, replication: Replicator | None) -> list[StorageFigure]:
    """The figures of ``storage`` and ``replication`` (None: a standalone node)."""
    stats = storage.stats()
    counters = storage.counters
    rooms = storage.rooms.counters
    extra = [] if replication is None else replication.figures()
    return [
        *extra,
        StorageFigure("veil_store_messages", "Messages held", "gauge", {(): stats.messages}),
        StorageFigure(
            "veil_store_size_bytes",
            "Size of the store's database",
            "gauge",
            {(): stats.size_bytes},
        ),
        StorageFigure(
            "veil_store_stored", "Messages newly stored", "counter", {(): counters.stored}
        ),
        StorageFigure("veil_store_swept", "Expired messages swept", "counter", {(): stats.swept}),
        StorageFigure(
            "veil_storage_requests",
            "Storage RPC requests, by method and status",
            "counter",
            {k: float(v) for k, v in counters.requests.items()},
            ("method", "status"),
        ),
        StorageFigure(
            "veil_storage_rate_limited",
            "Inbox stores refused by the per-account rate limit",
            "counter",
            {(): counters.rate_limited},
        ),
        StorageFigure(
            "veil_storage_waiting_polls",
            "Long-polls waiting now",
            "gauge",
            {(): counters.waiting_polls},
        ),
        StorageFigure(
            "veil_storage_evicted_polls",
            "Unsigned long-polls ended early to make room for a signed one",
            "counter",
            {(): counters.evicted_polls},
        ),
        StorageFigure(
            "veil_storage_revocations",
            "Revoked delegated links kept (issue 12)",
            "gauge",
            {(): storage.store.revocations()},
        ),
        StorageFigure(
            "veil_room_copies",
            "Copies of room records from peers: refused, kept for later, not kept "
            "(over the bounds), stored at last",
            "counter",
            {
                ("refused",): rooms.copies_refused,
                ("deferred",): rooms.copies_deferred,
                ("not_kept",): rooms.copies_not_kept,
                ("recovered",): rooms.copies_recovered,
            },
            ("outcome",),
        ),
        StorageFigure(
            "veil_room_posts_removed",
            "Room posts deleted by moderators' deletes and bans",
            "counter",
            {(): rooms.posts_removed},
        ),
        StorageFigure(
            "veil_storage_chains",
            "Delegated requests by the cache of verified chains: hit or verified in full",
            "counter",
            {("hit",): storage.chains.hits, ("miss",): storage.chains.misses},
            ("result",),
        ),
    ]
