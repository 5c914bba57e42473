"""node.peers.PeerPool against real trio + h11 servers on 127.0.0.1.

Each test starts a tiny HTTP/1.1 server in its own nursery whose behaviour is one small
``respond`` function, and watches what the server sees (connections, requests, peak
concurrency), because what the peer sees is the point of a connection pool.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

import h11
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veil.node.peers import PeerPool
from veil.onion.errors import HopTimeout, HopUnreachable, RateLimited

HOST = "127.0.0.1"

# What a respond function returns: (status, body, extra headers), or None to close the
# connection without answering.
Answer = tuple[int, bytes, list[tuple[bytes, bytes]]] | None


@dataclass
class Seen:
    """What a test server observed."""

    connections: int = 0
    open_now: int = 0
    peak_open: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    eofs: int = 0
    # (connection number, request number on that connection, method, target, body)
    requests: list[tuple[int, int, bytes, bytes, bytes]] = field(default_factory=list)


Respond = Callable[[Seen, int, int, bytes], Awaitable[Answer]]


async def echo(seen: Seen, conn_no: int, req_no: int, body: bytes) -> Answer:
    return 200, b"echo:" + body, []


class Server:
    def __init__(self, respond: Respond = echo, *, close_after_response: bool = False) -> None:
        self.respond = respond
        self.close_after_response = close_after_response
        self.seen = Seen()
        self.port = 0

    async def start(self, nursery: trio.Nursery) -> Server:
        listeners = await nursery.start(partial(trio.serve_tcp, self._handle, 0, host=HOST))
        self.port = listeners[0].socket.getsockname()[1]
        return self

    async def _handle(self, stream: trio.SocketStream) -> None:
        seen = self.seen
        seen.connections += 1
        conn_no = seen.connections
        seen.open_now += 1
        seen.peak_open = max(seen.peak_open, seen.open_now)
        h = h11.Connection(h11.SERVER)
        req_no = 0
        try:
            while True:
                request = None
                body = b""
                while True:
                    event = h.next_event()
                    if event is h11.NEED_DATA:
                        data = await stream.receive_some(65536)
                        if not data:
                            seen.eofs += 1
                            return
                        h.receive_data(data)
                    elif isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    else:
                        return
                req_no += 1
                assert request is not None
                seen.requests.append((conn_no, req_no, request.method, request.target, body))
                seen.in_flight += 1
                seen.peak_in_flight = max(seen.peak_in_flight, seen.in_flight)
                try:
                    answer = await self.respond(seen, conn_no, req_no, body)
                finally:
                    seen.in_flight -= 1
                if answer is None:
                    return
                status, out, extra = answer
                headers = [(b"content-length", str(len(out)).encode()), *extra]
                await stream.send_all(
                    h.send(h11.Response(status_code=status, headers=headers))
                    + h.send(h11.Data(data=out))
                    + h.send(h11.EndOfMessage())
                )
                if self.close_after_response:
                    return
                if h.our_state is not h11.DONE or h.their_state is not h11.DONE:
                    return
                h.start_next_cycle()
        except (trio.BrokenResourceError, h11.RemoteProtocolError):
            return
        finally:
            seen.open_now -= 1
            await trio.aclose_forcefully(stream)


async def serve(nursery: trio.Nursery, respond: Respond = echo) -> Server:
    return await Server(respond).start(nursery)


async def test_keep_alive_reuses_one_connection(nursery: trio.Nursery) -> None:
    server = await serve(nursery)
    async with PeerPool() as pool:
        for i in range(20):
            status, body = await pool.post(HOST, server.port, "/onion", b"p%d" % i, timeout=10)
            assert (status, body) == (200, b"echo:p%d" % i)
        assert pool.open_connections == 1
    assert server.seen.connections == 1
    assert [r[1] for r in server.seen.requests] == list(range(1, 21))
    assert {r[2:4] for r in server.seen.requests} == {(b"POST", b"/onion")}


async def test_get_and_non_2xx_status_are_returned(nursery: trio.Nursery) -> None:
    async def respond(seen: Seen, conn_no: int, req_no: int, body: bytes) -> Answer:
        return (404, b"nope", []) if req_no == 2 else (200, b"{}", [])

    server = await serve(nursery, respond)
    async with PeerPool() as pool:
        assert await pool.get(HOST, server.port, "/info", timeout=10) == (200, b"{}")
        assert await pool.get(HOST, server.port, "/x", timeout=10) == (404, b"nope")
    assert [r[2:] for r in server.seen.requests] == [(b"GET", b"/info", b""), (b"GET", b"/x", b"")]


async def test_connections_per_peer_are_bounded(nursery: trio.Nursery) -> None:
    gate = trio.Event()

    async def held(seen: Seen, conn_no: int, req_no: int, body: bytes) -> Answer:
        await gate.wait()
        return 200, body, []

    server = await serve(nursery, held)
    other = await serve(nursery)
    results: list[tuple[int, bytes]] = []
    async with PeerPool(max_per_peer=3) as pool:

        async def one(i: int) -> None:
            results.append(await pool.post(HOST, server.port, "/", b"%d" % i, timeout=30))

        async with trio.open_nursery() as inner:
            for i in range(10):
                inner.start_soon(one, i)
            await trio.testing.wait_all_tasks_blocked()
            # Three requests reached the server, seven wait in the pool.
            assert server.seen.in_flight == 3
            assert server.seen.open_now == 3
            # A different peer is not blocked by the busy one.
            assert await pool.post(HOST, other.port, "/", b"x", timeout=10) == (200, b"echo:x")
            gate.set()
        assert pool.open_connections <= 4
    assert sorted(results) == sorted((200, b"%d" % i) for i in range(10))
    assert server.seen.peak_open == 3
    assert server.seen.peak_in_flight == 3
    assert server.seen.connections == 3


async def test_waiters_are_bounded(nursery: trio.Nursery) -> None:
    gate = trio.Event()

    async def held(seen: Seen, conn_no: int, req_no: int, body: bytes) -> Answer:
        await gate.wait()
        return 200, body, []

    server = await serve(nursery, held)
    async with PeerPool(max_per_peer=1, max_waiters=2) as pool:
        done: list[tuple[int, bytes]] = []

        async def one() -> None:
            done.append(await pool.post(HOST, server.port, "/", b"w", timeout=30))

        async with trio.open_nursery() as inner:
            for _ in range(3):  # one in flight, two waiting
                inner.start_soon(one)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(RateLimited):
                await pool.post(HOST, server.port, "/", b"w", timeout=30)
            gate.set()
        assert done == [(200, b"w")] * 3
    assert len(server.seen.requests) == 3


async def test_refused_port_is_unreachable() -> None:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]  # closed again, nothing listens there
    async with PeerPool() as pool:
        # A long timeout: refusal must be reported as such, not waited out.
        with pytest.raises(HopUnreachable):
            await pool.post(HOST, port, "/onion", b"x", timeout=60)
        assert pool.open_connections == 0


async def test_silent_server_times_out_and_connection_is_dropped(nursery: trio.Nursery) -> None:
    async def never(seen: Seen, conn_no: int, req_no: int, body: bytes) -> Answer:
        await trio.sleep_forever()
        raise AssertionError

    server = await serve(nursery, never)
    async with PeerPool() as pool:
        with pytest.raises(HopTimeout):
            await pool.post(HOST, server.port, "/onion", b"x", timeout=0.2)
        assert pool.open_connections == 0
    # A timeout is never retried: the server got the request once.
    assert len(server.seen.requests) == 1


async def test_no_timeout_leaves_the_deadline_to_the_caller(nursery: trio.Nursery) -> None:
    async def never_first(seen: Seen, conn_no: int, req_no: int, body: bytes) -> Answer:
        if body == b"hang":
            await trio.sleep_forever()
        return 200, body, []

    server = await serve(nursery, never_first)
    async with PeerPool(max_per_peer=1) as pool:
        with trio.move_on_after(0.2) as scope:
            await pool.post(HOST, server.port, "/", b"hang", timeout=None)
        assert scope.cancelled_caught
        assert pool.open_connections == 0
        assert await pool.post(HOST, server.port, "/", b"ok", timeout=None) == (200, b"ok")


async def test_connect_timeout(nursery: trio.Nursery) -> None:
    # A listener whose backlog is full does not complete new handshakes on Linux, so
    # connect() hangs: the connect timeout must end it.
    with socket.socket() as lst:
        lst.bind((HOST, 0))
        lst.listen(0)
        port = lst.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):
                f = socket.socket()
                f.setblocking(False)
                f.connect_ex((HOST, port))
                fillers.append(f)
            await trio.sleep(0.05)
            async with PeerPool(connect_timeout=0.2) as pool:
                with pytest.raises(HopTimeout):
                    await pool.post(HOST, port, "/", b"x", timeout=30)
        finally:
            for f in fillers:
                f.close()


async def test_peer_closing_after_each_response_is_transparent(nursery: trio.Nursery) -> None:
    # The peer answers with keep-alive and then drops the connection anyway (as a
    # server does at its own idle timeout): every request must still succeed.
    server = await Server(echo, close_after_response=True).start(nursery)
    async with PeerPool() as pool:
        for i in range(10):
            status, body = await pool.post(HOST, server.port, "/", b"%d" % i, timeout=10)
            assert (status, body) == (200, b"echo:%d" % i)
    assert server.seen.connections == 10
    assert [r[1] for r in server.seen.requests] == [1] * 10


async def test_idle_connection_closed_by_peer_is_not_reused(nursery: trio.Nursery) -> None:
    # The peer has closed the idle connection before our next request: the pool must
    # notice before sending (so even a request that may not be retried succeeds).
    server = await Server(echo, close_after_response=True).start(nursery)
    async with PeerPool() as pool:
        for i in range(5):
            await trio.testing.wait_all_tasks_blocked()  # the server has closed by now
            status, body = await pool.post(
                HOST, server.port, "/", b"%d" % i, timeout=10, retry_stale=False
            )
            assert (status, body) == (200, b"echo:%d" % i)
    assert server.seen.connections == 5


async def test_stale_connection_is_retried_once_on_a_fresh_one(nursery: trio.Nursery) -> None:
    # The peer reads the second request on a connection and closes it without a byte
    # of answer: the pool must resend on a new connection, once.
    async def respond(seen: Seen, conn_no: int, req_no: int, body: bytes) -> Answer:
        return None if req_no == 2 else (200, body, [])

    server = await serve(nursery, respond)
    async with PeerPool() as pool:
        assert await pool.post(HOST, server.port, "/", b"a", timeout=10) == (200, b"a")
        assert await pool.post(HOST, server.port, "/", b"b", timeout=10) == (200, b"b")
    assert [(r[0], r[1], r[4]) for r in server.seen.requests] == [
        (1, 1, b"a"),
        (1, 2, b"b"),
        (2, 1, b"b"),
    ]


async def test_no_retry_when_disabled_or_on_a_fresh_connection(nursery: trio.Nursery) -> None:
    async def second_dies(seen: Seen, conn_no: int, req_no: int, body: bytes) -> Answer:
        return None if req_no == 2 else (200, body, [])

    async def always_dies(seen: Seen, conn_no: int, req_no: int, body: bytes) -> Answer:
        return None

    flaky = await serve(nursery, second_dies)
    dead = await serve(nursery, always_dies)
    async with PeerPool() as pool:
        await pool.post(HOST, flaky.port, "/", b"a", timeout=10)
        with pytest.raises(HopUnreachable):
            await pool.post(HOST, flaky.port, "/", b"b", timeout=10, retry_stale=False)
        with pytest.raises(HopUnreachable):
            await pool.post(HOST, dead.port, "/", b"c", timeout=10)
    assert len(flaky.seen.requests) == 2
    assert len(dead.seen.requests) == 1


async def test_oversized_response_fails_and_pool_recovers(nursery: trio.Nursery) -> None:
    async def respond(seen: Seen, conn_no: int, req_no: int, body: bytes) -> Answer:
        return 200, b"y" * int(body), []

    server = await serve(nursery, respond)
    async with PeerPool(max_response_bytes=1000) as pool:
        assert await pool.post(HOST, server.port, "/", b"1000", timeout=10) == (200, b"y" * 1000)
        with pytest.raises(HopUnreachable):
            await pool.post(HOST, server.port, "/", b"1001", timeout=10)
        assert pool.open_connections == 0
        assert await pool.post(HOST, server.port, "/", b"5", timeout=10) == (200, b"yyyyy")
    assert server.seen.connections == 2


async def _raw_server(nursery: trio.Nursery, reply: bytes) -> int:
    """A server that reads one request head and writes ``reply`` verbatim, then closes."""

    async def handle(stream: trio.SocketStream) -> None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = await stream.receive_some(65536)
            if not data:
                return
            buf += data
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all(reply)
        await stream.aclose()

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host=HOST))
    return listeners[0].socket.getsockname()[1]


async def test_oversized_chunked_response_fails(nursery: trio.Nursery) -> None:
    chunk = b"400\r\n" + b"z" * 0x400 + b"\r\n"
    reply = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunk * 8 + b"0\r\n\r\n"
    port = await _raw_server(nursery, reply)
    async with PeerPool(max_response_bytes=4096) as pool:
        with pytest.raises(HopUnreachable):
            await pool.post(HOST, port, "/", b"x", timeout=10)


async def test_truncated_and_garbage_responses_are_unreachable(nursery: trio.Nursery) -> None:
    truncated = await _raw_server(nursery, b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
    garbage = await _raw_server(nursery, b"SSH-2.0-OpenSSH\r\n\r\n")
    close_delimited = await _raw_server(nursery, b"HTTP/1.0 200 OK\r\n\r\nall of it")
    async with PeerPool() as pool:
        with pytest.raises(HopUnreachable):
            await pool.post(HOST, truncated, "/", b"x", timeout=10)
        with pytest.raises(HopUnreachable):
            await pool.post(HOST, garbage, "/", b"x", timeout=10)
        # A body delimited by the close is complete, and the connection is not kept.
        assert await pool.post(HOST, close_delimited, "/", b"x", timeout=10) == (200, b"all of it")
        assert pool.open_connections == 0


async def test_oversized_response_head_fails(nursery: trio.Nursery) -> None:
    # Larger than one receive (64 KiB) plus the limit, so it cannot arrive complete.
    big = b"HTTP/1.1 200 OK\r\nx-filler: " + b"a" * 100_000 + b"\r\ncontent-length: 0\r\n\r\n"
    port = await _raw_server(nursery, big)
    async with PeerPool(max_header_bytes=8192) as pool:
        with pytest.raises(HopUnreachable):
            await pool.post(HOST, port, "/", b"x", timeout=10)


async def test_invalid_request_is_a_value_error() -> None:
    async with PeerPool() as pool:
        with pytest.raises(ValueError):
            await pool.post(HOST, 1, "/a b", b"x", timeout=10)
        with pytest.raises(ValueError):
            await pool.get(HOST, 1, "/", timeout=10, headers=[("bad header", "x")])


async def test_unrequested_bytes_after_a_response_retire_the_connection(
    nursery: trio.Nursery,
) -> None:
    # A peer answering one request twice must not have its extra answer taken as the
    # reply to our next request.
    def response(text: bytes) -> bytes:
        return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(text), text)

    connections = []

    async def handle(stream: trio.SocketStream) -> None:
        connections.append(stream)
        buf = b""
        answered = 0
        while True:
            while b"\r\n\r\n" not in buf:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buf += data
            head, _, buf = buf.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            while len(buf) < length:
                buf += await stream.receive_some(65536)
            body, buf = buf[:length], buf[length:]
            answered += 1
            extra = response(b"stale") if answered == 1 else b""
            await stream.send_all(response(body) + extra)

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host=HOST))
    port = listeners[0].socket.getsockname()[1]
    async with PeerPool() as pool:
        assert await pool.post(HOST, port, "/", b"one", timeout=10) == (200, b"one")
        assert await pool.post(HOST, port, "/", b"two", timeout=10) == (200, b"two")
    assert len(connections) == 2


async def test_cancel_mid_request_closes_connection_and_pool_stays_usable(
    nursery: trio.Nursery,
) -> None:
    release = trio.Event()

    async def respond(seen: Seen, conn_no: int, req_no: int, body: bytes) -> Answer:
        if body == b"slow":
            await release.wait()
        return 200, body, []

    server = await serve(nursery, respond)
    async with PeerPool(max_per_peer=1) as pool:
        assert await pool.post(HOST, server.port, "/", b"warm", timeout=10) == (200, b"warm")
        with trio.CancelScope() as scope:
            nursery.start_soon(_cancel_when_in_flight, server, scope)
            await pool.post(HOST, server.port, "/", b"slow", timeout=30)
        assert scope.cancelled_caught
        # The connection whose response was pending is closed, not pooled...
        assert pool.open_connections == 0
        # ...and the slot it held is free again (max_per_peer=1).
        assert await pool.post(HOST, server.port, "/", b"next", timeout=10) == (200, b"next")
        release.set()
        await trio.testing.wait_all_tasks_blocked()
    assert server.seen.connections == 2
    assert server.seen.eofs >= 1 or server.seen.open_now == 0


async def _cancel_when_in_flight(server: Server, scope: trio.CancelScope) -> None:
    while not server.seen.in_flight:
        await trio.sleep(0.001)
    scope.cancel()


async def test_idle_connections_are_closed(nursery: trio.Nursery) -> None:
    server = await serve(nursery)
    other = await serve(nursery)
    async with PeerPool(idle_timeout=0.1) as pool:
        await pool.post(HOST, server.port, "/", b"1", timeout=10)
        await trio.sleep(0.3)
        # A request to another peer sweeps the idle connection to the first one.
        await pool.post(HOST, other.port, "/", b"2", timeout=10)
        assert pool.open_connections == 1
        await trio.testing.wait_all_tasks_blocked()
        assert server.seen.open_now == 0
        await pool.post(HOST, server.port, "/", b"3", timeout=10)
    assert server.seen.connections == 2


async def test_closed_pool_refuses_and_closes_connections(nursery: trio.Nursery) -> None:
    server = await serve(nursery)
    pool = PeerPool()
    async with pool:
        await pool.post(HOST, server.port, "/", b"1", timeout=10)
    assert pool.open_connections == 0
    await trio.testing.wait_all_tasks_blocked()
    assert server.seen.open_now == 0
    with pytest.raises(RuntimeError):
        await pool.post(HOST, server.port, "/", b"2", timeout=10)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(reply=st.binary(max_size=300) | st.builds(lambda b: b"HTTP/1.1 200 OK\r\n" + b, st.binary()))
async def test_any_reply_bytes_give_a_response_or_a_typed_error(reply: bytes) -> None:
    async with trio.open_nursery() as nursery:
        port = await _raw_server(nursery, reply)
        async with PeerPool(max_response_bytes=256) as pool:
            try:
                status, body = await pool.post(HOST, port, "/", b"x", timeout=5)
            except (HopUnreachable, HopTimeout):
                pass
            else:
                assert 100 <= status <= 999
                assert len(body) <= 256
        nursery.cancel_scope.cancel()
