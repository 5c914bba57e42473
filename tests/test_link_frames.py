"""onion.link: the node-to-node link's frames, sans-IO.

Round trips in arbitrary splits, the limits checked on the head (before any payload
byte), every malformed head refused with LinkProtocolError, and properties: arbitrary
bytes give frames or LinkProtocolError and nothing else, and the reader never holds more
than it was given. The upgrade's proof (who opens a link): round trips, verifies only
for its server, opener key and time window, and any other header value is refused with
LinkProofError (exact length, lower-case hex only).
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.onion.errors import ProtocolError
from veil.onion.keys import NodeKeys
from veil.onion.link import (
    HEAD_LEN,
    MAX_ERROR_LEN,
    MAX_STREAM_ID,
    NONCE_LEN,
    PROOF_LEN,
    PROOF_TEXT_LEN,
    PROOF_WINDOW_MS,
    REQUEST,
    RESPONSE,
    Frame,
    FrameReader,
    LinkProofError,
    LinkProtocolError,
    encode_request,
    encode_response,
    make_link_proof,
    parse_link_proof,
    verify_link_proof,
)
from veil.onion.packet import MAX_PACKET_LEN, MAX_REPLY_LEN

_HEAD = struct.Struct(">BBHII")


def head(kind: int, flags: int, status: int, stream: int, length: int) -> bytes:
    """A frame head built by hand (so tests can build what the encoders refuse)."""
    return _HEAD.pack(kind, flags, status, stream, length)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the positions ``cuts`` (taken modulo its length, in order)."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks, start = [], 0
    for p in points:
        chunks.append(data[start:p])
        start = p
    chunks.append(data[start:])
    return chunks


def feed(reader: FrameReader, chunks: list[bytes]) -> list[Frame]:
    """Feed ``chunks`` one by one, collecting every frame as soon as it is complete."""
    frames: list[Frame] = []
    for chunk in chunks:
        reader.receive_data(chunk)
        while (frame := reader.next_frame()) is not None:
            frames.append(frame)
    return frames


streams = st.integers(0, MAX_STREAM_ID)
cuts = st.lists(st.integers(0, 1 << 20), max_size=12)


# --- round trips ------------------------------------------------------------------------


@settings(max_examples=200)
@given(
    requests=st.lists(st.tuples(streams, st.binary(max_size=300)), max_size=8),
    cuts=cuts,
)
def test_requests_round_trip_in_any_split(requests: list[tuple[int, bytes]], cuts) -> None:
    wire = b"".join(encode_request(s, p) for s, p in requests)
    reader = FrameReader(REQUEST, MAX_PACKET_LEN)
    frames = feed(reader, split_at(wire, cuts))
    assert frames == [Frame(REQUEST, s, 0, p) for s, p in requests]
    assert reader.buffered == 0


statuses = st.integers(100, 599)


@st.composite
def responses(draw: st.DrawFn) -> tuple[int, int, bytes]:
    status = draw(st.sampled_from([200, 200, 400, 429, 502]) | statuses)
    payload = draw(st.binary(max_size=300 if status == 200 else MAX_ERROR_LEN))
    return draw(streams), status, payload


@settings(max_examples=200)
@given(answers=st.lists(responses(), max_size=8), cuts=cuts)
def test_responses_round_trip_in_any_split(answers: list[tuple[int, int, bytes]], cuts) -> None:
    wire = b"".join(encode_response(s, status, p) for s, status, p in answers)
    reader = FrameReader(RESPONSE, MAX_REPLY_LEN)
    frames = feed(reader, split_at(wire, cuts))
    assert frames == [Frame(RESPONSE, s, status, p) for s, status, p in answers]
    assert reader.buffered == 0


def test_several_frames_in_one_chunk_and_a_partial_tail() -> None:
    wire = encode_request(1, b"one") + encode_request(2, b"") + encode_request(MAX_STREAM_ID, b"3")
    tail = encode_request(7, b"seven")
    reader = FrameReader(REQUEST, MAX_PACKET_LEN)
    reader.receive_data(wire + tail[:-2])
    assert reader.next_frame() == Frame(REQUEST, 1, 0, b"one")
    assert reader.next_frame() == Frame(REQUEST, 2, 0, b"")
    assert reader.next_frame() == Frame(REQUEST, MAX_STREAM_ID, 0, b"3")
    assert reader.next_frame() is None  # the fourth is not whole yet
    assert reader.next_frame() is None  # asking again changes nothing
    assert reader.buffered == len(tail) - 2
    reader.receive_data(tail[-2:])
    assert reader.next_frame() == Frame(REQUEST, 7, 0, b"seven")
    assert reader.next_frame() is None
    assert reader.buffered == 0


def test_a_head_byte_by_byte_is_not_a_frame_until_whole() -> None:
    frame = encode_response(9, 200, b"reply")
    reader = FrameReader(RESPONSE, MAX_REPLY_LEN)
    for byte in frame[:-1]:
        reader.receive_data(bytes([byte]))
        assert reader.next_frame() is None
    reader.receive_data(frame[-1:])
    assert reader.next_frame() == Frame(RESPONSE, 9, 200, b"reply")


def test_largest_payloads_pass_at_the_limit() -> None:
    reader = FrameReader(REQUEST, MAX_PACKET_LEN)
    packet = bytes(MAX_PACKET_LEN)
    reader.receive_data(encode_request(3, packet))
    assert reader.next_frame() == Frame(REQUEST, 3, 0, packet)

    reader = FrameReader(RESPONSE, MAX_REPLY_LEN)
    reply, error = bytes(MAX_REPLY_LEN), b"e" * MAX_ERROR_LEN
    reader.receive_data(encode_response(4, 200, reply) + encode_response(5, 502, error))
    assert reader.next_frame() == Frame(RESPONSE, 4, 200, reply)
    assert reader.next_frame() == Frame(RESPONSE, 5, 502, error)


# --- refusals, on the head alone ------------------------------------------------------------


def refused(expect: int, max_payload: int, data: bytes, match: str) -> None:
    """``data`` makes a fresh reader raise LinkProtocolError, and it stays broken after."""
    reader = FrameReader(expect, max_payload)
    reader.receive_data(data)
    with pytest.raises(LinkProtocolError, match=match):
        reader.next_frame()
    # Broken for good: even a good frame afterwards is refused, every time it is asked.
    good = encode_request(1, b"") if expect == REQUEST else encode_response(1, 200, b"")
    reader.receive_data(good)
    for _ in range(2):
        with pytest.raises(LinkProtocolError, match="already failed"):
            reader.next_frame()


def test_linkprotocolerror_is_a_protocol_error() -> None:
    assert issubclass(LinkProtocolError, ProtocolError)


def test_a_request_payload_over_the_limit_is_refused_on_the_head() -> None:
    # Only the head: no payload byte follows, and the refusal must not wait for one.
    refused(REQUEST, 100, head(REQUEST, 0, 0, 1, 101), "over the limit of 100")
    refused(
        REQUEST,
        MAX_PACKET_LEN,
        head(REQUEST, 0, 0, 1, MAX_PACKET_LEN + 1),
        "over the limit",
    )
    refused(REQUEST, MAX_PACKET_LEN, head(REQUEST, 0, 0, 1, 0xFFFF_FFFF), "over the limit")


def test_a_response_payload_over_the_limit_is_refused_on_the_head() -> None:
    refused(RESPONSE, 64, head(RESPONSE, 0, 200, 1, 65), "over the limit of 64")
    refused(RESPONSE, MAX_REPLY_LEN, head(RESPONSE, 0, 200, 1, MAX_REPLY_LEN + 1), "over the limit")


@pytest.mark.parametrize("status", [201, 400, 429, 500, 502, 599])
def test_an_error_payload_over_max_error_len_is_refused_on_the_head(status: int) -> None:
    refused(
        RESPONSE,
        MAX_REPLY_LEN,
        head(RESPONSE, 0, status, 1, MAX_ERROR_LEN + 1),
        f"over the limit of {MAX_ERROR_LEN}",
    )
    # The smaller of the two limits applies when the reader's is below MAX_ERROR_LEN.
    refused(RESPONSE, 10, head(RESPONSE, 0, status, 1, 11), "over the limit of 10")


@pytest.mark.parametrize("kind", [0, 6, 255])
def test_an_unknown_kind_is_refused(kind: int) -> None:
    refused(REQUEST, 100, head(kind, 0, 0, 1, 0), "unknown frame kind")
    refused(RESPONSE, 100, head(kind, 0, 200, 1, 0), "unknown frame kind")


@pytest.mark.parametrize("flags", [1, 0x80, 0xFF])
def test_reserved_flags_are_refused(flags: int) -> None:
    refused(REQUEST, 100, head(REQUEST, flags, 0, 1, 0), "reserved flags")
    refused(RESPONSE, 100, head(RESPONSE, flags, 200, 1, 0), "reserved flags")


@pytest.mark.parametrize("status", [1, 200, 0xFFFF])
def test_a_request_carrying_a_status_is_refused(status: int) -> None:
    refused(REQUEST, 100, head(REQUEST, 0, status, 1, 0), "carries a status")


@pytest.mark.parametrize("status", [0, 99, 600, 0xFFFF])
def test_a_response_status_outside_100_599_is_refused(status: int) -> None:
    refused(RESPONSE, 100, head(RESPONSE, 0, status, 1, 0), "not an HTTP status")


def test_the_wrong_kind_for_the_side_is_refused() -> None:
    # A server reads requests: a response from the client breaks the framing...
    refused(REQUEST, MAX_PACKET_LEN, encode_response(1, 200, b"x"), "unexpected frame kind")
    # ...and a client reads responses.
    refused(RESPONSE, MAX_REPLY_LEN, encode_request(1, b"x"), "unexpected frame kind")


def test_frames_before_a_bad_one_are_still_returned() -> None:
    reader = FrameReader(REQUEST, 100)
    reader.receive_data(encode_request(1, b"a") + head(9, 0, 0, 2, 0) + encode_request(3, b"c"))
    assert reader.next_frame() == Frame(REQUEST, 1, 0, b"a")
    with pytest.raises(LinkProtocolError):
        reader.next_frame()
    with pytest.raises(LinkProtocolError, match="already failed"):
        reader.next_frame()


# --- properties ----------------------------------------------------------------------------


@settings(max_examples=300)
@given(
    expect=st.sampled_from([REQUEST, RESPONSE]),
    max_payload=st.integers(0, 2048),
    data=st.binary(max_size=600)
    | st.lists(
        # Mostly valid-looking heads (so long runs of frames happen), some junk.
        st.builds(
            head,
            st.integers(0, 3),
            st.sampled_from([0, 0, 0, 1]),
            st.sampled_from([0, 0, 200, 404, 99, 600]),
            streams,
            st.integers(0, 40),
        )
        | st.binary(max_size=40),
        max_size=10,
    ).map(b"".join),
    cuts=cuts,
)
def test_any_bytes_in_any_split_give_frames_or_a_link_protocol_error(
    expect: int, max_payload: int, data: bytes, cuts
) -> None:
    reader = FrameReader(expect, max_payload)
    given_bytes = 0
    taken = 0
    failed = False
    for chunk in split_at(data, cuts):
        reader.receive_data(chunk)
        given_bytes += len(chunk)
        try:
            while (frame := reader.next_frame()) is not None:
                # A server reads onion and replication requests (veil-link/3).
                assert frame.kind == expect or (expect == REQUEST and frame.kind in (3, 4, 5))
                assert 0 <= frame.stream <= MAX_STREAM_ID
                if expect == REQUEST:
                    assert frame.status == 0
                    assert len(frame.payload) <= max_payload
                else:
                    assert 100 <= frame.status <= 599
                    limit = max_payload if frame.status == 200 else min(max_payload, MAX_ERROR_LEN)
                    assert len(frame.payload) <= limit
                taken += HEAD_LEN + len(frame.payload)
        except LinkProtocolError:
            failed = True
            break
        # Nothing is held beyond what was given and not yet returned as frames.
        assert reader.buffered == given_bytes - taken
        assert reader.buffered <= given_bytes
    if failed:
        with pytest.raises(LinkProtocolError):
            reader.next_frame()
    else:
        assert taken + reader.buffered == len(data)


# --- the encoders refuse what a reader would ---------------------------------------------


def test_encode_request_refuses_out_of_range_arguments() -> None:
    for stream in (-1, MAX_STREAM_ID + 1, 1 << 40):
        with pytest.raises(ValueError, match="out of range"):
            encode_request(stream, b"x")
    with pytest.raises(ValueError, match="over"):
        encode_request(1, bytes(MAX_PACKET_LEN + 1))
    assert len(encode_request(MAX_STREAM_ID, bytes(MAX_PACKET_LEN))) == HEAD_LEN + MAX_PACKET_LEN


def test_encode_response_refuses_out_of_range_arguments() -> None:
    for stream in (-1, MAX_STREAM_ID + 1):
        with pytest.raises(ValueError, match="out of range"):
            encode_response(stream, 200, b"x")
    for status in (0, 99, 600, 0xFFFF):
        with pytest.raises(ValueError, match="not an HTTP status"):
            encode_response(1, status, b"x")
    with pytest.raises(ValueError, match="over"):
        encode_response(1, 200, bytes(MAX_REPLY_LEN + 1))
    for status in (400, 500, 201):
        with pytest.raises(ValueError, match="over"):
            encode_response(1, status, bytes(MAX_ERROR_LEN + 1))
    assert len(encode_response(0, 200, bytes(MAX_REPLY_LEN))) == HEAD_LEN + MAX_REPLY_LEN
    assert len(encode_response(0, 599, bytes(MAX_ERROR_LEN))) == HEAD_LEN + MAX_ERROR_LEN


def test_frame_reader_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError):
        FrameReader(3, 100)
    with pytest.raises(ValueError):
        FrameReader(REQUEST, -1)


# --- the upgrade's proof of who opens a link -----------------------------------------------

SERVER = NodeKeys.generate()
OPENER = NodeKeys.generate()
NOW_MS = 1_700_000_000_000


def test_a_proof_round_trips_and_verifies_only_for_its_server_key_and_window() -> None:
    value = make_link_proof(OPENER, SERVER.identity_public, NOW_MS)
    assert len(value) == PROOF_TEXT_LEN and value == value.lower()
    proof = parse_link_proof(value)
    assert proof.opener_id == OPENER.identity_public
    assert proof.time_ms == NOW_MS and len(proof.nonce) == NONCE_LEN
    assert proof.replay_tag == OPENER.identity_public + proof.nonce
    verify_link_proof(proof, SERVER.identity_public, OPENER.identity_public, NOW_MS)
    verify_link_proof(
        proof, SERVER.identity_public, OPENER.identity_public, NOW_MS + PROOF_WINDOW_MS
    )
    bad = [
        (OPENER.identity_public, OPENER.identity_public, NOW_MS),  # another server
        (SERVER.identity_public, SERVER.identity_public, NOW_MS),  # another opener key
        (SERVER.identity_public, OPENER.identity_public, NOW_MS + PROOF_WINDOW_MS + 1),
        (SERVER.identity_public, OPENER.identity_public, NOW_MS - PROOF_WINDOW_MS - 1),
    ]
    for server_id, opener_key, now in bad:
        with pytest.raises(LinkProofError):
            verify_link_proof(proof, server_id, opener_key, now)
    # Fresh nonces: two proofs of the same moment differ.
    assert parse_link_proof(make_link_proof(OPENER, SERVER.identity_public, NOW_MS)) != proof


def test_a_missing_proof_is_a_typed_error() -> None:
    with pytest.raises(LinkProofError):
        parse_link_proof(None)
    assert issubclass(LinkProofError, ProtocolError)


@settings(max_examples=300)
@given(st.binary(max_size=2 * PROOF_TEXT_LEN))
def test_garbage_proofs_are_refused_with_a_typed_error(value: bytes) -> None:
    """Arbitrary header bytes: a LinkProofError, or (only for exactly 240 lower-case hex
    digits) a proof whose signature then does not verify."""
    try:
        proof = parse_link_proof(value)
    except LinkProofError:
        return
    assert len(value) == PROOF_TEXT_LEN and bytes.fromhex(value.decode()) == (
        proof.opener_id + proof.time_ms.to_bytes(8, "big") + proof.nonce + proof.signature
    )
    with pytest.raises(LinkProofError):
        verify_link_proof(proof, SERVER.identity_public, OPENER.identity_public, proof.time_ms)


@given(st.integers(0, PROOF_LEN * 2 + 8).filter(lambda n: n != PROOF_TEXT_LEN))
def test_any_other_length_is_refused_before_decoding(length: int) -> None:
    with pytest.raises(LinkProofError, match="hex digits"):
        parse_link_proof(b"a" * length)


@given(st.integers(0, PROOF_TEXT_LEN - 1), st.sampled_from(b"ABCDEFgxyz \t+-=/"))
def test_one_foreign_character_is_refused(at: int, char: int) -> None:
    """One spelling per proof (no upper case, spaces or signs, which bytes.fromhex or
    base64 would take), so a replay cannot pass as a new proof by re-spelling."""
    value = bytearray(make_link_proof(OPENER, SERVER.identity_public, NOW_MS))
    value[at] = char
    with pytest.raises(LinkProofError):
        parse_link_proof(bytes(value))


@given(st.binary(min_size=PROOF_LEN, max_size=PROOF_LEN))
def test_a_tampered_proof_never_verifies(raw: bytes) -> None:
    good = bytes.fromhex(make_link_proof(OPENER, SERVER.identity_public, NOW_MS).decode())
    if raw == good:
        return
    proof = parse_link_proof(raw.hex().encode())
    with pytest.raises(LinkProofError):
        verify_link_proof(proof, SERVER.identity_public, OPENER.identity_public, proof.time_ms)
