"""What a watcher of a node-to-node link sees of replication: frames of a few sizes only.

Against real processes on 127.0.0.1: one authority and two nodes (one swarm). Node B
advertises the address of a TCP relay of this test, which forwards every byte to B's
real port and keeps a copy of what comes in, so the relay sees exactly what a passive
observer of the link A <-> B sees: node A's pushes (and pulls) to B and B's answers,
the authority's liveness checks, links. The relay parses the HTTP messages on each
connection, both ways, and the frames of a connection that upgrades to a link (where
replication requests travel since veil-link/3), and records the length of every
replication request and answer, head and body, as it crossed the wire.

Issue 11, item 3: a push after a 6,831-character message was 7,616 bytes, so the link
told message lengths. Here messages of 10 and 1,500 bytes (one size class) must give
pushes of one length, as must messages of 6,000 and 12,000 bytes (the next class), and
every replication request and sealed answer must be one of the frame size classes
long. Before frames were padded this failed: the first pair gave pushes of 455 and
1,948 bytes of body (527 and 2,021 bytes on the wire).

No timed assertions: waits are polls with generous deadlines.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from tests.authorityutil import make_network, node_config, start_authority, wait_for_consensus
from tests.nodeutil import free_port, running_node
from tests.swarmutil import eventually, store
from veil.onion import replication_frames as wire
from veil.onion.keys import Account

pytestmark = pytest.mark.slow

_HEAD_END = b"\r\n\r\n"
_REQUEST_LINE = re.compile(rb"^[A-Z]+ (\S+) HTTP/1\.1\r\n")
_STATUS_LINE = re.compile(rb"^HTTP/1\.1 (\d{3}) ")
#: A link frame's head (onion/link.py) and the route of each replication request kind.
_LINK_HEAD = struct.Struct(">BBHII")
_LINK_ROUTES = {3: "/replicate", 4: "/replicate/pull", 5: "/replicate/forward"}


@dataclass
class Seen:
    """One HTTP message as it crossed the link: the request's target, the answer's
    status (0 for a request), its body and total bytes."""

    target: str
    status: int
    body_bytes: int
    wire_bytes: int


@dataclass
class LinkWatch:
    """Parses the HTTP requests and answers on each relayed connection."""

    requests: list[Seen] = field(default_factory=list)
    answers: list[Seen] = field(default_factory=list)
    #: Per link (connection), its streams carrying a replication request -> its route.
    _streams: dict[int, dict[int, str]] = field(default_factory=dict)

    async def parse(
        self, stream: trio.MemoryReceiveChannel[bytes], targets: list[str], *, answers: bool
    ) -> None:
        """Parse one direction of a connection; requests append their target to
        ``targets``, answers take them in order (HTTP/1.1 without pipelining)."""
        buffer = b""
        async for chunk in stream:
            buffer += chunk
            while (end := buffer.find(_HEAD_END)) >= 0:
                head = buffer[: end + len(_HEAD_END)]
                lines = head.split(b"\r\n")
                pairs = (h.split(b":", 1) for h in lines[1:] if b":" in h)
                headers = {k.strip().lower(): v.strip() for k, v in pairs}
                if b"upgrade" in headers:  # a link (veil-link/3): frames from here on
                    # Stream numbers are per link: keyed by this connection's list.
                    streams = self._streams.setdefault(id(targets), {})
                    await self.parse_frames(stream, buffer[len(head) :], streams, answers=answers)
                    return
                assert b"transfer-encoding" not in headers, headers
                length = int(headers.get(b"content-length", b"0"))
                if len(buffer) < len(head) + length:
                    break  # the rest of the body has not arrived yet
                buffer = buffer[len(head) + length :]
                if answers:
                    status = _STATUS_LINE.match(head)
                    assert status is not None, head[:100]
                    # The request's direction is parsed by another task: its target
                    # may not be recorded yet when the answer's chunk comes first here.
                    with trio.fail_after(10):
                        while not targets:
                            await trio.sleep(0.001)
                    target = targets.pop(0)
                    seen = Seen(target, int(status.group(1)), length, len(head) + length)
                    self.answers.append(seen)
                else:
                    line = _REQUEST_LINE.match(head)
                    assert line is not None, head[:100]
                    targets.append(line.group(1).decode())
                    self.requests.append(Seen(targets[-1], 0, length, len(head) + length))

    async def parse_frames(
        self,
        stream: trio.MemoryReceiveChannel[bytes],
        buffer: bytes,
        streams: dict[int, str],
        *,
        answers: bool,
    ) -> None:
        """Parse one direction of a link: replication requests (kinds 3-5) are recorded
        under their route, answers under their request's (by stream number)."""
        buffer = self._frames(buffer, streams, answers=answers)
        async for chunk in stream:
            buffer = self._frames(buffer + chunk, streams, answers=answers)

    def _frames(self, buffer: bytes, streams: dict[int, str], *, answers: bool) -> bytes:
        """Record the whole frames at the start of ``buffer``; the rest."""
        while len(buffer) >= _LINK_HEAD.size:
            kind, _, status, number, length = _LINK_HEAD.unpack_from(buffer)
            if len(buffer) < _LINK_HEAD.size + length:
                break
            buffer = buffer[_LINK_HEAD.size + length :]
            seen_bytes = _LINK_HEAD.size + length
            if not answers and kind in _LINK_ROUTES:
                streams[number] = _LINK_ROUTES[kind]
                self.requests.append(Seen(_LINK_ROUTES[kind], 0, length, seen_bytes))
            elif answers and (target := streams.pop(number, None)) is not None:
                self.answers.append(Seen(target, status, length, seen_bytes))
        return buffer

    def replication(self, target: str = "/replicate") -> list[Seen]:
        return [r for r in self.requests if r.target == target]


async def relay(
    listen_port: int,
    to_port: int,
    watch: LinkWatch,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Forward every connection to ``listen_port`` to ``to_port``, copying both
    directions into ``watch``."""

    async def pipe(
        src: trio.SocketStream, dst: trio.SocketStream, copy: trio.MemorySendChannel[bytes]
    ) -> None:
        try:
            while data := await src.receive_some(65536):
                await copy.send(data)
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await copy.aclose()
            with trio.CancelScope(shield=True):
                await dst.aclose()

    async def serve(client: trio.SocketStream) -> None:
        try:
            upstream = await trio.open_tcp_stream("127.0.0.1", to_port)
        except OSError:
            await client.aclose()
            return
        targets: list[str] = []
        async with trio.open_nursery() as nursery:
            for src, dst, answers in ((client, upstream, False), (upstream, client, True)):
                send, receive = trio.open_memory_channel[bytes](1000)
                nursery.start_soon(partial(watch.parse, receive, targets, answers=answers))
                nursery.start_soon(pipe, src, dst, send)

    listeners = await trio.open_tcp_listeners(listen_port, host="127.0.0.1")
    task_status.started()
    await trio.serve_listeners(serve, listeners)


async def test_replication_pushes_on_a_node_link_have_only_the_size_of_their_class(
    tmp_path: Path,
) -> None:
    net = await trio.to_thread.run_sync(lambda: make_network(tmp_path / "net", count=1))
    authority = await trio.to_thread.run_sync(lambda: start_authority(net, 0))
    watch = LinkWatch()
    b_port, relay_port = free_port(), free_port()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(relay, relay_port, b_port, watch)
            b_config = node_config(net, advertise=f"127.0.0.1:{relay_port}")
            async with (
                running_node(tmp_path / "a", config=node_config(net)) as a,
                running_node(tmp_path / "b", config=b_config, listen=f"127.0.0.1:{b_port}"),
            ):
                consensus = await trio.to_thread.run_sync(
                    lambda: wait_for_consensus(net, lambda c: len(c.nodes) == 2)
                )
                b_entry = next(n for n in consensus.nodes if n.node_id.hex() != a.node_id)
                assert b_entry.port == relay_port  # everyone reaches B through the relay

                async with httpx.AsyncClient(trust_env=False) as client:

                    async def adopted() -> bool:
                        for url in (a.url, f"http://127.0.0.1:{b_port}"):
                            info = (await client.get(f"{url}/info", timeout=5)).json()
                            if info.get("epoch", -1) < consensus.epoch:
                                return False
                        return True

                    await eventually(adopted, what="both nodes adopt the consensus")
                    alice = Account.generate()
                    lengths = (10, 1_500, 6_000, 12_000)
                    for n, size in enumerate(lengths):
                        # Acknowledged only once B holds it: the push went through the relay.
                        await store(client, a.hop(), alice.id, os.urandom(size))

                        async def pushed(n: int = n) -> bool:
                            return len(watch.replication()) > n

                        await eventually(pushed, what=f"push {n + 1} seen on the link")
                nursery.cancel_scope.cancel()
    finally:
        await trio.to_thread.run_sync(authority.stop)

    pushes = watch.replication()
    assert len(pushes) == len(lengths), pushes  # one push per store, in store order
    small, short_, mid, longer = pushes
    # The same size on the wire for very different messages of one class ...
    assert small.wire_bytes == short_.wire_bytes, (small, short_)
    assert mid.wire_bytes == longer.wire_bytes, (mid, longer)
    # ... and every replication request on the link is exactly a size class long.
    frames = [r for r in watch.requests if r.target.startswith("/replicate")]
    assert {r.body_bytes for r in frames} <= set(wire.SIZE_CLASSES), frames
    assert [r.body_bytes for r in pushes] == [2048, 2048, 16384, 16384]
    # The answers (acks, pages) too: every 200 answer to a replication request.
    sealed = [r for r in watch.answers if r.target.startswith("/replicate") and r.status == 200]
    assert len(sealed) >= len(lengths), watch.answers
    assert {r.body_bytes for r in sealed} <= set(wire.SIZE_CLASSES), sealed
