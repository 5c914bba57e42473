"""The storage RPC's limits: sizes, TTLs, namespaces and the methods there are.

Design note
-----------
Constants only, so that every other module of :mod:`veil.onion.rpc` (and a node's store,
and a client checking its input) reads the same numbers. A node reports most of them in
its ``info`` answer (:meth:`~veil.onion.rpc.InfoResult.current`).
"""

from __future__ import annotations

from typing import Final

from ..capability.limits import MAX_CHAIN_SIZE, MAX_REVOCATION_SIZE

DAY_MS: Final = 86_400_000
MAX_BODY: Final = 76_800
MIN_TTL_MS: Final = 10_000
MAX_TTL_MS: Final = 14 * DAY_MS
MAX_TTL_PRIVATE_MS: Final = 30 * DAY_MS
NAMESPACE_MIN: Final = -32768
NAMESPACE_MAX: Final = 32767
INBOX: Final = 0
#: Every account's room namespace (open groups, issue 16): anyone stores, unsigned, one
#: self-authenticating room record per message (see :mod:`.namespaces`).
ROOM_NAMESPACE: Final = -2
RETRIEVE_MAX_LIMIT: Final = 256
RETRIEVE_DEFAULT_LIMIT: Final = 256
MAX_WAIT_S: Final = 30
#: Hashes in one delete or expire.
MAX_HASHES: Final = 100
CLOCK_SKEW_MS: Final = 60_000
#: Bytes of a request's ``capability`` param (a delegated key's chain).
MAX_CAPABILITY: Final = MAX_CHAIN_SIZE
#: Bytes of a ``revoke`` request's ``record`` (a revocation with its proof chains).
MAX_RECORD: Final = MAX_REVOCATION_SIZE
#: A full body plus ample room for every other field (100 hashes take 3,400 bytes) and
#: a capability chain. It stays below the largest onion packet's payload (128 KiB, less
#: 20 bytes; tests/test_rpc.py checks it), and a revoke request (a record) fits it.
MAX_REQUEST_SIZE: Final = MAX_BODY + 4096 + MAX_CAPABILITY
#: Byte budget of one retrieve answer; see the note of :mod:`veil.onion.rpc`.
RETRIEVE_MAX_BYTES: Final = 100_000
#: Upper bound of the CBOR bytes around one message's data in a retrieve answer.
RETRIEVE_ITEM_OVERHEAD: Final = 100
MAX_REPLY_SIZE: Final = RETRIEVE_MAX_BYTES + 1024
MAX_ERROR_CHARS: Final = 500
#: Characters of an account ID as text ("05" + 64 hex digits).
ID_TEXT_LENGTH: Final = 66
#: Members listed in a ``swarm`` map: the largest swarm a consensus may hold
#: (``2 * veil.onion.directory.MAX_SWARM_TARGET - 1``).
MAX_SWARM_MEMBERS: Final = 127
#: Longest IP literal a member's host may be (as veil.onion.directory).
MAX_HOST_LEN: Final = 45
#: Largest time in ms (CBOR's signed 64-bit range, as SQLite stores it).
MAX_TIME_MS: Final = 2**63 - 1

METHODS: Final = frozenset(
    {"store", "retrieve", "delete", "delete_all", "expire", "info", "get_swarm", "revoke"}
)

assert MAX_RECORD + 512 <= MAX_REQUEST_SIZE
