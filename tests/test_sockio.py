"""node.sockio: reads and writes straight to a socket, on real TCP connections.

Each test opens a real TCP connection on 127.0.0.1 (two trio SocketStreams) and drives
one end with :class:`veil.node.sockio.SocketIO`; what the other end sees is read with trio's
own stream API, so the two implementations check each other.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from veil.node.sockio import FdIO, SocketIO, StreamIO

HOST = "127.0.0.1"


@pytest.fixture(params=[FdIO, StreamIO], ids=["fd", "stream"])
def impl(request: pytest.FixtureRequest) -> type[FdIO] | type[StreamIO]:
    """Both implementations pass the same tests (StreamIO is the fallback where a
    socket is no file descriptor), except where FdIO's point is not yielding."""
    return request.param  # type: ignore[no-any-return]


def test_this_system_uses_the_file_descriptors() -> None:
    assert SocketIO is FdIO  # POSIX: the tests run on Linux


@pytest.fixture
async def pair() -> AsyncIterator[tuple[trio.SocketStream, trio.SocketStream]]:
    """(ours, theirs): the two ends of one TCP connection."""
    listeners = await trio.open_tcp_listeners(0, host=HOST)
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        ours = await trio.open_tcp_stream(HOST, port)
        theirs = await listeners[0].accept()
        nursery.cancel_scope.cancel()
    try:
        yield ours, theirs
    finally:
        await trio.aclose_forcefully(ours)
        await trio.aclose_forcefully(theirs)
        await listeners[0].aclose()


async def read_exactly(stream: trio.SocketStream, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        data = await stream.receive_some(65536)
        assert data, "closed early"
        out += data
    return bytes(out)


async def test_bytes_go_both_ways_unchanged(
    pair: tuple[trio.SocketStream, trio.SocketStream],
    impl: type[FdIO] | type[StreamIO],
) -> None:
    ours, theirs = pair
    io = impl(ours)
    for size in (1, 100, 65536, 3 * 1024 * 1024):  # the last far over the socket buffers
        payload = os.urandom(size)
        async with trio.open_nursery() as nursery:
            got: list[bytes] = []

            async def peer(payload: bytes = payload, got: list[bytes] = got) -> None:
                got.append(await read_exactly(theirs, len(payload)))
                await theirs.send_all(payload[::-1])

            nursery.start_soon(peer)
            await io.send_all(payload)
            back = bytearray()
            while len(back) < size:
                back += await io.receive_some(1 << 20)
        assert got == [payload]
        assert bytes(back) == payload[::-1]


async def test_a_read_returns_what_is_there_up_to_max_bytes(
    pair: tuple[trio.SocketStream, trio.SocketStream],
    impl: type[FdIO] | type[StreamIO],
) -> None:
    ours, theirs = pair
    io = impl(ours)
    await theirs.send_all(b"abcdef")
    await trio.testing.wait_all_tasks_blocked()
    await trio.sleep(0.01)  # the bytes are in our socket's buffer
    assert await io.receive_some(4) == b"abcd"
    assert await io.receive_some(100) == b"ef"


async def test_end_of_stream_reads_empty(
    pair: tuple[trio.SocketStream, trio.SocketStream],
    impl: type[FdIO] | type[StreamIO],
) -> None:
    ours, theirs = pair
    io = impl(ours)
    await theirs.send_all(b"last")
    await theirs.aclose()
    got = b""
    while True:
        data = await io.receive_some(1024)
        if not data:
            break
        got += data
    assert got == b"last"
    assert await io.receive_some(1024) == b""  # and stays at its end


async def test_every_read_is_a_checkpoint_even_when_data_waits(
    pair: tuple[trio.SocketStream, trio.SocketStream],
    impl: type[FdIO] | type[StreamIO],
) -> None:
    # A peer that keeps the socket full must not starve the other tasks: a read with
    # data already there still yields (and so can be cancelled).
    ours, theirs = pair
    io = impl(ours)
    await theirs.send_all(b"x" * 10_000)
    await trio.sleep(0.01)
    await io.receive_some(10)  # not drained: the next read does not wait for readiness
    with trio.CancelScope() as scope:
        scope.cancel()
        await io.receive_some(10)
    assert scope.cancelled_caught
    with trio.testing.assert_checkpoints():
        await io.receive_some(10)


async def test_a_cancelled_read_reads_nothing(
    pair: tuple[trio.SocketStream, trio.SocketStream],
    impl: type[FdIO] | type[StreamIO],
) -> None:
    ours, theirs = pair
    io = impl(ours)
    with trio.move_on_after(0.05) as scope:
        await io.receive_some(100)  # nothing comes
    assert scope.cancelled_caught
    await theirs.send_all(b"after")
    assert await io.receive_some(100) == b"after"


async def test_closing_the_socket_wakes_a_waiting_reader_with_closed_resource(
    pair: tuple[trio.SocketStream, trio.SocketStream],
    impl: type[FdIO] | type[StreamIO],
) -> None:
    ours, _ = pair
    io = impl(ours)
    failure: list[BaseException] = []

    async def reader() -> None:
        try:
            await io.receive_some(100)
        except trio.ClosedResourceError as exc:
            failure.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        ours.socket.close()
    assert len(failure) == 1
    # A closed socket's number is never used again (the kernel may give it to a new
    # file): reads and writes refuse at once.
    with pytest.raises(trio.ClosedResourceError):
        await io.receive_some(100)
    with pytest.raises(trio.ClosedResourceError):
        io.try_send(b"x")
    with pytest.raises(trio.ClosedResourceError):
        await io.send_all(b"x")


async def test_writing_to_a_reset_connection_is_a_broken_resource(
    pair: tuple[trio.SocketStream, trio.SocketStream],
    impl: type[FdIO] | type[StreamIO],
) -> None:
    ours, theirs = pair
    io = impl(ours)
    # The peer resets the connection (SO_LINGER 0 then close): writes and reads fail as
    # trio's own streams would.
    theirs.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    theirs.socket.close()
    await trio.sleep(0.05)
    with pytest.raises(trio.BrokenResourceError):
        for _ in range(100):
            await io.send_all(b"x" * 65536)
            await trio.sleep(0.001)


async def test_try_send_takes_what_fits_and_never_blocks(
    pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    ours, theirs = pair
    io = FdIO(ours)  # the fallback's writes always yield
    total = 0
    with trio.testing.assert_no_checkpoints():
        while True:
            sent = io.try_send(b"y" * 1_000_000)
            if sent == 0:
                break  # the buffers are full and nobody reads
            total += sent
    assert total > 0
    # send_all waits for room instead, and a cancelled wait stops the write there.
    with trio.move_on_after(0.05) as scope:
        await io.send_all(b"z" * 1_000_000)
    assert scope.cancelled_caught
    # Everything try_send said it wrote arrives, in order.
    assert (await read_exactly(theirs, total)) == b"y" * total


async def test_a_complete_write_is_not_a_checkpoint_but_a_waiting_one_is(
    pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    ours, theirs = pair
    io = FdIO(ours)  # the fallback's writes always yield
    with trio.testing.assert_no_checkpoints():
        await io.send_all(b"small")
    assert await read_exactly(theirs, 5) == b"small"
