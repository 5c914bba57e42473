"""onion.link, veil-link/3: replication requests (kinds 3-5) on a link, sans-IO.

Beside tests/test_link_frames.py (the onion frames): push, pull and forward frames
round-trip with onion requests in any order and any split; each kind's limit
(MAX_REPLICATION_REQUEST, a sealed frame of the largest class, below an onion packet's)
is checked on the head before a payload byte is read; a client never accepts them;
and, as a property, arbitrary bytes made of heads of every kind give frames within their
kind's limit or a LinkProtocolError, never more buffered than was given.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_link_frames import feed, head, split_at
from veil.onion.link import (
    HEAD_LEN,
    MAX_ERROR_LEN,
    MAX_REPLICATION_REPLY,
    MAX_REPLICATION_REQUEST,
    MAX_RESPONSE_LEN,
    MAX_STREAM_ID,
    REPLICATE_FORWARD,
    REPLICATE_PULL,
    REPLICATE_PUSH,
    REPLICATION_KINDS,
    REQUEST,
    REQUEST_KINDS,
    RESPONSE,
    UPGRADE_TOKEN,
    Frame,
    FrameReader,
    LinkProtocolError,
    encode_replication_request,
    encode_request,
    encode_response,
)
from veil.onion.packet import MAX_PACKET_LEN, MAX_REPLY_LEN
from veil.onion.replication_frames import MAX_FRAME

KINDS = sorted(REPLICATION_KINDS)


def refused_on_head(expect: int, max_payload: int, data: bytes, match: str) -> None:
    """``data`` (a head alone: no payload byte follows) breaks a fresh reader at once."""
    reader = FrameReader(expect, max_payload)
    reader.receive_data(data)
    with pytest.raises(LinkProtocolError, match=match):
        reader.next_frame()
    with pytest.raises(LinkProtocolError, match="already failed"):
        reader.next_frame()


def test_the_kinds_the_limits_and_the_token() -> None:
    assert (REPLICATE_PUSH, REPLICATE_PULL, REPLICATE_FORWARD) == (3, 4, 5)
    assert {REQUEST, *REPLICATION_KINDS} == REQUEST_KINDS and RESPONSE not in REQUEST_KINDS
    # A replication request is a sealed frame: at most the largest class, and that is
    # below an onion packet (so its own limit is a real bound, not the reader's).
    assert MAX_REPLICATION_REQUEST == MAX_FRAME < MAX_PACKET_LEN
    assert max(MAX_REPLY_LEN, MAX_REPLICATION_REPLY) == MAX_RESPONSE_LEN
    # /2 peers would close the link on kind 3: the token moved.
    assert UPGRADE_TOKEN == b"veil-link/3"


# --- round trips --------------------------------------------------------------------------

requests = st.lists(
    st.tuples(
        st.sampled_from([REQUEST, *KINDS]), st.integers(0, MAX_STREAM_ID), st.binary(max_size=300)
    ),
    max_size=10,
)


def encode(kind: int, stream: int, payload: bytes) -> bytes:
    if kind == REQUEST:
        return encode_request(stream, payload)
    return encode_replication_request(kind, stream, payload)


@settings(max_examples=200)
@given(requests=requests, cuts=st.lists(st.integers(0, 1 << 20), max_size=12))
def test_onion_and_replication_requests_round_trip_mixed_in_any_split(
    requests: list[tuple[int, int, bytes]], cuts: list[int]
) -> None:
    wire = b"".join(encode(k, s, p) for k, s, p in requests)
    reader = FrameReader(REQUEST, MAX_PACKET_LEN)
    assert feed(reader, split_at(wire, cuts)) == [Frame(k, s, 0, p) for k, s, p in requests]
    assert reader.buffered == 0


@pytest.mark.parametrize("kind", KINDS)
def test_a_replication_request_of_the_largest_class_passes(kind: int) -> None:
    frame = bytes(MAX_REPLICATION_REQUEST)
    reader = FrameReader(REQUEST, MAX_PACKET_LEN)
    reader.receive_data(encode_replication_request(kind, 9, frame))
    assert reader.next_frame() == Frame(kind, 9, 0, frame)
    # Its answer, of the largest class too, fits a response.
    reader = FrameReader(RESPONSE, MAX_RESPONSE_LEN)
    reader.receive_data(encode_response(9, 200, bytes(MAX_REPLICATION_REPLY)))
    assert reader.next_frame() == Frame(RESPONSE, 9, 200, bytes(MAX_REPLICATION_REPLY))


# --- refusals, on the head alone ----------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_replication_request_over_its_limit_is_refused_on_the_head(kind: int) -> None:
    limit = MAX_REPLICATION_REQUEST
    # The reader allows an onion packet's size; a replication frame still may not pass
    # its own limit, which is smaller.
    refused_on_head(
        REQUEST, MAX_PACKET_LEN, head(kind, 0, 0, 1, limit + 1), f"over the limit of {limit}"
    )
    refused_on_head(REQUEST, MAX_PACKET_LEN, head(kind, 0, 0, 1, 0xFFFF_FFFF), "over the limit")
    # And the reader's own limit applies when it is the smaller.
    refused_on_head(REQUEST, 100, head(kind, 0, 0, 1, 101), "over the limit of 100")
    # An onion request of the same length is fine: the limit is the kind's.
    reader = FrameReader(REQUEST, MAX_PACKET_LEN)
    reader.receive_data(head(REQUEST, 0, 0, 1, limit + 1))
    assert reader.next_frame() is None  # waits for the payload


@pytest.mark.parametrize("kind", KINDS)
def test_a_replication_request_with_a_status_or_flags_is_refused(kind: int) -> None:
    refused_on_head(REQUEST, MAX_PACKET_LEN, head(kind, 0, 200, 1, 0), "carries a status")
    refused_on_head(REQUEST, MAX_PACKET_LEN, head(kind, 1, 0, 1, 0), "reserved flags")


@pytest.mark.parametrize("kind", KINDS)
def test_a_client_refuses_a_replication_request(kind: int) -> None:
    # Only the server side reads requests: from a server, it breaks the framing.
    refused_on_head(RESPONSE, MAX_RESPONSE_LEN, head(kind, 0, 0, 1, 0), "unexpected frame kind")


@pytest.mark.parametrize("kind", [0, 6, 7, 128, 255])
def test_kinds_past_replication_are_unknown(kind: int) -> None:
    refused_on_head(REQUEST, MAX_PACKET_LEN, head(kind, 0, 0, 1, 0), "unknown frame kind")


def test_encode_replication_request_refuses_what_a_reader_would() -> None:
    for kind in (0, REQUEST, RESPONSE, 6):
        with pytest.raises(ValueError, match="not a replication request kind"):
            encode_replication_request(kind, 1, b"x")
    for stream in (-1, MAX_STREAM_ID + 1):
        with pytest.raises(ValueError, match="out of range"):
            encode_replication_request(REPLICATE_PUSH, stream, b"x")
    with pytest.raises(ValueError, match="over"):
        encode_replication_request(REPLICATE_PULL, 1, bytes(MAX_REPLICATION_REQUEST + 1))
    framed = encode_replication_request(REPLICATE_FORWARD, MAX_STREAM_ID, b"abc")
    assert framed == head(REPLICATE_FORWARD, 0, 0, MAX_STREAM_ID, 3) + b"abc"


# --- property: anything in, frames within their kind's limit or a typed error out ---------


def limit_of(kind: int, status: int, expect: int, max_payload: int) -> int:
    if expect == REQUEST:
        return max_payload if kind == REQUEST else min(max_payload, MAX_REPLICATION_REQUEST)
    return max_payload if status == 200 else min(max_payload, MAX_ERROR_LEN)


@settings(max_examples=400)
@given(
    expect=st.sampled_from([REQUEST, RESPONSE]),
    max_payload=st.sampled_from([0, 40, 2048, MAX_PACKET_LEN]),
    data=st.lists(
        st.builds(
            head,
            st.integers(0, 7),
            st.sampled_from([0, 0, 0, 1]),
            st.sampled_from([0, 0, 0, 200, 404, 99]),
            st.integers(0, MAX_STREAM_ID),
            st.sampled_from([0, 1, 20, 40, MAX_REPLICATION_REQUEST + 1, MAX_PACKET_LEN]),
        )
        | st.binary(max_size=60),
        max_size=12,
    ).map(b"".join),
    cuts=st.lists(st.integers(0, 1 << 20), max_size=12),
)
def test_any_heads_of_any_kind_give_bounded_frames_or_a_link_protocol_error(
    expect: int, max_payload: int, data: bytes, cuts: list[int]
) -> None:
    reader = FrameReader(expect, max_payload)
    given_bytes = taken = 0
    for chunk in split_at(data, cuts):
        reader.receive_data(chunk)
        given_bytes += len(chunk)
        try:
            while (frame := reader.next_frame()) is not None:
                if expect == REQUEST:
                    assert frame.kind in REQUEST_KINDS and frame.status == 0
                else:
                    assert frame.kind == RESPONSE and 100 <= frame.status <= 599
                limit = limit_of(frame.kind, frame.status, expect, max_payload)
                assert len(frame.payload) <= limit
                taken += HEAD_LEN + len(frame.payload)
        except LinkProtocolError:
            with pytest.raises(LinkProtocolError):
                reader.next_frame()
            return
        assert reader.buffered == given_bytes - taken
    assert taken + reader.buffered == len(data)
