"""Onion packets: round trips, fixed size, tamper and replay refusal, replies, vectors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veil.onion import packet as P
from veil.onion.errors import (
    IntegrityError,
    MalformedPacket,
    PacketError,
    PacketMisuse,
    RateLimited,
    ReplayedPacket,
    StalePacket,
    TooLarge,
    VeilError,
    WireError,
)
from veil.onion.keys import NodeKeys
from veil.onion.packet import (
    BadBody,
    Deliver,
    Hop,
    HopError,
    Relay,
    build_packet,
    process_packet,
)
from veil.onion.replay import ReplayCache

VECTORS = Path(__file__).parent / "vectors" / "packet.json"
NOW = 1_790_000_000_000


def det_rng(label: bytes):
    """A deterministic byte source (BLAKE2b in counter mode) for known-answer tests."""
    counter = 0

    def rng(n: int) -> bytes:
        nonlocal counter
        out = b""
        while len(out) < n:
            out += hashlib.blake2b(
                counter.to_bytes(8, "little"), key=label, digest_size=64
            ).digest()
            counter += 1
        return out[:n]

    return rng


def make_nodes(count: int, label: bytes = b"nodes") -> list[NodeKeys]:
    rng = det_rng(label)
    return [NodeKeys.generate(rng) for _ in range(count)]


NODES = make_nodes(P.MAX_HOPS)


def path_of(nodes: list[NodeKeys]) -> list[Hop]:
    return [
        Hop(k.identity_public, k.onion_public, "127.0.0.1" if i % 2 else "::1", 7000 + i)
        for i, k in enumerate(nodes)
    ]


def run_path(pkt: bytes, nodes: list[NodeKeys], rng=None):
    """Process a packet along every node; return (deliver, reply contexts, packets seen)."""
    contexts = []
    seen = [pkt]
    for i, k in enumerate(nodes):
        if rng is None:
            result = process_packet(pkt, k.onion_secret, k.onion_public)
        else:
            result = process_packet(pkt, k.onion_secret, k.onion_public, rng)
        contexts.append(result.reply)
        if i < len(nodes) - 1:
            assert isinstance(result, Relay)
            assert result.next_node_id == nodes[i + 1].identity_public
            assert result.next_port == 7000 + i + 1
            pkt = result.packet
            seen.append(pkt)
        else:
            assert isinstance(result, Deliver)
            return result, contexts, seen
    raise AssertionError("unreachable")


def reply_back(contexts, payload: bytes) -> list[bytes]:
    """The reply as it travels back: bytes on each link, from the destination to the client."""
    reply = contexts[-1].seal(payload)
    links = [reply]
    for ctx in reversed(contexts[:-1]):
        reply = ctx.wrap(reply)
        links.append(reply)
    return links


@pytest.mark.parametrize("layers", range(1, P.MAX_HOPS + 1))
def test_round_trip_every_path_length(layers: int) -> None:
    nodes = NODES[:layers]
    pkt, opener = build_packet(path_of(nodes), b"store this", now_ms=NOW)
    deliver, contexts, seen = run_path(pkt, nodes)
    assert deliver.payload == b"store this"
    assert deliver.timestamp_ms == NOW // 1000 * 1000
    # Same length at every hop, and different bytes on every link.
    assert {len(p) for p in seen} == {P.HEADER_LEN + P.SIZE_CLASSES[0]}
    assert len(set(seen)) == len(seen)
    links = reply_back(contexts, b"stored")
    assert len(set(links)) == len(links)
    assert {len(x) for x in links} == {P.SIZE_CLASSES[0]}
    assert opener.open(links[-1]) == b"stored"


def test_relay_gives_next_hop_address() -> None:
    pkt, _ = build_packet(path_of(NODES[:3]), b"x", now_ms=NOW)
    first = process_packet(pkt, NODES[0].onion_secret, NODES[0].onion_public)
    assert isinstance(first, Relay) and first.next_host == "127.0.0.1"
    second = process_packet(first.packet, NODES[1].onion_secret, NODES[1].onion_public)
    assert isinstance(second, Relay) and second.next_host == "::1"


def test_size_classes_chosen_by_payload() -> None:
    for size, cls in [(0, 2048), (2028, 2048), (2029, 16384), (100_000, 131072)]:
        pkt, _ = build_packet(path_of(NODES[:2]), bytes(size), now_ms=NOW)
        assert len(pkt) == P.HEADER_LEN + cls
    with pytest.raises(TooLarge):
        build_packet(path_of(NODES[:2]), bytes(P.MAX_PAYLOAD + 1), now_ms=NOW)
    pkt, _ = build_packet(path_of(NODES[:1]), b"", now_ms=NOW, size_class=16384)
    assert len(pkt) == P.HEADER_LEN + 16384


def test_big_reply_uses_bigger_class() -> None:
    pkt, opener = build_packet(path_of(NODES[:4]), b"q", now_ms=NOW)
    _, contexts, _ = run_path(pkt, NODES[:4])
    links = reply_back(contexts, bytes(range(256)) * 200)
    assert len(links[-1]) == 131072
    assert opener.open(links[-1]) == bytes(range(256)) * 200


def test_path_length_limits() -> None:
    with pytest.raises(ValueError):
        build_packet([], b"x", now_ms=NOW)
    with pytest.raises(ValueError):
        build_packet(path_of(make_nodes(7, b"seven")), b"x", now_ms=NOW)


def test_packet_for_another_node_is_refused() -> None:
    pkt, _ = build_packet(path_of(NODES[:3]), b"x", now_ms=NOW)
    with pytest.raises(IntegrityError):
        process_packet(pkt, NODES[1].onion_secret, NODES[1].onion_public)


def _flip(data: bytes, bit: int) -> bytes:
    b = bytearray(data)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


def _header_bits() -> list[int]:
    # Every bit of the version, alpha and gamma, and a spread of beta's bits.
    return list(range(49 * 8)) + list(range(49 * 8, P.HEADER_LEN * 8, 7))


def test_every_header_bit_flip_is_caught_by_the_first_hop() -> None:
    nodes = NODES[:4]
    pkt, _ = build_packet(path_of(nodes), b"payload", now_ms=NOW)
    for bit in _header_bits():
        with pytest.raises((IntegrityError, MalformedPacket)):
            process_packet(_flip(pkt, bit), nodes[0].onion_secret, nodes[0].onion_public)


def _at_destination(
    pkt: bytes, nodes: list[NodeKeys]
) -> tuple[Deliver | BadBody, list[P.ReplyContext]]:
    """The last hop's result (a packet that reaches it) and every hop's reply context."""
    result = process_packet(pkt, nodes[0].onion_secret, nodes[0].onion_public)
    contexts = [result.reply]
    for k in nodes[1:]:
        assert isinstance(result, Relay)
        result = process_packet(result.packet, k.onion_secret, k.onion_public)
        contexts.append(result.reply)
    assert not isinstance(result, Relay)
    return result, contexts


def _deliver(pkt: bytes, nodes: list[NodeKeys]) -> Deliver:
    """The destination's Deliver; raises IntegrityError for a body that does not
    authenticate there (BadBody), as for a header refused on the way."""
    result, _ = _at_destination(pkt, nodes)
    if isinstance(result, BadBody):
        raise IntegrityError("the destination found a BadBody")
    return result


def test_body_bit_flips_are_caught_by_the_destination_at_the_latest() -> None:
    nodes = NODES[:4]
    pkt, _ = build_packet(path_of(nodes), b"payload", now_ms=NOW)
    body_bits = range(P.HEADER_LEN * 8, len(pkt) * 8, 97)
    for bit in body_bits:
        result, _ = _at_destination(_flip(pkt, bit), nodes)
        assert isinstance(result, BadBody)


@pytest.mark.parametrize("layers", [1, 2, 4])
def test_a_tampered_body_gets_a_layered_error_of_the_destination(layers: int) -> None:
    # A first hop flips a body byte: every relay passes it on (their MACs cover only the
    # header), and the destination, whose header checks pass, answers with a layered
    # error of the normal size class, like any reply: no relay sees a bare refusal.
    nodes = NODES[:layers]
    pkt, opener = build_packet(path_of(nodes), b"store this", now_ms=NOW)
    good, _ = _at_destination(pkt, nodes)
    tampered = pkt[:-100] + bytes([pkt[-100] ^ 0x40]) + pkt[-99:]
    bad, contexts = _at_destination(tampered, nodes)
    assert isinstance(bad, BadBody)
    # The header is the same packet's: the same replay tag and timestamp, so the node's
    # window and replay cache treat it as that packet (checked before it is answered).
    assert (bad.replay_tag, bad.timestamp_ms) == (good.replay_tag, good.timestamp_ms)
    reply = bad.answer()
    # The same size and framing as a normal reply of that class on every link back.
    normal_pkt, normal_opener = build_packet(path_of(nodes), b"store this", now_ms=NOW)
    normal, normal_contexts = _at_destination(normal_pkt, nodes)
    assert isinstance(normal, Deliver)
    normal_reply = normal_contexts[-1].seal(b"stored" * 20)
    assert len(reply) == len(normal_reply) == P.SIZE_CLASSES[0]
    relays = zip(contexts[:-1], normal_contexts[:-1], strict=True)
    for ctx, normal_ctx in reversed(list(relays)):
        reply, normal_reply = ctx.wrap(reply), normal_ctx.wrap(normal_reply)
        assert len(reply) == len(normal_reply)
    assert normal_opener.open(normal_reply) == b"stored" * 20
    with pytest.raises(HopError) as info:
        opener.open(reply)
    assert (info.value.hop, info.value.status) == (layers - 1, P.BAD_BODY_STATUS)
    assert info.value.message == P.BAD_BODY_MESSAGE
    # Its context answers once, as every other.
    with pytest.raises(PacketMisuse):
        bad.answer()


def test_an_authenticated_body_with_a_bad_frame_is_a_bad_body(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Only a client can make one (the AEAD holds), but it is answered too, not refused.
    # build_packet looks the framing up in the sender's module.
    real_frame = P.sender._frame

    def overlong_frame(kind: int | None, payload: bytes, size: int) -> bytes:
        framed = real_frame(kind, payload, size)
        return (size + 1).to_bytes(4, "big") + framed[4:]  # a length past its container

    monkeypatch.setattr(P.sender, "_frame", overlong_frame)
    pkt, opener = build_packet(path_of(NODES[:2]), b"x", now_ms=NOW)
    monkeypatch.undo()
    bad, contexts = _at_destination(pkt, NODES[:2])
    assert isinstance(bad, BadBody)
    with pytest.raises(HopError) as info:
        opener.open(contexts[0].wrap(bad.answer()))
    assert (info.value.hop, info.value.status) == (1, P.BAD_BODY_STATUS)


def test_truncated_or_extended_packets_are_refused() -> None:
    pkt, _ = build_packet(path_of(NODES[:3]), b"x", now_ms=NOW)
    k = NODES[0]
    for bad in (pkt[:-1], pkt + b"\0", pkt[: P.HEADER_LEN], b""):
        with pytest.raises(MalformedPacket):
            process_packet(bad, k.onion_secret, k.onion_public)
    # Padded out to the next size class: the length is valid, the MAC binds the class.
    with pytest.raises(IntegrityError):
        process_packet(pkt + bytes(14336), k.onion_secret, k.onion_public)


def test_replay_is_refused_by_the_cache() -> None:
    pkt, _ = build_packet(path_of(NODES[:2]), b"x", now_ms=NOW)
    cache = ReplayCache(window_ms=120_000)
    first = process_packet(pkt, NODES[0].onion_secret, NODES[0].onion_public)
    cache.check(first.replay_tag, first.timestamp_ms, NOW)
    again = process_packet(pkt, NODES[0].onion_secret, NODES[0].onion_public)
    assert again.replay_tag == first.replay_tag
    with pytest.raises(ReplayedPacket):
        cache.check(again.replay_tag, again.timestamp_ms, NOW + 1000)
    # A fresh packet over the same path has a different tag.
    other, _ = build_packet(path_of(NODES[:2]), b"x", now_ms=NOW)
    fresh = process_packet(other, NODES[0].onion_secret, NODES[0].onion_public)
    cache.check(fresh.replay_tag, fresh.timestamp_ms, NOW)


def test_replay_cache_window_expiry_and_cap() -> None:
    cache = ReplayCache(window_ms=60_000, max_entries=2)
    with pytest.raises(StalePacket):
        cache.check(b"a" * 16, NOW - 61_000, NOW)
    with pytest.raises(StalePacket):
        cache.check(b"a" * 16, NOW + 61_000, NOW)
    cache.check(b"a" * 16, NOW, NOW)
    cache.check(b"b" * 16, NOW, NOW)
    with pytest.raises(RateLimited):
        cache.check(b"c" * 16, NOW, NOW)
    # Once the first two can no longer pass the window, their tags are forgotten.
    cache.check(b"c" * 16, NOW + 61_000, NOW + 61_000)
    assert len(cache) == 1


def test_answering_a_replay_never_reuses_a_nonce() -> None:
    # A replayed packet gives the destination the same reply keys again; the "replayed"
    # error it may send must not be sealed like the first reply (nonce reuse would let
    # whoever saw both XOR them).
    nodes = NODES[:1]
    pkt, opener = build_packet(path_of(nodes), b"x", now_ms=NOW)
    first = process_packet(pkt, nodes[0].onion_secret, nodes[0].onion_public)
    again = process_packet(pkt, nodes[0].onion_secret, nodes[0].onion_public)
    real = first.reply.seal(b"secret reply" * 10)
    err = again.reply.error("replayed", "packet already seen")
    assert real[:24] != err[:24]
    assert opener.open(real) == b"secret reply" * 10
    with pytest.raises(HopError):
        opener.open(err)


def test_replay_cache_refuses_packets_from_before_its_start() -> None:
    cache = ReplayCache(window_ms=120_000, not_before_ms=NOW + 500)
    with pytest.raises(StalePacket, match="start"):
        cache.check(b"a" * 16, NOW - 1000, NOW + 1000)
    cache.check(b"b" * 16, NOW, NOW + 1000)  # stamped in the start's second: accepted


def test_error_reply_names_the_hop_that_sent_it() -> None:
    nodes = NODES[:4]
    pkt, opener = build_packet(path_of(nodes), b"x", now_ms=NOW)
    r0 = process_packet(pkt, nodes[0].onion_secret, nodes[0].onion_public)
    r1 = process_packet(r0.packet, nodes[1].onion_secret, nodes[1].onion_public)
    reply = r0.reply.wrap(r1.reply.error("bad_gateway", "next hop refused the connection"))
    with pytest.raises(HopError) as info:
        opener.open(reply)
    assert info.value.hop == 1
    assert info.value.status == "bad_gateway"
    assert "refused" in info.value.message
    # The guard itself can answer too.
    pkt, opener = build_packet(path_of(nodes), b"x", now_ms=NOW)
    r0 = process_packet(pkt, nodes[0].onion_secret, nodes[0].onion_public)
    with pytest.raises(HopError) as info:
        opener.open(r0.reply.error("clock_skew", "node time 1"))
    assert (info.value.hop, info.value.status) == (0, "clock_skew")


def test_destination_error_and_unknown_status() -> None:
    pkt, opener = build_packet(path_of(NODES[:2]), b"x", now_ms=NOW)
    _, contexts, _ = run_path(pkt, NODES[:2])
    reply = contexts[0].wrap(contexts[1].error("no-such-status", "?"))
    with pytest.raises(HopError) as info:
        opener.open(reply)
    assert info.value.hop == 1 and info.value.status == "internal"


def test_tampered_or_foreign_replies_are_refused() -> None:
    nodes = NODES[:3]
    pkt, opener = build_packet(path_of(nodes), b"x", now_ms=NOW)
    _, contexts, _ = run_path(pkt, nodes)
    reply = reply_back(contexts, b"answer")[-1]
    for bit in range(0, len(reply) * 8, 211):
        with pytest.raises(IntegrityError):
            opener.open(_flip(reply, bit))
    with pytest.raises(MalformedPacket):
        opener.open(reply[:-1])
    _, other = build_packet(path_of(nodes), b"x", now_ms=NOW)
    with pytest.raises(IntegrityError):
        other.open(reply)


def test_a_reply_context_answers_once() -> None:
    pkt, _ = build_packet(path_of(NODES[:2]), b"x", now_ms=NOW)
    _, contexts, _ = run_path(pkt, NODES[:2])
    contexts[1].seal(b"one")
    with pytest.raises(RuntimeError):
        contexts[1].seal(b"two")
    with pytest.raises(RuntimeError):
        contexts[1].wrap(bytes(2048))
    with pytest.raises(MalformedPacket):
        contexts[0].wrap(bytes(2047))


def test_low_order_alpha_is_refused() -> None:
    pkt, _ = build_packet(path_of(NODES[:1]), b"x", now_ms=NOW)
    bad = pkt[:1] + bytes(32) + pkt[33:]
    with pytest.raises(IntegrityError):
        process_packet(bad, NODES[0].onion_secret, NODES[0].onion_public)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payload=st.binary(max_size=5000),
    layers=st.integers(min_value=1, max_value=P.MAX_HOPS),
    reply=st.binary(max_size=5000),
)
def test_property_round_trip(payload: bytes, layers: int, reply: bytes) -> None:
    nodes = NODES[:layers]
    pkt, opener = build_packet(path_of(nodes), payload, now_ms=NOW)
    deliver, contexts, seen = run_path(pkt, nodes)
    assert deliver.payload == payload
    assert len({len(p) for p in seen}) == 1
    assert opener.open(reply_back(contexts, reply)[-1]) == reply


@settings(max_examples=300, deadline=None)
@given(data=st.binary(min_size=0, max_size=P.HEADER_LEN + 2100))
def test_property_random_bytes_only_raise_packet_errors(data: bytes) -> None:
    with pytest.raises(PacketError):
        process_packet(data, NODES[0].onion_secret, NODES[0].onion_public)


@settings(max_examples=200, deadline=None)
@given(
    position=st.integers(min_value=0, max_value=P.HEADER_LEN + 2047),
    value=st.integers(min_value=1, max_value=255),
)
def test_property_any_byte_change_is_refused(position: int, value: int) -> None:
    # Refused by a hop (the header) or answered with an error by the destination (the body).
    nodes = NODES[:3]
    pkt, _ = build_packet(path_of(nodes), b"hello", now_ms=NOW, rng=det_rng(b"prop"))
    bad = bytearray(pkt)
    bad[position] ^= value
    with pytest.raises(PacketError):
        _deliver(bytes(bad), nodes)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=2048, max_size=2048))
def test_property_random_replies_are_refused(data: bytes) -> None:
    _, opener = build_packet(path_of(NODES[:3]), b"x", now_ms=NOW)
    with pytest.raises(IntegrityError):
        opener.open(data)


# --- known-answer vectors ----------------------------------------------------------------


def _vector_cases():
    for layers in (1, 4, 6):
        nodes = make_nodes(layers, b"vector-nodes")
        pkt, opener = build_packet(
            path_of(nodes), b"veil vector payload", now_ms=NOW, rng=det_rng(b"vector-%d" % layers)
        )
        yield layers, nodes, pkt, opener


def _compute_vectors() -> dict:
    out = {}
    for layers, nodes, pkt, _ in _vector_cases():
        deliver, contexts, seen = run_path(pkt, nodes, det_rng(b"vector-reply"))
        reply = reply_back(contexts, b"veil vector reply")[-1]
        out[str(layers)] = {
            "packet_blake2b": hashlib.blake2b(pkt).hexdigest(),
            "packet_head_hex": pkt[:96].hex(),
            "hop_blake2b": [hashlib.blake2b(p).hexdigest() for p in seen],
            "replay_tag_hex": deliver.replay_tag.hex(),
            "reply_blake2b": hashlib.blake2b(reply).hexdigest(),
        }
    return out


def test_known_answer_vectors() -> None:
    """The wire format is pinned: any change to it must change these files on purpose."""
    expected = json.loads(VECTORS.read_text())
    assert _compute_vectors() == expected
    for layers, nodes, pkt, opener in _vector_cases():
        deliver, contexts, _ = run_path(pkt, nodes)
        assert deliver.payload == b"veil vector payload"
        assert opener.open(reply_back(contexts, b"veil vector reply")[-1]) == b"veil vector reply"
        assert str(layers) in expected


if __name__ == "__main__":  # regenerate: python tests/test_packet.py (review the diff!)
    VECTORS.parent.mkdir(exist_ok=True)
    VECTORS.write_text(json.dumps(_compute_vectors(), indent=2, sort_keys=True) + "\n")


# --- key exchanges prepared ahead of time ------------------------------------------------


@pytest.mark.parametrize("which", [(0, 1, 2, 3), (1, 3), ()])
@pytest.mark.parametrize("payload_size", [8, 5000])  # the smallest class, and a larger
def test_a_packet_built_with_prepared_hops_round_trips(
    which: tuple[int, ...], payload_size: int
) -> None:
    # Prepared hops carry their keystream for the smallest size class; a larger packet
    # derives its own from the same keys.
    nodes = NODES[:4]
    path = path_of(nodes)
    payload = bytes(range(256)) * (payload_size // 256) + b"p" * (payload_size % 256)
    prepared = [P.prepare_hop(h.onion_key) if i in which else None for i, h in enumerate(path)]
    pkt, opener = build_packet(path, payload, now_ms=NOW, prepared=prepared)
    deliver, contexts, _ = run_path(pkt, nodes)
    assert deliver.payload == payload
    assert opener.open(reply_back(contexts, b"ok")[-1]) == b"ok"


def test_misuse_of_packet_objects_is_a_typed_local_error() -> None:
    pkt, _ = build_packet(path_of(NODES[:2]), b"x", now_ms=NOW)
    _, contexts, _ = run_path(pkt, NODES[:2])
    with pytest.raises(PacketMisuse, match="only the destination seals"):
        contexts[0].seal(b"reply")
    with pytest.raises(PacketMisuse, match="does not wrap"):
        contexts[1].wrap(bytes(2048))
    contexts[1].seal(b"one")
    with pytest.raises(PacketMisuse, match="answers once") as info:
        contexts[1].error("internal")
    # A bug in the caller, never sent: a VeilError (and a RuntimeError) without a status.
    assert isinstance(info.value, VeilError) and isinstance(info.value, RuntimeError)
    assert not isinstance(info.value, WireError)
    prepared = [P.prepare_hop(h.onion_key) for h in path_of(NODES[:2])]
    build_packet(path_of(NODES[:2]), b"one", now_ms=NOW, prepared=prepared)
    with pytest.raises(PacketMisuse, match="single use"):
        build_packet(path_of(NODES[:2]), b"two", now_ms=NOW, prepared=prepared)


def test_prepared_hops_are_single_use() -> None:
    path = path_of(NODES[:2])
    prepared = [P.prepare_hop(h.onion_key) for h in path]
    first, _ = build_packet(path, b"one", now_ms=NOW, prepared=prepared)
    with pytest.raises(RuntimeError):
        build_packet(path, b"two", now_ms=NOW, prepared=prepared)
    # Fresh preparations give fresh ephemeral keys: packets never share an alpha.
    alphas = {first[1:33]}
    for _ in range(5):
        pkt, _ = build_packet(
            path, b"x", now_ms=NOW, prepared=[P.prepare_hop(h.onion_key) for h in path]
        )
        alphas.add(pkt[1:33])
    assert len(alphas) == 6


def test_prepared_hops_must_match_the_path() -> None:
    path = path_of(NODES[:3])
    other = P.prepare_hop(NODES[4].onion_public)
    with pytest.raises(ValueError, match="another onion key"):
        build_packet(path, b"x", now_ms=NOW, prepared=[other, None, None])
    with pytest.raises(ValueError, match="prepared keys for 2 hops"):
        build_packet(path, b"x", now_ms=NOW, prepared=[None, None])
    with pytest.raises(ValueError):
        P.prepare_hop(bytes(31))
    with pytest.raises(IntegrityError):
        P.prepare_hop(bytes(32))  # a low-order point: no shared secret
