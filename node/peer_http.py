"""One HTTP/1.1 exchange on a kept-alive peer connection (node/peers.py's wire part).

Design note
-----------
:class:`_Conn` is one connection: a :class:`trio.SocketStream` and its :mod:`h11` client
state. :func:`roundtrip` sends one request on it and reads the response, with the
response's size bounded, and says whether the connection may be used again (both
sides done, nothing after the response: bytes we did not ask for would be taken as the
next answer). A failure before any response byte is :class:`_StaleConnection`, which
the pool may retry once on a fresh connection (the peer closed an idle one); anything
after that is :class:`~veil.onion.errors.HopUnreachable`. :func:`make_request` builds
the h11 request through the pool's small cache (h11 validates headers when a request is
built, about the cost of sending it). Which connection, how many, who waits: the pool's
(node/peers.py).
"""

from __future__ import annotations

import select
from collections.abc import Iterable

import h11
import trio

from veil.onion.errors import HopUnreachable
from veil.onion.hostport import format_hostport

__all__ = ["Header", "make_request", "roundtrip"]

_RECV_BYTES = 64 * 1024
_REQUEST_CACHE = 256

Header = tuple[bytes | str, bytes | str]


class _StaleConnection(Exception):
    """A connection failed before any response byte (internal: may be retried)."""


def _socket_readable(stream: trio.SocketStream) -> bool:
    """True if an idle connection has something to read: EOF, a reset, or junk.

    On an idle HTTP/1.1 client connection the peer has nothing legitimate to say, so
    readable means unusable. poll(), not select(): no FD_SETSIZE limit.
    """
    try:
        fd = stream.socket.fileno()
        if fd < 0:
            return True
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


class _Conn:
    """One keep-alive connection: a socket stream and its h11 client state."""

    __slots__ = ("h11", "idle_since", "stream")

    def __init__(self, stream: trio.SocketStream, max_header_bytes: int) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_header_bytes)
        self.idle_since = 0.0

    def close(self) -> None:
        # Synchronous: usable in cancelled and error paths without another checkpoint.
        # trio's socket close wakes any task blocked on this socket.
        self.stream.socket.close()


def make_request(
    cache: dict[tuple[object, ...], h11.Request],
    method: bytes,
    host: str,
    port: int,
    path: str,
    body: bytes | None,
    headers: Iterable[Header],
) -> h11.Request:
    """The h11 request (from ``cache``, a small bounded dict the caller keeps)."""
    # h11 validates a Request's headers when it is built, which costs about as much
    # as sending it. Requests are immutable and a relay sends the same few (one
    # per next hop and size class), so they are kept in a small bounded cache.
    extra = tuple(headers)
    length = None if body is None else len(body)
    key = (method, host, port, path, length, extra)
    request = cache.get(key)
    if request is None:
        hostport = format_hostport(host, port)
        hdrs: list[Header] = [("host", hostport)]
        if length is not None:
            hdrs.append(("content-length", str(length)))
        hdrs.extend(extra)
        try:
            # h11 takes str or bytes for each name and value (it converts them one
            # by one), but its annotation only admits all-bytes or all-str lists.
            request = h11.Request(method=method, target=path, headers=hdrs)  # type: ignore[arg-type]
        except h11.LocalProtocolError as exc:
            # Paths and headers are the node's constants and a host from a verified
            # consensus: a bad one is a bug in the caller.
            raise ValueError(f"bad request path or header: {exc}") from None
        if len(cache) >= _REQUEST_CACHE:
            cache.clear()
        cache[key] = request
    return request


async def roundtrip(
    conn: _Conn, request: h11.Request, body: bytes | None, limit: int
) -> tuple[int, bytes, bool]:
    """Send one request and read its response (at most ``limit`` bytes of body):
    (status, body, keep-alive).

    Raises _StaleConnection for a connection-level failure before any response byte,
    HopUnreachable for anything wrong after that.
    """
    h = conn.h11
    stream = conn.stream
    parts = [h.send(request) or b""]
    if body:
        parts.append(h.send(h11.Data(data=body)) or b"")
    parts.append(h.send(h11.EndOfMessage()) or b"")
    wire = b"".join(parts)
    try:
        await stream.send_all(wire)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        raise _StaleConnection(f"send failed: {exc}") from None

    got_bytes = False
    status = 0
    chunks: list[bytes] = []
    size = 0
    while True:
        if got_bytes:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                raise HopUnreachable(f"bad HTTP response: {exc}") from None
        else:
            # A pooled connection has nothing buffered (see the keep-alive rule
            # below), so until the first bytes arrive there is nothing to parse.
            event = h11.NEED_DATA
        if event is h11.NEED_DATA:
            try:
                chunk = await stream.receive_some(_RECV_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                if not got_bytes:
                    raise _StaleConnection(f"connection lost: {exc}") from None
                raise HopUnreachable(f"connection lost mid-response: {exc}") from None
            if not chunk and not got_bytes:
                raise _StaleConnection("connection closed before a response")
            got_bytes = True
            # An EOF here ends a close-delimited body, or makes h11 report a
            # truncated response as a protocol error.
            try:
                h.receive_data(chunk)
            except h11.RemoteProtocolError as exc:
                raise HopUnreachable(f"bad HTTP response: {exc}") from None
            continue
        # Exact-type dispatch (which mypy narrows on); type() of one argument is
        # about as cheap as reading a local, so it is not kept in one.
        if type(event) is h11.Response:
            status = event.status_code
            for name, value in event.headers:
                if name == b"content-length" and int(value) > limit:
                    raise HopUnreachable(f"response of {int(value)} bytes is over {limit}")
        elif type(event) is h11.Data:
            size += len(event.data)
            if size > limit:
                raise HopUnreachable(f"response over {limit} bytes")
            chunks.append(event.data)
        elif type(event) is h11.EndOfMessage:
            break
        elif type(event) is h11.InformationalResponse:
            continue
        else:  # ConnectionClosed or PAUSED: not a complete response
            raise HopUnreachable("connection closed mid-response")
    # Bytes after the response, which we did not ask for (no pipelining here), would
    # be taken as the answer to the next request: such a connection is not reused.
    keep = h.our_state is h11.DONE and h.their_state is h11.DONE and not h.trailing_data[0]
    if keep:
        h.start_next_cycle()
    return status, b"".join(chunks), keep
