"""Where a session's records and messages live: the swarm of its ID, or memory.

Design note
-----------
A session's state records (namespace 1 of its group ID) and its messages (namespace 2)
live in the swarm of the session's ID, behind the nodes' checks (only members, with the
rights each request needs; nothing after the session's end). The session object
(:mod:`veil.client.sessions.session`) talks to that storage through
:class:`SessionBackend`, five calls (:mod:`~veil.client.sessions.backend.protocol`), so
that what does not need the network (creating a session to encrypt files, tests, the
benchmark) runs on :class:`MemoryBackend` (:mod:`~veil.client.sessions.backend.memory`),
which checks what a node checks (:func:`~veil.onion.group.check_record`,
:func:`~veil.onion.group.check_access`, membership and rights) with the same typed
errors. :class:`NetworkBackend` (:mod:`~veil.client.sessions.backend.network`) sends
each call as an onion request to the session's swarm through a
:class:`~veil.client.veil_client.VeilClient`, signed by the member with its membership
chain (or by the session key, for its creator).

An :class:`Actor` is who acts: the member's account, and the session key when the
actor is the session's creator and holds it.
"""

from __future__ import annotations

from veil.client.sessions.backend.memory import MemoryBackend
from veil.client.sessions.backend.network import (
    INVITE_CONCURRENCY,
    MAX_TTL_MS,
    STORE_CONCURRENCY,
    NetworkBackend,
    core_member_account,
)
from veil.client.sessions.backend.protocol import Actor, SessionBackend, StoredMessage

__all__ = [
    "INVITE_CONCURRENCY",
    "MAX_TTL_MS",
    "STORE_CONCURRENCY",
    "Actor",
    "MemoryBackend",
    "NetworkBackend",
    "SessionBackend",
    "StoredMessage",
    "core_member_account",
]
