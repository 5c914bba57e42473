"""The node's errors: one tree, rooted in :class:`veil.onion.errors.VeilError`.

:class:`NodeError` is the root of what the node raises on purpose about itself: a bad
configuration or data directory (reported by ``veil-node`` as one line and exit code
2), a store that cannot be opened or has closed, a peer that refused a replication
frame. Errors caused by a peer's bytes are the protocol's own
(:mod:`veil.onion.errors`) and carry their wire status; the node's own errors never
cross the network, except :class:`ReplicationRefused`, which stands for a peer's HTTP
answer and keeps its status for the replication counters.
"""

from __future__ import annotations

from veil.onion.errors import VeilError, WireError

__all__ = [
    "ConfigError",
    "KeystoreError",
    "NodeError",
    "ReplicationRefused",
    "StoreClosed",
    "StoreError",
]


class NodeError(VeilError):
    """Base of the node's own errors."""


class ConfigError(NodeError):
    """A configuration file that cannot be read, or holds an unknown key or a bad value."""


class KeystoreError(NodeError):
    """The data directory or the key file cannot be used (the message says why)."""


class StoreError(NodeError):
    """The message store cannot be opened or used (not WAL, a newer schema, ...)."""


class StoreClosed(StoreError):
    """A write was submitted to, or was pending in, a store that is closing or closed."""


class ReplicationRefused(NodeError, WireError):
    """A peer answered a replication request with an HTTP error."""

    status = "bad_gateway"

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"peer answered HTTP {status}: {text}")
        self.http_code = status
