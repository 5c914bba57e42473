"""Swarms in replies: the ``swarm`` map of a ``wrong_swarm`` answer and of ``get_swarm``.

Design note
-----------
A node that holds a consensus serves only the accounts of its own swarm. A request for
another account gets a ``wrong_swarm`` error whose reply carries, beside ``status``,
``t`` and ``error``, the account's swarm as the node sees it::

    "swarm": {"id": 64-bit swarm ID,
              "members": [{"id": node ID (32), "onion": onion key (32),
                           "host": IP literal, "port": int}, ...]}

so that a client can send the request again to one of those members at once
(:class:`SwarmMoved`, raised by :meth:`~veil.onion.rpc.Reply.raise_for_status`, carries
it as a :class:`SwarmInfo`). These are hints from one node: a client that holds a
verified consensus of its own should trust that first.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from ..cbor import Field, Schema
from ..errors import SchemaError, WrongSwarm
from ..packet import Hop
from .limits import MAX_HOST_LEN, MAX_SWARM_MEMBERS

_SWARM_MEMBER = Schema(
    "swarm.member",
    {
        "id": Field(bytes, size=32),
        "onion": Field(bytes, size=32),
        "host": Field(str, min_len=1, max_len=MAX_HOST_LEN),
        "port": Field(int, min=1, max=65535),
    },
    # Read from replies: a newer node may describe its members further.
    allow_unknown=True,
)
_SWARM = Schema(
    "swarm",
    {
        "id": Field(int, min=0, max=2**64 - 1),
        "members": Field(
            list, min_len=1, max_len=MAX_SWARM_MEMBERS, items=Field(dict, schema=_SWARM_MEMBER)
        ),
    },
    allow_unknown=True,
)


def _check_host(host: str, where: str) -> None:
    """An IP literal in canonical form (what a consensus holds), or SchemaError."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise SchemaError(f"{where}.host: {host!r} is not an IP address literal") from None
    if str(ip) != host or ip.is_unspecified or ip.is_multicast:
        raise SchemaError(f"{where}.host: {host!r} is not a canonical unicast IP literal")


@dataclass(frozen=True, slots=True)
class SwarmMember:
    """One member of a swarm as a reply names it: enough to build an onion path to it."""

    node_id: bytes
    onion_key: bytes
    host: str
    port: int

    def as_hop(self) -> Hop:
        """This member as the destination (or a relay) of an onion path."""
        return Hop(node_id=self.node_id, onion_key=self.onion_key, host=self.host, port=self.port)

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.node_id, "onion": self.onion_key, "host": self.host, "port": self.port}

    def __repr__(self) -> str:
        return f"SwarmMember({self.node_id.hex()[:16]}..., {self.host}:{self.port})"


@dataclass(frozen=True, slots=True)
class SwarmInfo:
    """A swarm's ID on the ring and its members (sorted by node ID, as in a consensus)."""

    swarm_id: int
    members: tuple[SwarmMember, ...]

    @classmethod
    def of(cls, swarm: Any) -> SwarmInfo:
        """From an :class:`veil.onion.directory.Swarm` (anything with ``swarm_id`` and
        ``members`` that have ``node_id``, ``onion_key``, ``host`` and ``port``)."""
        return cls(
            swarm.swarm_id,
            tuple(SwarmMember(m.node_id, m.onion_key, m.host, m.port) for m in swarm.members),
        )

    @property
    def hops(self) -> tuple[Hop, ...]:
        return tuple(m.as_hop() for m in self.members)

    def to_wire(self) -> dict[str, Any]:
        """The ``swarm`` map; :class:`ValueError` if it would not pass :meth:`from_wire`."""
        obj = {"id": self.swarm_id, "members": [m.to_wire() for m in self.members]}
        try:
            SwarmInfo.from_wire(obj)
        except SchemaError as exc:
            raise ValueError(f"not a valid swarm: {exc}") from None
        return obj

    @classmethod
    def from_wire(cls, obj: object) -> SwarmInfo:
        """Check a ``swarm`` map from a reply; :class:`SchemaError` if it is not one.

        Unknown fields are ignored (a newer node may add some); hosts must be canonical
        IP literals and no node may be listed twice.
        """
        raw = _SWARM.check(obj)
        members = []
        seen: set[bytes] = set()
        for index, m in enumerate(raw["members"]):
            where = f"swarm.members[{index}]"
            _check_host(m["host"], where)
            if m["id"] in seen:
                raise SchemaError(f"{where}.id: node listed twice")
            seen.add(m["id"])
            members.append(SwarmMember(m["id"], m["onion"], m["host"], m["port"]))
        return cls(raw["id"], tuple(members))

    def __repr__(self) -> str:
        return f"SwarmInfo({self.swarm_id}, {len(self.members)} members)"


class SwarmMoved(WrongSwarm):
    """``wrong_swarm`` with the account's swarm: send the request to one of its members.

    The node raises it to answer (:func:`error_reply` adds the ``swarm`` field); a client
    gets it from :meth:`Reply.raise_for_status` when the reply names a valid swarm.
    """

    def __init__(self, message: str, swarm: SwarmInfo) -> None:
        super().__init__(message)
        self.swarm = swarm
