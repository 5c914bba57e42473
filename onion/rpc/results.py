"""The typed results of each method, as a reply's ``result`` map carries them.

Design note
-----------
One frozen dataclass per method, each with its ``SCHEMA``, ``to_wire`` (the node's side)
and ``from_wire`` (the client's side, checking the map first), so that both read one
definition. Result maps are decoded strictly; the ``info`` and ``get_swarm`` results
allow unknown fields, where a newer node may say more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Final

from ..cbor import Field, Schema
from ..errors import SchemaError
from .limits import (
    CLOCK_SKEW_MS,
    MAX_BODY,
    MAX_CAPABILITY,
    MAX_HASHES,
    MAX_REQUEST_SIZE,
    MAX_TIME_MS,
    MAX_TTL_MS,
    MAX_TTL_PRIVATE_MS,
    MAX_WAIT_S,
    MIN_TTL_MS,
    RETRIEVE_MAX_BYTES,
    RETRIEVE_MAX_LIMIT,
)
from .swarms import SwarmInfo

_HASH = Field(bytes, size=32)


@dataclass(frozen=True, slots=True)
class StoreResult:
    hash: bytes
    #: When the message now expires (ms since the epoch, node's clock).
    expiry_ms: int
    #: False if the same message was already stored (its expiry may have been extended).
    created: bool

    SCHEMA: ClassVar[Schema] = Schema(
        "store.result",
        {"hash": _HASH, "expiry": Field(int, min=0), "created": Field(bool)},
    )

    def to_wire(self) -> dict[str, Any]:
        return {"hash": self.hash, "expiry": self.expiry_ms, "created": self.created}

    @classmethod
    def from_wire(cls, r: dict[str, Any]) -> StoreResult:
        cls.SCHEMA.check(r)
        return cls(r["hash"], r["expiry"], r["created"])


@dataclass(frozen=True, slots=True)
class Message:
    hash: bytes
    data: bytes
    #: When the node stored it (ms since the epoch, node's clock).
    timestamp_ms: int
    expiry_ms: int

    SCHEMA: ClassVar[Schema] = Schema(
        "message",
        {
            "hash": _HASH,
            "data": Field(bytes, max_len=MAX_BODY),
            "timestamp": Field(int, min=0),
            "expiry": Field(int, min=0),
        },
    )

    def to_wire(self) -> dict[str, Any]:
        return {
            "hash": self.hash,
            "data": self.data,
            "timestamp": self.timestamp_ms,
            "expiry": self.expiry_ms,
        }

    def __repr__(self) -> str:
        return f"Message({self.hash.hex()[:16]}..., {len(self.data)} bytes)"


@dataclass(frozen=True, slots=True)
class RetrieveResult:
    messages: list[Message]
    #: More messages follow: ask again with ``last_hash`` = the last message's hash.
    more: bool

    SCHEMA: ClassVar[Schema] = Schema(
        "retrieve.result",
        {
            "messages": Field(
                list, max_len=RETRIEVE_MAX_LIMIT, items=Field(dict, schema=Message.SCHEMA)
            ),
            "more": Field(bool),
        },
    )

    def to_wire(self) -> dict[str, Any]:
        return {"messages": [m.to_wire() for m in self.messages], "more": self.more}

    @classmethod
    def from_wire(cls, r: dict[str, Any]) -> RetrieveResult:
        cls.SCHEMA.check(r)
        return cls(
            [Message(m["hash"], m["data"], m["timestamp"], m["expiry"]) for m in r["messages"]],
            r["more"],
        )


@dataclass(frozen=True, slots=True)
class DeleteResult:
    #: The hashes that were there and are now deleted.
    deleted: list[bytes]

    SCHEMA: ClassVar[Schema] = Schema(
        "delete.result", {"deleted": Field(list, max_len=MAX_HASHES, items=_HASH)}
    )

    def to_wire(self) -> dict[str, Any]:
        return {"deleted": list(self.deleted)}

    @classmethod
    def from_wire(cls, r: dict[str, Any]) -> DeleteResult:
        cls.SCHEMA.check(r)
        return cls(list(r["deleted"]))


@dataclass(frozen=True, slots=True)
class DeleteAllResult:
    #: How many messages were deleted.
    deleted: int

    SCHEMA: ClassVar[Schema] = Schema("delete_all.result", {"deleted": Field(int, min=0)})

    def to_wire(self) -> dict[str, Any]:
        return {"deleted": self.deleted}

    @classmethod
    def from_wire(cls, r: dict[str, Any]) -> DeleteAllResult:
        cls.SCHEMA.check(r)
        return cls(r["deleted"])


@dataclass(frozen=True, slots=True)
class ExpireResult:
    #: The hashes whose expiry is now ``expiry_ms`` (unknown or expired ones are left out).
    updated: list[bytes]
    expiry_ms: int

    SCHEMA: ClassVar[Schema] = Schema(
        "expire.result",
        {"updated": Field(list, max_len=MAX_HASHES, items=_HASH), "expiry": Field(int, min=0)},
    )

    def to_wire(self) -> dict[str, Any]:
        return {"updated": list(self.updated), "expiry": self.expiry_ms}

    @classmethod
    def from_wire(cls, r: dict[str, Any]) -> ExpireResult:
        cls.SCHEMA.check(r)
        return cls(list(r["updated"]), r["expiry"])


@dataclass(frozen=True, slots=True)
class InfoResult:
    version: str
    #: The node's limits by name (max_body, min_ttl_ms, max_ttl_ms, ...).
    limits: dict[str, int]

    SCHEMA: ClassVar[Schema] = Schema(
        "info.result",
        {"version": Field(str, max_len=64), "limits": Field(dict)},
        allow_unknown=True,
    )

    def to_wire(self) -> dict[str, Any]:
        return {"version": self.version, "limits": dict(self.limits)}

    @classmethod
    def from_wire(cls, r: dict[str, Any]) -> InfoResult:
        cls.SCHEMA.check(r)
        limits = r["limits"]
        if not all(isinstance(k, str) and type(v) is int for k, v in limits.items()):
            raise SchemaError("info.result.limits: expected a map of names to integers")
        return cls(r["version"], dict(limits))

    @classmethod
    def current(cls, version: str) -> InfoResult:
        """This protocol's limits, as a node reports them."""
        return cls(
            version,
            {
                "max_body": MAX_BODY,
                "min_ttl_ms": MIN_TTL_MS,
                "max_ttl_ms": MAX_TTL_MS,
                "max_ttl_private_ms": MAX_TTL_PRIVATE_MS,
                "retrieve_max_limit": RETRIEVE_MAX_LIMIT,
                "retrieve_max_bytes": RETRIEVE_MAX_BYTES,
                "max_wait_s": MAX_WAIT_S,
                "max_hashes": MAX_HASHES,
                "clock_skew_ms": CLOCK_SKEW_MS,
                "max_request_size": MAX_REQUEST_SIZE,
                "max_capability": MAX_CAPABILITY,
            },
        )


@dataclass(frozen=True, slots=True)
class GetSwarmResult:
    """The account's swarm, from the consensus of ``epoch``."""

    swarm: SwarmInfo
    epoch: int

    SCHEMA: ClassVar[Schema] = Schema(
        "get_swarm.result",
        {"swarm": Field(dict), "epoch": Field(int, min=0, max=MAX_TIME_MS)},
        allow_unknown=True,
    )

    def to_wire(self) -> dict[str, Any]:
        return {"swarm": self.swarm.to_wire(), "epoch": self.epoch}

    @classmethod
    def from_wire(cls, r: dict[str, Any]) -> GetSwarmResult:
        cls.SCHEMA.check(r)
        return cls(SwarmInfo.from_wire(r["swarm"]), r["epoch"])


@dataclass(frozen=True, slots=True)
class RevokeResult:
    """A revocation kept: ``created`` False if this node held it already; kept until
    ``expiry_ms`` (the revoked link's expiry plus the clock skew; node's clock)."""

    created: bool
    expiry_ms: int

    SCHEMA: ClassVar[Schema] = Schema(
        "revoke.result", {"created": Field(bool), "expiry": Field(int, min=0, max=MAX_TIME_MS)}
    )

    def to_wire(self) -> dict[str, Any]:
        return {"created": self.created, "expiry": self.expiry_ms}

    @classmethod
    def from_wire(cls, r: dict[str, Any]) -> RevokeResult:
        cls.SCHEMA.check(r)
        return cls(r["created"], r["expiry"])


Result = (
    StoreResult
    | RetrieveResult
    | DeleteResult
    | DeleteAllResult
    | ExpireResult
    | InfoResult
    | GetSwarmResult
    | RevokeResult
)

_RESULTS: Final[dict[str, Any]] = {
    "store": StoreResult,
    "retrieve": RetrieveResult,
    "delete": DeleteResult,
    "delete_all": DeleteAllResult,
    "expire": ExpireResult,
    "info": InfoResult,
    "get_swarm": GetSwarmResult,
    "revoke": RevokeResult,
}


def parse_result(method: str, result: dict[str, Any]) -> Result:
    """The typed result of ``method`` from a reply's ``result`` map (:class:`SchemaError`)."""
    cls = _RESULTS.get(method)
    if cls is None:
        raise ValueError(f"no result type for {method!r}")
    return cls.from_wire(result)
