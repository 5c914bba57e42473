"""Small parts of the node's HTTP face: the replication routes' adapter (for HTTP and
for links), the request body handed over, and the per-address limit with relays exempt.

Design note
-----------
node/app.py wires routes; these are the pieces it wires that do one thing each: a
replication route answers a typed refusal with its status and a line of text (the
frames' answers are sealed, refusals are not), the same whether the frame came as a
``POST /replicate...`` or on a link (:func:`frame_answer`), and a relay (a consensus node's address)
is not rate limited per address, since it carries many clients' packets.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from veil.onion.errors import STATUS_CODES, VeilError, wire_status
from veil.onion.link import MAX_ERROR_LEN

from .network_view import NetworkView
from .ratelimit import TokenBucketLimiter
from .server import Handler, Request, Response, text_response

__all__ = ["RelayExemptLimiter", "frame_answer", "frame_route", "take_body"]

_OCTETS = b"application/octet-stream"


def take_body(request: Request) -> bytes:
    """``request``'s body, which the request then no longer holds."""
    body, request.body = request.body, b""
    return body


async def frame_answer(
    handle: Callable[[bytes], Awaitable[bytes]], frame: bytes
) -> tuple[int, bytes]:
    """``handle``'s answer to a replication ``frame``: ``(200, the sealed answer)``, or the
    typed error's HTTP status and ``"<wire status>: <explanation>"`` (at most
    MAX_ERROR_LEN bytes, what a link's error frame may carry)."""
    try:
        return 200, await handle(frame)
    except VeilError as exc:
        status = wire_status(exc)
        return STATUS_CODES[status], f"{status}: {exc}".encode()[:MAX_ERROR_LEN]


def frame_route(handle: Callable[[bytes], Awaitable[bytes]]) -> Handler:
    """A replication route: 200 with the sealed answer, or the typed error's 4xx/5xx."""

    async def route(request: Request) -> Response:
        status, body = await frame_answer(handle, request.body)
        if status != 200:
            return text_response(status, body.decode("utf-8", "replace"))
        return Response(200, body, _OCTETS)

    return route


class RelayExemptLimiter(TokenBucketLimiter):
    """The per-address limit, with the addresses of consensus nodes exempt: a relay
    carries many clients' packets (checked once per connection, see node/server/)."""

    __slots__ = ("_network",)

    def __init__(
        self, rate: float, burst: float, max_entries: int, exempt: Any, network: NetworkView
    ) -> None:
        super().__init__(rate, burst, max_entries, exempt)
        self._network = network

    def is_exempt(self, address: str) -> bool:
        return super().is_exempt(address) or self._network.is_relay_address(address)
