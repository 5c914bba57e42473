"""Reading a request off a connection: h11 events, bodies within their limit, lingering close.

Design note
-----------
The server's per-connection reading, apart from its loop (node/server/http_server.py):
:class:`_ConnState` (what a connection is doing and its deadline, which the server's
watchdog enforces), :func:`_next_event` (which turns the request's deadline on at its
first byte), :func:`_read_body` (a chunked body counted as it arrives, refused the
moment it passes the limit), the upgrade check, and :func:`_linger`: closing a socket
with unread data makes the kernel send a reset that can destroy the response before the
client reads it, so after a refusal the server shuts its sending side and discards
input for a while.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import h11
import trio

from ..sockio import AnySocketIO
from .messages import Response, _too_large

__all__: list[str] = []  # the server package's own: http_server.py imports these

_RECV_BYTES = 65536
#: Lingering close: how long and how much to discard after a refusal before closing.
_LINGER_SECONDS = 2.0
_LINGER_BYTES = 1 << 20

_IDLE, _READING, _WORKING, _WRITING = range(4)


class _ConnState:
    """A connection's timer scope and what it is doing (for shutdown and timeouts)."""

    __slots__ = ("conn", "deadline", "phase", "read_deadline", "timer")

    def __init__(self, timer: trio.CancelScope) -> None:
        self.timer = timer
        self.conn: h11.Connection | None = None
        self.phase = _IDLE
        #: When the watchdog cancels ``timer`` (trio clock; inf: never).
        self.deadline = math.inf
        #: The current request's deadline, until it becomes ``deadline`` (then 0).
        self.read_deadline = 0.0


class _Refusal(Exception):
    """Raised while reading a request: answer ``response`` (which closes) and stop."""

    def __init__(self, response: Response) -> None:
        self.response = response


class _ClientGone(Exception):
    """The client closed or reset the connection while we were reading."""


async def _next_event(conn: h11.Connection, io: AnySocketIO, state: _ConnState) -> object:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        if state.read_deadline:
            state.deadline = state.read_deadline
            state.read_deadline = 0.0
        try:
            data = await io.receive_some(_RECV_BYTES)
        except trio.BrokenResourceError:
            raise _ClientGone from None
        conn.receive_data(data)


async def _read_body(conn: h11.Connection, io: AnySocketIO, state: _ConnState, limit: int) -> bytes:
    chunks: list[bytes | bytearray] = []
    total = 0
    while True:
        event = await _next_event(conn, io, state)
        kind = type(event)
        if kind is h11.Data:
            data = event.data  # type: ignore[attr-defined]
            total += len(data)
            if total > limit:
                # A chunked (or lying) body passing the limit: stop reading now.
                raise _Refusal(_too_large(limit))
            chunks.append(data)
        elif kind is h11.EndOfMessage:
            return b"".join(chunks)
        else:  # ConnectionClosed mid-body
            raise _ClientGone


def _asks_upgrade(headers: Sequence[tuple[bytes, bytes]], token: bytes) -> bool:
    """True if the request asks to switch to ``token`` (Connection: upgrade + Upgrade)."""
    connection = upgrade = False
    for name, value in headers:
        if name == b"connection":
            connection = connection or b"upgrade" in [v.strip() for v in value.lower().split(b",")]
        elif name == b"upgrade":
            upgrade = upgrade or token in [v.strip() for v in value.lower().split(b",")]
    return connection and upgrade


async def _linger(stream: trio.SocketStream, seconds: float) -> None:
    """Shut our sending side, then discard input for a while so that no reset is sent."""
    try:
        await stream.send_eof()
        with trio.move_on_after(seconds):
            discarded = 0
            while discarded < _LINGER_BYTES:
                data = await stream.receive_some(_RECV_BYTES)
                if not data:
                    break
                discarded += len(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
