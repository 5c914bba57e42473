"""The storage RPC service: request bytes in, reply bytes out, over the message store.

* ``storage.py``: :class:`StorageService` (decode, authenticate, judge, execute, answer;
  its design note says how) and :func:`open_storage_service`;
* ``waiters.py``: :class:`WaiterSlots`, the long-poll slots and their per-source shares;
* ``interfaces.py``: :class:`ServiceConfig` (the ``[storage]`` table), the counters, and
  the hooks a node plugs in (:class:`SwarmCheck`, :class:`ReplicationHook`).

Sessions' checks are node/groups.py's, rooms' node/rooms/'s. This package re-exports
the public names, as the single module did before the split.
"""

from __future__ import annotations

from .interfaces import ReplicationHook, ServiceConfig, ServiceCounters, SwarmCheck
from .storage import INVALID_METHOD, StorageService, open_storage_service
from .waiters import WaiterSlots

__all__ = [
    "INVALID_METHOD",
    "ReplicationHook",
    "ServiceConfig",
    "ServiceCounters",
    "StorageService",
    "SwarmCheck",
    "WaiterSlots",
    "open_storage_service",
]
