"""Hostile input against one running node: every bad request gets a clear 4xx (or a
layered error reply), and the node goes on serving.

Packets are built with onion/packet/ and then damaged (bit flips, truncation,
extension); payloads inside valid packets are random CBOR; HTTP requests are malformed at
the byte level over raw sockets. The node runs with a short request deadline (2 s) so
that the slow-client test is quick.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veil.onion import cbor, rpc
from veil.onion.errors import STATUS_CODES
from veil.onion.link import RESPONSE, Frame, FrameReader, encode_request
from veil.onion.packet import (
    BAD_BODY_STATUS,
    MAX_PACKET_LEN,
    MAX_REPLY_LEN,
    HopError,
    build_packet,
)

from .nodeutil import NodeHandle, node_process, now_ms, upgrade_to_link

EXAMPLES = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeHandle]:
    config = {"http": {"request_timeout": 2.0, "idle_timeout": 5.0}, "rate_limit": {"rate": 0}}
    with node_process(tmp_path_factory.mktemp("bad") / "node", config=config) as n:
        yield n


@pytest.fixture(scope="module")
def http(node: NodeHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=node.url, timeout=30) as c:
        yield c


def assert_still_serving(http: httpx.Client, node: NodeHandle) -> None:
    """A good onion request still gets a good reply."""
    packet, opener = build_packet([node.hop()], rpc.make_info(), now_ms=now_ms())
    r = http.post("/onion", content=packet)
    assert r.status_code == 200
    assert rpc.decode_reply(opener.open(r.content)).ok


# --- raw HTTP ----------------------------------------------------------------------------


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def raw(node: NodeHandle, data: bytes, *, eof: bool = True) -> bytes:
    """Send ``data`` on a fresh connection (then EOF) and read until the node closes."""
    with socket.create_connection((node.host, node.port), timeout=20) as s:
        s.sendall(data)
        if eof:
            s.shutdown(socket.SHUT_WR)
        return read_all(s)


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:80]
    return int(response[9:12])


def body_of(response: bytes) -> bytes:
    return response.partition(b"\r\n\r\n")[2]


# --- damaged packets -----------------------------------------------------------------------


@st.composite
def damaged(draw: st.DrawFn, packet: bytes) -> bytes:
    kind = draw(st.sampled_from(["flip", "truncate", "extend", "replace"]))
    if kind == "flip":
        i = draw(st.integers(0, len(packet) - 1))
        bit = draw(st.integers(0, 7))
        return packet[:i] + bytes([packet[i] ^ (1 << bit)]) + packet[i + 1 :]
    if kind == "truncate":
        return packet[: draw(st.integers(0, len(packet) - 1))]
    if kind == "extend":
        return packet + draw(st.binary(min_size=1, max_size=64))
    return draw(st.binary(max_size=4096))


@EXAMPLES
@given(data=st.data(), hops=st.sampled_from([1, 2]))
def test_damaged_packets_are_refused(node: NodeHandle, http: httpx.Client, data, hops) -> None:
    # A 2-hop path through the node twice: damage to the body passes the relay's header
    # MAC and is caught by the destination, which answers with a layered error of its
    # own (tests/test_node_bad_body.py): never a bare refusal after the header checks.
    path = [node.hop()] * hops
    packet, opener = build_packet(path, rpc.make_info(), now_ms=now_ms())
    bad = data.draw(damaged(packet))
    r = http.post("/onion", content=bad)
    if r.status_code == 200:
        with pytest.raises(HopError) as err:
            opener.open(r.content)
        assert err.value.hop == hops - 1 and err.value.status == BAD_BODY_STATUS
    else:
        assert r.status_code == 400, r.text
        assert r.text.startswith("bad_request: ")


def test_node_still_serves_after_damaged_packets(node: NodeHandle, http: httpx.Client) -> None:
    assert_still_serving(http, node)
    # A bad MAC, sure to be among the refusals (random flips mostly land in the body).
    packet, _ = build_packet([node.hop()], rpc.make_info(), now_ms=now_ms())
    bad_mac = packet[:40] + bytes([packet[40] ^ 1]) + packet[41:]  # a byte of gamma
    assert http.post("/onion", content=bad_mac).status_code == 400
    text = http.get("/metrics").text
    assert 'veil_onion_rejected_total{reason="IntegrityError"}' in text
    assert 'veil_onion_rejected_total{reason="MalformedPacket"}' in text


_cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64) + 1, 2**64 - 1)
    | st.binary(max_size=64)
    | st.text(max_size=32),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=12) | st.integers(-5, 5), inner, max_size=4)
    ),
    max_leaves=12,
)
_requests = st.fixed_dictionaries(
    {
        "method": st.sampled_from(sorted(rpc.METHODS)) | st.text(max_size=10),
        "params": st.dictionaries(
            st.sampled_from(["pubkey", "namespace", "data", "ttl", "limit", "wait", "hashes"])
            | st.text(max_size=8),
            _cbor_values,
            max_size=5,
        ),
    }
)


@EXAMPLES
@given(
    payload=st.one_of(
        _cbor_values.map(cbor.encode),
        _requests.map(cbor.encode),
        st.binary(max_size=512),
    )
)
def test_random_payloads_get_error_replies(
    node: NodeHandle, http: httpx.Client, payload: bytes
) -> None:
    packet, opener = build_packet([node.hop()], payload, now_ms=now_ms())
    r = http.post("/onion", content=packet)
    assert r.status_code == 200
    reply = rpc.decode_reply(opener.open(r.content))
    assert reply.status in STATUS_CODES
    assert reply.status != "internal"  # bad input is never a crash
    if not reply.ok:
        assert reply.error


def test_node_still_serves_after_random_payloads(node: NodeHandle, http: httpx.Client) -> None:
    assert_still_serving(http, node)


# --- malformed HTTP ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "status", "says"),
    [
        (b"DELETE /onion HTTP/1.1\r\nhost: x\r\n\r\n", 405, b"method_not_allowed"),
        (b"GET /onion HTTP/1.1\r\nhost: x\r\n\r\n", 405, b"takes POST"),
        (b"GET /nope HTTP/1.1\r\nhost: x\r\n\r\n", 404, b"not_found"),
        (b"GET /info HTTP/1.1\r\n\r\n", 400, b"bad_request"),  # HTTP/1.1 without Host
        (b"GET /info HTTP/1.1\r\nhost: x\r\nbad header\r\n\r\n", 400, b"bad_request"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40), 400, b"bad_request"),
        (b"GARBAGE\r\n\r\n", 400, b"bad_request"),
        (b"GET /info HTTP/1.1\r\nhost: x\r\nx: " + b"a" * 20_000 + b"\r\n\r\n", 431, b"too_large"),
        (b"POST /onion HTTP/1.1\r\nhost: x\r\ncontent-length: -5\r\n\r\n", 400, b"bad_request"),
        (b"POST /onion HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc", 400, b"not a valid"),
        (
            b"POST /onion HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\n",
            501,
            b"bad_request",
        ),
    ],
)
def test_malformed_http_gets_a_clear_error(
    node: NodeHandle, http: httpx.Client, request_bytes: bytes, status: int, says: bytes
) -> None:
    response = raw(node, request_bytes)
    assert status_of(response) == status
    assert says in body_of(response)
    assert_still_serving(http, node)


@EXAMPLES
@given(junk=st.binary(min_size=1, max_size=2048))
def test_random_bytes_get_a_4xx_or_a_close(node: NodeHandle, junk: bytes) -> None:
    response = raw(node, junk)
    assert response == b"" or 400 <= status_of(response) < 500


def test_node_still_serves_after_random_bytes(node: NodeHandle, http: httpx.Client) -> None:
    assert_still_serving(http, node)


def test_a_too_large_content_length_is_refused_before_the_body(node: NodeHandle) -> None:
    # Only the head is sent: the 413 cannot have waited for the body.
    head = b"POST /onion HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % (MAX_PACKET_LEN + 1)
    with socket.create_connection((node.host, node.port), timeout=20) as s:
        s.sendall(head)
        response = read_all(s)
    assert status_of(response) == 413
    assert body_of(response).startswith(b"too_large: ")
    assert b"connection: close" in response.lower()


def test_an_oversized_chunked_body_is_cut_off(node: NodeHandle, http: httpx.Client) -> None:
    chunk = b"%x\r\n%s\r\n" % (16384, b"x" * 16384)
    with socket.create_connection((node.host, node.port), timeout=20) as s:
        s.sendall(b"POST /onion HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
        sent = 0
        try:
            # Far more than the limit: the node must answer before we finish.
            for _ in range(4 * MAX_PACKET_LEN // 16384):
                s.sendall(chunk)
                sent += 16384
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = read_all(s)
    assert status_of(response) == 413
    assert sent > MAX_PACKET_LEN  # it was the size that was refused
    assert_still_serving(http, node)


def test_expect_100_continue_is_honoured(node: NodeHandle) -> None:
    packet, opener = build_packet([node.hop()], rpc.make_info(), now_ms=now_ms())
    head = (
        b"POST /onion HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n"
        b"connection: close\r\ncontent-length: %d\r\n\r\n" % len(packet)
    )
    with socket.create_connection((node.host, node.port), timeout=20) as s:
        s.sendall(head)
        interim = s.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100 ")
        s.sendall(packet)
        response = read_all(s)
    assert status_of(response) == 200
    assert rpc.decode_reply(opener.open(body_of(response))).ok


def test_a_slowloris_client_is_cut_off(node: NodeHandle, http: httpx.Client) -> None:
    request = b"GET /info HTTP/1.1\r\nhost: x\r\nuser-agent: one-byte-a-second\r\n\r\n"
    sent = 0
    with socket.create_connection((node.host, node.port), timeout=20) as s:
        s.settimeout(1.0)
        response = b""
        while sent < len(request):
            try:
                s.sendall(request[sent : sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
            try:
                response = s.recv(4096)  # waits up to 1 s: one byte a second
            except TimeoutError:
                continue
            break
        s.settimeout(20)
        response += read_all(s)
    assert sent < len(request)  # cut off before the request was complete
    assert status_of(response) == 408
    assert b"request_timeout" in body_of(response)
    assert_still_serving(http, node)


def test_idle_keep_alive_connections_are_closed(node: NodeHandle) -> None:
    with socket.create_connection((node.host, node.port), timeout=30) as s:
        s.sendall(b"GET /info HTTP/1.1\r\nhost: x\r\n\r\n")
        first = s.recv(65536)
        assert status_of(first) == 200
        # Then silence: the node closes the connection after idle_timeout, saying nothing.
        assert read_all(s) == b""


# --- connection and rate limits (nodes of their own) ---------------------------------------


def test_connections_over_the_limit_get_503(tmp_path: Path) -> None:
    config = {"http": {"max_connections": 4, "idle_timeout": 20.0}}
    with node_process(tmp_path / "conns", config=config) as node:
        socks = [socket.create_connection((node.host, node.port), timeout=20) for _ in range(7)]
        try:
            statuses = []
            for s in socks:
                s.sendall(b"GET /info HTTP/1.1\r\nhost: x\r\n\r\n")
                statuses.append(status_of(s.recv(65536)))
            assert statuses.count(200) == 4
            assert statuses.count(503) == 3
        finally:
            for s in socks:
                s.close()
        # Once those close, the node serves again (wait until it has seen them close).
        for _ in range(200):
            if httpx.get(f"{node.url}/info").status_code == 200:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("node never served again")
        text = httpx.get(f"{node.url}/metrics").text
        assert "veil_http_connections_refused_total 3.0" in text


def test_an_address_over_its_rate_gets_429_at_once(tmp_path: Path) -> None:
    config = {"rate_limit": {"rate": 0.001, "burst": 3}}
    with node_process(tmp_path / "rate", config=config) as node:
        statuses = []
        for _ in range(6):
            response = raw(node, b"POST /onion HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc")
            statuses.append(status_of(response))
        assert statuses == [400, 400, 400, 429, 429, 429]
        assert b"rate_limited" in body_of(response)
        # Other paths are not limited.
        assert httpx.get(f"{node.url}/info").status_code == 200
        text = httpx.get(f"{node.url}/metrics").text
        assert "veil_rate_limited_total 3.0" in text


# --- the node-to-node link ---------------------------------------------------------------



def upgraded(node: NodeHandle) -> tuple[socket.socket, bytes]:
    """A connection switched to the link, and the bytes already read after the 101."""
    s = socket.create_connection((node.host, node.port), timeout=20)
    return s, upgrade_to_link(s)


def next_frame(s: socket.socket, reader: FrameReader) -> Frame:
    while (frame := reader.next_frame()) is None:
        data = s.recv(65536)
        assert data, "the node closed the link"
        reader.receive_data(data)
    return frame


def test_a_link_answers_each_packet_on_its_stream(node: NodeHandle) -> None:
    s, rest = upgraded(node)
    with s:
        reader = FrameReader(RESPONSE, MAX_REPLY_LEN)
        reader.receive_data(rest)
        good, opener = build_packet([node.hop()], rpc.make_info(), now_ms=now_ms())
        damaged = bytes([good[0]]) + bytes([good[1] ^ 1]) + good[2:]
        s.sendall(encode_request(7, damaged) + encode_request(8, good))
        frames = {f.stream: f for f in (next_frame(s, reader), next_frame(s, reader))}
        assert frames[7].status == 400  # refused before a reply was possible
        assert frames[8].status == 200
        assert rpc.decode_reply(opener.open(frames[8].payload)).ok


@EXAMPLES
@given(junk=st.binary(min_size=1, max_size=4096))
def test_random_bytes_on_a_link_get_whole_frames_or_a_close(node: NodeHandle, junk: bytes) -> None:
    s, rest = upgraded(node)
    with s:
        s.sendall(junk)
        s.shutdown(socket.SHUT_WR)
        rest += read_all(s)
    # Whatever came back is whole, valid response frames (often none: bad framing, or a
    # peer that left, is answered by closing).
    reader = FrameReader(RESPONSE, MAX_REPLY_LEN)
    reader.receive_data(rest)
    while reader.next_frame() is not None:
        pass
    assert reader.buffered == 0


def test_node_still_serves_after_bad_links(node: NodeHandle, http: httpx.Client) -> None:
    assert_still_serving(http, node)
