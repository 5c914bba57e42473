"""The per-address rate limit of a real node that exempts nothing (issue 11).

Devnets exempt loopback, so their nodes never refuse anyone. This node's ``[rate_limit]``
exempts no network and refills at a thousandth of a token a second, so each address has
its ``burst`` and nothing more for the length of a test: an address over it gets 429 at
once, on ``POST /onion`` and per packet on a link (the upgrade takes a token too), while
another loopback address (127.0.0.x: each is its own bucket) is served. That listed
relays are exempt is tests/test_network_consensus.py's
``test_listed_relays_are_exempt_from_the_per_address_rate_limit``.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import httpx
import pytest

from veil.onion import rpc
from veil.onion.link import RESPONSE, FrameReader, encode_request
from veil.onion.packet import MAX_REPLY_LEN, build_packet

from .nodeutil import LINK_UPGRADE, NodeHandle, node_process, now_ms, upgrade_to_link

BURST = 5
LIMIT = {"rate": 0.001, "burst": float(BURST), "exempt": []}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeHandle]:
    with node_process(tmp_path_factory.mktemp("rate") / "node", config={"rate_limit": LIMIT}) as n:
        yield n


def connect(node: NodeHandle, source: str) -> socket.socket:
    return socket.create_connection((node.host, node.port), timeout=20, source_address=(source, 0))


def read_response(s: socket.socket) -> tuple[int, bytes]:
    """One HTTP response on ``s`` (with a content-length): status and body."""
    got = b""
    while b"\r\n\r\n" not in got:
        data = s.recv(65536)
        assert data, "closed before a response"
        got += data
    head, _, body = got.partition(b"\r\n\r\n")
    found = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
    assert found is not None, head
    length = int(found.group(1))
    while len(body) < length:
        data = s.recv(65536)
        assert data, "closed within a response"
        body += data
    return int(head[9:12]), body


def post_onion(node: NodeHandle, source: str) -> int:
    """``POST /onion`` of a good one-hop packet from ``source``: the HTTP status (a 200's
    reply is checked)."""
    packet, opener = build_packet([node.hop()], rpc.make_info(), now_ms=now_ms())
    head = b"POST /onion HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(packet)
    with connect(node, source) as s:
        s.sendall(head + packet)
        status, body = read_response(s)
    if status == 200:
        assert rpc.decode_reply(opener.open(body)).ok
    else:
        assert body.startswith(b"rate_limited"), body
    return status


def link_statuses(node: NodeHandle, source: str, packets: int) -> list[int]:
    """Open a link from ``source``, send ``packets`` good packets on it at once; their
    statuses in the order sent."""
    with connect(node, source) as s:
        rest = upgrade_to_link(s)
        openers = {}
        frames = []
        for stream in range(packets):
            packet, openers[stream] = build_packet([node.hop()], rpc.make_info(), now_ms=now_ms())
            frames.append(encode_request(stream, packet))
        s.sendall(b"".join(frames))
        reader = FrameReader(RESPONSE, MAX_REPLY_LEN)
        reader.receive_data(rest)
        statuses: dict[int, int] = {}
        while len(statuses) < packets:
            frame = reader.next_frame()
            if frame is None:
                data = s.recv(65536)
                assert data, "the node closed the link"
                reader.receive_data(data)
                continue
            statuses[frame.stream] = frame.status
            if frame.status == 200:
                assert rpc.decode_reply(openers[frame.stream].open(frame.payload)).ok
            else:
                assert frame.payload.startswith(b"rate_limited"), frame.payload
    return [statuses[i] for i in range(packets)]


def rate_limited_total(node: NodeHandle) -> float:
    text = httpx.get(f"{node.url}/metrics", timeout=10).text
    found = re.search(r"^veil_rate_limited_total (\S+)$", text, re.MULTILINE)
    assert found is not None, text
    return float(found.group(1))


def test_an_address_over_its_burst_gets_429_at_once_and_another_is_served(
    node: NodeHandle,
) -> None:
    before = rate_limited_total(node)
    statuses = [post_onion(node, "127.0.0.2") for _ in range(BURST + 3)]
    assert statuses == [200] * BURST + [429] * 3
    # Another address has a bucket of its own; the limited one stays limited.
    assert post_onion(node, "127.0.0.3") == 200
    assert post_onion(node, "127.0.0.2") == 429
    # Only /onion is limited.
    with connect(node, "127.0.0.2") as s:
        s.sendall(b"GET /info HTTP/1.1\r\nhost: x\r\n\r\n")
        assert read_response(s)[0] == 200
    assert rate_limited_total(node) - before == 4


def test_each_packet_on_a_link_takes_a_token(node: NodeHandle) -> None:
    before = rate_limited_total(node)
    # The upgrade takes one token: BURST - 1 packets go through, the rest get 429 on
    # their own stream, and the link stays open.
    statuses = link_statuses(node, "127.0.0.4", BURST + 2)
    assert statuses == [200] * (BURST - 1) + [429] * 3
    # The address has no token left: not even the upgrade.
    with connect(node, "127.0.0.4") as s:
        s.sendall(LINK_UPGRADE)
        assert read_response(s)[0] == 429
    # Another address opens its own link and is served.
    assert link_statuses(node, "127.0.0.5", 2) == [200, 200]
    assert rate_limited_total(node) - before == 4
