"""node.link: links between nodes over real sockets on 127.0.0.1.

Each test serves a real :class:`veil.node.server.HttpServer` whose ``/link`` route upgrades
to :func:`veil.node.link.serve_link` with a small handler (and whose ``POST /onion`` runs the
same handler, for the HTTP fallback), and drives it with
:func:`veil.node.link.open_link_pool` over a real :class:`veil.node.peers.PeerPool`. The server
records what it saw (links opened and ended, POSTs, requests in flight, answers), because
what the peer sees (one connection carrying everything) is the point of a link.
"""

from __future__ import annotations

import random
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing

from veil.node.config import HttpConfig
from veil.node.link import LinkPool, open_link_pool, serve_link
from veil.node.metrics import NodeMetrics
from veil.node.peers import PeerPool
from veil.node.server import HttpServer, Request, Response, Route
from veil.onion.errors import HopTimeout, HopUnreachable, RateLimited
from veil.onion.link import (
    REQUEST,
    RESPONSE,
    UPGRADE_PATH,
    UPGRADE_TOKEN,
    FrameReader,
    encode_request,
    encode_response,
)
from veil.onion.packet import MAX_PACKET_LEN, MAX_REPLY_LEN

HOST = "127.0.0.1"

Handler = Callable[[bytes], Awaitable[tuple[int, bytes]]]


async def echo(packet: bytes) -> tuple[int, bytes]:
    return 200, b"re:" + packet


def held_until(release: trio.Event) -> Callable[[bytes], Awaitable[tuple[int, bytes]]]:
    """A link handler that answers like echo, but only once ``release`` is set."""

    async def held(packet: bytes) -> tuple[int, bytes]:
        await release.wait()
        return 200, b"re:" + packet

    return held


@dataclass
class LinkServer:
    """An HttpServer with ``/link`` (upgrade to serve_link) and ``POST /onion``."""

    handler: Handler = echo
    link_route: bool = True
    max_streams: int = 64
    idle_timeout: float = 30.0
    shutdown_grace: float = 5.0
    admit: Callable[[], bool] = lambda: True
    # What the server saw.
    upgrades: int = 0
    links_ended: int = 0
    posts: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    arrived: list[bytes] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)  # statuses, in answer order
    port: int = 0
    http: HttpServer | None = None
    metrics: NodeMetrics = field(
        default_factory=lambda: NodeMetrics({"/onion": "/onion", "/link": "/link"})
    )
    done: trio.Event = field(default_factory=trio.Event)

    async def _handle(self, packet: bytes) -> tuple[int, bytes]:
        self.arrived.append(packet)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            return await self.handler(packet)
        finally:
            self.in_flight -= 1

    async def _onion(self, request: Request) -> Response:
        self.posts += 1
        status, body = await self._handle(request.body)
        return Response(status, body)

    async def _link(
        self, stream: trio.SocketStream, initial: bytes, peer: str, stopping: trio.Event
    ) -> None:
        self.upgrades += 1
        try:
            await serve_link(
                stream,
                initial,
                self._handle,
                max_streams=self.max_streams,
                idle_timeout=self.idle_timeout,
                write_timeout=5.0,
                admit=self.admit,
                stopping=stopping,
                on_request=lambda _kind, status: self.answered.append(status),
            )
        finally:
            self.links_ended += 1

    async def start(self, nursery: trio.Nursery) -> LinkServer:
        routes = {"/onion": Route(("POST",), self._onion, MAX_PACKET_LEN)}
        if self.link_route:
            routes[UPGRADE_PATH] = Route(
                ("GET",), self._onion, upgrade=self._link, upgrade_token=UPGRADE_TOKEN
            )
        config = HttpConfig(shutdown_grace=self.shutdown_grace)
        self.http = HttpServer(routes, config, metrics=self.metrics)
        listeners = await trio.open_tcp_listeners(0, host=HOST)
        self.port = listeners[0].socket.getsockname()[1]
        nursery.start_soon(self._serve, listeners)
        await trio.testing.wait_all_tasks_blocked()
        return self

    async def _serve(self, listeners: list[trio.SocketListener]) -> None:
        assert self.http is not None
        try:
            await self.http.serve(listeners)
        finally:
            self.done.set()

    def requests(self, method: str, path: str, status: int) -> float:
        """How many requests the HttpServer counted with these labels."""
        value = self.metrics.registry.get_sample_value(
            "veil_http_requests_total", {"method": method, "path": path, "status": str(status)}
        )
        return value or 0.0


async def until(condition: Callable[[], bool]) -> None:
    """Wait (polling) until ``condition()`` holds; a sync point, not a timing check."""
    with trio.fail_after(20):  # a hang guard only
        while not condition():
            await trio.sleep(0.002)


@pytest.fixture
async def http() -> AsyncIterator[PeerPool]:
    async with PeerPool() as pool:
        yield pool


def dead_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])  # closed again: nothing listens there


# --- many requests, one link -----------------------------------------------------------------


async def test_many_concurrent_forwards_share_one_link_and_answers_in_any_order(
    nursery: trio.Nursery, http: PeerPool
) -> None:
    n = 200
    # Every handler waits until all n requests are in flight, then they answer in the
    # reverse of their arrival order: each response must still reach its own request.
    turn = [trio.Event() for _ in range(n)]
    order: list[bytes] = []

    async def reverse(packet: bytes) -> tuple[int, bytes]:
        k = len(server.arrived) - 1
        if k == n - 1:
            turn[k].set()
        await turn[k].wait()
        order.append(packet)
        if k:
            turn[k - 1].set()
        return 200, b"re:" + packet

    server = await LinkServer(reverse, max_streams=n).start(nursery)
    results: dict[int, tuple[int, bytes]] = {}
    async with open_link_pool(http, max_streams=n) as pool:

        async def one(i: int) -> None:
            results[i] = await pool.forward(HOST, server.port, b"p%d" % i, timeout=30)

        async with trio.open_nursery() as inner:
            for i in range(n):
                inner.start_soon(one, i)
        assert pool.open_links == 1
    assert results == {i: (200, b"re:p%d" % i) for i in range(n)}
    assert server.peak_in_flight == n
    assert order == server.arrived[::-1]
    # One connection carried everything: one upgrade, nothing over HTTP.
    assert server.upgrades == 1
    assert server.posts == 0
    assert server.requests("GET", "/link", 101) == 1


async def test_random_delays_on_one_link(nursery: trio.Nursery, http: PeerPool) -> None:
    rng = random.Random(7)

    async def jittery(packet: bytes) -> tuple[int, bytes]:
        await trio.sleep(rng.random() / 200)
        return 200, packet[::-1]

    server = await LinkServer(jittery).start(nursery)
    results: list[tuple[int, bytes, tuple[int, bytes]]] = []
    async with open_link_pool(http) as pool:

        async def one(i: int) -> None:
            packet = b"packet-%d" % i
            results.append((i, packet, await pool.forward(HOST, server.port, packet, timeout=30)))

        for _ in range(3):  # waves: the link is reused between them
            async with trio.open_nursery() as inner:
                for i in range(60):
                    inner.start_soon(one, i)
    assert len(results) == 180
    assert all(answer == (200, packet[::-1]) for _, packet, answer in results)
    assert server.upgrades == 1
    assert server.peak_in_flight > 1


async def test_non_200_statuses_and_handler_failures_pass_through(
    nursery: trio.Nursery, http: PeerPool
) -> None:
    async def varied(packet: bytes) -> tuple[int, bytes]:
        if packet == b"boom":
            raise RuntimeError("handler bug")
        status = int(packet)
        return status, b"status %d" % status

    server = await LinkServer(varied).start(nursery)
    async with open_link_pool(http) as pool:
        for status in (200, 400, 404, 429, 502, 503, 599):
            got = await pool.forward(HOST, server.port, b"%d" % status, timeout=10)
            assert got == (status, b"status %d" % status)
        status, body = await pool.forward(HOST, server.port, b"boom", timeout=10)
        assert status == 500
        assert body.startswith(b"internal")
        # The link survives a handler's failure.
        assert await pool.forward(HOST, server.port, b"201", timeout=10) == (201, b"status 201")
    assert server.upgrades == 1
    assert server.answered == [200, 400, 404, 429, 502, 503, 599, 500, 201]


# --- a peer without links --------------------------------------------------------------------


async def test_a_peer_without_links_is_reached_over_http(
    nursery: trio.Nursery, http: PeerPool
) -> None:
    server = await LinkServer(link_route=False).start(nursery)
    async with open_link_pool(http) as pool:
        # Concurrent first packets: one upgrade attempt, all of them delivered.
        results: list[tuple[int, bytes]] = []

        async def one(i: int) -> None:
            results.append(await pool.forward(HOST, server.port, b"c%d" % i, timeout=10))

        async with trio.open_nursery() as inner:
            for i in range(10):
                inner.start_soon(one, i)
        for i in range(5):
            assert await pool.forward(HOST, server.port, b"s%d" % i, timeout=10) == (
                200,
                b"re:s%d" % i,
            )
        assert pool.open_links == 0
    assert sorted(results) == sorted((200, b"re:c%d" % i) for i in range(10))
    assert server.posts == 15
    # The upgrade was tried once, not on every packet.
    assert server.requests("GET", "/link", 404) == 1
    assert server.upgrades == 0


async def test_the_upgrade_is_tried_again_after_fallback_ttl(
    nursery: trio.Nursery, http: PeerPool
) -> None:
    server = await LinkServer(link_route=False).start(nursery)
    async with open_link_pool(http, fallback_ttl=0.05) as pool:
        assert await pool.forward(HOST, server.port, b"1", timeout=10) == (200, b"re:1")
        assert await pool.forward(HOST, server.port, b"2", timeout=10) == (200, b"re:2")
        assert server.requests("GET", "/link", 404) == 1
        await trio.sleep(0.1)  # past fallback_ttl
        assert await pool.forward(HOST, server.port, b"3", timeout=10) == (200, b"re:3")
    assert server.requests("GET", "/link", 404) == 2
    assert server.posts == 3


async def test_a_get_link_without_the_upgrade_gets_426(
    nursery: trio.Nursery, http: PeerPool
) -> None:
    server = await LinkServer().start(nursery)
    status, body = await http.get(HOST, server.port, UPGRADE_PATH, timeout=10)
    assert status == 426
    assert b"veil-link/3" in body
    for extra in (
        b"Upgrade: veil-link/3\r\n",  # no Connection: upgrade
        b"Connection: Upgrade\r\nUpgrade: websocket\r\n",  # another protocol
        # Earlier versions (/1: no proof of who opens; /2: no replication frames): an
        # old node falls back to POST.
        b"Connection: Upgrade\r\nUpgrade: veil-link/1\r\n",
        b"Connection: Upgrade\r\nUpgrade: veil-link/2\r\n",
    ):
        raw = await raw_request(server.port, b"GET /link HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n")
        assert raw.startswith(b"HTTP/1.1 426 "), raw[:40]
    assert server.upgrades == 0
    assert server.requests("GET", "/link", 426) == 5


async def raw_request(port: int, data: bytes) -> bytes:
    """Send ``data`` on a new connection; everything received until the server closes."""
    stream = await trio.open_tcp_stream(HOST, port)
    async with stream:
        await stream.send_all(data)
        return await read_until_closed(stream)


async def read_until_closed(stream: trio.SocketStream) -> bytes:
    received = b""
    with trio.fail_after(20):  # a hang guard only
        while True:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:  # a reset is a close too
                return received
            if not data:
                return received
            received += data


# --- failures of one request ------------------------------------------------------------------


async def test_an_unanswered_request_times_out_and_the_link_serves_others(
    nursery: trio.Nursery, http: PeerPool
) -> None:
    async def silent_on_never(packet: bytes) -> tuple[int, bytes]:
        if packet == b"never":
            await trio.sleep_forever()
        return 200, b"re:" + packet

    server = await LinkServer(silent_on_never).start(nursery)
    async with open_link_pool(http) as pool:
        assert await pool.forward(HOST, server.port, b"a", timeout=10) == (200, b"re:a")
        with pytest.raises(HopTimeout):
            await pool.forward(HOST, server.port, b"never", timeout=0.2)
        # The unanswered stream is forgotten; the link goes on (and "never" still hangs
        # at the server, so the link carried others while one request was stuck).
        assert await pool.forward(HOST, server.port, b"b", timeout=10) == (200, b"re:b")
        assert server.in_flight == 1
        assert pool.open_links == 1
    assert server.upgrades == 1


async def test_a_cancelled_forward_leaves_the_link_usable_and_its_answer_is_dropped(
    nursery: trio.Nursery, http: PeerPool
) -> None:
    release = trio.Event()

    async def held(packet: bytes) -> tuple[int, bytes]:
        if packet == b"slow":
            await release.wait()
            return 200, b"late answer"
        return 200, b"re:" + packet

    server = await LinkServer(held).start(nursery)
    async with open_link_pool(http) as pool:
        assert await pool.forward(HOST, server.port, b"warm", timeout=10) == (200, b"re:warm")
        with trio.CancelScope() as scope:
            nursery.start_soon(_cancel_when, lambda: server.in_flight == 1, scope)
            await pool.forward(HOST, server.port, b"slow", timeout=30)
        assert scope.cancelled_caught
        release.set()
        await until(lambda: len(server.answered) == 2)  # the late answer was sent
        # The late answer arrives before this one's on the same link and goes nowhere.
        for i in range(3):
            assert await pool.forward(HOST, server.port, b"%d" % i, timeout=10) == (
                200,
                b"re:%d" % i,
            )
        assert pool.open_links == 1
    assert server.upgrades == 1
    assert server.answered == [200] * 5


async def _cancel_when(condition: Callable[[], bool], scope: trio.CancelScope) -> None:
    await until(condition)
    scope.cancel()


async def test_too_many_streams_is_rate_limited(nursery: trio.Nursery, http: PeerPool) -> None:
    release = trio.Event()
    held = held_until(release)

    server = await LinkServer(held).start(nursery)
    results: list[tuple[int, bytes]] = []
    async with open_link_pool(http, max_streams=2) as pool:

        async def one(packet: bytes) -> None:
            results.append(await pool.forward(HOST, server.port, packet, timeout=30))

        async with trio.open_nursery() as inner:
            inner.start_soon(one, b"1")
            inner.start_soon(one, b"2")
            await until(lambda: server.in_flight == 2)
            with pytest.raises(RateLimited):
                await pool.forward(HOST, server.port, b"3", timeout=30)
            release.set()
        # Room again once they are answered.
        assert await pool.forward(HOST, server.port, b"4", timeout=10) == (200, b"re:4")
    assert sorted(results) == [(200, b"re:1"), (200, b"re:2")]
    assert b"3" not in server.arrived
    assert server.upgrades == 1


async def test_the_server_runs_at_most_max_streams_at_once_and_queues_the_rest(
    nursery: trio.Nursery, http: PeerPool
) -> None:
    release = trio.Event()
    held = held_until(release)

    server = await LinkServer(held, max_streams=3).start(nursery)
    results: list[tuple[int, bytes]] = []
    async with open_link_pool(http) as pool:

        async def one(i: int) -> None:
            results.append(await pool.forward(HOST, server.port, b"%d" % i, timeout=30))

        async with trio.open_nursery() as inner:
            for i in range(10):
                inner.start_soon(one, i)
            await until(lambda: server.in_flight == 3)
            await trio.testing.wait_all_tasks_blocked()
            # The server stopped reading at its limit: the others wait, none refused.
            assert len(server.arrived) == 3
            release.set()
    assert sorted(results) == sorted((200, b"re:%d" % i) for i in range(10))
    assert server.peak_in_flight == 3
    assert server.answered == [200] * 10
    assert server.upgrades == 1


async def test_the_server_refuses_what_admit_refuses_with_429(
    nursery: trio.Nursery, http: PeerPool
) -> None:
    budget = [2]

    def admit() -> bool:
        budget[0] -= 1
        return budget[0] >= 0

    server = await LinkServer(admit=admit).start(nursery)
    async with open_link_pool(http) as pool:
        answers = [await pool.forward(HOST, server.port, b"%d" % i, timeout=10) for i in range(4)]
    assert answers[:2] == [(200, b"re:0"), (200, b"re:1")]
    for status, body in answers[2:]:
        assert status == 429
        assert body.startswith(b"rate_limited")
    assert server.arrived == [b"0", b"1"]  # refused requests never reach the handler
    assert server.answered == [200, 200, 429, 429]
    assert server.upgrades == 1


# --- the link itself failing ------------------------------------------------------------------


async def test_a_dead_port_is_unreachable(http: PeerPool) -> None:
    async with open_link_pool(http) as pool:
        # A long timeout: the refusal must be reported as such, not waited out.
        with pytest.raises(HopUnreachable):
            await pool.forward(HOST, dead_port(), b"x", timeout=60)
        assert pool.open_links == 0


async def test_a_link_closed_as_idle_is_reopened_for_the_next_forward(
    nursery: trio.Nursery, http: PeerPool
) -> None:
    server = await LinkServer(idle_timeout=0.05).start(nursery)
    async with open_link_pool(http) as pool:
        for i in range(3):
            assert await pool.forward(HOST, server.port, b"%d" % i, timeout=10) == (
                200,
                b"re:%d" % i,
            )
            await until(lambda i=i: server.links_ended == i + 1)  # closed by the server
    assert server.upgrades == 3


async def test_a_link_with_a_request_in_flight_is_not_idle(
    nursery: trio.Nursery, http: PeerPool
) -> None:
    # The idle clock runs only while nothing is in flight: a request that takes longer
    # than idle_timeout is answered on its link, which closes once idle after it.
    async def slow(packet: bytes) -> tuple[int, bytes]:
        await trio.sleep(0.4)
        return 200, b"re:" + packet

    server = await LinkServer(slow, idle_timeout=0.05).start(nursery)
    async with open_link_pool(http) as pool:
        assert await pool.forward(HOST, server.port, b"slow", timeout=10) == (200, b"re:slow")
        assert server.upgrades == 1
        await until(lambda: server.links_ended == 1)  # then idle, and closed


class _Spawns(trio.abc.Instrument):
    def __init__(self) -> None:
        self.count = 0

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.count += 1


async def test_packets_on_a_link_spawn_no_task_each(nursery: trio.Nursery, http: PeerPool) -> None:
    # Spawning a task per packet was a tenth of a relay's CPU at rest: the served link
    # reuses its workers, and the sending side has none of its own per packet.
    server = await LinkServer().start(nursery)
    async with open_link_pool(http) as pool:
        assert await pool.forward(HOST, server.port, b"warm", timeout=10) == (200, b"re:warm")
        spawns = _Spawns()
        trio.lowlevel.add_instrument(spawns)
        try:
            for i in range(100):
                answer = await pool.forward(HOST, server.port, b"%d" % i, timeout=10)
                assert answer == (200, b"re:%d" % i)
        finally:
            trio.lowlevel.remove_instrument(spawns)
        assert spawns.count == 0

        # A burst still runs concurrently: a worker per request in flight.
        async def one(i: int) -> None:
            assert await pool.forward(HOST, server.port, b"b%d" % i, timeout=10) == (
                200,
                b"re:b%d" % i,
            )

        async with trio.open_nursery() as inner:
            for i in range(20):
                inner.start_soon(one, i)


class OneShotLinks:
    """A raw link server: each link answers ``answers`` requests, then closes on the next."""

    def __init__(self, answers: int) -> None:
        self.answers = answers
        self.links = 0
        self.requests: list[bytes] = []
        self.port = 0

    async def start(self, nursery: trio.Nursery) -> OneShotLinks:
        listeners = await nursery.start(trio.serve_tcp, self._handle, 0)
        self.port = listeners[0].socket.getsockname()[1]
        return self

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.links += 1
        head = b""
        while b"\r\n\r\n" not in head:
            data = await stream.receive_some(4096)
            if not data:
                return
            head += data
        await stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
            b"Upgrade: veil-link/2\r\n\r\n"
        )
        reader = FrameReader(REQUEST, MAX_PACKET_LEN)
        reader.receive_data(head.split(b"\r\n\r\n", 1)[1])
        answered = 0
        while True:
            frame = reader.next_frame()
            if frame is None:
                data = await stream.receive_some(65536)
                if not data:
                    return
                reader.receive_data(data)
                continue
            self.requests.append(frame.payload)
            if answered >= self.answers:
                await trio.aclose_forcefully(stream)  # drop it without an answer
                return
            answered += 1
            await stream.send_all(encode_response(frame.stream, 200, b"re:" + frame.payload))


async def test_a_used_link_that_breaks_is_retried_once_on_a_new_one(
    nursery: trio.Nursery, http: PeerPool
) -> None:
    # Each link answers one request and drops the next without an answer, as a peer
    # closing a link it thinks idle just as we use it: the request goes once more.
    server = await OneShotLinks(answers=1).start(nursery)
    async with open_link_pool(http) as pool:
        assert await pool.forward(HOST, server.port, b"1", timeout=10) == (200, b"re:1")
        assert await pool.forward(HOST, server.port, b"2", timeout=10) == (200, b"re:2")
        # Once more only: when the retry's link breaks too (it had answered nothing),
        # the request fails instead of being sent again and again.
        server.answers = 0
        with pytest.raises(HopUnreachable):
            await pool.forward(HOST, server.port, b"3", timeout=10)
    assert server.requests == [b"1", b"2", b"2", b"3", b"3"]
    assert server.links == 3


async def test_a_fresh_link_that_breaks_is_not_retried(
    nursery: trio.Nursery, http: PeerPool
) -> None:
    server = await OneShotLinks(answers=0).start(nursery)
    async with open_link_pool(http) as pool:
        with pytest.raises(HopUnreachable):
            await pool.forward(HOST, server.port, b"1", timeout=10)
    assert server.requests == [b"1"]
    assert server.links == 1


class StallingLinks:
    """A raw link server whose first link answers one request and then reads no more
    (so the client's writes soon block); later links answer every request."""

    def __init__(self) -> None:
        self.links = 0
        self.stalled = trio.Event()

    async def start(self, nursery: trio.Nursery) -> StallingLinks:
        listeners = await nursery.start(trio.serve_tcp, self._handle, 0)
        self.port = listeners[0].socket.getsockname()[1]
        return self

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.links += 1
        first = self.links == 1
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some(4096)
        await stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
            b"Upgrade: veil-link/2\r\n\r\n"
        )
        reader = FrameReader(REQUEST, MAX_PACKET_LEN)
        reader.receive_data(head.split(b"\r\n\r\n", 1)[1])
        while True:
            frame = reader.next_frame()
            if frame is None:
                data = await stream.receive_some(65536)
                if not data:
                    return
                reader.receive_data(data)
                continue
            await stream.send_all(encode_response(frame.stream, 200, frame.payload[:8]))
            if first:
                self.stalled.set()
                await trio.sleep_forever()  # hold the connection open, reading nothing


async def test_a_write_that_times_out_on_a_used_link_is_retried_on_a_new_one(
    nursery: trio.Nursery, http: PeerPool
) -> None:
    server = await StallingLinks().start(nursery)
    n = 64  # 64 packets of the largest size: far more than the socket buffers hold
    results: list[tuple[int, bytes]] = []
    async with open_link_pool(http, write_timeout=0.2, max_streams=n) as pool:
        assert await pool.forward(HOST, server.port, b"warm", timeout=10) == (200, b"warm")
        await server.stalled.wait()

        async def one(i: int) -> None:
            packet = (b"%08d" % i) * (MAX_PACKET_LEN // 8)
            results.append(await pool.forward(HOST, server.port, packet, timeout=30))

        async with trio.open_nursery() as inner:
            for i in range(n):
                inner.start_soon(one, i)
    # The first link stopped reading: writing to it timed out and it was closed; every
    # packet waiting on it was sent once more on a second link.
    assert sorted(results) == [(200, b"%08d" % i) for i in range(n)]
    assert server.links == 2


async def upgraded(port: int) -> tuple[trio.SocketStream, bytes]:
    """A raw connection that asked for the link and got the 101; bytes past the head."""
    stream = await trio.open_tcp_stream(HOST, port)
    await stream.send_all(
        b"GET /link HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: veil-link/3\r\n\r\n"
    )
    head = b""
    with trio.fail_after(20):  # a hang guard only
        while b"\r\n\r\n" not in head:
            data = await stream.receive_some(4096)
            assert data, head
            head += data
    assert head.startswith(b"HTTP/1.1 101 "), head
    return stream, head.split(b"\r\n\r\n", 1)[1]


BAD_FRAMES = {
    "garbage": b"this is not a frame at all, not even close",
    "unknown kind": struct.pack(">BBHII", 7, 0, 0, 1, 0),
    "reserved flags": struct.pack(">BBHII", REQUEST, 1, 0, 1, 0),
    "status in a request": struct.pack(">BBHII", REQUEST, 0, 200, 1, 0),
    "a response to the server": encode_response(1, 200, b"x"),
    # Only the head of a frame too large: refused without waiting for its payload.
    "too large": struct.pack(">BBHII", REQUEST, 0, 0, 1, MAX_PACKET_LEN + 1),
    "good then bad": encode_request(1, b"fine") + struct.pack(">BBHII", 9, 9, 9, 9, 9),
}


@pytest.mark.parametrize("bad", BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
async def test_bad_frames_close_that_link_and_the_server_serves_others(
    nursery: trio.Nursery, http: PeerPool, bad: bytes
) -> None:
    server = await LinkServer().start(nursery)
    async with open_link_pool(http) as pool:
        assert await pool.forward(HOST, server.port, b"before", timeout=10) == (200, b"re:before")
        stream, initial = await upgraded(server.port)
        assert initial == b""
        async with stream:
            await stream.send_all(bad)
            received = await read_until_closed(stream)
        reader = FrameReader(RESPONSE, MAX_REPLY_LEN)
        reader.receive_data(received)
        while (frame := reader.next_frame()) is not None:
            # At most an answer to a good frame that came before the bad one.
            assert (frame.stream, frame.status, frame.payload) == (1, 200, b"re:fine")
        await until(lambda: server.links_ended == 1)
        # The other link, opened before, goes on; and new links can be opened.
        assert await pool.forward(HOST, server.port, b"after", timeout=10) == (200, b"re:after")
        assert pool.open_links == 1
    async with open_link_pool(http) as again:
        assert await again.forward(HOST, server.port, b"new", timeout=10) == (200, b"re:new")
    assert server.upgrades == 3


# --- shutting down ---------------------------------------------------------------------------


async def test_server_stop_answers_requests_in_flight_then_closes_the_link(
    nursery: trio.Nursery, http: PeerPool
) -> None:
    release = trio.Event()
    held = held_until(release)

    server = await LinkServer(held, shutdown_grace=30.0).start(nursery)
    assert server.http is not None
    results: list[tuple[int, bytes]] = []
    async with open_link_pool(http) as pool:

        async def one(packet: bytes) -> None:
            results.append(await pool.forward(HOST, server.port, packet, timeout=30))

        async with trio.open_nursery() as inner:
            for i in range(3):
                inner.start_soon(one, b"%d" % i)
            await until(lambda: server.in_flight == 3)
            server.http.stop()
            await trio.testing.wait_all_tasks_blocked()
            assert not server.done.is_set()  # waiting for the link's requests
            release.set()
        await server.done.wait()
        assert sorted(results) == [(200, b"re:0"), (200, b"re:1"), (200, b"re:2")]
        assert server.links_ended == 1
        # The server is gone: the next packet cannot be delivered.
        with pytest.raises(HopUnreachable):
            await pool.forward(HOST, server.port, b"later", timeout=10)


async def test_server_stop_closes_an_idle_link_at_once(
    nursery: trio.Nursery, http: PeerPool
) -> None:
    server = await LinkServer(shutdown_grace=30.0).start(nursery)
    assert server.http is not None
    async with open_link_pool(http) as pool:
        assert await pool.forward(HOST, server.port, b"x", timeout=10) == (200, b"re:x")
        server.http.stop()
        await server.done.wait()  # not after the 30 s grace: nothing was in flight
        assert server.links_ended == 1
        await until(lambda: pool.open_links == 0)


async def test_leaving_the_pool_fails_waiting_requests_with_hop_unreachable(
    nursery: trio.Nursery, http: PeerPool
) -> None:
    async def never(packet: bytes) -> tuple[int, bytes]:
        if packet.startswith(b"hang"):
            await trio.sleep_forever()
        return 200, b"re:" + packet

    server = await LinkServer(never).start(nursery)
    errors: list[BaseException] = []

    async def one(pool: LinkPool, packet: bytes) -> None:
        try:
            await pool.forward(HOST, server.port, packet, timeout=30)
        except HopUnreachable as exc:
            errors.append(exc)

    async with trio.open_nursery() as outer, open_link_pool(http) as pool:
        # One request on the link it opened, two on a link that already answered
        # (these would be retried on a new link, which a closed pool must refuse).
        outer.start_soon(one, pool, b"hang-0")
        await until(lambda: server.in_flight == 1)
        assert await pool.forward(HOST, server.port, b"warm", timeout=10) == (200, b"re:warm")
        outer.start_soon(one, pool, b"hang-1")
        outer.start_soon(one, pool, b"hang-2")
        await until(lambda: server.in_flight == 3)
        # The block is left with three requests waiting.
    assert len(errors) == 3
    assert pool.open_links == 0
    with pytest.raises(RuntimeError):
        await pool.forward(HOST, server.port, b"x", timeout=10)
    await until(lambda: server.links_ended == 1)  # the server saw the link close
    assert server.upgrades == 1


async def test_an_upgrade_refused_for_rate_is_not_taken_for_an_old_node(
    nursery: trio.Nursery, http: PeerPool
) -> None:
    # A node that is rate limiting (429) speaks links all the same: the packet fails
    # now, and the next one tries the upgrade again, not HTTP.
    async def busy(request: Request) -> Response:
        return Response(429, b"busy\n")

    routes = {UPGRADE_PATH: Route(("GET",), busy), "/onion": Route(("GET",), busy)}
    metrics = NodeMetrics({UPGRADE_PATH: UPGRADE_PATH})
    server = HttpServer(routes, HttpConfig(), metrics=metrics)
    listeners = await trio.open_tcp_listeners(0, host=HOST)
    port = listeners[0].socket.getsockname()[1]
    nursery.start_soon(server.serve, listeners)
    async with open_link_pool(http) as pool:
        for _ in range(2):
            with pytest.raises(RateLimited):
                await pool.forward(HOST, port, b"p", timeout=10)
    sample = metrics.registry.get_sample_value(
        "veil_http_requests_total", {"method": "GET", "path": UPGRADE_PATH, "status": "429"}
    )
    assert sample == 2  # asked twice: no fallback to POST /onion was recorded
    server.stop()


@pytest.mark.parametrize("status", [403, 503])
async def test_a_peer_that_does_not_list_us_yet_gets_the_packet_over_http(
    nursery: trio.Nursery, http: PeerPool, monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    # A node that just joined is not yet in its peers' consensus: they refuse its link
    # proof with 403 until they fetch the next one; a peer that just started has no
    # consensus to check the proof against and answers 503. The packets go by POST
    # /onion (which any node takes) meanwhile, and the link is tried again a few seconds
    # later, not after fallback_ttl (the peer speaks links; it only cannot admit us yet).
    import veil.node.link.pool as link_pool

    monkeypatch.setattr(link_pool, "_NOT_LISTED_RETRY_S", 0.05)

    async def not_listed(request: Request) -> Response:
        return Response(status, b"opener not listed\n")

    async def onion(request: Request) -> Response:
        return Response(200, b"re:" + request.body)

    routes = {
        UPGRADE_PATH: Route(("GET",), not_listed),
        "/onion": Route(("POST",), onion, MAX_PACKET_LEN),
    }
    metrics = NodeMetrics({UPGRADE_PATH: UPGRADE_PATH, "/onion": "/onion"})
    server = HttpServer(routes, HttpConfig(), metrics=metrics)
    listeners = await trio.open_tcp_listeners(0, host=HOST)
    port = listeners[0].socket.getsockname()[1]
    nursery.start_soon(server.serve, listeners)

    def count(method: str, path: str, status: int) -> float:
        labels = {"method": method, "path": path, "status": str(status)}
        return metrics.registry.get_sample_value("veil_http_requests_total", labels) or 0

    async with open_link_pool(http, fallback_ttl=600) as pool:
        assert await pool.forward(HOST, port, b"1", timeout=10) == (200, b"re:1")
        assert await pool.forward(HOST, port, b"2", timeout=10) == (200, b"re:2")
        assert count("GET", UPGRADE_PATH, status) == 1  # not asked again at once
        await trio.sleep(0.1)  # past the retry delay, far short of fallback_ttl
        assert await pool.forward(HOST, port, b"3", timeout=10) == (200, b"re:3")
        assert count("GET", UPGRADE_PATH, status) == 2
    assert count("POST", "/onion", 200) == 3
    server.stop()
