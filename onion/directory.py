"""The directory: node descriptors, consensus documents, and the network's bootstrap file.

Design note
-----------
veil has no blockchain. Directory authorities (one on a devnet, several in production)
sign a *consensus*: the list of nodes that clients may use and the swarm of each.
Clients and nodes pin the authorities' Ed25519 keys (:class:`NetworkFile`) and accept a
consensus only with valid signatures from at least a threshold of those keys. This
module is sans-IO: documents are bytes in and typed objects out; the time is a
parameter; every refusal is a typed error from :mod:`onion.errors`.

Signed documents. A descriptor and a consensus have the same shape: a *body*, which is
canonical CBOR (RFC 8949 core deterministic encoding, :func:`onion.cbor.encode`)
carried as a byte string, and the signatures over exactly those bytes. Signing the
bytes that travel, instead of a re-encoding of decoded fields, means a reader never has
to reproduce an encoding to check a signature. Bodies must still be canonical (they are
decoded with ``canonical=True``), so that one content has one encoding: authorities that
agree on the inputs produce byte-identical bodies and their signatures add up.

Node descriptor (signed by the node's identity key, domain ``b"descriptor"``)::

    {"body": bytes, "sig": bytes(64)}
    body = {"v": 1, "id": Ed25519 identity key (32), "onion": X25519 onion key (32),
            "host": IP literal, "port": 1..65535, "version": str (<= 64 printable ASCII),
            "published": ms, "expires": ms}

A descriptor is refused, in this order: over :data:`MAX_DESCRIPTOR_SIZE` (TooLarge,
before decoding); not strict canonical CBOR of that shape (DecodeError, SchemaError); an
identity key that is not a valid Ed25519 point (InvalidId, as :func:`keys.parse_node_id`);
a signature that does not verify (BadSignature); an onion key that is not a valid
X25519 key, a host that is not a canonical IP literal, a bad version string, an expiry
not after publication or a lifetime over :data:`MAX_DESCRIPTOR_LIFETIME_MS`
(InvalidDescriptor); published more than the clock skew ahead of us (FutureDescriptor);
expired (ExpiredDescriptor).

Consensus (signed by authorities, domain ``b"consensus"``)::

    {"body": bytes, "sigs": [{"key": Ed25519 key (32), "sig": bytes(64)}, ...]}
    body = {"v": 1, "epoch": int, "valid_after": ms, "fresh_until": ms, "valid_until": ms,
            "swarm_size": K, "nodes": [{"id", "onion", "host", "port", "version",
                                        "swarm": 64-bit swarm ID}, ...]}   # sorted by id

Times follow Tor: a consensus is *fresh* from ``valid_after`` to ``fresh_until`` (one
interval; authorities publish the next one by then) and still *usable* until
``valid_until`` (by default three intervals), so that a late authority or a client that
fetched a little early does not break the network.

Signatures are counted, not judged: :func:`verify_consensus` counts the distinct pinned
keys with a valid signature, each key once, ignores keys it does not pin, and refuses
the document (BelowThreshold) if that count is under the threshold. A bad signature from
a pinned key is not fatal by itself: the list of signatures is not signed, so anyone who
relays the document could append a bogus entry, and making that fatal would let them
veto a consensus that enough authorities did sign. At most one verification is spent
per pinned key that has a valid signature, plus one per bogus entry, and the list holds
at most :data:`MAX_SIGNATURES` entries, so the work is bounded.

Swarm assignment is *carried* in the document and *checked* by readers. The assignment
is sticky (:mod:`onion.swarm`): it depends on the previous consensus, so a reader with
one document could not recompute it. The authorities' threshold signature vouches for
it as it vouches for the node list; readers check what any honest assignment satisfies
(every node in one swarm, swarm sizes within :func:`onion.swarm.check_assignment`'s
bounds), and an authority recomputes the exact assignment from the previous consensus
with :func:`make_consensus_body`.

Keys in a consensus are checked for length, not for being valid curve points: that
check is a scalar multiplication (about 0.4 ms a node, seconds for 10,000 nodes), and it
is made where a key enters the network, when the authority parses the node's
descriptor. A client that builds a layer to a bad onion key gets an
:class:`~onion.errors.IntegrityError` from X25519, not a crash.

Limits, checked before decoding: a descriptor is at most 1 KiB; a consensus at most
:data:`MAX_CONSENSUS_SIZE` (room for :data:`MAX_NODES` nodes with the longest fields
and :data:`MAX_SIGNATURES` signatures).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from . import crypto, swarm
from .cbor import Field, Schema, encode
from .errors import (
    BadSignature,
    BelowThreshold,
    ConsensusNotYetValid,
    ExpiredDescriptor,
    FutureDescriptor,
    InvalidConsensus,
    InvalidDescriptor,
    InvalidId,
    NetworkFileError,
    NotFound,
    StaleConsensus,
)
from .keys import AccountId, NodeKeys, is_valid_x25519_public, parse_node_id
from .packet import Hop

__all__ = [
    "CLOCK_SKEW_MS",
    "CONSENSUS_DOMAIN",
    "DEFAULT_DESCRIPTOR_LIFETIME_MS",
    "DEFAULT_INTERVAL_MS",
    "DEFAULT_LIFETIME_INTERVALS",
    "DESCRIPTOR_DOMAIN",
    "MAX_AUTHORITIES",
    "MAX_CONSENSUS_LIFETIME_MS",
    "MAX_CONSENSUS_SIZE",
    "MAX_DESCRIPTOR_LIFETIME_MS",
    "MAX_DESCRIPTOR_SIZE",
    "MAX_NETWORK_FILE_SIZE",
    "MAX_NODES",
    "MAX_SIGNATURES",
    "Authority",
    "Consensus",
    "ConsensusNode",
    "ConsensusSignature",
    "NetworkFile",
    "NodeDescriptor",
    "Swarm",
    "assemble",
    "make_consensus_body",
    "make_descriptor",
    "parse_consensus_body",
    "parse_descriptor",
    "sign_consensus",
    "split_consensus",
    "verify_consensus",
]

DESCRIPTOR_DOMAIN: Final = b"descriptor"
CONSENSUS_DOMAIN: Final = b"consensus"
FORMAT_VERSION: Final = 1

#: Largest signed descriptor (a full one is under 300 bytes).
MAX_DESCRIPTOR_SIZE: Final = 1024
#: How long a descriptor lives by default; a node republishes well before.
DEFAULT_DESCRIPTOR_LIFETIME_MS: Final = 3 * 3600 * 1000
#: A descriptor claiming to live longer is refused: a stolen or stale one would linger.
MAX_DESCRIPTOR_LIFETIME_MS: Final = 24 * 3600 * 1000
#: Clock difference tolerated on "not yet valid" checks (DESIGN: about a minute).
CLOCK_SKEW_MS: Final = 60_000

#: Consensus interval of a devnet (production would use an hour).
DEFAULT_INTERVAL_MS: Final = 60_000
#: A consensus stays usable for this many intervals after ``valid_after``.
DEFAULT_LIFETIME_INTERVALS: Final = 3
#: Refused beyond this: a long-lived consensus is a long window for replaying it.
MAX_CONSENSUS_LIFETIME_MS: Final = 24 * 3600 * 1000
MAX_NODES: Final = 10_000
MAX_SIGNATURES: Final = 32
MAX_AUTHORITIES: Final = MAX_SIGNATURES
#: Bytes, for the whole signed document: 10,000 nodes of the longest fields and 32
#: signatures take about 2.2 MB (tests/test_directory.py builds one).
MAX_CONSENSUS_SIZE: Final = 3 * 1024 * 1024
#: Largest swarm target size a consensus may ask for.
MAX_SWARM_TARGET: Final = 64
MAX_NETWORK_FILE_SIZE: Final = 64 * 1024

MAX_VERSION_LEN: Final = 64
#: The longest IP literal ("ffff:...:255.255.255.255"); the canonical forms accepted are
#: at most 39 characters, and longer spellings are refused by name, not by length.
MAX_HOST_LEN: Final = 45
_MAX_TIME_MS: Final = 2**63 - 1
_KEY = Field(bytes, size=32)
_SIG = Field(bytes, size=crypto.SIG_BYTES)
_TIME = Field(int, min=0, max=_MAX_TIME_MS)
_HOST = Field(str, min_len=1, max_len=MAX_HOST_LEN)
_PORT = Field(int, min=1, max=65535)
_VERSION = Field(str, min_len=1, max_len=MAX_VERSION_LEN)
_FORMAT = Field(int, choices=frozenset({FORMAT_VERSION}))


# --- field checks shared by descriptors, consensus entries and the network file ----------


def _check_host(host: object, error: type[Exception]) -> str:
    """``host`` must be an IP literal in its canonical text form (one spelling per address)."""
    if not isinstance(host, str) or not 0 < len(host) <= MAX_HOST_LEN:
        raise error(f"host must be an IP literal of at most {MAX_HOST_LEN} characters")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise error(f"host {host!r} is not an IP address literal") from None
    if isinstance(ip, ipaddress.IPv6Address) and (ip.scope_id or ip.ipv4_mapped):
        # A zone ID means nothing off this machine; an IPv4-mapped address is written
        # as IPv4 (and its text form differs between Python versions).
        raise error(f"host {host!r}: write IPv4 addresses as IPv4, without a zone ID")
    if str(ip) != host:
        raise error(f"host {host!r} is not in canonical form (write it {ip})")
    if ip.is_unspecified or ip.is_multicast:
        raise error(f"host {host!r} is not a unicast address a node can be reached at")
    return host


def _check_port(port: object, error: type[Exception]) -> int:
    if type(port) is not int or not 1 <= port <= 65535:
        raise error(f"port must be an integer in 1..65535, not {port!r}")
    return port


def _check_version(version: object, error: type[Exception]) -> str:
    if (
        not isinstance(version, str)
        or not 0 < len(version) <= MAX_VERSION_LEN
        or not (version.isascii() and version.isprintable())
    ):
        raise error(f"version must be 1 to {MAX_VERSION_LEN} printable ASCII characters")
    return version


def _check_key_bytes(value: object, what: str, error: type[Exception]) -> bytes:
    if not isinstance(value, bytes) or len(value) != 32:
        raise error(f"{what} must be 32 bytes")
    return value


def _check_time(value: object, what: str) -> int:
    if type(value) is not int or not 0 <= value <= _MAX_TIME_MS:
        raise ValueError(f"{what} must be a time in ms since the epoch, not {value!r}")
    return value


# --- node descriptors ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeDescriptor:
    """What a node says about itself, signed by its identity key.

    Building one checks every field, including that both keys are valid points:
    :class:`~onion.errors.InvalidId` for the identity key, :class:`InvalidDescriptor`
    for anything else.
    """

    node_id: bytes  # Ed25519 identity public key
    onion_key: bytes  # X25519 public key that onion layers are built to
    host: str
    port: int
    version: str
    published_ms: int
    expires_ms: int

    def __post_init__(self) -> None:
        if not isinstance(self.node_id, bytes) or not crypto.ed25519_is_valid_point(self.node_id):
            raise InvalidId("descriptor: node ID is not a valid Ed25519 key")
        if not isinstance(self.onion_key, bytes) or not is_valid_x25519_public(self.onion_key):
            raise InvalidDescriptor("descriptor: onion key is not a valid X25519 key")
        _check_host(self.host, InvalidDescriptor)
        _check_port(self.port, InvalidDescriptor)
        _check_version(self.version, InvalidDescriptor)
        for name in ("published_ms", "expires_ms"):
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value <= _MAX_TIME_MS:
                raise InvalidDescriptor(f"descriptor: {name} is not a time in ms")
        lifetime = self.expires_ms - self.published_ms
        if lifetime <= 0:
            raise InvalidDescriptor("descriptor: expires before it is published")
        if lifetime > MAX_DESCRIPTOR_LIFETIME_MS:
            raise InvalidDescriptor(
                f"descriptor: lifetime of {lifetime} ms is over the maximum "
                f"{MAX_DESCRIPTOR_LIFETIME_MS} ms"
            )

    @property
    def node_id_hex(self) -> str:
        return self.node_id.hex()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def is_expired(self, now_ms: int) -> bool:
        return now_ms >= self.expires_ms

    def _body(self) -> dict[str, Any]:
        return {
            "v": FORMAT_VERSION,
            "id": self.node_id,
            "onion": self.onion_key,
            "host": self.host,
            "port": self.port,
            "version": self.version,
            "published": self.published_ms,
            "expires": self.expires_ms,
        }


_DESCRIPTOR = Schema("descriptor", {"body": Field(bytes, max_len=MAX_DESCRIPTOR_SIZE), "sig": _SIG})
_DESCRIPTOR_BODY = Schema(
    "descriptor.body",
    {
        "v": _FORMAT,
        "id": _KEY,
        "onion": _KEY,
        "host": _HOST,
        "port": _PORT,
        "version": _VERSION,
        "published": _TIME,
        "expires": _TIME,
    },
)


def make_descriptor(
    node_keys: NodeKeys,
    host: str,
    port: int,
    version: str,
    now_ms: int,
    lifetime_ms: int = DEFAULT_DESCRIPTOR_LIFETIME_MS,
) -> bytes:
    """The node's signed descriptor, published at ``now_ms`` and valid for ``lifetime_ms``.

    Raises :class:`InvalidDescriptor` for a field :func:`parse_descriptor` would refuse
    (a host that is not a canonical IP literal, a lifetime over the maximum, ...).
    """
    _check_time(now_ms, "now_ms")
    if type(lifetime_ms) is not int:
        raise InvalidDescriptor("descriptor: lifetime_ms must be an integer")
    descriptor = NodeDescriptor(
        node_id=node_keys.identity_public,
        onion_key=node_keys.onion_public,
        host=host,
        port=port,
        version=version,
        published_ms=now_ms,
        expires_ms=now_ms + lifetime_ms,
    )
    body = encode(descriptor._body())
    return encode({"body": body, "sig": node_keys.sign(DESCRIPTOR_DOMAIN, body)})


def parse_descriptor(
    data: bytes, *, now_ms: int, max_skew_ms: int = CLOCK_SKEW_MS
) -> NodeDescriptor:
    """Check a signed descriptor from outside; see the module note for every refusal."""
    _check_time(now_ms, "now_ms")
    outer = _DESCRIPTOR.decode(data, max_size=MAX_DESCRIPTOR_SIZE, max_depth=1)
    body_bytes: bytes = outer["body"]
    body = _DESCRIPTOR_BODY.decode(
        body_bytes, max_size=MAX_DESCRIPTOR_SIZE, max_depth=1, canonical=True
    )
    node_id = parse_node_id(body["id"].hex())  # InvalidId unless a valid Ed25519 point
    crypto.verify(node_id, DESCRIPTOR_DOMAIN, body_bytes, outer["sig"])  # BadSignature
    descriptor = NodeDescriptor(
        node_id=node_id,
        onion_key=body["onion"],
        host=body["host"],
        port=body["port"],
        version=body["version"],
        published_ms=body["published"],
        expires_ms=body["expires"],
    )
    if descriptor.published_ms > now_ms + max_skew_ms:
        raise FutureDescriptor(
            f"descriptor published {descriptor.published_ms - now_ms} ms in the future "
            f"(more than the allowed clock skew of {max_skew_ms} ms)"
        )
    if descriptor.is_expired(now_ms):
        raise ExpiredDescriptor(f"descriptor expired {now_ms - descriptor.expires_ms} ms ago")
    return descriptor


# --- consensus documents ---------------------------------------------------------------


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
        _check_key_bytes(self.node_id, "node ID", InvalidConsensus)
        _check_key_bytes(self.onion_key, "onion key", InvalidConsensus)
        _check_host(self.host, InvalidConsensus)
        _check_port(self.port, InvalidConsensus)
        _check_version(self.version, InvalidConsensus)
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
        """This node as a hop of an onion path (:mod:`onion.packet`)."""
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

    def is_valid(self, now_ms: int) -> bool:
        """Within ``[valid_after, valid_until)``: still usable."""
        return self.valid_after_ms <= now_ms < self.valid_until_ms

    @property
    def digest(self) -> bytes:
        """BLAKE2b-256 of the body: names this consensus (authorities compare digests)."""
        return crypto.hash32(self.body, b"veil/consensus")

    # -- lookups

    def node(self, node_id: bytes | str) -> ConsensusNode | None:
        """The node with this ID (bytes, or 64 hex characters), or None if not listed.

        A malformed hex ID raises :class:`~onion.errors.InvalidId`.
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
        "id": _KEY,
        "onion": _KEY,
        "host": _HOST,
        "port": _PORT,
        "version": _VERSION,
        "swarm": Field(int, min=0, max=swarm.RING_SIZE - 1),
    },
)
_CONSENSUS_BODY = Schema(
    "consensus.body",
    {
        "v": _FORMAT,
        "epoch": _TIME,
        "valid_after": _TIME,
        "fresh_until": _TIME,
        "valid_until": _TIME,
        "swarm_size": Field(int, min=1, max=MAX_SWARM_TARGET),
        "nodes": Field(list, max_len=MAX_NODES, items=Field(dict, schema=_NODE_ENTRY)),
    },
)
_CONSENSUS = Schema(
    "consensus",
    {
        "body": Field(bytes, min_len=1, max_len=MAX_CONSENSUS_SIZE),
        "sigs": Field(
            list,
            max_len=MAX_SIGNATURES,
            items=Field(dict, schema=Schema("signature", {"key": _KEY, "sig": _SIG})),
        ),
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
    assigned by :func:`onion.swarm.assign_swarms`. ``fresh_until`` is
    ``valid_after + interval``; ``valid_until`` is ``valid_after + lifetime`` (default
    :data:`DEFAULT_LIFETIME_INTERVALS` intervals). Raises :class:`ValueError` for
    arguments a reader would refuse (two descriptors of one node, more than
    :data:`MAX_NODES`, times out of range).
    """
    _check_time(epoch, "epoch")
    _check_time(valid_after_ms, "valid_after_ms")
    if lifetime_ms is None:
        lifetime_ms = DEFAULT_LIFETIME_INTERVALS * interval_ms
    if type(interval_ms) is not int or interval_ms <= 0:
        raise ValueError("interval_ms must be a positive integer")
    if type(lifetime_ms) is not int or not interval_ms <= lifetime_ms <= MAX_CONSENSUS_LIFETIME_MS:
        raise ValueError(f"lifetime_ms must be between interval_ms and {MAX_CONSENSUS_LIFETIME_MS}")
    _check_time(valid_after_ms + lifetime_ms, "valid_until")
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
    return _parse_body(body, frozenset())


def _parse_body(body: bytes, signers: frozenset[bytes]) -> Consensus:
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


def sign_consensus(body: bytes, authority: NodeKeys) -> ConsensusSignature:
    """``authority``'s signature of ``body`` (domain ``b"consensus"``).

    The body is parsed first (:func:`parse_consensus_body`), so an authority never signs
    what a reader would refuse.
    """
    parse_consensus_body(body)
    return ConsensusSignature(
        key=authority.identity_public, signature=authority.sign(CONSENSUS_DOMAIN, body)
    )


def assemble(body: bytes, signatures: Iterable[ConsensusSignature]) -> bytes:
    """The signed consensus document: ``body`` with ``signatures``.

    Identical signatures are kept once and the list is sorted by key, so the same set of
    signatures gives the same bytes. Signatures are not verified here (a reader counts
    only the valid ones). :class:`ValueError` for more than :data:`MAX_SIGNATURES`;
    the body is parsed as in :func:`sign_consensus`.
    """
    parse_consensus_body(body)
    unique = sorted({(s.key, s.signature) for s in signatures})
    if len(unique) > MAX_SIGNATURES:
        raise ValueError(f"{len(unique)} signatures is over the maximum of {MAX_SIGNATURES}")
    return encode({"body": body, "sigs": [{"key": k, "sig": s} for k, s in unique]})


def split_consensus(data: bytes) -> tuple[bytes, tuple[ConsensusSignature, ...]]:
    """A consensus document's body and signatures, checked for shape only.

    For authorities that gather each other's signatures of a body they agree on.
    Raises TooLarge (before decoding), DecodeError or SchemaError.
    """
    doc = _CONSENSUS.decode(data, max_size=MAX_CONSENSUS_SIZE, max_depth=3)
    return doc["body"], tuple(ConsensusSignature(e["key"], e["sig"]) for e in doc["sigs"])


def verify_consensus(
    data: bytes,
    *,
    pinned: Collection[bytes],
    threshold: int,
    now_ms: int,
    min_epoch: int = 0,
    max_skew_ms: int = CLOCK_SKEW_MS,
) -> Consensus:
    """Accept a consensus document only if enough pinned authorities signed it and it is
    valid now.

    Checks, in order: the size (TooLarge, before decoding) and shape (DecodeError,
    SchemaError); at least ``threshold`` distinct ``pinned`` keys with a valid
    signature (:class:`BelowThreshold`; see the module note on how signatures count);
    the body (:func:`parse_consensus_body`'s errors); an ``epoch`` below ``min_epoch``,
    the epoch of a consensus already held, which would be a rollback
    (:class:`StaleConsensus`); ``now_ms`` at or past ``valid_until``
    (:class:`StaleConsensus`); ``now_ms`` more than ``max_skew_ms`` before
    ``valid_after`` (:class:`ConsensusNotYetValid`: a fresh consensus may reach a
    client whose clock is a little behind the authorities'). The skew is not added to
    ``valid_until``: the grace period after ``fresh_until`` already covers late clocks.

    :class:`ValueError` for local misuse: a pinned key that is not 32 bytes, or a
    threshold outside ``1 .. len(set(pinned))``.
    """
    pinned_set = set(pinned)
    for key in pinned_set:
        if not isinstance(key, bytes) or len(key) != 32:
            raise ValueError("pinned authority keys are 32-byte Ed25519 public keys")
    if type(threshold) is not int or not 1 <= threshold <= len(pinned_set):
        raise ValueError(
            f"threshold must be between 1 and the {len(pinned_set)} pinned keys, not {threshold}"
        )
    _check_time(now_ms, "now_ms")

    body, signatures = split_consensus(data)
    counted: set[bytes] = set()
    invalid = unknown = 0
    for entry in signatures:
        if len(counted) >= threshold:
            break  # enough: do not spend more verifications
        if entry.key not in pinned_set:
            unknown += 1
            continue
        if entry.key in counted:
            continue  # each authority counts once, however many times it signed
        try:
            crypto.verify(entry.key, CONSENSUS_DOMAIN, body, entry.signature)
        except BadSignature:
            invalid += 1
            continue
        counted.add(entry.key)
    if len(counted) < threshold:
        raise BelowThreshold(
            f"consensus has {len(counted)} valid signature(s) from pinned authorities, "
            f"{threshold} required ({invalid} invalid, {unknown} from unknown keys)"
        )

    consensus = _parse_body(body, frozenset(counted))
    if consensus.epoch < min_epoch:
        raise StaleConsensus(
            f"consensus epoch {consensus.epoch} is older than epoch {min_epoch} already held"
        )
    if now_ms >= consensus.valid_until_ms:
        raise StaleConsensus(
            f"consensus epoch {consensus.epoch} expired {now_ms - consensus.valid_until_ms} "
            "ms ago (valid_until has passed)"
        )
    if now_ms + max_skew_ms < consensus.valid_after_ms:
        raise ConsensusNotYetValid(
            f"consensus epoch {consensus.epoch} is valid only in "
            f"{consensus.valid_after_ms - now_ms} ms (more than the allowed clock skew)"
        )
    return consensus


# --- the network's bootstrap file ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Authority:
    """A directory authority: its pinned Ed25519 key and where to fetch the consensus."""

    key: bytes
    host: str
    port: int

    def __post_init__(self) -> None:
        if not isinstance(self.key, bytes) or not crypto.ed25519_is_valid_point(self.key):
            raise NetworkFileError("authority key is not a valid Ed25519 public key")
        _check_host(self.host, NetworkFileError)
        _check_port(self.port, NetworkFileError)

    @property
    def key_hex(self) -> str:
        return self.key.hex()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port


@dataclass(frozen=True, slots=True)
class NetworkFile:
    """``network.json``: the authorities a client or node trusts, and how many must sign.

    A local file, but validated as strictly as anything from outside: the format below
    and nothing else, every error a :class:`NetworkFileError` saying what is wrong::

        {"version": 1, "threshold": 2,
         "authorities": [{"key": "<64 hex>", "host": "127.0.0.1", "port": 7000}, ...]}

    Hosts are IP literals (no DNS lookup stands between a client and its trust roots).
    """

    authorities: tuple[Authority, ...]
    threshold: int

    def __post_init__(self) -> None:
        authorities = tuple(self.authorities)
        object.__setattr__(self, "authorities", authorities)
        if not 1 <= len(authorities) <= MAX_AUTHORITIES:
            raise NetworkFileError(f"a network has 1 to {MAX_AUTHORITIES} authorities")
        for authority in authorities:
            if not isinstance(authority, Authority):
                raise NetworkFileError("authorities must be Authority entries")
        if len({a.key for a in authorities}) != len(authorities):
            raise NetworkFileError("an authority key is listed twice")
        if type(self.threshold) is not int or not 1 <= self.threshold <= len(authorities):
            raise NetworkFileError(
                f"threshold must be between 1 and the number of authorities "
                f"({len(authorities)}), not {self.threshold!r}"
            )

    @property
    def pinned_keys(self) -> tuple[bytes, ...]:
        return tuple(a.key for a in self.authorities)

    def to_json(self) -> str:
        """The file's text (deterministic: sorted keys, two-space indent, final newline)."""
        doc = {
            "version": FORMAT_VERSION,
            "threshold": self.threshold,
            "authorities": [
                {"key": a.key_hex, "host": a.host, "port": a.port} for a in self.authorities
            ],
        }
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> NetworkFile:
        """Parse the file's text strictly; :class:`NetworkFileError` for anything wrong."""
        size = len(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
        if size > MAX_NETWORK_FILE_SIZE:
            raise NetworkFileError(
                f"network file of {size} bytes is over the limit of {MAX_NETWORK_FILE_SIZE}"
            )
        try:
            doc = json.loads(
                text,
                object_pairs_hook=_no_duplicate_keys,
                parse_float=_refuse_float,
                parse_constant=_refuse_float,
            )
        except NetworkFileError:
            raise
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, nesting
            raise NetworkFileError(f"network file is not valid JSON: {exc}") from None
        _expect_keys(doc, "network file", {"version", "threshold", "authorities"})
        if doc["version"] != FORMAT_VERSION or type(doc["version"]) is not int:
            raise NetworkFileError(f"network file version must be {FORMAT_VERSION}")
        entries = doc["authorities"]
        if not isinstance(entries, list):
            raise NetworkFileError("network file: authorities must be a list")
        if not 1 <= len(entries) <= MAX_AUTHORITIES:
            raise NetworkFileError(f"a network has 1 to {MAX_AUTHORITIES} authorities")
        authorities = []
        for index, entry in enumerate(entries):
            where = f"authorities[{index}]"
            _expect_keys(entry, where, {"key", "host", "port"})
            try:
                key = parse_node_id(entry["key"])
            except InvalidId:
                raise NetworkFileError(
                    f"{where}.key must be 64 hex characters of a valid Ed25519 key"
                ) from None
            try:
                authorities.append(Authority(key=key, host=entry["host"], port=entry["port"]))
            except NetworkFileError as exc:
                raise NetworkFileError(f"{where}: {exc}") from None
        return cls(authorities=tuple(authorities), threshold=doc["threshold"])


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise NetworkFileError(f"network file: key {key!r} appears twice in one object")
        result[key] = value
    return result


def _refuse_float(text: str) -> Any:
    raise NetworkFileError(f"network file: {text} is not allowed (integers only)")


def _expect_keys(obj: object, where: str, keys: set[str]) -> None:
    if not isinstance(obj, dict):
        raise NetworkFileError(f"{where} must be a JSON object")
    missing = keys - obj.keys()
    if missing:
        raise NetworkFileError(f"{where}: missing {', '.join(sorted(missing))}")
    unknown = obj.keys() - keys
    if unknown:
        raise NetworkFileError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
