"""The state file's records, its size limits, and the checks on what goes into it.

What :class:`~veil.client.state.ClientState` takes and returns (guards, the cached
consensus, messages), as plain frozen values, and the argument checks it makes before
it writes anything: a bad argument is a bug in the caller, refused with
:class:`~veil.client.errors.InvalidArgument` (a :class:`ValueError`) before a
transaction starts. No SQLite here; :mod:`veil.client.state_schema` has the file's
layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from veil.client.errors import InvalidArgument
from veil.onion.keys import AccountId

__all__ = [
    "HASH_BYTES",
    "MAX_CONSENSUS_BYTES",
    "MAX_CONTENT_BYTES",
    "MAX_GUARDS",
    "MAX_INT64",
    "MAX_LIST_LIMIT",
    "NODE_ID_BYTES",
    "CachedConsensus",
    "GuardRecord",
    "InboundMessage",
    "IssuedDelegation",
    "ReceivedMessage",
    "account_key",
    "check_bytes",
    "check_hash",
    "check_int",
    "check_namespace",
    "check_node_id",
    "message_row",
]

#: A client keeps two guards (DESIGN.md, "Onion packets").
MAX_GUARDS = 2
NODE_ID_BYTES = 32  # an Ed25519 identity key
HASH_BYTES = 32  # onion.rpc.message_hash
# The namespaces of onion.rpc (a 16-bit signed int).
_NAMESPACE_MIN, _NAMESPACE_MAX = -32768, 32767
#: Room for the largest consensus onion.directory accepts (3 MiB body plus signatures).
MAX_CONSENSUS_BYTES = 4 * 1024 * 1024
#: A message's decrypted content: a node's body limit is 76,800 bytes; this is ample.
MAX_CONTENT_BYTES = 256 * 1024
#: The most rows one :meth:`ClientState.list_messages` returns.
MAX_LIST_LIMIT = 10_000
#: SQLite's largest integer.
MAX_INT64 = 2**63 - 1


# --- records -------------------------------------------------------------------------------

# Fields say their units (``chosen_at_ms``); the SQL columns keep their released names
# (``chosen_at``): renaming a column would be a migration for nothing.


@dataclass(frozen=True, slots=True)
class GuardRecord:
    """A guard node: the first hop of every path the client builds."""

    node_id: bytes  # 32-byte Ed25519 identity key
    chosen_at_ms: int  # local wall clock
    #: Failures since it was chosen, reset by a success (consecutive failures).
    failures: int = 0
    last_used_ms: int | None = None  # the last success through it


class CachedConsensus(NamedTuple):
    """The last consensus saved: raw signed bytes, to be verified again before use."""

    raw: bytes
    epoch: int
    fetched_at_ms: int


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message to record (:meth:`ClientState.save_messages_and_position`)."""

    hash: bytes  # the node's 32-byte message hash (onion.rpc.message_hash)
    #: Who sent it (from the opened envelope); None if unknown (for example a message
    #: that did not open, recorded only so that it is not fetched and tried again).
    sender: AccountId | None
    #: ms, the sender's claim: an envelope's u64, so anything up to 2**64 - 1; values
    #: past SQLite's 2**63 - 1 (a date some 292 million years away) are stored as that.
    timestamp_ms: int
    content: bytes
    received_at_ms: int  # our clock


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """A recorded message, as :meth:`ClientState.list_messages` returns it."""

    seq: int  # arrival order in this state file (increasing); a cursor for after_seq
    hash: bytes
    account: AccountId  # whose namespace it came from
    namespace: int
    sender: AccountId | None
    timestamp_ms: int  # the sender's claim, as in InboundMessage
    content: bytes
    received_at_ms: int


# --- argument checks (a bug in the caller: InvalidArgument before anything is written) ---


def check_int(value: object, what: str, *, minimum: int = 0, maximum: int = MAX_INT64) -> int:
    if type(value) is not int or not minimum <= value <= maximum:
        raise InvalidArgument(f"{what} must be an int in [{minimum}, {maximum}], not {value!r}")
    return value


def check_bytes(value: object, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise InvalidArgument(f"{what} must be bytes")
    return bytes(value)


def check_node_id(value: object) -> bytes:
    node_id = check_bytes(value, "node_id")
    if len(node_id) != NODE_ID_BYTES:
        raise InvalidArgument(f"a node ID is {NODE_ID_BYTES} bytes")
    return node_id


def check_hash(value: object) -> bytes:
    h = check_bytes(value, "hash")
    if len(h) != HASH_BYTES:
        raise InvalidArgument(f"a message hash is {HASH_BYTES} bytes")
    return h


def check_namespace(value: object) -> int:
    if type(value) is not int or not _NAMESPACE_MIN <= value <= _NAMESPACE_MAX:
        raise InvalidArgument(f"a namespace is an int in [{_NAMESPACE_MIN}, {_NAMESPACE_MAX}]")
    return value


def account_key(account: object) -> bytes:
    if not isinstance(account, AccountId):
        raise InvalidArgument("account must be an AccountId")
    return account.x25519_public


def message_row(
    m: InboundMessage, key: bytes, namespace: int
) -> tuple[bytes, bytes, int, bytes | None, int, bytes, int]:
    # (hash, account, namespace, sender, timestamp, content, received_at)
    content = check_bytes(m.content, "content")
    if len(content) > MAX_CONTENT_BYTES:
        raise InvalidArgument(f"message content over {MAX_CONTENT_BYTES} bytes")
    sender = None if m.sender is None else account_key(m.sender)
    return (
        check_hash(m.hash),
        key,
        namespace,
        sender,
        # A sender's claim must not make the whole page fail: clamp, don't refuse.
        min(check_int(m.timestamp_ms, "timestamp_ms", maximum=2**64 - 1), MAX_INT64),
        content,
        check_int(m.received_at_ms, "received_at_ms"),
    )


@dataclass(frozen=True, slots=True)
class IssuedDelegation:
    """A delegated session this home issued (a row of ``delegations``).

    ``chain`` is the chain's bytes from the account's link down to the issued link;
    ``revoked_at_ms`` is when this home revoked it (None: not revoked by this home)."""

    link: bytes
    owner: bytes
    issuer: bytes
    audience: bytes
    chain: bytes
    issued_at_ms: int
    expires_at_ms: int
    revoked_at_ms: int | None
