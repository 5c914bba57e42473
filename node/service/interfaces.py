"""What the storage service is configured with and counts, and the hooks the node sets.

Design note
-----------
:class:`ServiceConfig` is the ``[storage]`` table of a node's config file (node/config.py
reads it into this class: a field here is a config key there, so fields are added only
with the config's owner). :class:`ServiceCounters` are read by the metrics code.
:class:`SwarmCheck` and :class:`ReplicationHook` are what node/app.py plugs in for a node
in a network (node/swarm_guard.py, node/replication/); a bare service has neither.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal, Protocol

from veil.onion import rpc
from veil.onion.keys import OwnerId
from veil.onion.replica import ReplicaMessage

__all__ = ["ReplicationHook", "ServiceConfig", "ServiceCounters", "SwarmCheck"]


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """Tunables of the storage service (the node's config file fills these)."""

    #: Accepted distance between a signed request's timestamp and the node's clock.
    clock_skew_ms: int = rpc.CLOCK_SKEW_MS
    #: Inbox stores per second per recipient account, sustained.
    inbox_rate: float = 10.0
    #: Inbox stores per recipient account in a burst.
    inbox_burst: int = 100
    #: Token buckets kept at most (one per recently written inbox).
    max_buckets: int = 100_000
    #: Long-polls waiting at the same time, at most.
    max_waiters: int = 10_000
    #: Long-polls one source (the previous hop: an address or a link) may hold waiting,
    #: signed and unsigned counted apart; see the module note.
    max_waiters_per_source: int = 1_000
    #: Store options; see :func:`veil.node.store.open_store`.
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    queue_size: int = 1024
    max_batch: int = 512
    #: Seconds between sweeps (the name is the config file's key, ``[storage]``).
    sweep_interval: float = 30.0
    sweep_batch: int = 1000
    #: Verified capability chains kept (delegated keys), least recently used dropped.
    max_cached_chains: int = 10_000
    #: Encryption sessions' states kept in memory (least recently used dropped), and
    #: each session's record count and bytes (node/groups.py).
    max_group_states: int = 1024
    max_group_records: int = 2000
    max_group_bytes: int = 8 * 1024 * 1024
    max_group_cache_bytes: int = 64 * 1024 * 1024


@dataclass(slots=True)
class ServiceCounters:
    """Counters for the metrics code; read them, do not write them."""

    #: (method, status) -> requests answered; method is "invalid" if it did not decode.
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: Inbox stores refused by the rate limit.
    rate_limited: int = 0
    #: Long-polls waiting now (a gauge).
    waiting_polls: int = 0
    #: Unsigned long-polls ended early to make room for a signed one.
    evicted_polls: int = 0
    #: Messages newly stored (not counting duplicates).
    stored: int = 0
    #: Copies of sessions' records or messages refused from peers (node/groups.py).
    group_replicas_refused: int = 0


class SwarmCheck(Protocol):
    """Which accounts this node serves (node/swarm_guard.py's SwarmGuard)."""

    def check(self, account: OwnerId) -> None:
        """Return if ``account`` is this node's; raise Unavailable or WrongSwarm if not."""
        ...

    def get_swarm(self, account: OwnerId) -> rpc.GetSwarmResult:
        """``account``'s swarm; raise Unavailable or NotFound if there is none to give."""
        ...


class ReplicationHook(Protocol):
    """Copies new messages to the swarm's other members (node/replication/)."""

    async def replicate(self, message: ReplicaMessage) -> None:
        """Push ``message`` (just committed here); return within a bounded time. Never
        raises for the network's failures; cancellation just stops the wait."""
        ...

    async def forward(self, request: bytes) -> None:
        """Send a client's signed delete, delete_all or expire, or a revoke, executed
        here, to the swarm's other members; return within a bounded time, as
        :meth:`replicate`."""
        ...
