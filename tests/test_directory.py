"""Directory documents: node descriptors, signed consensus, network.json (veil.onion.directory)."""

from __future__ import annotations

import json
import random

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.onion import crypto
from veil.onion.cbor import encode
from veil.onion.directory import (
    CLOCK_SKEW_MS,
    CONSENSUS_DOMAIN,
    DESCRIPTOR_DOMAIN,
    MAX_CONSENSUS_SIZE,
    MAX_DESCRIPTOR_LIFETIME_MS,
    MAX_DESCRIPTOR_SIZE,
    MAX_NETWORK_FILE_SIZE,
    MAX_NODES,
    Authority,
    ConsensusSignature,
    NetworkFile,
    NodeDescriptor,
    assemble,
    make_consensus_body,
    make_descriptor,
    parse_consensus_body,
    parse_descriptor,
    sign_consensus,
    split_consensus,
    verify_consensus,
)
from veil.onion.errors import (
    BadSignature,
    BelowThreshold,
    ConsensusNotYetValid,
    DecodeError,
    ExpiredDescriptor,
    FutureDescriptor,
    InvalidConsensus,
    InvalidDescriptor,
    InvalidId,
    NetworkFileError,
    NotFound,
    ProtocolError,
    SchemaError,
    StaleConsensus,
    TooLarge,
)
from veil.onion.keys import Account, NodeKeys
from veil.onion.packet import Hop
from veil.onion.swarm import assign_swarms, swarm_for

NOW = 1_700_000_000_000
HOUR = 3_600_000


def node_keys(i: int) -> NodeKeys:
    """Deterministic keys for node ``i`` (1..99)."""
    return NodeKeys(bytes([i]) * 32, bytes([100 + i]) * 32)


AUTHORITIES = [NodeKeys(bytes([200 + i]) * 32, bytes([230 + i]) * 32) for i in range(4)]
PINNED = [a.identity_public for a in AUTHORITIES[:3]]  # the fourth is not pinned


def descriptor(i: int, *, host: str = "127.0.0.1", now: int = NOW) -> NodeDescriptor:
    data = make_descriptor(node_keys(i), host, 7000 + i, "0.1.0", now)
    return parse_descriptor(data, now_ms=now)


DESCRIPTORS = [descriptor(i) for i in range(1, 13)]


def body_for(descriptors: list[NodeDescriptor] = DESCRIPTORS, **kwargs: object) -> bytes:
    params: dict[str, object] = {"epoch": 7, "valid_after_ms": NOW}
    params.update(kwargs)
    return make_consensus_body(descriptors, **params)  # type: ignore[arg-type]


BODY = body_for()


def signed(body: bytes, *signers: NodeKeys) -> bytes:
    return assemble(body, [sign_consensus(body, a) for a in signers])


def raw_document(body: bytes, entries: list[tuple[bytes, bytes]]) -> bytes:
    """A document with exactly these signature entries (assemble would dedupe and sort)."""
    return encode({"body": body, "sigs": [{"key": k, "sig": s} for k, s in entries]})


def raw_sign(body: bytes, authority: NodeKeys) -> tuple[bytes, bytes]:
    return authority.identity_public, authority.sign(CONSENSUS_DOMAIN, body)


def signed_descriptor_body(body: dict[str, object], keys: NodeKeys) -> bytes:
    raw = encode(body)
    return encode({"body": raw, "sig": keys.sign(DESCRIPTOR_DOMAIN, raw)})


def descriptor_fields(keys: NodeKeys, **changes: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "v": 1,
        "id": keys.identity_public,
        "onion": keys.onion_public,
        "host": "10.1.2.3",
        "port": 443,
        "version": "0.1.0",
        "published": NOW,
        "expires": NOW + HOUR,
    }
    fields.update(changes)
    return fields


# --- descriptors -----------------------------------------------------------------------


def test_descriptor_round_trip() -> None:
    keys = node_keys(1)
    data = make_descriptor(keys, "2001:db8::7", 443, "veil/0.1.0", NOW, lifetime_ms=HOUR)
    assert len(data) < 400
    d = parse_descriptor(data, now_ms=NOW + 1)
    assert d.node_id == keys.identity_public and d.node_id_hex == keys.node_id
    assert d.onion_key == keys.onion_public
    assert d.address == ("2001:db8::7", 443)
    assert d.version == "veil/0.1.0"
    assert (d.published_ms, d.expires_ms) == (NOW, NOW + HOUR)
    # The bytes a node publishes are a pure function of its inputs (Ed25519 is deterministic).
    assert make_descriptor(keys, "2001:db8::7", 443, "veil/0.1.0", NOW, HOUR) == data


def test_descriptor_tampered_after_signing_is_refused() -> None:
    keys = node_keys(2)
    signature = keys.sign(DESCRIPTOR_DOMAIN, encode(descriptor_fields(keys)))
    good = encode({"body": encode(descriptor_fields(keys)), "sig": signature})
    parse_descriptor(good, now_ms=NOW)
    # Another port under the same signature: someone rerouting the node's traffic.
    tampered = encode({"body": encode(descriptor_fields(keys, port=444)), "sig": signature})
    with pytest.raises(BadSignature):
        parse_descriptor(tampered, now_ms=NOW)


def test_descriptor_signed_by_another_key_is_refused() -> None:
    owner, other = node_keys(3), node_keys(4)
    forged = signed_descriptor_body(descriptor_fields(owner), other)
    with pytest.raises(BadSignature):
        parse_descriptor(forged, now_ms=NOW)
    # A signature for another purpose (same key, same bytes) is not a descriptor signature.
    raw = encode(descriptor_fields(owner))
    wrong_domain = encode({"body": raw, "sig": owner.sign(b"consensus", raw)})
    with pytest.raises(BadSignature):
        parse_descriptor(wrong_domain, now_ms=NOW)


def test_descriptor_expiry_and_future_publication() -> None:
    data = make_descriptor(node_keys(5), "10.0.0.5", 80, "0.1.0", NOW, lifetime_ms=HOUR)
    parse_descriptor(data, now_ms=NOW + HOUR - 1)
    with pytest.raises(ExpiredDescriptor) as info:
        parse_descriptor(data, now_ms=NOW + HOUR)
    assert info.value.status == "clock_skew"
    parse_descriptor(data, now_ms=NOW - CLOCK_SKEW_MS)  # published within the skew: fine
    with pytest.raises(FutureDescriptor):
        parse_descriptor(data, now_ms=NOW - CLOCK_SKEW_MS - 1)


@pytest.mark.parametrize(
    "host",
    [
        "localhost",  # a name, not an address
        "example.org",
        "127.000.000.001",  # not canonical
        "2001:DB8::1",  # IPv6 is written in lower case
        "2001:db8:0:0:0:0:0:1",  # and compressed
        "::ffff:127.0.0.1",  # IPv4-mapped: write IPv4
        "fe80::1%eth0",  # a zone ID means nothing elsewhere
        "0.0.0.0",  # unspecified
        "::",
        "224.0.0.1",  # multicast
        " 127.0.0.1",
        "",
        "1" * 46,
    ],
)
def test_descriptor_with_a_bad_host_is_refused(host: str) -> None:
    keys = node_keys(6)
    with pytest.raises(InvalidDescriptor):
        make_descriptor(keys, host, 80, "0.1.0", NOW)
    # Even when properly signed, a reader refuses it.
    data = signed_descriptor_body(descriptor_fields(keys, host=host), keys)
    with pytest.raises((InvalidDescriptor, SchemaError)):
        parse_descriptor(data, now_ms=NOW)


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"port": 0}, SchemaError),
        ({"port": 65536}, SchemaError),
        ({"port": True}, SchemaError),
        ({"version": ""}, SchemaError),
        ({"version": "v" * 65}, SchemaError),
        ({"version": "0.1\n"}, InvalidDescriptor),
        ({"version": "é"}, InvalidDescriptor),
        ({"onion": bytes(32)}, InvalidDescriptor),  # a low-order X25519 point
        ({"onion": bytes(31)}, SchemaError),
        ({"expires": NOW}, InvalidDescriptor),  # expires when published
        ({"expires": NOW + MAX_DESCRIPTOR_LIFETIME_MS + 1}, InvalidDescriptor),
        ({"v": 2}, SchemaError),
        ({"extra": 1}, SchemaError),
        ({"published": -1}, SchemaError),
    ],
)
def test_descriptor_with_a_bad_field_is_refused_even_if_signed(
    changes: dict[str, object], error: type[Exception]
) -> None:
    keys = node_keys(7)
    data = signed_descriptor_body(descriptor_fields(keys, **changes), keys)
    with pytest.raises(error):
        parse_descriptor(data, now_ms=NOW + 1)


def test_descriptor_node_id_must_be_a_valid_ed25519_key() -> None:
    keys = node_keys(8)
    bad_point = bytes.fromhex("ff" * 31 + "7f")  # y >= p: not a canonical encoding
    data = signed_descriptor_body(descriptor_fields(keys, id=bad_point), keys)
    with pytest.raises(InvalidId):
        parse_descriptor(data, now_ms=NOW)


def reversed_map(fields: dict[str, object]) -> bytes:
    """``fields`` as a CBOR map with its entries in reverse canonical order: well-formed,
    but not the one encoding that :func:`veil.onion.cbor.encode` gives."""
    canonical = encode(fields)
    entries = sorted((encode(k), encode(v)) for k, v in fields.items())
    out = canonical[:1] + b"".join(k + v for k, v in reversed(entries))
    assert out != canonical and len(out) == len(canonical) and len(fields) < 24
    return out


def test_descriptor_body_must_be_canonical_cbor() -> None:
    keys = node_keys(9)
    body = reversed_map(descriptor_fields(keys))
    data = encode({"body": body, "sig": keys.sign(DESCRIPTOR_DOMAIN, body)})
    with pytest.raises(DecodeError, match="non-canonical"):
        parse_descriptor(data, now_ms=NOW)


def test_oversize_descriptor_is_refused_before_decoding() -> None:
    with pytest.raises(TooLarge):
        parse_descriptor(b"\xa2" + bytes(MAX_DESCRIPTOR_SIZE), now_ms=NOW)


def test_make_descriptor_refuses_bad_arguments() -> None:
    with pytest.raises(InvalidDescriptor):
        make_descriptor(node_keys(1), "10.0.0.1", 80, "0.1", NOW, lifetime_ms=0)
    with pytest.raises(InvalidDescriptor):
        make_descriptor(node_keys(1), "10.0.0.1", 80, "0.1", NOW, MAX_DESCRIPTOR_LIFETIME_MS + 1)
    with pytest.raises(InvalidDescriptor):
        make_descriptor(node_keys(1), "10.0.0.1", 70000, "0.1", NOW)


@settings(max_examples=300)
@given(st.data())
def test_mutated_descriptors_raise_only_typed_errors(data: st.DataObject) -> None:
    good = bytearray(make_descriptor(node_keys(10), "10.0.0.10", 80, "0.1.0", NOW))
    index = data.draw(st.integers(min_value=0, max_value=len(good) - 1))
    good[index] ^= data.draw(st.integers(min_value=1, max_value=255))
    with pytest.raises(ProtocolError):
        parse_descriptor(bytes(good), now_ms=NOW)


@given(st.binary(max_size=2 * MAX_DESCRIPTOR_SIZE))
def test_random_bytes_as_descriptor_raise_only_typed_errors(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_descriptor(data, now_ms=NOW)


# --- consensus: signatures and threshold ---------------------------------------------


def test_two_of_three_authorities_with_one_down_is_accepted() -> None:
    doc = signed(BODY, AUTHORITIES[0], AUTHORITIES[2])  # authority 1 is down
    c = verify_consensus(doc, pinned=PINNED, threshold=2, now_ms=NOW + 1)
    assert c.signers == {AUTHORITIES[0].identity_public, AUTHORITIES[2].identity_public}
    assert c.epoch == 7 and c.body == BODY
    assert [n.node_id for n in c.nodes] == sorted(d.node_id for d in DESCRIPTORS)


def test_threshold_three_with_two_signatures_is_refused() -> None:
    doc = signed(BODY, AUTHORITIES[0], AUTHORITIES[2])
    with pytest.raises(BelowThreshold, match="2 valid signature") as info:
        verify_consensus(doc, pinned=PINNED, threshold=3, now_ms=NOW + 1)
    assert info.value.status == "unauthorized"


def test_signature_from_a_key_that_is_not_pinned_does_not_count() -> None:
    doc = signed(BODY, AUTHORITIES[0], AUTHORITIES[3])  # 3 is a real signer, not pinned
    with pytest.raises(BelowThreshold, match="1 from unknown keys"):
        verify_consensus(doc, pinned=PINNED, threshold=2, now_ms=NOW + 1)
    # Pinning it makes the same document acceptable.
    c = verify_consensus(
        doc, pinned=[*PINNED, AUTHORITIES[3].identity_public], threshold=2, now_ms=NOW + 1
    )
    assert len(c.signers) == 2


def test_signature_made_by_another_key_does_not_count() -> None:
    key = AUTHORITIES[1].identity_public
    forged = (key, AUTHORITIES[3].sign(CONSENSUS_DOMAIN, BODY))  # claims 1, signed by 3
    doc = raw_document(BODY, [raw_sign(BODY, AUTHORITIES[0]), forged])
    with pytest.raises(BelowThreshold, match="1 invalid"):
        verify_consensus(doc, pinned=PINNED, threshold=2, now_ms=NOW + 1)


def test_signature_for_another_domain_does_not_count() -> None:
    as_descriptor = (AUTHORITIES[1].identity_public, AUTHORITIES[1].sign(b"descriptor", BODY))
    doc = raw_document(BODY, [raw_sign(BODY, AUTHORITIES[0]), as_descriptor])
    with pytest.raises(BelowThreshold):
        verify_consensus(doc, pinned=PINNED, threshold=2, now_ms=NOW + 1)


def test_body_altered_after_signing_is_refused() -> None:
    other_body = body_for(epoch=8)
    _, sigs = split_consensus(signed(BODY, AUTHORITIES[0], AUTHORITIES[1]))
    doc = raw_document(other_body, [(s.key, s.signature) for s in sigs])
    with pytest.raises(BelowThreshold, match="2 invalid"):
        verify_consensus(doc, pinned=PINNED, threshold=1, now_ms=NOW + 1)


def test_duplicate_signatures_from_one_key_count_once() -> None:
    entry = raw_sign(BODY, AUTHORITIES[0])
    doc = raw_document(BODY, [entry, entry, entry])
    with pytest.raises(BelowThreshold, match="1 valid signature"):
        verify_consensus(doc, pinned=PINNED, threshold=2, now_ms=NOW + 1)
    assert verify_consensus(doc, pinned=PINNED, threshold=1, now_ms=NOW + 1).signers == {
        AUTHORITIES[0].identity_public
    }
    # Pinning the same key twice does not make it two authorities either.
    with pytest.raises(ValueError, match="threshold"):
        verify_consensus(doc, pinned=[PINNED[0], PINNED[0]], threshold=2, now_ms=NOW + 1)


def test_a_bogus_entry_cannot_veto_a_consensus_enough_authorities_signed() -> None:
    # The signature list is not signed: whoever relays the document can add to it.
    bogus = (AUTHORITIES[2].identity_public, bytes(64))
    doc = raw_document(
        BODY, [bogus, raw_sign(BODY, AUTHORITIES[0]), bogus, raw_sign(BODY, AUTHORITIES[1])]
    )
    c = verify_consensus(doc, pinned=PINNED, threshold=2, now_ms=NOW + 1)
    assert len(c.signers) == 2


def test_verify_refuses_local_misuse() -> None:
    doc = signed(BODY, AUTHORITIES[0])
    for threshold in (0, 4, True):
        with pytest.raises(ValueError):
            verify_consensus(doc, pinned=PINNED, threshold=threshold, now_ms=NOW)
    with pytest.raises(ValueError):
        verify_consensus(doc, pinned=[b"short"], threshold=1, now_ms=NOW)


def test_assemble_sorts_and_dedupes_signatures() -> None:
    s0, s1 = (sign_consensus(BODY, a) for a in AUTHORITIES[:2])
    assert assemble(BODY, [s1, s0, s1]) == assemble(BODY, [s0, s1])
    body, sigs = split_consensus(assemble(BODY, [s1, s0]))
    assert body == BODY
    assert list(sigs) == sorted([s0, s1], key=lambda s: s.key)
    with pytest.raises(ValueError):
        ConsensusSignature(b"k" * 31, bytes(64))


# --- consensus: times ------------------------------------------------------------------


def test_consensus_times_follow_the_interval() -> None:
    c = parse_consensus_body(body_for(interval_ms=60_000))
    assert (c.valid_after_ms, c.fresh_until_ms, c.valid_until_ms) == (
        NOW,
        NOW + 60_000,
        NOW + 180_000,
    )
    assert c.is_fresh(NOW) and not c.is_fresh(NOW + 60_000) and c.valid_until_ms > NOW + 60_000
    c = parse_consensus_body(body_for(interval_ms=HOUR, lifetime_ms=2 * HOUR))
    assert (c.fresh_until_ms, c.valid_until_ms) == (NOW + HOUR, NOW + 2 * HOUR)


def test_stale_consensus_is_refused() -> None:
    doc = signed(BODY, AUTHORITIES[0])
    valid_until = NOW + 180_000
    verify_consensus(doc, pinned=PINNED, threshold=1, now_ms=valid_until - 1)
    with pytest.raises(StaleConsensus, match="expired"):
        verify_consensus(doc, pinned=PINNED, threshold=1, now_ms=valid_until)


def test_consensus_not_yet_valid_is_refused_beyond_the_clock_skew() -> None:
    doc = signed(BODY, AUTHORITIES[0])
    verify_consensus(doc, pinned=PINNED, threshold=1, now_ms=NOW - CLOCK_SKEW_MS)
    with pytest.raises(ConsensusNotYetValid) as info:
        verify_consensus(doc, pinned=PINNED, threshold=1, now_ms=NOW - CLOCK_SKEW_MS - 1)
    assert info.value.status == "clock_skew"
    with pytest.raises(ConsensusNotYetValid):
        verify_consensus(doc, pinned=PINNED, threshold=1, now_ms=NOW - 1, max_skew_ms=0)


def test_rollback_to_an_older_epoch_is_refused() -> None:
    doc = signed(BODY, AUTHORITIES[0])  # epoch 7
    verify_consensus(doc, pinned=PINNED, threshold=1, now_ms=NOW, min_epoch=7)
    with pytest.raises(StaleConsensus, match="older"):
        verify_consensus(doc, pinned=PINNED, threshold=1, now_ms=NOW, min_epoch=8)


# --- consensus: body rules -------------------------------------------------------------


def body_dict(**changes: object) -> dict[str, object]:
    nodes = [
        {
            "id": d.node_id,
            "onion": d.onion_key,
            "host": d.host,
            "port": d.port,
            "version": d.version,
            "swarm": 0,
        }
        for d in sorted(DESCRIPTORS[:3], key=lambda d: d.node_id)
    ]
    body: dict[str, object] = {
        "v": 1,
        "epoch": 1,
        "valid_after": NOW,
        "fresh_until": NOW + 60_000,
        "valid_until": NOW + 180_000,
        "swarm_size": 5,
        "nodes": nodes,
    }
    body.update(changes)
    return body


def verify_raw_body(body: bytes) -> None:
    doc = raw_document(body, [raw_sign(body, AUTHORITIES[0])])
    verify_consensus(doc, pinned=PINNED, threshold=1, now_ms=NOW + 1)


def test_hand_built_body_is_accepted_when_it_follows_the_rules() -> None:
    verify_raw_body(encode(body_dict()))


def with_node(index: int, **changes: object) -> dict[str, object]:
    body = body_dict()
    nodes = [dict(n) for n in body["nodes"]]  # type: ignore[attr-defined]
    nodes[index].update(changes)
    body["nodes"] = nodes
    return body


@pytest.mark.parametrize(
    ("body", "error", "match"),
    [
        (body_dict(fresh_until=NOW), InvalidConsensus, "valid_after < fresh_until"),
        (body_dict(valid_until=NOW + 30_000), InvalidConsensus, "fresh_until <= valid_until"),
        (body_dict(valid_until=NOW + 25 * HOUR), InvalidConsensus, "lifetime"),
        (body_dict(v=2), SchemaError, "consensus.body.v"),
        (body_dict(swarm_size=0), SchemaError, "swarm_size"),
        (body_dict(extra=1), SchemaError, "unknown field"),
        (with_node(1, host="localhost"), InvalidConsensus, r"nodes\[1\]"),
        (with_node(1, port=0), SchemaError, r"nodes\[1\]\.port"),
        (with_node(2, version="a\tb"), InvalidConsensus, r"nodes\[2\]"),
        (with_node(0, onion=bytes(31)), SchemaError, r"nodes\[0\]\.onion"),
        (with_node(0, swarm=-1), SchemaError, r"nodes\[0\]\.swarm"),
        (with_node(0, surprise=True), SchemaError, "unknown field"),
    ],
)
def test_body_breaking_a_rule_is_refused_even_if_signed(
    body: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        verify_raw_body(encode(body))


def test_nodes_must_be_sorted_without_repeats() -> None:
    body = body_dict()
    nodes = list(body["nodes"])  # type: ignore[call-overload]
    with pytest.raises(InvalidConsensus, match="sorted"):
        verify_raw_body(encode(body_dict(nodes=[nodes[1], nodes[0], nodes[2]])))
    with pytest.raises(InvalidConsensus, match="sorted"):
        verify_raw_body(encode(body_dict(nodes=[nodes[0], nodes[0], nodes[1]])))


def test_swarm_sizes_out_of_bounds_are_refused() -> None:
    # Two swarms, one of a single node: below the minimum of ceil(5 / 2) = 3.
    with pytest.raises(InvalidConsensus, match="fewer than the minimum"):
        verify_raw_body(encode(with_node(2, swarm=2**63)))
    # A swarm of 3 with target size 1: above the maximum of 1.
    with pytest.raises(InvalidConsensus, match="more than the maximum"):
        verify_raw_body(encode(body_dict(swarm_size=1)))


def test_body_must_be_canonical() -> None:
    with pytest.raises(DecodeError, match="non-canonical"):
        verify_raw_body(reversed_map(body_dict()))


def test_authorities_never_sign_or_assemble_a_body_readers_would_refuse() -> None:
    bad = encode(with_node(1, host="localhost"))
    with pytest.raises(InvalidConsensus):
        sign_consensus(bad, AUTHORITIES[0])
    with pytest.raises(InvalidConsensus):
        assemble(bad, [])


def test_oversize_consensus_is_refused_before_decoding() -> None:
    with pytest.raises(TooLarge):
        verify_consensus(
            b"\xa2" + bytes(MAX_CONSENSUS_SIZE),
            pinned=PINNED,
            threshold=1,
            now_ms=NOW,
        )


def test_largest_consensus_fits_the_size_limit() -> None:
    # MAX_NODES nodes with the longest fields, and every pinned authority signing.
    rnd = random.Random(5)
    ids = sorted(rnd.randbytes(32) for _ in range(MAX_NODES))
    assignment = assign_swarms(ids, 5)
    nodes = [
        {
            "id": node_id,
            "onion": rnd.randbytes(32),  # readers check lengths here, not points
            "host": "efff:ffff:ffff:ffff:ffff:ffff:ffff:fff" + "0123456789abcdef"[i % 16],
            "port": 65535,
            "version": "v" * 64,
            "swarm": assignment[node_id],
        }
        for i, node_id in enumerate(ids)
    ]
    body = encode(body_dict(nodes=nodes, epoch=2**62))
    signers = [NodeKeys(bytes([i]) * 32, bytes([i]) * 32) for i in range(1, 33)]
    doc = raw_document(body, [raw_sign(body, a) for a in signers])
    assert len(doc) <= MAX_CONSENSUS_SIZE
    c = verify_consensus(doc, pinned=[a.identity_public for a in signers], threshold=32, now_ms=NOW)
    assert len(c.nodes) == MAX_NODES and len(c.swarm_ids) == MAX_NODES // 5
    # One node more is refused by the schema.
    too_many = encode(body_dict(nodes=[*nodes, nodes[-1]]))
    with pytest.raises(SchemaError, match="nodes"):
        parse_consensus_body(too_many)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_consensus_raises_only_typed_errors(data: st.DataObject) -> None:
    good = signed(BODY, AUTHORITIES[0], AUTHORITIES[1])
    mutated = bytearray(good)
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        index = data.draw(st.integers(min_value=0, max_value=len(mutated) - 1))
        mutated[index] ^= data.draw(st.integers(min_value=1, max_value=255))
    if data.draw(st.booleans()):
        del mutated[data.draw(st.integers(min_value=0, max_value=len(mutated))) :]
    try:
        c = verify_consensus(bytes(mutated), pinned=PINNED, threshold=2, now_ms=NOW + 1)
    except ProtocolError:
        return
    # Only a change outside what is signed and counted could pass: the body is intact.
    assert c.body == BODY


@given(st.binary(max_size=600))
def test_random_bytes_as_consensus_raise_only_typed_errors(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        verify_consensus(data, pinned=PINNED, threshold=1, now_ms=NOW)
    with pytest.raises(ProtocolError):
        parse_consensus_body(data)


# --- consensus: building, determinism, lookups -----------------------------------------


def test_body_is_a_deterministic_function_of_its_inputs() -> None:
    shuffled = list(DESCRIPTORS)
    random.Random(3).shuffle(shuffled)
    assert body_for(shuffled) == BODY
    # Two authorities that agree produce the same bytes, so their signatures add up.
    doc = assemble(BODY, [sign_consensus(body_for(shuffled), a) for a in AUTHORITIES[:3]])
    assert len(verify_consensus(doc, pinned=PINNED, threshold=3, now_ms=NOW).signers) == 3
    assert body_for(epoch=8) != BODY


def test_make_consensus_body_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="two descriptors"):
        body_for([DESCRIPTORS[0], DESCRIPTORS[0]])
    with pytest.raises(ValueError, match="lifetime"):
        body_for(interval_ms=60_000, lifetime_ms=30_000)
    with pytest.raises(ValueError, match="lifetime"):
        body_for(interval_ms=HOUR, lifetime_ms=25 * HOUR)
    with pytest.raises(ValueError, match="swarm_size"):
        body_for(swarm_size=0)
    with pytest.raises(ValueError, match="epoch"):
        body_for(epoch=-1)


def test_swarm_assignment_is_carried_and_sticky_across_epochs() -> None:
    first = parse_consensus_body(BODY)
    assert first.assignment == assign_swarms([d.node_id for d in DESCRIPTORS], 5)
    assert len(first.swarm_ids) == 2
    # Epoch 8: one node leaves, two join. Nodes that stay keep their swarm.
    later = [*DESCRIPTORS[1:], descriptor(50), descriptor(51)]
    second = parse_consensus_body(
        body_for(later, epoch=8, valid_after_ms=NOW + 60_000, previous=first.assignment)
    )
    for d in DESCRIPTORS[1:]:
        assert second.assignment[d.node_id] == first.assignment[d.node_id]
    assert second.assignment == assign_swarms(
        [d.node_id for d in later], 5, previous=first.assignment
    )


def test_lookups() -> None:
    c = verify_consensus(signed(BODY, AUTHORITIES[0]), pinned=PINNED, threshold=1, now_ms=NOW)
    d = DESCRIPTORS[4]
    node = c.node(d.node_id)
    assert node is not None and c.node(d.node_id_hex) == node
    assert (node.onion_key, node.address, node.version) == (d.onion_key, d.address, "0.1.0")
    assert node.as_hop() == Hop(d.node_id, d.onion_key, d.host, d.port)
    assert c.node(node_keys(99).identity_public) is None
    with pytest.raises(InvalidId):
        c.node("not hex")
    assert sorted(c.swarms) == list(c.swarm_ids)
    assert sum(len(s) for s in c.swarms.values()) == len(DESCRIPTORS)
    for sid, group in c.swarms.items():
        assert c.swarm_members(sid) == group.members
        assert all(m.swarm_id == sid for m in group.members)
        assert [m.node_id for m in group.members] == sorted(group.node_ids)
    with pytest.raises(NotFound):
        c.swarm_members(12345)
    # Real accounts land in the swarm nearest their ring position.
    for seed in range(20):
        account = Account(bytes([seed]) * 32)
        expected = swarm_for(account.id.ring_position, c.swarm_ids)
        assert c.swarm_of(account.id).swarm_id == expected
        assert c.swarm_of(str(account.id)).swarm_id == expected
        assert c.swarm_of(account.id.ring_position).swarm_id == expected
    assert c.digest == crypto.hash32(BODY, b"veil/consensus")
    assert "12 nodes" in repr(c)


def test_empty_consensus_has_no_swarm() -> None:
    c = parse_consensus_body(make_consensus_body([], epoch=0, valid_after_ms=NOW))
    assert c.nodes == () and c.swarm_ids == ()
    with pytest.raises(NotFound):
        c.swarm_of(0)


def test_a_consensus_that_lists_no_nodes_is_refused_when_verified() -> None:
    # An authority may make and sign one (its first, before any node registered), but a
    # reader can do nothing with it: verifying refuses it with a typed error, well signed
    # and in its validity window though it is.
    body = make_consensus_body([], epoch=3, valid_after_ms=NOW)
    doc = signed(body, *AUTHORITIES[:3])
    with pytest.raises(InvalidConsensus, match="lists no nodes"):
        verify_consensus(doc, pinned=PINNED, threshold=2, now_ms=NOW)
    assert verify_consensus(signed(BODY, *AUTHORITIES[:3]), pinned=PINNED, threshold=2, now_ms=NOW)


# --- known-answer vector ---------------------------------------------------------------

# Two nodes (keys from seeds 0x01.. and 0x02..), epoch 1 at t = 1.7e12 ms, swarm size 5.
# Pins the consensus body format: field names, canonical key order (shorter keys first,
# then bytewise), nodes sorted by ID, both nodes in swarm 0.
KAT_BODY_HEX = (
    "a76176016565706f636801656e6f64657382a662696458208139770ea87d175f56a35466c34c7ecccb8d8a91"
    "b4ee37a25df60f5b8fc9b39464686f73746831302e302e302e3264706f7274191b5a656f6e696f6e5820219e"
    "4d800da968d2a5fcb009c784f4746c7138edb9ee4844b739e830b05cf42465737761726d006776657273696f"
    "6e65302e312e30a662696458208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f"
    "5c64686f73746831302e302e302e3164706f7274191b59656f6e696f6e5820fb41b1fcf75c1227fa08876056"
    "a5ed07ac44fe0c116ec2de80b8e523959d782465737761726d006776657273696f6e65302e312e306a737761"
    "726d5f73697a65056b66726573685f756e74696c1b0000018bcfe652606b76616c69645f61667465721b0000"
    "018bcfe568006b76616c69645f756e74696c1b0000018bcfe82720"
)
# BLAKE2b-256 of that body signed by authority 0 (seed 0xc8..): pins the document format
# and the signature domain (Ed25519 signatures are deterministic).
KAT_DOCUMENT_BLAKE2B = "2905bc05f19f8f9a260a9e32fb7997bc5349eb80679b72bf215427667f014091"


def kat_body() -> bytes:
    descriptors = [
        parse_descriptor(
            make_descriptor(node_keys(i), f"10.0.0.{i}", 7000 + i, "0.1.0", NOW), now_ms=NOW
        )
        for i in (1, 2)
    ]
    return make_consensus_body(descriptors, epoch=1, valid_after_ms=NOW)


def test_known_answer_consensus_body() -> None:
    body = kat_body()
    assert body.hex() == KAT_BODY_HEX
    # An independent decoder reads the same document.
    n1, n2 = node_keys(1), node_keys(2)
    assert cbor2.loads(body) == {
        "v": 1,
        "epoch": 1,
        "valid_after": NOW,
        "fresh_until": NOW + 60_000,
        "valid_until": NOW + 180_000,
        "swarm_size": 5,
        "nodes": [
            {
                "id": k.identity_public,
                "onion": k.onion_public,
                "host": f"10.0.0.{i}",
                "port": 7000 + i,
                "version": "0.1.0",
                "swarm": 0,
            }
            for i, k in sorted([(1, n1), (2, n2)], key=lambda p: p[1].identity_public)
        ],
    }
    doc = assemble(body, [sign_consensus(body, AUTHORITIES[0])])
    assert crypto.hash32(doc).hex() == KAT_DOCUMENT_BLAKE2B
    assert cbor2.loads(doc)["sigs"][0]["sig"] == crypto.sign(
        AUTHORITIES[0].identity_secret, b"consensus", body
    )
    verify_consensus(doc, pinned=PINNED, threshold=1, now_ms=NOW)


# --- network.json ----------------------------------------------------------------------


NET = NetworkFile(
    authorities=tuple(
        Authority(key=a.identity_public, host="127.0.0.1", port=7100 + i)
        for i, a in enumerate(AUTHORITIES[:3])
    ),
    threshold=2,
)


def test_network_file_round_trip() -> None:
    text = NET.to_json()
    assert NetworkFile.from_json(text) == NET
    assert NetworkFile.from_json(text.encode()) == NET
    assert NET.pinned_keys == tuple(PINNED)
    doc = json.loads(text)
    assert doc["version"] == 1 and doc["threshold"] == 2
    assert doc["authorities"][0] == {
        "key": AUTHORITIES[0].identity_public.hex(),
        "host": "127.0.0.1",
        "port": 7100,
    }
    # The file pins what verify_consensus needs.
    doc_bytes = signed(BODY, *AUTHORITIES[:2])
    verify_consensus(doc_bytes, pinned=NET.pinned_keys, threshold=NET.threshold, now_ms=NOW)


def net_json(**changes: object) -> str:
    doc = json.loads(NET.to_json())
    doc.update(changes)
    return json.dumps(doc)


def authority_json(**changes: object) -> str:
    doc = json.loads(NET.to_json())
    doc["authorities"][0].update(changes)
    return json.dumps(doc)


KEY0 = AUTHORITIES[0].identity_public.hex()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ("{" * 100_000, "over the limit"),
        ("[" * 50_000 + "]" * 50_000, "over the limit"),
        ("[" * 20_000 + "]" * 20_000, "JSON"),
        (net_json(version=2), "version"),
        (net_json(version=True), "version"),
        (net_json(threshold=0), "threshold"),
        (net_json(threshold=4), "threshold"),
        (net_json(threshold=True), "threshold"),
        (net_json(threshold=1.0), "integers only"),
        (net_json(authorities=[]), "1 to 32"),
        (net_json(authorities="x"), "list"),
        (net_json(extra=1), "unknown field"),
        ('{"version": 1, "threshold": 1}', "missing authorities"),
        (net_json().replace('"threshold": 2', '"threshold": 2, "threshold": 1'), "twice"),
        (net_json().replace('"threshold": 2', '"threshold": NaN'), "NaN"),
        (authority_json(key=KEY0[:-2]), "64 hex"),
        (authority_json(key="ff" * 31 + "7f"), "valid Ed25519"),
        (authority_json(key=AUTHORITIES[1].identity_public.hex()), "listed twice"),
        (authority_json(host="authority.example"), r"authorities\[0\].*IP"),
        (authority_json(port=0), "port"),
        (authority_json(port="7100"), "port"),
        (authority_json(name="a"), "unknown field"),
        (net_json(authorities=[1]), r"authorities\[0\] must be a JSON object"),
    ],
)
def test_network_file_refusals(text: str, match: str) -> None:
    with pytest.raises(NetworkFileError, match=match):
        NetworkFile.from_json(text)


def test_network_file_size_limit_counts_bytes() -> None:
    padded = NET.to_json() + " " * (MAX_NETWORK_FILE_SIZE - len(NET.to_json()))
    NetworkFile.from_json(padded)
    with pytest.raises(NetworkFileError, match="over the limit"):
        NetworkFile.from_json(padded + " ")


def test_network_file_refuses_bad_construction() -> None:
    with pytest.raises(NetworkFileError):
        NetworkFile(authorities=(), threshold=1)
    with pytest.raises(NetworkFileError):
        NetworkFile(authorities=NET.authorities, threshold=3 + 1)
    with pytest.raises(NetworkFileError):
        Authority(key=bytes(31), host="127.0.0.1", port=1)


@given(st.text(max_size=300))
def test_random_network_files_raise_only_network_file_errors(text: str) -> None:
    with pytest.raises(NetworkFileError):
        NetworkFile.from_json(text)
