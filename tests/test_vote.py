"""Authorities' votes and signature documents (onion/vote.py): round trips, refusals,
the combining rule, and hostile bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.onion.cbor import encode
from veil.onion.directory import (
    MAX_DESCRIPTOR_SIZE,
    NodeDescriptor,
    make_consensus_body,
    make_descriptor,
    parse_descriptor,
    sign_consensus,
)
from veil.onion.errors import (
    BadSignature,
    DecodeError,
    ProtocolError,
    SchemaError,
    TooLarge,
    VoteMismatch,
)
from veil.onion.keys import NodeKeys
from veil.onion.vote import (
    MAX_SIGNATURE_DOC_SIZE,
    MAX_VOTE_SIZE,
    VOTE_DOMAIN,
    combine_votes,
    make_signature_doc,
    make_vote,
    parse_signature_doc,
    parse_vote,
    vote_descriptors,
)

NOW = 1_700_000_000_000
HOUR = 3_600_000
INTERVAL = 60_000
EPOCH = NOW // INTERVAL
AUTH = [NodeKeys(bytes([200 + i]) * 32, bytes([230 + i]) * 32) for i in range(3)]
NODES = [NodeKeys(bytes([i]) * 32, bytes([100 + i]) * 32) for i in range(1, 9)]


def raw_descriptor(i: int, *, published: int = NOW, port: int | None = None) -> bytes:
    return make_descriptor(NODES[i], "127.0.0.1", port or 7000 + i, "0.1.0", published, HOUR)


def vote(authority: NodeKeys, raws: list[bytes], epoch: int = EPOCH) -> bytes:
    return make_vote(authority, raws, epoch=epoch, interval_ms=INTERVAL, swarm_size=5, now_ms=NOW)


def parse(data: bytes, authority: NodeKeys = AUTH[0], **changes: int) -> object:
    params = {"epoch": EPOCH, "interval_ms": INTERVAL, "swarm_size": 5, **changes}
    return parse_vote(data, key=authority.identity_public, **params)


def listed(descriptors: list[NodeDescriptor]) -> list[bytes]:
    return [d.node_id for d in descriptors]


def test_a_vote_round_trips_sorted_and_deduplicated() -> None:
    raws = [raw_descriptor(2), raw_descriptor(0), raw_descriptor(2)]
    data = vote(AUTH[0], raws)
    v = parse(data)
    assert v.key == AUTH[0].identity_public and v.epoch == EPOCH  # type: ignore[attr-defined]
    assert list(v.descriptors) == sorted(set(raws))  # type: ignore[attr-defined]
    assert vote(AUTH[0], list(reversed(raws))) == data  # order does not matter
    descriptors, skipped = vote_descriptors(v, valid_after_ms=NOW)  # type: ignore[arg-type]
    assert skipped == 0
    assert listed(descriptors) == sorted(NODES[i].identity_public for i in (0, 2))


def test_a_vote_is_refused_for_the_wrong_key_epoch_or_parameters() -> None:
    data = vote(AUTH[0], [raw_descriptor(0)])
    with pytest.raises(VoteMismatch):
        parse(data, AUTH[1])
    with pytest.raises(VoteMismatch):
        parse(data, epoch=EPOCH + 1)
    with pytest.raises(VoteMismatch, match="configured alike"):
        parse(data, interval_ms=INTERVAL * 2)
    with pytest.raises(VoteMismatch):
        parse(data, swarm_size=3)


def test_a_tampered_or_resigned_vote_is_refused() -> None:
    from veil.onion.cbor import decode

    outer = decode(vote(AUTH[0], [raw_descriptor(0)]), max_size=MAX_VOTE_SIZE)
    body = decode(outer["body"], max_size=MAX_VOTE_SIZE)
    body["descriptors"] = [raw_descriptor(1)]
    swapped = encode({"body": encode(body), "sig": outer["sig"]})
    with pytest.raises(BadSignature):
        parse(swapped)
    # Unsorted descriptors, even correctly signed, are refused (one set, one encoding).
    body["descriptors"] = sorted([raw_descriptor(0), raw_descriptor(1)], reverse=True)
    raw_body = encode(body)
    unsorted = encode({"body": raw_body, "sig": AUTH[0].sign(VOTE_DOMAIN, raw_body)})
    with pytest.raises(SchemaError, match="sorted"):
        parse(unsorted)


def test_a_vote_over_the_size_limit_is_refused_before_decoding() -> None:
    with pytest.raises(TooLarge):
        parse(b"\x00" * (MAX_VOTE_SIZE + 1))


def test_vote_descriptors_are_judged_at_valid_after_not_the_readers_clock() -> None:
    fresh = raw_descriptor(0)
    old = raw_descriptor(1, published=NOW - HOUR - 30_000)  # expired 30 s before NOW
    v = parse(vote(AUTH[0], [fresh, old, b"\xa0garbage"]))
    descriptors, skipped = vote_descriptors(v, valid_after_ms=NOW)  # type: ignore[arg-type]
    assert listed(descriptors) == [NODES[0].identity_public] and skipped == 2
    # At an earlier valid_after the old one is still valid: every reader agrees.
    earlier, skipped = vote_descriptors(v, valid_after_ms=NOW - 40_000)  # type: ignore[arg-type]
    assert len(earlier) == 2 and skipped == 1
    # A known (already parsed) descriptor is taken as is but still checked for time.
    known = {old: parse_descriptor(old, now_ms=NOW - HOUR)}
    again, _ = vote_descriptors(v, valid_after_ms=NOW, known=known)  # type: ignore[arg-type]
    assert listed(again) == [NODES[0].identity_public]


def descriptors(*indexes: int, published: int = NOW) -> list[NodeDescriptor]:
    return [parse_descriptor(raw_descriptor(i, published=published), now_ms=NOW) for i in indexes]


def test_combine_lists_nodes_in_threshold_votes_with_their_latest_descriptor() -> None:
    a = descriptors(0, 1, 2)
    b = descriptors(1, 2, 3)
    renewed = parse_descriptor(raw_descriptor(2, published=NOW + 5, port=9999), now_ms=NOW)
    c = [*descriptors(2, 4), renewed]
    result = combine_votes([a, b, c], threshold=2)
    assert listed(result) == sorted(NODES[i].identity_public for i in (1, 2))
    by_id = {d.node_id: d for d in result}
    assert by_id[NODES[2].identity_public].port == 9999  # the latest one
    assert combine_votes([c, b, a], threshold=2) == result  # order of votes irrelevant
    assert listed(combine_votes([a, b, c], threshold=3)) == [NODES[2].identity_public]
    assert len(combine_votes([a, b, c], threshold=1)) == 5
    assert combine_votes([a], threshold=2) == []
    with pytest.raises(ValueError):
        combine_votes([a], threshold=0)


def test_authorities_with_the_same_votes_build_the_same_body() -> None:
    votes = [descriptors(0, 1, 2, 5), descriptors(1, 2, 5, 6), descriptors(0, 2, 5, 7)]
    first = make_consensus_body(
        combine_votes(votes, threshold=2), epoch=EPOCH, valid_after_ms=EPOCH * INTERVAL
    )
    second = make_consensus_body(
        combine_votes(list(reversed(votes)), threshold=2),
        epoch=EPOCH,
        valid_after_ms=EPOCH * INTERVAL,
    )
    assert first == second


def test_signature_documents_round_trip_and_refuse_others() -> None:
    body = make_consensus_body(descriptors(0, 1), epoch=EPOCH, valid_after_ms=NOW)
    sig = sign_consensus(body, AUTH[0])
    doc = make_signature_doc(sig)
    assert parse_signature_doc(doc, key=AUTH[0].identity_public, body=body) == sig
    with pytest.raises(VoteMismatch):
        parse_signature_doc(doc, key=AUTH[1].identity_public, body=body)
    other = make_consensus_body(descriptors(0), epoch=EPOCH, valid_after_ms=NOW)
    with pytest.raises(BadSignature):
        parse_signature_doc(doc, key=AUTH[0].identity_public, body=other)
    with pytest.raises(TooLarge):
        parse_signature_doc(b"\x00" * (MAX_SIGNATURE_DOC_SIZE + 1), key=b"k" * 32, body=body)
    with pytest.raises(DecodeError):
        parse_signature_doc(b"\xff", key=b"k" * 32, body=body)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2048))
def test_random_bytes_never_parse_as_a_vote_or_signature(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse(data)
    with pytest.raises(ProtocolError):
        parse_signature_doc(data, key=AUTH[0].identity_public, body=b"x")


@settings(max_examples=200, deadline=None)
@given(
    descriptors_=st.lists(st.binary(min_size=1, max_size=MAX_DESCRIPTOR_SIZE), max_size=8),
    flip=st.integers(min_value=0),
)
def test_a_vote_with_any_flipped_byte_is_refused_or_unchanged(
    descriptors_: list[bytes], flip: int
) -> None:
    data = vote(AUTH[0], descriptors_)
    v = parse(data)  # any bytes may sit in a vote: they are judged as descriptors later
    parsed, skipped = vote_descriptors(v, valid_after_ms=NOW)  # type: ignore[arg-type]
    assert parsed == [] and skipped == len(set(descriptors_))
    index = flip % len(data)
    tampered = data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]
    with pytest.raises(ProtocolError):
        parse(tampered)
