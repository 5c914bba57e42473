"""client/consensus.py: the consensus cache, fetches from authorities, the clock bootstrap.

Real signed consensus documents (onion.directory, real authority keys), real state
files, and real HTTP servers on 127.0.0.1 standing in for authorities (the h11 server
of tests/test_client_transport.py), so that each refusal an authority can give is
exercised. The end-to-end path (a devnet's authority) is in test_client_messaging.py.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import hypothesis.strategies as st
import pytest
import trio
from hypothesis import given, settings

from tests.test_client_transport import Answer, start
from veil.client.consensus import Directory
from veil.client.errors import AuthorityUnreachable
from veil.client.network_clock import NetworkClock
from veil.client.state import ClientState
from veil.client.transport import HttpxTransport
from veil.onion.directory import (
    Authority,
    NetworkFile,
    NodeDescriptor,
    assemble,
    make_consensus_body,
    sign_consensus,
)
from veil.onion.errors import BelowThreshold, ProtocolError, VeilError
from veil.onion.keys import NodeKeys
from veil.onion.wallclock import wall_clock_ms as now_ms

AUTHORITY = NodeKeys.generate()
NODE_KEYS = [NodeKeys.generate() for _ in range(4)]


def document(epoch: int, valid_after: int, signer: NodeKeys = AUTHORITY) -> bytes:
    descriptors = [
        NodeDescriptor(
            k.identity_public,
            k.onion_public,
            "127.0.0.1",
            9000 + i,
            "t",
            valid_after,
            valid_after + 3_600_000,
        )
        for i, k in enumerate(NODE_KEYS)
    ]
    body = make_consensus_body(
        descriptors, epoch=epoch, valid_after_ms=valid_after, interval_ms=60_000
    )
    return assemble(body, [sign_consensus(body, signer)])


def network(port: int = 1) -> NetworkFile:
    return NetworkFile((Authority(AUTHORITY.identity_public, "127.0.0.1", port),), 1)


_open_states: list[ClientState] = []


def directory(tmp_path: Path, *, port: int = 1, skew_ms: int = 0) -> Directory:
    tmp_path.mkdir(parents=True, exist_ok=True)
    state = ClientState.open(tmp_path / "state.sqlite3")
    _open_states.append(state)
    clock = NetworkClock(lambda: time.time() * 1000 + skew_ms)
    return Directory(network(port), state, HttpxTransport(), clock)


@pytest.fixture(autouse=True)
def _close_states() -> Iterator[None]:
    yield
    while _open_states:
        _open_states.pop().close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens there once it is closed


async def test_cached_consensus_is_verified_before_use(tmp_path: Path) -> None:
    d = directory(tmp_path)
    assert await d.load_cached() is None
    good = document(5, now_ms() - 1000)
    d.state.save_consensus(good, 5, now_ms())
    loaded = await d.load_cached()
    assert loaded is not None and loaded.epoch == 5 and d.current is loaded

    # A damaged cache is ignored (and not trusted more than the network).
    d2 = directory(tmp_path / "b")
    forged = document(6, now_ms() - 1000, signer=NodeKeys.generate())
    d2.state.save_consensus(forged, 6, now_ms())
    assert await d2.load_cached() is None
    # As is an expired one (its valid_until, three intervals, is long past).
    d3 = directory(tmp_path / "c")
    d3.state.save_consensus(document(7, now_ms() - 3_600_000), 7, now_ms())
    assert await d3.load_cached() is None


async def test_fetch_installs_saves_and_refuses_rollback(tmp_path: Path) -> None:
    served = {"doc": document(10, now_ms() - 1000)}

    async def authority(method: str, target: str, body: bytes) -> Answer:
        assert (method, target) == ("GET", "/consensus")
        doc = served["doc"]
        return 200, [(b"content-length", str(len(doc)).encode())], [doc]

    async with trio.open_nursery() as nursery:
        server = await start(nursery, authority)
        d = directory(tmp_path, port=server.port)
        seen = []
        d.on_change(seen.append)
        c = await d.fetch()
        assert c.epoch == 10 and seen == [c]
        cached = d.state.load_consensus()
        assert cached is not None and cached.epoch == 10
        # An older document from the authority changes nothing (no rollback).
        served["doc"] = document(9, now_ms() - 1000)
        assert (await d.fetch()).epoch == 10 and len(seen) == 1
        # A newer one is installed.
        served["doc"] = document(11, now_ms() - 500)
        assert (await d.fetch()).epoch == 11 and len(seen) == 2
        # A forged one is refused with the directory's error.
        served["doc"] = document(12, now_ms(), signer=NodeKeys.generate())
        with pytest.raises(BelowThreshold):
            await d.fetch()
        assert d.current is not None and d.current.epoch == 11
        await d.transport.aclose()
        nursery.cancel_scope.cancel()


async def test_authority_without_consensus_or_unreachable(tmp_path: Path) -> None:
    async def not_yet(method: str, target: str, body: bytes) -> Answer:
        return 503, [(b"content-length", b"12")], [b"unavailable\n"]

    async with trio.open_nursery() as nursery:
        server = await start(nursery, not_yet)
        d = directory(tmp_path, port=server.port)
        with pytest.raises(AuthorityUnreachable, match="no consensus yet"):
            await d.fetch()
        await d.transport.aclose()
        nursery.cancel_scope.cancel()
    d = directory(tmp_path / "b", port=closed_port())
    with pytest.raises(AuthorityUnreachable, match="unreachable"):
        await d.fetch()
    await d.transport.aclose()


@pytest.mark.parametrize("skew_ms", [300_000, -300_000])
async def test_clock_far_off_gives_a_tentative_consensus(tmp_path: Path, skew_ms: int) -> None:
    doc = document(3, now_ms() - 1000)

    async def authority(method: str, target: str, body: bytes) -> Answer:
        return 200, [(b"content-length", str(len(doc)).encode())], [doc]

    async with trio.open_nursery() as nursery:
        server = await start(nursery, authority)
        d = directory(tmp_path, port=server.port, skew_ms=skew_ms)
        # The lifetime is three minutes: five minutes off, it does not verify...
        with pytest.raises(VeilError):
            await d.fetch()
        # ...but is accepted tentatively (signatures checked) when asked for,
        c = await d.fetch(tentative_ok=True)
        assert d.tentative and c.epoch == 3
        assert d.state.load_consensus() is None  # not saved until confirmed
        # and confirmed once the clock is corrected (as a node's reply would).
        local = d.clock.local()
        d.clock.reset(now_ms(), local, local)
        await d.confirm()
        assert not d.tentative
        cached = d.state.load_consensus()
        assert cached is not None and cached.epoch == 3
        await d.transport.aclose()
        nursery.cancel_scope.cancel()


@pytest.fixture(scope="module")
def plain_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Directory]:
    path = tmp_path_factory.mktemp("garbage")
    with ClientState.open(path / "state.sqlite3") as state:
        yield Directory(network(), state, HttpxTransport(), NetworkClock(lambda: float(now_ms())))


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=600) | st.sampled_from([b"", document(1, 0)[:-1]]))
def test_verify_refuses_garbage_with_typed_errors(plain_directory: Directory, data: bytes) -> None:
    """Whatever an authority sends, verify raises a protocol error (never a crash that
    would end the refresh loop)."""
    for tentative in (False, True):
        with pytest.raises(ProtocolError):
            plain_directory.verify(data, tentative_ok=tentative)
