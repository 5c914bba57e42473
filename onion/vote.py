"""Directory authorities' votes, and the rule that turns votes into a consensus.

Design note
-----------
Tor's directory protocol in miniature. At the start of every epoch each authority
*freezes a vote*: the signed descriptors of the nodes that it registered and found
answering (:mod:`veil.node.authority` checks them). Shortly afterwards it fetches the
other authorities' votes for the same epoch, combines them with :func:`combine_votes`,
and builds the consensus body with :func:`veil.onion.directory.make_consensus_body`. The
authorities then sign that body and exchange signatures (:func:`make_signature_doc`,
:func:`parse_signature_doc`); because the body is canonical CBOR and every step here is
a deterministic function of the votes, authorities that hold the same votes (and the
same previous consensus) sign byte-identical bodies and their signatures add up.

Vote document (signed by the authority's Ed25519 key, domain ``b"vote"``)::

    {"body": bytes, "sig": bytes(64)}
    body = {"v": 1, "key": authority key (32), "epoch": int, "interval": ms,
            "swarm_size": K, "published": ms,
            "descriptors": [signed descriptor bytes, ...]}   # sorted, no repeats

A vote carries the descriptors as their signed bytes, so a reader checks every node's
own signature and never has to trust the authority for a node's keys or address; and a
restarted authority can learn the descriptors it lacks from a peer's vote. ``interval``
and ``swarm_size`` are in the vote so that two authorities configured differently find
out (a vote with other parameters is refused with :class:`~veil.onion.errors.VoteMismatch`)
instead of silently signing different bodies.

Combining (:func:`combine_votes`): a node is in the consensus if it is listed in at
least ``threshold`` of the votes (the same threshold that clients require of
signatures). With a majority threshold this is Tor's "listed by more than half of the
voting authorities", and it does not depend on how many votes an authority managed to
fetch beyond that, only on which ones: authorities holding the same votes agree. Where
votes list different descriptors of one node (a node that renewed between two checks),
the latest one wins (greatest ``published``, then the other fields, in a fixed order).

Descriptors in votes are parsed with the epoch's ``valid_after`` as the time
(:func:`vote_descriptors`), never with the reader's clock, so every authority accepts or
refuses exactly the same ones. A descriptor that fails is skipped (and counted), not
fatal to the vote: one bad entry from an authority must not veto the others.

Limits, checked before decoding: a vote is at most :data:`MAX_VOTE_SIZE` bytes and holds
at most :data:`veil.onion.directory.MAX_NODES` descriptors of at most
:data:`veil.onion.directory.MAX_DESCRIPTOR_SIZE` bytes each.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from . import crypto
from .cbor import Field, Schema, encode
from .directory import (
    CLOCK_SKEW_MS,
    CONSENSUS_DOMAIN,
    MAX_DESCRIPTOR_SIZE,
    MAX_NODES,
    MAX_SWARM_TARGET,
    ConsensusSignature,
    NodeDescriptor,
    parse_descriptor,
)
from .errors import (
    ExpiredDescriptor,
    FutureDescriptor,
    ProtocolError,
    SchemaError,
    VoteMismatch,
)
from .keys import NodeKeys

__all__ = [
    "MAX_SIGNATURE_DOC_SIZE",
    "MAX_VOTE_SIZE",
    "VOTE_DOMAIN",
    "Vote",
    "combine_votes",
    "make_signature_doc",
    "make_vote",
    "parse_signature_doc",
    "parse_vote",
    "vote_descriptors",
]

VOTE_DOMAIN: Final = b"vote"
FORMAT_VERSION: Final = 1
#: Bytes: 10,000 descriptors of about 300 bytes each, with room to spare. A vote is
#: fetched by authorities only, from authorities they pin.
MAX_VOTE_SIZE: Final = 4 * 1024 * 1024
#: A signature document is a key and a signature, about 110 bytes.
MAX_SIGNATURE_DOC_SIZE: Final = 256

_MAX_TIME_MS: Final = 2**63 - 1
_KEY = Field(bytes, size=32)
_SIG = Field(bytes, size=crypto.SIG_BYTES)
_TIME = Field(int, min=0, max=_MAX_TIME_MS)

_VOTE = Schema("vote", {"body": Field(bytes, min_len=1, max_len=MAX_VOTE_SIZE), "sig": _SIG})
_VOTE_BODY = Schema(
    "vote.body",
    {
        "v": Field(int, choices=frozenset({FORMAT_VERSION})),
        "key": _KEY,
        "epoch": _TIME,
        "interval": Field(int, min=1, max=_MAX_TIME_MS),
        "swarm_size": Field(int, min=1, max=MAX_SWARM_TARGET),
        "published": _TIME,
        "descriptors": Field(
            list, max_len=MAX_NODES, items=Field(bytes, min_len=1, max_len=MAX_DESCRIPTOR_SIZE)
        ),
    },
)
_SIGNATURE_DOC = Schema("signature", {"key": _KEY, "sig": _SIG})


@dataclass(frozen=True, slots=True, repr=False)
class Vote:
    """A vote whose signature has been checked; ``descriptors`` are still raw bytes
    (parse them with :func:`vote_descriptors`). ``data`` is the signed document."""

    key: bytes
    epoch: int
    interval_ms: int
    swarm_size: int
    published_ms: int
    descriptors: tuple[bytes, ...]
    data: bytes

    def __repr__(self) -> str:
        return (
            f"Vote({self.key.hex()[:16]}..., epoch={self.epoch}, "
            f"{len(self.descriptors)} descriptors)"
        )


def make_vote(
    authority: NodeKeys,
    descriptors: Iterable[bytes],
    *,
    epoch: int,
    interval_ms: int,
    swarm_size: int,
    now_ms: int,
) -> bytes:
    """``authority``'s signed vote for ``epoch`` listing ``descriptors`` (signed bytes).

    Duplicates are dropped and the list is sorted, so the same set gives the same
    vote. :class:`ValueError` for more than :data:`MAX_NODES` descriptors or a vote over
    :data:`MAX_VOTE_SIZE`; :class:`~veil.onion.errors.SchemaError` for a field out of range.
    """
    unique = sorted(set(descriptors))
    if len(unique) > MAX_NODES:
        raise ValueError(f"{len(unique)} descriptors is over the maximum of {MAX_NODES}")
    body = _VOTE_BODY.encode(
        {
            "v": FORMAT_VERSION,
            "key": authority.identity_public,
            "epoch": epoch,
            "interval": interval_ms,
            "swarm_size": swarm_size,
            "published": now_ms,
            "descriptors": unique,
        }
    )
    data = encode({"body": body, "sig": authority.sign(VOTE_DOMAIN, body)})
    if len(data) > MAX_VOTE_SIZE:
        raise ValueError(f"a vote of {len(data)} bytes is over the maximum of {MAX_VOTE_SIZE}")
    return data


def parse_vote(data: bytes, *, key: bytes, epoch: int, interval_ms: int, swarm_size: int) -> Vote:
    """Check a vote fetched from the authority whose key is ``key``, for ``epoch``.

    Refused, in this order: over :data:`MAX_VOTE_SIZE` (TooLarge, before decoding); not
    strict CBOR of the vote's shape, or a body that is not canonical (DecodeError,
    SchemaError); a ``key`` other than the one asked (VoteMismatch); a bad signature
    (BadSignature); descriptors not sorted or repeated (SchemaError); another epoch,
    interval or swarm size than ours (VoteMismatch).
    """
    outer = _VOTE.decode(data, max_size=MAX_VOTE_SIZE, max_depth=1)
    body = _VOTE_BODY.decode(outer["body"], max_size=MAX_VOTE_SIZE, max_depth=2, canonical=True)
    if body["key"] != key:
        raise VoteMismatch("vote is signed for another authority's key than the one asked")
    crypto.verify(key, VOTE_DOMAIN, outer["body"], outer["sig"])  # BadSignature
    descriptors = tuple(body["descriptors"])
    for index in range(1, len(descriptors)):
        if descriptors[index] <= descriptors[index - 1]:
            raise SchemaError(
                f"vote.body.descriptors[{index}]: descriptors must be sorted, without repeats"
            )
    if body["epoch"] != epoch:
        raise VoteMismatch(f"vote is for epoch {body['epoch']}, not epoch {epoch}")
    if body["interval"] != interval_ms or body["swarm_size"] != swarm_size:
        raise VoteMismatch(
            f"vote uses interval {body['interval']} ms and swarm size {body['swarm_size']}; "
            f"this authority uses {interval_ms} ms and {swarm_size}: the authorities of a "
            "network must be configured alike"
        )
    return Vote(
        key=body["key"],
        epoch=body["epoch"],
        interval_ms=body["interval"],
        swarm_size=body["swarm_size"],
        published_ms=body["published"],
        descriptors=descriptors,
        data=bytes(data),
    )


def vote_descriptors(
    vote: Vote,
    *,
    valid_after_ms: int,
    known: Mapping[bytes, NodeDescriptor] | None = None,
) -> tuple[list[NodeDescriptor], int]:
    """The descriptors of ``vote`` that are valid at ``valid_after_ms``, and how many
    were skipped.

    Every authority parses with the same time (the epoch's ``valid_after``), so all
    accept the same descriptors. ``known`` maps signed bytes to an already parsed
    descriptor (the authority's own registry) to save the signature checks; a known
    descriptor is still checked against ``valid_after_ms``. Among several descriptors
    of one node in a vote (which an honest vote never has) the latest is kept.
    """
    known = known or {}
    by_node: dict[bytes, NodeDescriptor] = {}
    skipped = 0
    for raw in vote.descriptors:
        descriptor = known.get(raw)
        try:
            if descriptor is None:
                descriptor = parse_descriptor(raw, now_ms=valid_after_ms)
            else:
                _check_times(descriptor, valid_after_ms)
        except ProtocolError:  # TooLarge, DecodeError, SchemaError, BadSignature, ...
            skipped += 1
            continue
        held = by_node.get(descriptor.node_id)
        if held is None or _order(descriptor) > _order(held):
            by_node[descriptor.node_id] = descriptor
    return [by_node[node_id] for node_id in sorted(by_node)], skipped


def _check_times(descriptor: NodeDescriptor, now_ms: int) -> None:
    # The same time checks as parse_descriptor, for a descriptor parsed before.
    if descriptor.published_ms > now_ms + CLOCK_SKEW_MS:
        raise FutureDescriptor("descriptor published too far in the future")
    if descriptor.is_expired(now_ms):
        raise ExpiredDescriptor("descriptor expired")


def _order(d: NodeDescriptor) -> tuple[int, int, bytes, str, int, str]:
    """A total order on one node's descriptors: the latest, then a fixed tie-break."""
    return (d.published_ms, d.expires_ms, d.onion_key, d.host, d.port, d.version)


def combine_votes(
    votes: Sequence[Sequence[NodeDescriptor]], *, threshold: int
) -> list[NodeDescriptor]:
    """The descriptors a consensus lists, from the votes' descriptor lists.

    A node is listed if at least ``threshold`` votes list it (each vote counts once per
    node); its descriptor is the latest one among those votes. The result is sorted by
    node ID and depends only on the votes, not on their order. :class:`ValueError` for
    a threshold below 1.
    """
    if type(threshold) is not int or threshold < 1:
        raise ValueError("threshold must be a positive integer")
    count: dict[bytes, int] = {}
    best: dict[bytes, NodeDescriptor] = {}
    for descriptors in votes:
        seen: set[bytes] = set()
        for descriptor in descriptors:
            node_id = descriptor.node_id
            if node_id not in seen:
                seen.add(node_id)
                count[node_id] = count.get(node_id, 0) + 1
            held = best.get(node_id)
            if held is None or _order(descriptor) > _order(held):
                best[node_id] = descriptor
    return [best[node_id] for node_id in sorted(best) if count[node_id] >= threshold]


# --- signature exchange ---------------------------------------------------------------


def make_signature_doc(signature: ConsensusSignature) -> bytes:
    """What ``GET /signature`` answers: ``{"key": bytes(32), "sig": bytes(64)}``."""
    return _SIGNATURE_DOC.encode({"key": signature.key, "sig": signature.signature})


def parse_signature_doc(data: bytes, *, key: bytes, body: bytes) -> ConsensusSignature:
    """A peer's signature of ``body``, checked: TooLarge, DecodeError, SchemaError;
    VoteMismatch for another key than ``key``; BadSignature if it does not verify."""
    doc = _SIGNATURE_DOC.decode(data, max_size=MAX_SIGNATURE_DOC_SIZE, max_depth=1)
    if doc["key"] != key:
        raise VoteMismatch("signature is from another authority's key than the one asked")
    crypto.verify(key, CONSENSUS_DOMAIN, body, doc["sig"])
    return ConsensusSignature(key=doc["key"], signature=doc["sig"])
