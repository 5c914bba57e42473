"""The small shared helpers of veil.onion: HOST:PORT text, the wall clock, back-off."""

from __future__ import annotations

import ipaddress
import random
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from veil.onion.backoff import Backoff
from veil.onion.hostport import BadHostPort, format_hostport, parse_hostport
from veil.onion.wallclock import wall_clock_ms

ips = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)


@given(ips, st.integers(1, 65535))
def test_hostport_round_trips(host: str, port: int) -> None:
    assert parse_hostport(format_hostport(host, port)) == (host, port)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("127.0.0.1", "HOST:PORT"),
        (":80", "HOST:PORT"),
        ("example.org:80", "IP address"),
        ("127.0.0.1:0", "port"),
        ("127.0.0.1:65536", "port"),
        ("127.0.0.1:-1", "port"),
        ("127.0.0.1:\uff18\uff10", "port"),  # full-width digits: isdigit(), not ASCII
    ],
)
def test_hostport_refuses_what_is_not_an_ip_and_port(text: str, why: str) -> None:
    with pytest.raises(BadHostPort, match=why):
        parse_hostport(text)
    assert issubclass(BadHostPort, ValueError)


def test_port_zero_only_where_asked() -> None:
    assert parse_hostport("[::1]:0", min_port=0) == ("::1", 0)


@given(st.text(max_size=80))
def test_hostport_parses_or_refuses_any_text(text: str) -> None:
    try:
        host, port = parse_hostport(text)
    except BadHostPort:
        return
    ipaddress.ip_address(host)
    assert 1 <= port <= 65535


def test_wall_clock_is_whole_ms_of_the_epoch() -> None:
    before = time.time_ns() // 1_000_000
    now = wall_clock_ms()
    assert isinstance(now, int)
    assert before <= now <= time.time_ns() // 1_000_000


def test_backoff_grows_to_its_cap() -> None:
    b = Backoff(first_s=0.25, max_s=5.0)
    assert [b.delay_s(n) for n in range(1, 8)] == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert b.delay_s(10_000) == 5.0


@given(st.integers(1, 100), st.integers(0, 2**32))
def test_backoff_jitter_stays_in_its_band(failures: int, seed: int) -> None:
    b = Backoff(first_s=0.5, max_s=5.0, jitter=0.5)
    plain = Backoff(first_s=0.5, max_s=5.0).delay_s(failures)
    d = b.delay_s(failures, random.Random(seed))
    assert plain * 0.5 <= d < plain * 1.5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"first_s": 2, "max_s": 1},
        {"first_s": -1, "max_s": 1},
        {"first_s": 1, "max_s": 2, "factor": 0.5},
        {"first_s": 1, "max_s": 2, "jitter": 2},
    ],
)
def test_backoff_refuses_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)


def test_values_the_protocol_api_cannot_take_are_typed() -> None:
    """A caller's bad value is InvalidValue: a VeilError (one except catches all of
    veil's) and a ValueError (code written against the built-in still works)."""
    from veil.onion import padding
    from veil.onion.errors import InvalidValue, VeilError
    from veil.onion.keys import NodeKeys
    from veil.onion.packet import Hop, build_packet

    keys = NodeKeys.generate()
    hop = Hop(keys.identity_public, keys.onion_public, "127.0.0.1", 9)
    misuses = [
        lambda: build_packet([hop] * 7, b"x", now_ms=wall_clock_ms()),  # too many hops
        lambda: build_packet([hop], b"x" * 5000, now_ms=wall_clock_ms(), size_class=2048),
        lambda: build_packet([hop, Hop(hop.node_id, hop.onion_key, "localhost", 9)], b"", now_ms=0),
        lambda: padding.padme_length(-1),
        lambda: keys.sign(b"do\0main", b"m"),
        lambda: Backoff(first_s=2, max_s=1),
        lambda: parse_hostport("nowhere"),
    ]
    for misuse in misuses:
        with pytest.raises(InvalidValue) as info:
            misuse()
        assert isinstance(info.value, VeilError) and isinstance(info.value, ValueError)
