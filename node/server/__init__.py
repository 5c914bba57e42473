"""The node's HTTP/1.1 face: trio sockets, h11 parsing, strict limits, graceful drain.

Design note
-----------
No web framework: h11 parses, this package enforces the limits and calls one handler per
route. Where each part lives: ``http_server.py`` (:class:`HttpServer`: accepting,
the connection loop, the watchdog, shutdown), ``reading.py`` (reading a request within
its limits, the lingering close), ``messages.py`` (:class:`Request`, :class:`Response`,
:class:`Route`, the canned answers). The modules import their siblings, never this
package. On this project's machines trio + h11 served about 5,100 small POSTs a second on
one core against about 1,200 for hypercorn's trio worker, and the node's hot path
(``POST /onion``) is one small POST.

One task per connection, all in one nursery. Requests are read and answered with
:mod:`veil.node.sockio` (straight to the socket; one checkpoint per read, and one before a
request that was pipelined behind another), not through trio's stream layers, which at
rest cost about as much as the rest of a small request. A connection keeps its ``h11.Connection``
across keep-alive requests (``start_next_cycle``). Limits, each answered with a short
``text/plain`` body that says which limit was hit:

* **Head size**: ``max_header_bytes`` (h11's ``max_incomplete_event_size``) -> 431.
* **Body size**: each route has ``max_body``. A ``Content-Length`` above it is refused
  with 413 *before* a byte of the body is read; a chunked body is counted as it arrives
  and refused with 413 the moment it passes the limit. Memory per connection is bounded
  by ``max_body`` plus h11's buffer.
* **Request deadline**: the whole request (head and body) must arrive within
  ``request_timeout`` of its first byte, so a client that sends a byte a second is cut
  off (408) however it paces itself. (Every deadline here is enforced by a watchdog
  that looks four times a second, so it may fire up to a quarter second late.)
* **Keep-alive idle**: ``idle_timeout`` between requests, then the connection is closed.
* **Slow readers**: handing a response to the kernel may take ``write_timeout``.
* **Connections**: at most ``max_connections`` open, and at most
  ``max_connections_per_address`` from one address (an IPv6 /64 counts as one, as in the
  rate limit), so that one address cannot hold them all (1,019 links from one address
  once took every connection; links now need a listed node's proof too, node/link/
  auth.py). Beyond either, the connection is accepted, answered 503 and closed (a few
  such answers at a time; beyond, closed without one).
* **Rate**: routes marked ``rate_limited`` take a token from the client address's
  bucket (:mod:`veil.node.ratelimit`) before the body is read; an empty bucket is a 429 at
  once. Nothing is ever queued.

A refusal sent before the request was read whole carries ``Connection: close``; the
server then shuts its sending side and discards what the client still sends for a short
while (a "lingering close"), because closing a socket with unread data makes the kernel
send a reset that can destroy the response before the client reads it.

Errors and cancellation: no exception escapes a connection task. h11 protocol errors
become 4xx answers; a handler's exception is logged and answered 500; a broken
connection is closed quietly.

Shutdown (:meth:`HttpServer.stop`): the listeners close at once; connections waiting
between requests are closed; requests in flight get ``shutdown_grace`` seconds to
finish, after which their handlers are cancelled and they are answered 503. Only then
does :meth:`serve` return, so whatever the handlers use (the store) is still open until
the last request is answered.

Privacy: the client's address is used for the rate limit and nothing else; it is never
logged (see :mod:`veil.node.logging`).
"""

from __future__ import annotations

from .http_server import HttpServer
from .messages import (
    Handler,
    Request,
    Response,
    Route,
    UpgradeCheck,
    UpgradeHandler,
    text_response,
)

__all__ = [
    "Handler",
    "HttpServer",
    "Request",
    "Response",
    "Route",
    "UpgradeCheck",
    "UpgradeHandler",
    "text_response",
]
