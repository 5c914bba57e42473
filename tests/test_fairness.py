"""A peer that sends many small requests at once cannot hold the node's event loop.

The node writes with :class:`veil.node.sockio.SocketIO`, whose writes are not checkpoints
when the kernel takes them at once; its loops over requests that arrived in one read
(pipelined HTTP requests, link frames) must still yield between them. Each test serves
a real :class:`veil.node.server.HttpServer` on 127.0.0.1, sends one large batch in a single
write, and counts how often a bystander task got to run while the batch was handled.
"""

from __future__ import annotations

from collections.abc import Callable

import trio
import trio.testing

from veil.node.config import HttpConfig
from veil.node.link import serve_link
from veil.node.metrics import NodeMetrics
from veil.node.server import HttpServer, Request, Response, Route
from veil.onion.link import RESPONSE, UPGRADE_PATH, UPGRADE_TOKEN, FrameReader, encode_request
from veil.onion.packet import MAX_REPLY_LEN

HOST = "127.0.0.1"


async def _hello(request: Request) -> Response:
    return Response(200, b"hello")


async def _serve(nursery: trio.Nursery, routes: dict[str, Route]) -> int:
    server = HttpServer(
        routes, HttpConfig(), metrics=NodeMetrics({p: p for p in routes} | {"/x": "/x"})
    )
    listeners = await trio.open_tcp_listeners(0, host=HOST)
    nursery.start_soon(server.serve, listeners)
    await trio.testing.wait_all_tasks_blocked()
    return int(listeners[0].socket.getsockname()[1])


class Bystander:
    """A task that counts the scheduler passes it is given."""

    def __init__(self) -> None:
        self.ticks = 0

    async def run(self) -> None:
        while True:
            self.ticks += 1
            await trio.lowlevel.checkpoint()


async def _read_until(stream: trio.SocketStream, done: Callable[[bytes], bool]) -> bytes:
    got = b""
    with trio.fail_after(30):  # a hang guard only
        while not done(got):
            data = await stream.receive_some(1 << 20)
            assert data, "the server closed the connection"
            got += data
    return got


async def test_pipelined_requests_yield_between_each_other(nursery: trio.Nursery) -> None:
    port = await _serve(nursery, {"/hello": Route(("GET",), _hello)})
    n = 400  # the answers (about 80 bytes each) fit in the socket buffers: no write waits
    stream = await trio.open_tcp_stream(HOST, port)
    bystander = Bystander()
    nursery.start_soon(bystander.run)
    await stream.send_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n" * n)
    got = await _read_until(stream, lambda b: b.count(b"hello") == n)
    assert got.count(b"HTTP/1.1 200 ") == n
    # One checkpoint per pipelined request: the bystander ran between them, not once
    # the whole batch was done.
    assert bystander.ticks >= n // 4
    await stream.aclose()


async def test_a_flood_of_refused_link_frames_yields_to_other_tasks(
    nursery: trio.Nursery,
) -> None:
    async def link(
        stream: trio.SocketStream, initial: bytes, peer: str, stopping: trio.Event
    ) -> None:
        await serve_link(
            stream,
            initial,
            lambda packet: trio.sleep_forever(),  # never reached: admit refuses all
            max_streams=64,
            idle_timeout=30,
            write_timeout=5,
            admit=lambda: False,
            stopping=stopping,
        )

    port = await _serve(
        nursery,
        {UPGRADE_PATH: Route(("GET",), _hello, upgrade=link, upgrade_token=UPGRADE_TOKEN)},
    )
    stream = await trio.open_tcp_stream(HOST, port)
    await stream.send_all(
        b"GET /link HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: veil-link/3\r\n\r\n"
    )
    head = await _read_until(stream, lambda b: b"\r\n\r\n" in b)
    assert head.startswith(b"HTTP/1.1 101 ")
    n = 4000  # 4000 tiny frames in one write; each is answered 429 at once
    bystander = Bystander()
    nursery.start_soon(bystander.run)
    await stream.send_all(b"".join(encode_request(i, b"") for i in range(n)))
    reader = FrameReader(RESPONSE, MAX_REPLY_LEN)
    reader.receive_data(head.split(b"\r\n\r\n", 1)[1])
    statuses: list[int] = []
    with trio.fail_after(30):
        while len(statuses) < n:
            frame = reader.next_frame()
            if frame is None:
                reader.receive_data(await stream.receive_some(1 << 20))
                continue
            statuses.append(frame.status)
    assert set(statuses) == {429}
    assert bystander.ticks >= n // 100  # one checkpoint per 64 frames: about 62
    await stream.aclose()
