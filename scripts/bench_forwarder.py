"""Benchmark-only peers for ./scripts/bench node: a bare forwarder and a sink.

Design note
===========

``relay_pps`` alone says little: is a slow relay slow because of its cryptography or
because HTTP in Python is slow on this machine? So the node is measured against a
*bare forwarder* doing the same socket work without the onion: it serves ``POST /onion``
with the node's own HTTP face (:class:`veil.node.server.HttpServer`, same limits and
metrics), sends the body unchanged to a fixed next hop with the node's own transport
(:class:`veil.node.peers.PeerPool`), and answers with the next hop's body. The node does all
that plus packet processing, the replay cache and the reply layer, so
``relay_pps / bare_forward_pps`` is what the onion work costs.

The *sink* is the next hop for both: a small h11 server (on a plain ``selectors`` loop,
to keep its CPU cost low: it shares a core with the load generator) that answers every
request with a fixed body of one reply size class (2048 bytes, random), which the node
wraps as a relay wraps a real reply. It is the same process for both measurements.

Run as a process (the bench starts them)::

    python scripts/bench_forwarder.py sink --listen 127.0.0.1:0 [--reply-bytes 2048]
    python scripts/bench_forwarder.py forward --listen 127.0.0.1:0 --next 127.0.0.1:PORT

Each prints ``listening on HOST:PORT`` once it accepts connections, like ``veil-node
run``, and serves until SIGTERM or SIGINT. Nothing here is part of the node.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import signal
import socket
import sys
from typing import Any

import h11
import trio

_RECV = 65536


def _split(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host.strip("[]"), int(port)


def _announce(listeners: list[trio.SocketListener]) -> None:
    host, port = listeners[0].socket.getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)


# --- the sink ------------------------------------------------------------------------


class _SinkConnection:
    """One client connection of the sink: an h11 server state and unsent bytes."""

    __slots__ = ("body_size", "frames", "h11", "out", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.h11 = h11.Connection(h11.SERVER)
        self.out = b""
        self.body_size = 0
        #: Set once the connection switched to the node-to-node link (onion/link.py).
        self.frames: Any = None


def run_sink(host: str, port: int, reply_bytes: int) -> None:
    """Answer every request with the same ``reply_bytes`` random bytes, keep-alive.

    A plain ``selectors`` loop with h11 parsing, not trio: the sink shares a core with
    the load generator, and the less CPU it takes per request, the further the load
    stays from being the bottleneck (trio's per-request overhead is about as large as
    h11's). SIGTERM or SIGINT ends it.
    """
    from veil.onion.link import REQUEST, UPGRADE_TOKEN, FrameReader, encode_response
    from veil.onion.packet import MAX_PACKET_LEN

    reply = os.urandom(reply_bytes)
    switch = h11.InformationalResponse(
        status_code=101, headers=[(b"upgrade", UPGRADE_TOKEN), (b"connection", b"Upgrade")]
    )
    head = [(b"content-type", b"application/octet-stream"), (b"content-length", b"%d" % len(reply))]
    response = h11.Response(status_code=200, headers=head)
    sel = selectors.DefaultSelector()
    listener = socket.create_server((host, port), backlog=1024)
    listener.setblocking(False)
    sel.register(listener, selectors.EVENT_READ, None)
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(True))
    print(f"listening on {host}:{listener.getsockname()[1]}", flush=True)

    def close(c: _SinkConnection) -> None:
        sel.unregister(c.sock)
        c.sock.close()

    def flush(c: _SinkConnection) -> None:
        try:
            sent = c.sock.send(c.out)
        except BlockingIOError:
            sent = 0
        c.out = c.out[sent:]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if c.out else 0)
        sel.modify(c.sock, events, c)

    def link_frames(c: _SinkConnection, data: bytes) -> None:
        if not data:
            raise h11.LocalProtocolError("closed")
        c.frames.receive_data(data)
        while (frame := c.frames.next_frame()) is not None:
            c.out += encode_response(frame.stream, 200, reply)

    def readable(c: _SinkConnection) -> None:
        data = c.sock.recv(_RECV)
        if c.frames is not None:
            link_frames(c, data)
            if c.out:
                flush(c)
            return
        c.h11.receive_data(data)
        while True:
            event = c.h11.next_event()
            kind = type(event)
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
            if kind is h11.Data:
                c.body_size += len(event.data)
                if c.body_size > MAX_PACKET_LEN:
                    raise h11.LocalProtocolError("body too large")
            elif kind is h11.EndOfMessage and c.h11.their_state is h11.MIGHT_SWITCH_PROTOCOL:
                # GET /link with Upgrade: become the next node's end of a link.
                c.out += c.h11.send(switch)
                c.frames = FrameReader(REQUEST, MAX_PACKET_LEN)
                if c.h11.trailing_data[0]:
                    link_frames(c, bytes(c.h11.trailing_data[0]))
                break
            elif kind is h11.EndOfMessage:
                c.out += b"".join(
                    (
                        c.h11.send(response),
                        c.h11.send(h11.Data(data=reply)),
                        c.h11.send(h11.EndOfMessage()),
                    )
                )
                c.body_size = 0
                if c.h11.our_state is not h11.DONE or c.h11.their_state is not h11.DONE:
                    raise h11.LocalProtocolError("connection not kept alive")
                c.h11.start_next_cycle()
            elif kind is h11.ConnectionClosed:
                raise h11.LocalProtocolError("closed")
        if c.out:
            flush(c)

    while not stop:
        try:
            ready = sel.select(timeout=0.5)
        except InterruptedError:
            continue
        for key, mask in ready:
            if key.data is None:
                with contextlib.suppress(BlockingIOError):
                    sock, _ = listener.accept()
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sel.register(sock, selectors.EVENT_READ, _SinkConnection(sock))
                continue
            c = key.data
            try:
                if mask & selectors.EVENT_WRITE and c.out:
                    flush(c)
                if mask & selectors.EVENT_READ:
                    readable(c)
            except (OSError, h11.ProtocolError):
                close(c)
    listener.close()


# --- the bare forwarder --------------------------------------------------------------


async def run_forwarder(host: str, port: int, next_host: str, next_port: int) -> None:
    # Imported here so that the sink does not pay for the node's imports.
    from veil.node.config import NodeConfig
    from veil.node.link import open_link_pool
    from veil.node.metrics import NodeMetrics
    from veil.node.peers import PeerPool
    from veil.node.server import HttpServer, Request, Response, Route, text_response
    from veil.onion.errors import VeilError
    from veil.onion.packet import MAX_PACKET_LEN

    # The node's defaults for its HTTP face and its peer pool, as node/app.py uses them.
    config = NodeConfig()
    peers = config.peers
    link = config.link
    async with (
        PeerPool(
            max_per_peer=peers.max_per_peer,
            max_waiters=peers.max_waiters,
            connect_timeout=peers.connect_timeout,
            idle_timeout=peers.idle_timeout,
        ) as http,
        open_link_pool(
            http,
            max_streams=link.max_streams,
            connect_timeout=peers.connect_timeout,
            idle_timeout=link.idle_timeout,
            write_timeout=config.http.write_timeout,
            fallback_ttl=link.fallback_ttl,
        ) as pool,
    ):

        async def forward(request: Request) -> Response:
            try:
                status, body = await pool.forward(
                    next_host, next_port, request.body, timeout=config.onion.hop_timeout
                )
            except VeilError as exc:
                return text_response(502, f"{exc.status}: {exc}")
            return Response(status, body, b"application/octet-stream")

        routes = {"/onion": Route(("POST",), forward, MAX_PACKET_LEN, rate_limited=True)}
        metrics = NodeMetrics({"/onion": "/onion"})
        # No limiter: the bench runs the node with its per-address limit off too.
        server = HttpServer(routes, config.http, metrics=metrics)
        listeners = await trio.open_tcp_listeners(port, host=host)
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, listeners)
            _announce(listeners)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    server.stop()
                    break


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_forwarder")
    sub = parser.add_subparsers(dest="role", required=True)
    sink = sub.add_parser("sink", help="answer every request with a fixed body")
    sink.add_argument("--listen", default="127.0.0.1:0")
    sink.add_argument("--reply-bytes", type=int, default=2048)
    fwd = sub.add_parser("forward", help="relay POST /onion bodies to --next unchanged")
    fwd.add_argument("--listen", default="127.0.0.1:0")
    fwd.add_argument("--next", required=True, help="HOST:PORT of the next hop")
    args = parser.parse_args(argv)
    host, port = _split(args.listen)
    try:
        if args.role == "sink":
            run_sink(host, port, args.reply_bytes)
        else:
            from veil.node.cli import tune_gc

            tune_gc()  # the node's process settings, so that only the onion work differs
            trio.run(run_forwarder, host, port, *_split(args.next))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
