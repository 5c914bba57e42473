"""The client's knobs: :class:`ClientConfig`, one frozen dataclass of every policy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from veil.client.consensus import DirectoryPolicy
from veil.client.messaging import DEFAULT_WAIT_S
from veil.client.onion_client import RequestPolicy
from veil.client.paths import PathPolicy
from veil.client.transport import TransportConfig

__all__ = ["ClientConfig"]


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Every knob of the client, with the defaults DESIGN.md and node/config.py imply."""

    paths: PathPolicy = field(default_factory=PathPolicy)
    requests: RequestPolicy = field(default_factory=RequestPolicy)
    directory: DirectoryPolicy = field(default_factory=DirectoryPolicy)
    transport: TransportConfig = field(default_factory=TransportConfig)
    #: A long-poll's wait at the node, seconds (1 to onion.rpc.MAX_WAIT_S).
    wait_s: int = DEFAULT_WAIT_S
    #: Encryption sessions' cache, as Seald's: seconds an entry lives (0: no cache, the
    #: default; -1: no expiry), seconds between cleanups (None: the TTL, at least 10 s;
    #: -1: none), and the store: "memory" (per client), "home" (persistent, sealed under
    #: a key of the account), or an object with set/get/keys/delete (plain or async).
    encryption_session_cache_ttl: float = 0
    encryption_session_cache_cleanup_interval: float | None = None
    encryption_session_cache: Any = "memory"
