"""Consensus documents: the nodes clients may use and the swarm of each.

Design note
-----------
Body format (signed by authorities, see :mod:`veil.onion.directory.signatures`)::

    body = {"v": 1, "epoch": int, "valid_after": ms, "fresh_until": ms, "valid_until": ms,
            "swarm_size": K, "nodes": [{"id", "onion", "host", "port", "version",
                                        "swarm": 64-bit swarm ID}, ...]}   # sorted by id

Times follow Tor: a consensus is *fresh* from ``valid_after`` to ``fresh_until`` (one
interval; authorities publish the next one by then) and still *usable* until
``valid_until`` (by default three intervals), so that a late authority or a client that
fetched a little early does not break the network.

Swarm assignment is *carried* in the document and *checked* by readers. The assignment
is sticky (:mod:`veil.onion.swarm`): it depends on the previous consensus, so a reader
with one document could not recompute it. The authorities' threshold signature vouches
for it as it vouches for the node list; readers check what any honest assignment
satisfies (every node in one swarm, swarm sizes within
:func:`veil.onion.swarm.check_assignment`'s bounds), and an authority recomputes the
exact assignment from the previous consensus with :func:`make_consensus_body`.

Keys in a consensus are checked for length, not for being valid curve points: that
check is a scalar multiplication (about 0.4 ms a node, seconds for 10,000 nodes), and it
is made where a key enters the network, when the authority parses the node's
descriptor. A client that builds a layer to a bad onion key gets an
:class:`~veil.onion.errors.IntegrityError` from X25519, not a crash.

:func:`parse_consensus_body` accepts a body that lists no nodes (an authority's first
document, before any node registered); :func:`~veil.onion.directory.verify_consensus`
refuses one, since a client or node can do nothing with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from .. import crypto, swarm
from ..cbor import Field, Schema, encode
from ..errors import InvalidConsensus, NotFound
from ..keys import AccountId, parse_node_id
from ..packet import Hop
from .descriptors import NodeDescriptor
from .fields import (
    FORMAT_FIELD,
    FORMAT_VERSION,
    HOST_FIELD,
    KEY_FIELD,
    PORT_FIELD,
    TIME_FIELD,
    VERSION_FIELD,
    check_host,
    check_key_bytes,
    check_port,
    check_time,
    check_version,
)

CONSENSUS_DOMAIN: Final = b"consensus"
#: Consensus interval of a devnet (production would use an hour).
DEFAULT_INTERVAL_MS: Final = 60_000
#: A consensus stays usable for this many intervals after ``valid_after``.
DEFAULT_LIFETIME_INTERVALS: Final = 3
#: Refused beyond this: a long-lived consensus is a long window for replaying it.
MAX_CONSENSUS_LIFETIME_MS: Final = 24 * 3600 * 1000
MAX_NODES: Final = 10_000
MAX_SIGNATURES: Final = 32
#: Bytes, for the whole signed document: 10,000 nodes of the longest fields and 32
#: signatures take about 2.2 MB (tests/test_directory.py builds one).
MAX_CONSENSUS_SIZE: Final = 3 * 1024 * 1024
#: Largest swarm target size a consensus may ask for.
MAX_SWARM_TARGET: Final = 64


@dataclass(frozen=True, slots=True, repr=False)
class ConsensusNode:
    """One node as the consensus lists it.

    Building one checks lengths and the address, not that the keys are curve points
    (see the module note); :class:`InvalidConsensus` for a bad field.
    """

    node_id: bytes
    onion_key: bytes
    host: str
    port: int
    version: str
    swarm_id: int

    def __post_init__(self) -> None:
        check_key_bytes(self.node_id, "node ID", InvalidConsensus)
        check_key_bytes(self.onion_key, "onion key", InvalidConsensus)
        check_host(self.host, InvalidConsensus)
        check_port(self.port, InvalidConsensus)
        check_version(self.version, InvalidConsensus)
        if type(self.swarm_id) is not int or not 0 <= self.swarm_id < swarm.RING_SIZE:
            raise InvalidConsensus("swarm ID must be an integer in [0, 2**64)")

    @property
    def node_id_hex(self) -> str:
        return self.node_id.hex()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def __repr__(self) -> str:
        return (
            f"ConsensusNode({self.node_id.hex()[:16]}..., {self.host}:{self.port}, "
            f"{self.version!r}, swarm={self.swarm_id})"
        )

    def as_hop(self) -> Hop:
        """This node as a hop of an onion path (:mod:`veil.onion.packet`)."""
        return Hop(node_id=self.node_id, onion_key=self.onion_key, host=self.host, port=self.port)

    def _entry(self) -> dict[str, Any]:
        return {
            "id": self.node_id,
            "onion": self.onion_key,
            "host": self.host,
            "port": self.port,
            "version": self.version,
            "swarm": self.swarm_id,
        }


@dataclass(frozen=True, slots=True, repr=False)
class Swarm:
    """A swarm: its ID on the ring and its members, sorted by node ID."""

    swarm_id: int
    members: tuple[ConsensusNode, ...]

    @property
    def node_ids(self) -> tuple[bytes, ...]:
        return tuple(node.node_id for node in self.members)

    def __contains__(self, node_id: object) -> bool:
        return any(node.node_id == node_id for node in self.members)

    def __len__(self) -> int:
        return len(self.members)

    def __repr__(self) -> str:
        return f"Swarm({self.swarm_id}, {len(self.members)} members)"


@dataclass(frozen=True, slots=True)
class ConsensusSignature:
    """One authority's signature of a consensus body."""

    key: bytes  # the authority's Ed25519 public key
    signature: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.key, bytes) or len(self.key) != 32:
            raise ValueError("an authority key is 32 bytes")
        if not isinstance(self.signature, bytes) or len(self.signature) != crypto.SIG_BYTES:
            raise ValueError(f"a signature is {crypto.SIG_BYTES} bytes")


@dataclass(frozen=True, slots=True, repr=False)
class Consensus:
    """A parsed consensus. Build it with :func:`verify_consensus` (or, for an authority's
    own documents, :func:`parse_consensus_body`), not directly.

    ``signers`` are the pinned keys whose valid signatures were counted (counting stops
    at the threshold; empty for :func:`parse_consensus_body`). ``body`` is the exact
    signed body.
    """

    epoch: int
    valid_after_ms: int
    fresh_until_ms: int
    valid_until_ms: int
    swarm_size: int
    nodes: tuple[ConsensusNode, ...]  # sorted by node ID
    body: bytes = field(repr=False)
    signers: frozenset[bytes] = frozenset()
    _by_id: dict[bytes, ConsensusNode] = field(init=False, repr=False, compare=False)
    _swarms: dict[int, Swarm] = field(init=False, repr=False, compare=False)
    _ring: swarm.SwarmRing = field(init=False, repr=False, compare=False)

    def __repr__(self) -> str:
        return (
            f"Consensus(epoch={self.epoch}, valid_after_ms={self.valid_after_ms}, "
            f"{len(self.nodes)} nodes, {len(self._swarms)} swarms, "
            f"{len(self.signers)} signers)"
        )

    def __post_init__(self) -> None:
        by_id = {node.node_id: node for node in self.nodes}
        groups: dict[int, list[ConsensusNode]] = {}
        for node in self.nodes:  # sorted, so every member list is sorted too
            groups.setdefault(node.swarm_id, []).append(node)
        swarms = {sid: Swarm(sid, tuple(groups[sid])) for sid in sorted(groups)}
        object.__setattr__(self, "_by_id", by_id)
        object.__setattr__(self, "_swarms", swarms)
        object.__setattr__(self, "_ring", swarm.SwarmRing(swarms))

    # -- times

    def is_fresh(self, now_ms: int) -> bool:
        """Within ``[valid_after, fresh_until)``: no newer consensus is due yet."""
        return self.valid_after_ms <= now_ms < self.fresh_until_ms

    @property
    def digest(self) -> bytes:
        """BLAKE2b-256 of the body: names this consensus (authorities compare digests)."""
        return crypto.hash32(self.body, b"veil/consensus")

    # -- lookups

    def node(self, node_id: bytes | str) -> ConsensusNode | None:
        """The node with this ID (bytes, or 64 hex characters), or None if not listed.

        A malformed hex ID raises :class:`~veil.onion.errors.InvalidId`.
        """
        if isinstance(node_id, str):
            node_id = parse_node_id(node_id)
        return self._by_id.get(node_id)

    @property
    def assignment(self) -> dict[bytes, int]:
        """``{node_id: swarm_id}``: what the next consensus passes as ``previous``."""
        return {node.node_id: node.swarm_id for node in self.nodes}

    @property
    def swarms(self) -> Mapping[int, Swarm]:
        """Every swarm by ID, in increasing order of ID."""
        return dict(self._swarms)

    @property
    def swarm_ids(self) -> tuple[int, ...]:
        return self._ring.ids

    def swarm_of(self, account: AccountId | str | int) -> Swarm:
        """The swarm that stores ``account`` (an :class:`AccountId`, its ``05...`` text, or
        a ring position). :class:`NotFound` if the consensus lists no nodes;
        :class:`InvalidId` for a malformed account ID.
        """
        if isinstance(account, str):
            account = AccountId.parse(account)
        position = account.ring_position if isinstance(account, AccountId) else account
        if not self._swarms:
            raise NotFound("the consensus lists no nodes, so no swarm")
        return self._swarms[self._ring.swarm_for(position)]

    def swarm_members(self, swarm_id: int) -> tuple[ConsensusNode, ...]:
        """The members of swarm ``swarm_id``; :class:`NotFound` if there is no such swarm."""
        found = self._swarms.get(swarm_id)
        if found is None:
            raise NotFound(f"no swarm {swarm_id} in consensus epoch {self.epoch}")
        return found.members


_NODE_ENTRY = Schema(
    "node",
    {
        "id": KEY_FIELD,
        "onion": KEY_FIELD,
        "host": HOST_FIELD,
        "port": PORT_FIELD,
        "version": VERSION_FIELD,
        "swarm": Field(int, min=0, max=swarm.RING_SIZE - 1),
    },
)
_CONSENSUS_BODY = Schema(
    "consensus.body",
    {
        "v": FORMAT_FIELD,
        "epoch": TIME_FIELD,
        "valid_after": TIME_FIELD,
        "fresh_until": TIME_FIELD,
        "valid_until": TIME_FIELD,
        "swarm_size": Field(int, min=1, max=MAX_SWARM_TARGET),
        "nodes": Field(list, max_len=MAX_NODES, items=Field(dict, schema=_NODE_ENTRY)),
    },
)


def make_consensus_body(
    descriptors: Iterable[NodeDescriptor],
    *,
    epoch: int,
    valid_after_ms: int,
    interval_ms: int = DEFAULT_INTERVAL_MS,
    lifetime_ms: int | None = None,
    swarm_size: int = swarm.DEFAULT_TARGET_SIZE,
    previous: Mapping[bytes, int] | None = None,
) -> bytes:
    """The canonical body of a consensus listing ``descriptors``.

    ``descriptors`` are those the authority has accepted (parsed with
    :func:`parse_descriptor`, unexpired, and answering); this function does not look at
    their times. A deterministic function of its arguments: the order of ``descriptors`` does not
    matter, so authorities that agree on the nodes, the times and ``previous`` (the last
    consensus's :attr:`Consensus.assignment`) produce the same bytes. Swarms are
    assigned by :func:`veil.onion.swarm.assign_swarms`. ``fresh_until`` is
    ``valid_after + interval``; ``valid_until`` is ``valid_after + lifetime`` (default
    :data:`DEFAULT_LIFETIME_INTERVALS` intervals). Raises :class:`ValueError` for
    arguments a reader would refuse (two descriptors of one node, more than
    :data:`MAX_NODES`, times out of range).
    """
    check_time(epoch, "epoch")
    check_time(valid_after_ms, "valid_after_ms")
    if lifetime_ms is None:
        lifetime_ms = DEFAULT_LIFETIME_INTERVALS * interval_ms
    if type(interval_ms) is not int or interval_ms <= 0:
        raise ValueError("interval_ms must be a positive integer")
    if type(lifetime_ms) is not int or not interval_ms <= lifetime_ms <= MAX_CONSENSUS_LIFETIME_MS:
        raise ValueError(f"lifetime_ms must be between interval_ms and {MAX_CONSENSUS_LIFETIME_MS}")
    check_time(valid_after_ms + lifetime_ms, "valid_until")
    if type(swarm_size) is not int or not 1 <= swarm_size <= MAX_SWARM_TARGET:
        raise ValueError(f"swarm_size must be in 1..{MAX_SWARM_TARGET}")
    by_id: dict[bytes, NodeDescriptor] = {}
    for descriptor in descriptors:
        if descriptor.node_id in by_id:
            raise ValueError(f"two descriptors for node {descriptor.node_id_hex}")
        by_id[descriptor.node_id] = descriptor
    if len(by_id) > MAX_NODES:
        raise ValueError(f"{len(by_id)} nodes is over the maximum of {MAX_NODES}")
    assignment = swarm.assign_swarms(by_id, swarm_size, previous)
    nodes = [
        ConsensusNode(
            node_id=d.node_id,
            onion_key=d.onion_key,
            host=d.host,
            port=d.port,
            version=d.version,
            swarm_id=assignment[d.node_id],
        )._entry()
        for d in (by_id[node_id] for node_id in sorted(by_id))
    ]
    return encode(
        {
            "v": FORMAT_VERSION,
            "epoch": epoch,
            "valid_after": valid_after_ms,
            "fresh_until": valid_after_ms + interval_ms,
            "valid_until": valid_after_ms + lifetime_ms,
            "swarm_size": swarm_size,
            "nodes": nodes,
        }
    )


def parse_consensus_body(body: bytes) -> Consensus:
    """Parse a consensus body strictly, *without* signatures or time checks.

    For an authority's own documents (the previous consensus it recomputes from, a
    peer's body it compares with its own). Clients and nodes use
    :func:`verify_consensus`. Raises TooLarge, DecodeError, SchemaError or
    :class:`InvalidConsensus`.
    """
    return parse_body(body, frozenset())


def parse_body(body: bytes, signers: frozenset[bytes]) -> Consensus:
    """The parsed body, with the keys whose signatures were counted (see the callers)."""
    raw = _CONSENSUS_BODY.decode(body, max_size=MAX_CONSENSUS_SIZE, max_depth=3, canonical=True)
    valid_after, fresh_until, valid_until = (
        raw["valid_after"],
        raw["fresh_until"],
        raw["valid_until"],
    )
    if not valid_after < fresh_until <= valid_until:
        raise InvalidConsensus(
            "consensus times must satisfy valid_after < fresh_until <= valid_until"
        )
    if valid_until - valid_after > MAX_CONSENSUS_LIFETIME_MS:
        raise InvalidConsensus(
            f"consensus lifetime {valid_until - valid_after} ms is over the maximum "
            f"{MAX_CONSENSUS_LIFETIME_MS} ms"
        )
    nodes: list[ConsensusNode] = []
    previous_id = b""
    for index, entry in enumerate(raw["nodes"]):
        node_id = entry["id"]
        if node_id <= previous_id:  # all IDs are 32 bytes, so this is the byte order
            raise InvalidConsensus(
                f"consensus.body.nodes[{index}]: nodes must be sorted by ID, without repeats"
            )
        previous_id = node_id
        try:
            node = ConsensusNode(
                node_id=node_id,
                onion_key=entry["onion"],
                host=entry["host"],
                port=entry["port"],
                version=entry["version"],
                swarm_id=entry["swarm"],
            )
        except InvalidConsensus as exc:
            raise InvalidConsensus(f"consensus.body.nodes[{index}]: {exc}") from None
        nodes.append(node)
    try:
        swarm.check_assignment({n.node_id: n.swarm_id for n in nodes}, raw["swarm_size"])
    except ValueError as exc:
        raise InvalidConsensus(f"consensus swarm assignment: {exc}") from None
    return Consensus(
        epoch=raw["epoch"],
        valid_after_ms=valid_after,
        fresh_until_ms=fresh_until,
        valid_until_ms=valid_until,
        swarm_size=raw["swarm_size"],
        nodes=tuple(nodes),
        body=bytes(body),
        signers=signers,
    )
