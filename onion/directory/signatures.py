"""Signed consensus documents: signing, assembling, and verifying against pinned keys.

Design note
-----------
Document format (domain ``b"consensus"``)::

    {"body": bytes, "sigs": [{"key": Ed25519 key (32), "sig": bytes(64)}, ...]}

The body is carried as the bytes that were signed (canonical CBOR, see
:mod:`veil.onion.directory`), so a reader never re-encodes anything to check a signature.

Signatures are counted, not judged: :func:`verify_consensus` counts the distinct pinned
keys with a valid signature, each key once, ignores keys it does not pin, and refuses
the document (BelowThreshold) if that count is under the threshold. A bad signature from
a pinned key is not fatal by itself: the list of signatures is not signed, so anyone who
relays the document could append a bogus entry, and making that fatal would let them
veto a consensus that enough authorities did sign. At most one verification is spent
per pinned key that has a valid signature, plus one per bogus entry, and the list holds
at most :data:`~veil.onion.directory.consensus.MAX_SIGNATURES` entries, so the work is
bounded.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from .. import crypto
from ..cbor import Field, Schema, encode
from ..errors import (
    BadSignature,
    BelowThreshold,
    ConsensusNotYetValid,
    InvalidConsensus,
    StaleConsensus,
)
from ..keys import NodeKeys
from .consensus import (
    CONSENSUS_DOMAIN,
    MAX_CONSENSUS_SIZE,
    MAX_SIGNATURES,
    Consensus,
    ConsensusSignature,
    parse_body,
    parse_consensus_body,
)
from .fields import CLOCK_SKEW_MS, KEY_FIELD, SIG_FIELD, check_time

_CONSENSUS = Schema(
    "consensus",
    {
        "body": Field(bytes, min_len=1, max_len=MAX_CONSENSUS_SIZE),
        "sigs": Field(
            list,
            max_len=MAX_SIGNATURES,
            items=Field(dict, schema=Schema("signature", {"key": KEY_FIELD, "sig": SIG_FIELD})),
        ),
    },
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
    the body (:func:`parse_consensus_body`'s errors, and :class:`InvalidConsensus` for a
    body that lists no nodes); an ``epoch`` below ``min_epoch``,
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
    check_time(now_ms, "now_ms")

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

    consensus = parse_body(body, frozenset(counted))
    if not consensus.nodes:
        # Nothing a reader can use (no node to route through, no swarm to ask), however
        # well signed: refused here, so that no caller has to meet an empty one later.
        raise InvalidConsensus(f"consensus epoch {consensus.epoch} lists no nodes")
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
