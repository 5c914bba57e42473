"""client/transport.py against real HTTP servers on 127.0.0.1 (h11 on trio sockets).

Each test starts a small server whose behaviour is the case under test: an answer too
large, an answer that never comes, a refusal, a closed port, and many requests at once
(the gate must keep the peer's connection count at the pool size).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import h11
import pytest
import trio
import trio.testing

from veil.client.errors import PeerRefused
from veil.client.transport import HttpxTransport, TransportConfig
from veil.onion.errors import HopTimeout, HopUnreachable, TooLarge
from veil.onion.packet import MAX_REPLY_LEN, Hop

# A request handler: method, target, body -> status, headers, body chunks.
Answer = tuple[int, list[tuple[bytes, bytes]], list[bytes]]
Handler = Callable[[str, str, bytes], Awaitable[Answer]]


class Server:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.port = 0
        self.open_connections = 0
        self.most_connections = 0
        self.requests = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        self.open_connections += 1
        self.most_connections = max(self.most_connections, self.open_connections)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Request):
                    body = b""
                    while True:
                        ev = conn.next_event()
                        if ev is h11.NEED_DATA:
                            conn.receive_data(await stream.receive_some(65536))
                        elif isinstance(ev, h11.Data):
                            body += ev.data
                        elif isinstance(ev, h11.EndOfMessage):
                            break
                    self.requests += 1
                    status, headers, chunks = await self.handler(
                        event.method.decode(), event.target.decode(), body
                    )
                    await stream.send_all(
                        conn.send(h11.Response(status_code=status, headers=headers))
                    )
                    for chunk in chunks:
                        await stream.send_all(conn.send(h11.Data(data=chunk)))
                    await stream.send_all(conn.send(h11.EndOfMessage()))
                    conn.start_next_cycle()
                    continue
                return
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            return
        finally:
            self.open_connections -= 1
            await stream.aclose()


async def start(nursery: trio.Nursery, handler: Handler) -> Server:
    server = Server(handler)
    await nursery.start(server.serve)
    return server


def hop(port: int) -> Hop:
    return Hop(bytes(32), bytes(32), "127.0.0.1", port)


async def test_onion_post_returns_the_body() -> None:
    async def echo(method: str, target: str, body: bytes) -> Answer:
        assert (method, target) == ("POST", "/onion")
        return 200, [(b"content-length", str(len(body)).encode())], [body[::-1]]

    async with trio.open_nursery() as nursery:
        server = await start(nursery, echo)
        transport = HttpxTransport()
        assert await transport.post_onion(hop(server.port), b"abc", timeout_s=5) == b"cba"
        await transport.aclose()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("declared", [True, False])
async def test_an_answer_over_the_limit_is_refused(declared: bool) -> None:
    size = MAX_REPLY_LEN + 1

    async def huge(method: str, target: str, body: bytes) -> Answer:
        headers = [(b"content-length", str(size).encode())] if declared else []
        # Without a length: chunked, in pieces, so the limit is hit while reading.
        return 200, headers, [b"x" * 16384] * (size // 16384) + [b"x" * (size % 16384)]

    async with trio.open_nursery() as nursery:
        server = await start(nursery, huge)
        transport = HttpxTransport()
        with pytest.raises(TooLarge):
            await transport.post_onion(hop(server.port), b"p", timeout_s=5)
        # The transport stays usable afterwards.
        with pytest.raises(TooLarge):
            await transport.get("127.0.0.1", server.port, "/x", timeout_s=5, max_bytes=10)
        await transport.aclose()
        nursery.cancel_scope.cancel()


async def test_refusals_carry_status_and_text() -> None:
    async def refuse(method: str, target: str, body: bytes) -> Answer:
        code = {"/a": 429, "/b": 400, "/c": 503}[target]
        text = b"bad_request: header MAC does not verify\n"
        return code, [(b"content-length", str(len(text)).encode())], [text]

    async with trio.open_nursery() as nursery:
        server = await start(nursery, refuse)
        transport = HttpxTransport()
        for target, status in (
            ("/a", "rate_limited"),
            ("/b", "bad_request"),
            ("/c", "unavailable"),
        ):
            with pytest.raises(PeerRefused) as info:
                await transport.get("127.0.0.1", server.port, target, timeout_s=5, max_bytes=100)
            assert info.value.status == status
            assert "header MAC" in info.value.text
        await transport.aclose()
        nursery.cancel_scope.cancel()


async def test_a_silent_peer_times_out() -> None:
    async def never(method: str, target: str, body: bytes) -> Answer:
        await trio.sleep_forever()
        raise AssertionError

    async with trio.open_nursery() as nursery:
        server = await start(nursery, never)
        transport = HttpxTransport()
        with pytest.raises(HopTimeout), trio.fail_after(5):
            await transport.post_onion(hop(server.port), b"p", timeout_s=0.3)
        await transport.aclose()
        nursery.cancel_scope.cancel()


async def test_a_closed_port_is_unreachable() -> None:
    with trio.socket.socket() as s:
        await s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        transport = HttpxTransport()
        with pytest.raises(HopUnreachable, match="refused"):
            await transport.post_onion(hop(port), b"p", timeout_s=5)
        await transport.aclose()


@pytest.mark.parametrize("with_run", [False, True], ids=["close-at-once", "close-in-run"])
async def test_many_concurrent_requests_use_a_small_pool(with_run: bool) -> None:
    async def slowish(method: str, target: str, body: bytes) -> Answer:
        await trio.sleep(0.001)
        return 200, [(b"content-length", str(len(body)).encode())], [body]

    async with trio.open_nursery() as nursery:
        server = await start(nursery, slowish)
        transport = HttpxTransport(TransportConfig(pool_size=4))
        if with_run:
            # A connection still being released by run() counts against the pool too.
            nursery.start_soon(transport.run)
        results: list[bytes] = []

        async def one(i: int) -> None:
            results.append(await transport.post_onion(hop(server.port), b"%d" % i, timeout_s=30))

        async with trio.open_nursery() as clients:
            for i in range(400):
                clients.start_soon(one, i)
        assert sorted(results) == sorted(b"%d" % i for i in range(400))
        assert server.requests == 400
        assert server.most_connections <= 4  # one small pool: never more connections
        await transport.aclose()
        nursery.cancel_scope.cancel()


async def test_closed_transport_refuses_work() -> None:
    transport = HttpxTransport()
    await transport.aclose()
    with pytest.raises(RuntimeError):
        await transport.get("127.0.0.1", 1, "/", timeout_s=1, max_bytes=1)


async def test_a_request_that_times_out_waiting_for_the_pool_frees_nothing_it_lacked() -> None:
    # pool_size 1: one request holds the only slot; a second times out while waiting
    # for it; once the first is answered, the slot serves a third (nothing leaked,
    # nothing released twice).
    release = trio.Event()

    async def held(method: str, target: str, body: bytes) -> Answer:
        if body == b"first":
            await release.wait()
        return 200, [(b"content-length", str(len(body)).encode())], [body]

    async with trio.open_nursery() as nursery:
        server = await start(nursery, held)
        transport = HttpxTransport(TransportConfig(pool_size=1))
        got: list[bytes] = []

        async def first() -> None:
            got.append(await transport.post_onion(hop(server.port), b"first", timeout_s=10))

        nursery.start_soon(first)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(HopTimeout):
            await transport.post_onion(hop(server.port), b"second", timeout_s=0.2)
        release.set()
        assert await transport.post_onion(hop(server.port), b"third", timeout_s=10) == b"third"
        assert await transport.post_onion(hop(server.port), b"fourth", timeout_s=10) == b"fourth"
        assert got == [b"first"]
        assert server.most_connections == 1
        await transport.aclose()
        nursery.cancel_scope.cancel()


async def test_with_run_the_answer_comes_first_and_the_connection_is_released_after() -> None:
    async def echo(method: str, target: str, body: bytes) -> Answer:
        return 200, [(b"content-length", str(len(body)).encode())], [body]

    async with trio.open_nursery() as nursery:
        server = await start(nursery, echo)
        # pool_size 1: a request can start only once the one before it has released its
        # connection, which run() does after the answer was returned.
        transport = HttpxTransport(TransportConfig(pool_size=1))
        closer = trio.CancelScope()

        async def run_closer() -> None:
            with closer:
                await transport.run()

        nursery.start_soon(run_closer)
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(10):  # a hang guard: a slot never released would hang here
            for i in range(20):
                answer = await transport.post_onion(hop(server.port), b"%d" % i, timeout_s=5)
                assert answer == b"%d" % i
        assert server.requests == 20
        assert server.most_connections == 1  # released and reused, never a second one
        # Stopping run() closes what still waits, and frees its slot: the next request
        # (closed at once now) gets the connection.
        closer.cancel()
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(10):
            assert await transport.post_onion(hop(server.port), b"after", timeout_s=5) == b"after"
        assert server.most_connections == 1
        await transport.aclose()
        nursery.cancel_scope.cancel()
