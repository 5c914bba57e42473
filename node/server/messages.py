"""What the node's HTTP server hands a handler and what a handler answers.

Design note
-----------
Plain records (:class:`Request`, :class:`Response`, :class:`Route`) and the handler
types, with :func:`text_response` (every error the node sends is a short
``text/plain`` body) and the canned refusals of the server's limits. No I/O: the server
(node/server/http_server.py) reads and writes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import h11
import trio

__all__ = [
    "Handler",
    "Request",
    "Response",
    "Route",
    "UpgradeCheck",
    "UpgradeHandler",
    "text_response",
]

_TEXT = b"text/plain; charset=utf-8"


@dataclass(slots=True)
class Request:
    """One complete request, as a handler sees it."""

    method: str
    path: str
    query: str
    body: bytes
    #: The connecting address. For rate limits only: never log it (see node.logging).
    peer: str


@dataclass(slots=True)
class Response:
    """What a handler answers; ``body`` is sent as is with its length."""

    status: int
    body: bytes
    content_type: bytes = _TEXT
    close: bool = False


Handler = Callable[[Request], Awaitable[Response]]

#: What takes over a connection after a 101: the stream, the bytes already read past the
#: request, the client's address (rate limits only) and the server's stop event. It
#: returns when it is done with the connection, which the server then closes.
UpgradeHandler = Callable[[trio.SocketStream, bytes, str, trio.Event], Awaitable[None]]

#: Asked with an upgrade request's headers (h11's: lower-case names) before the 101:
#: None to switch protocols, or the ``(status, text)`` to refuse with.
UpgradeCheck = Callable[[Sequence[tuple[bytes, bytes]]], "tuple[int, str] | None"]


@dataclass(frozen=True, slots=True)
class Route:
    """A path's handler: ``methods`` it answers, the largest body it reads, its limits.

    With ``upgrade`` set, the route only switches protocols: a request whose
    ``Upgrade`` header names ``upgrade_token`` is answered 101 and the connection is
    handed to ``upgrade``; any other request gets 426 (``handler`` is not called).
    ``upgrade_check`` (if set) is asked with the request's headers before the 101: None
    to switch, or the ``(status, text)`` to refuse with (e.g. the link's proof, 403).
    """

    methods: tuple[str, ...]
    handler: Handler
    max_body: int = 0
    rate_limited: bool = False
    upgrade: UpgradeHandler | None = None
    upgrade_token: bytes = b""
    upgrade_check: UpgradeCheck | None = None


def text_response(status: int, message: str, *, close: bool = False) -> Response:
    """A short ``text/plain`` answer (every error the node sends is one)."""
    return Response(status, message.encode("utf-8", "replace") + b"\n", _TEXT, close)


_REASONS = {
    304: b"Not Modified",
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    426: b"Upgrade Required",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    503: b"Service Unavailable",
}


def _too_large(limit: int) -> Response:
    return text_response(413, f"too_large: the body is limited to {limit} bytes", close=True)


def _head_too_large() -> Response:
    return text_response(431, "too_large: request head over the size limit", close=True)


def _protocol_error(exc: h11.RemoteProtocolError) -> Response:
    status = exc.error_status_hint
    if status == 431:
        return _head_too_large()
    reason = str(exc)[:80] or "malformed request"
    return text_response(status or 400, f"bad_request: {reason}", close=True)
