"""Writing a response on a connection: one h11 response, its head from a small cache.

Design note
-----------
The server's per-connection writing, apart from its loop (node/server/http_server.py):
h11 validates a Response's headers when it is built, which costs about as much as
sending it, and most answers are one of a few (status, content type, length, close), so
:class:`ResponseWriter` keeps the heads it built (at most :data:`_HEAD_CACHE`, dropped
all at once when full). A response h11 cannot send in the connection's state (after a
client's protocol error) is not sent: the caller closes.
"""

from __future__ import annotations

import h11

from ..sockio import AnySocketIO
from .messages import _REASONS, Response

__all__: list[str] = []  # the server package's own: http_server.py imports it

#: Response heads kept.
_HEAD_CACHE = 256


class ResponseWriter:
    """Sends responses with cached heads (see the module note)."""

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[tuple[int, bytes, int, bool], h11.Response] = {}

    async def send_response(
        self, conn: h11.Connection, io: AnySocketIO, response: Response
    ) -> bool:
        """Send ``response``; False if h11 cannot send one in this state.

        The caller's deadline bounds the write (a client that does not read).
        """
        status = response.status
        key = (status, response.content_type, len(response.body), response.close)
        head = self._cache.get(key)
        if head is None:
            # h11 validates a Response's headers when it is built, which costs about as
            # much as sending it; most answers are one of a few (status, type, length).
            headers = [
                (b"content-type", response.content_type),
                (b"content-length", b"%d" % len(response.body)),
            ]
            if response.close:
                headers.append((b"connection", b"close"))
            head = h11.Response(
                status_code=status, headers=headers, reason=_REASONS.get(status, b"")
            )
            if len(self._cache) >= _HEAD_CACHE:
                self._cache.clear()
            self._cache[key] = head
        try:
            data = b"".join(
                (
                    conn.send(head),
                    conn.send(h11.Data(data=response.body)) or b"",
                    conn.send(h11.EndOfMessage()) or b"",
                )
            )
        except h11.LocalProtocolError:
            # E.g. the client's error left no response possible; just close.
            return False
        await io.send_all(data)
        return True
