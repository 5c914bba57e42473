"""``GET /consensus`` on a service node: the signed consensus it adopted, for clients.

Design note
-----------
Clients used to fetch the consensus from the directory authorities, which thereby
learned the address of every client and when it came back (issue #11, item 4). As Tor
moved to directory guards, a veil client now fetches it from its guards (the nodes that
see its address anyway), and every node serves the consensus it holds::

    GET /consensus              200 application/cbor: the signed document, byte for byte
                                as the node received and verified it (the authorities'
                                document, with every signature it carried);
                                503 ``unavailable`` while the node holds none that is
                                still valid (it has just started, or cannot reach the
                                authorities)
    GET /consensus?after=E      the same, or 304 with no body when the node's consensus
                                is not newer than epoch E (a client that holds E asks
                                without taking the whole document again)

What the node serves is what it verified (:class:`~veil.node.network_view.NetworkView`
keeps the document with the consensus): it never re-encodes or re-signs, so a client
verifies it exactly as one from an authority (pinned keys, threshold, times, no
rollback), and a node cannot make a client accept anything the authorities did not sign.
A node can withhold the consensus or serve an old one; the client then asks another
source (client/consensus.py). A consensus past its ``valid_until`` on the node's clock
is not served (503): no client could use it.

Cost: the stored bytes are handed to the server as they are; the route is rate limited
per address like ``POST /onion`` (its 429s counted in ``veil_rate_limited_total``) and
counted in ``veil_http_requests_total{path="/consensus"}``. A document is at most
:data:`~veil.onion.directory.MAX_CONSENSUS_SIZE`; a client that asks again and again
takes it again and again, as it would any download (``?after=`` makes the honest repeat
free). The query is parsed strictly: anything but ``after=<digits>`` is a 400.

Privacy: the requester's address is used for the rate limit only, never logged.
"""

from __future__ import annotations

from collections.abc import Callable

from .network_view import NetworkView
from .server import Request, Response, Route, text_response

__all__ = ["CONSENSUS_PATH", "consensus_route", "parse_after"]

CONSENSUS_PATH = "/consensus"

_CBOR = b"application/cbor"
#: ``after=`` plus at most 19 digits (an epoch is below 2**63).
_MAX_QUERY = 32


def parse_after(query: str) -> int | None:
    """The epoch of ``after=E`` in ``query`` (None for an empty query);
    :class:`ValueError` saying what is wrong for anything else."""
    if not query:
        return None
    if len(query) > _MAX_QUERY:
        raise ValueError("query string too long")
    key, sep, value = query.partition("=")
    if key != "after" or not sep:
        raise ValueError(f"unknown query {key[:16]!r}: only after=EPOCH is taken")
    if not value.isascii() or not value.isdigit() or len(value) > 19:
        raise ValueError("after must be a non-negative integer (an epoch)")
    return int(value)


def consensus_route(view: NetworkView, clock: Callable[[], int]) -> Route:
    """The ``GET /consensus`` route of a node that follows ``view`` (module note);
    ``clock`` is the node's clock in ms (a consensus past ``valid_until`` is not served)."""

    async def handle(request: Request) -> Response:
        try:
            after = parse_after(request.query)
        except ValueError as exc:
            return text_response(400, f"bad_request: {exc}")
        # One read of each: the directory client replaces both together, between awaits.
        consensus, document = view.consensus, view.document
        if consensus is None or document is None:
            return text_response(503, "unavailable: this node has no consensus yet")
        if clock() >= consensus.valid_until_ms:
            return text_response(
                503, f"unavailable: this node's consensus (epoch {consensus.epoch}) has expired"
            )
        if after is not None and consensus.epoch <= after:
            return Response(304, b"", _CBOR)
        return Response(200, document, _CBOR)

    # Rate limited like /onion (the limiter exempts listed nodes and [rate_limit] exempt).
    return Route(("GET",), handle, rate_limited=True)
