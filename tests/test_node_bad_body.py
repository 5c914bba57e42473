"""A body changed on the way: the destination answers with a layered error, never a 400.

The attack (issue 11, item 2): a hop flips a bit of a packet's body. Every relay passes
it on (a relay's MAC covers the header only) and the destination's AEAD refuses it. If
the destination answered with a plain HTTP 400 (or a link frame with status 400), the
relay before it, which had seen the header pass, would learn that it was next to the
destination, since relays answer every failure with a layered reply. Here real node
processes are sent such packets, with the test as the tampering first hop (it holds a
node key of its own and processes the packet as a guard would), and what the relay gets
back from the destination must be a 200 with a reply of the normal size class, which the
client opens as the destination's ``bad_request``.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from veil.onion import rpc
from veil.onion.keys import NodeKeys
from veil.onion.link import RESPONSE, FrameReader, encode_request
from veil.onion.packet import (
    BAD_BODY_MESSAGE,
    BAD_BODY_STATUS,
    HEADER_LEN,
    MAX_REPLY_LEN,
    SIZE_CLASSES,
    Hop,
    HopError,
    Relay,
    ReplyOpener,
    build_packet,
    process_packet,
)

from .nodeutil import NodeHandle, node_process, now_ms
from .test_node_badinput import next_frame, upgraded
from .test_node_process import metric


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeHandle, NodeHandle]]:
    base = tmp_path_factory.mktemp("badbody")
    with node_process(base / "relay") as relay, node_process(base / "dest") as dest:
        yield relay, dest


#: The tampering first hop: a node key of the test's own, at an address nobody dials.
GUARD = NodeKeys.generate()
GUARD_HOP = Hop(GUARD.identity_public, GUARD.onion_public, "127.0.0.1", 9)


def as_guard(packet: bytes) -> Relay:
    """``packet`` processed by the test's guard (each call: a fresh reply context)."""
    hop = process_packet(packet, GUARD.onion_secret, GUARD.onion_public)
    assert isinstance(hop, Relay)
    return hop


def as_tampering_guard(path: list[Hop]) -> tuple[bytes, Relay, ReplyOpener, bytes]:
    """Build an info request along ``GUARD_HOP`` + ``path`` and process it as the guard:
    the client's packet, the guard's result, the client's opener, and the packet the
    guard sends on with one body byte flipped."""
    packet, opener = build_packet([GUARD_HOP, *path], rpc.make_info(), now_ms=now_ms())
    hop = as_guard(packet)
    forwarded = bytearray(hop.packet)
    forwarded[HEADER_LEN + 100] ^= 0x01
    return packet, hop, opener, bytes(forwarded)


def bad_bodies(node: NodeHandle) -> float:
    return metric(node.metrics(), "veil_onion_rejected_total", reason="BadBody") or 0


def test_a_tampered_body_through_a_relay_gets_the_destinations_layered_error(
    nodes: tuple[NodeHandle, NodeHandle],
) -> None:
    relay, dest = nodes
    with httpx.Client(timeout=30) as http:
        # A good packet along the same path: the reply every packet of this kind gets.
        good, good_opener = build_packet(
            [relay.hop(), dest.hop()], rpc.make_info(), now_ms=now_ms()
        )
        r = http.post(f"{relay.url}/onion", content=good)
        assert r.status_code == 200
        assert rpc.decode_reply(good_opener.open(r.content)).ok
        normal_len = len(r.content)

        rejected_before = bad_bodies(dest)
        _, hop, opener, tampered = as_tampering_guard([relay.hop(), dest.hop()])
        r = http.post(f"{relay.url}/onion", content=tampered)
        # What the relay got from the destination on their link was a reply it could
        # wrap: a 200 of the normal size class, not a refusal it would report as
        # bad_gateway (the client would then see hop 1's error, not the destination's).
        assert r.status_code == 200
        assert len(r.content) == normal_len == SIZE_CLASSES[0]
        with pytest.raises(HopError) as err:
            opener.open(hop.reply.wrap(r.content))
        assert (err.value.hop, err.value.status) == (2, BAD_BODY_STATUS)
        assert err.value.message == BAD_BODY_MESSAGE

    # The link's own record, at both ends: every frame the destination answered was a
    # 200, and the relay saw no bad status from it.
    dest_text, relay_text = dest.metrics(), relay.metrics()
    link = {"method": "LINK", "path": "/onion"}
    assert metric(dest_text, "veil_http_requests_total", **link, status="400") is None
    assert (metric(dest_text, "veil_http_requests_total", **link, status="200") or 0) >= 2
    assert bad_bodies(dest) == rejected_before + 1
    assert metric(relay_text, "veil_onion_relay_failures_total", reason="bad_status") is None
    assert (metric(relay_text, "veil_onion_relayed_total") or 0) >= 2


def test_on_the_link_a_tampered_body_is_a_200_frame_after_the_replay_check(
    nodes: tuple[NodeHandle, NodeHandle],
) -> None:
    # The test is now the last relay itself: it opens a link to the destination and
    # reads the frames that come back, the tampered packet's beside a good one's.
    _, dest = nodes
    packet, hop, opener, tampered = as_tampering_guard([dest.hop()])
    good, good_opener = build_packet([dest.hop()], rpc.make_info(), now_ms=now_ms())
    s, rest = upgraded(dest)
    with s:
        reader = FrameReader(RESPONSE, MAX_REPLY_LEN)
        reader.receive_data(rest)
        s.sendall(encode_request(1, tampered) + encode_request(2, good))
        frames = {f.stream: f for f in (next_frame(s, reader), next_frame(s, reader))}
        assert frames[1].status == frames[2].status == 200
        assert len(frames[1].payload) == len(frames[2].payload) == SIZE_CLASSES[0]
        assert rpc.decode_reply(good_opener.open(frames[2].payload)).ok
        with pytest.raises(HopError) as err:
            opener.open(hop.reply.wrap(frames[1].payload))
        assert (err.value.hop, err.value.status) == (1, BAD_BODY_STATUS)
        # The header checks ran first: the same packet again is a replay, answered as
        # any replay is (a layered error too).
        s.sendall(encode_request(3, tampered))
        again = next_frame(s, reader)
        assert (again.stream, again.status) == (3, 200)
        with pytest.raises(HopError) as err:
            opener.open(as_guard(packet).reply.wrap(again.payload))
        assert (err.value.hop, err.value.status) == (1, "replayed")
        s.shutdown(socket.SHUT_WR)


def test_over_http_a_tampered_body_is_a_200_too(nodes: tuple[NodeHandle, NodeHandle]) -> None:
    # A relay whose links are off, or a next hop that has none, sends POST /onion.
    _, dest = nodes
    _, hop, opener, tampered = as_tampering_guard([dest.hop()])
    r = httpx.post(f"{dest.url}/onion", content=tampered, timeout=30)
    assert r.status_code == 200
    assert len(r.content) == SIZE_CLASSES[0]
    with pytest.raises(HopError) as err:
        opener.open(hop.reply.wrap(r.content))
    assert (err.value.hop, err.value.status) == (1, BAD_BODY_STATUS)
