"""Node-to-node HTTP: a few persistent h11 connections per peer.

Design note
===========

A relay forwards every packet to the next hop over HTTP/1.1. One big httpx pool is the
wrong tool: httpcore scans its whole pool on every request, so the cost grows with the
number of connections (encode/httpx#3215: 50 connections fell to about 250 requests/s).
:class:`PeerPool` instead keeps, per peer ``(host, port)``, a small stack of keep-alive
connections, each a :class:`trio.SocketStream` driven by an :mod:`h11` client state
machine, with one request in flight per connection. Finding a connection is a dict
lookup and a list pop, whatever the number of peers.

Bounds, so that a slow or hostile peer cannot grow our memory or our task count:

* at most ``max_per_peer`` connections to a peer (open or being opened);
* when all of them are busy a request waits its turn (FIFO) within its own timeout,
  and at most ``max_waiters`` requests wait per peer; one more is refused at once with
  :class:`~veil.onion.errors.RateLimited` (wire status ``rate_limited``): the hop is over
  its capacity towards that peer, and queueing more would only add latency;
* a response body is capped (``max_response_bytes``, by default
  :data:`veil.onion.packet.MAX_REPLY_LEN` plus a little slack) and its head by h11
  (``max_header_bytes`` of an incomplete head, on top of one 64 KiB receive); over
  either, the request fails and the connection is dropped.

Errors (all from :mod:`veil.onion.errors`): a refused or failed connect, a reset, an EOF in
the middle of a response, a response that is not valid HTTP or is too large give
:class:`~veil.onion.errors.HopUnreachable`; running out of the request's ``timeout`` (which
covers waiting for a connection, connecting, sending and receiving) gives
:class:`~veil.onion.errors.HopTimeout`. A non-2xx status is not an error here: the caller gets
``(status, body)`` and decides.

The stale keep-alive rule
-------------------------
A peer may close an idle keep-alive connection at any moment, and we learn it only when
we use the connection. Before reusing an idle connection we poll its socket: readable
means EOF, a reset or unsolicited bytes, and the connection is dropped unused. A close
can still race our request, so a request is retried **once, on a freshly opened
connection**, when all of these hold:

1. the failed connection was reused from the pool (a fresh connection that fails is a
   real failure, reported as such);
2. the failure was at the connection level (send failed, reset, or EOF) and came
   **before any byte of a response** (once a response has begun, the peer has acted);
3. the request's ``retry_stale`` is true (the default).

Can the first attempt have reached the peer's application when this rule fires? Only
if the peer read the request and then died without answering. For ``/onion`` that is
harmless: the next hop's replay cache refuses the second copy of a packet, so a packet
is processed at most once whatever we do; the client then sees an error reply instead of
a duplicate effect. A caller with a non-idempotent request that has no such guard passes
``retry_stale=False``. A timeout is never retried.

A connection goes back to the pool only after a complete response with keep-alive and
nothing buffered after it: bytes we did not ask for (there is no pipelining here) would
otherwise be read as the answer to the next request.

Cancellation: a request that is cancelled (or times out) while it holds a connection
closes that connection, because its HTTP state is unknown; it never goes back to the
pool. The pool itself stays usable. ``timeout=None`` leaves the deadline to a caller
that already has its own cancel scope around the request (saving one scope per request
on a relay's hot path); the caller then sees its own cancellation, never HopTimeout.

Structure: no background tasks. Connections belong to the pool and are closed by
:meth:`PeerPool.aclose` (``async with`` does it). Idle connections older than
``idle_timeout`` are closed lazily: when a request looks for a connection, and by a
sweep over all peers that runs at most every ``idle_timeout / 2`` seconds, piggybacked
on requests. Peers with no connection and no request are forgotten. Set
``idle_timeout`` below the peers' server-side keep-alive timeout so that the pool, not
the peer, usually closes idle connections.

Where it lives: the pool (which connection, how many, who waits, when one is closed)
here; one HTTP/1.1 exchange on one connection (h11, the response's bounds, whether the
connection may go back to the pool) in node/peer_http.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType

import h11
import trio

from veil.onion.errors import HopTimeout, HopUnreachable, RateLimited
from veil.onion.packet import MAX_REPLY_LEN

from .peer_http import Header, _Conn, _socket_readable, _StaleConnection, make_request, roundtrip

__all__ = ["DEFAULT_MAX_RESPONSE_BYTES", "Header", "PeerPool"]

#: Room over the largest onion reply for a small error body or framing around it.
DEFAULT_MAX_RESPONSE_BYTES = MAX_REPLY_LEN + 16 * 1024


@dataclass(eq=False)
class _Peer:
    slots: trio.Semaphore
    idle: list[_Conn] = field(default_factory=list)  # a stack: last used on top
    waiters: int = 0


class PeerPool:
    """Per-peer persistent HTTP/1.1 client connections (see the module note).

    Use as ``async with PeerPool(...) as pool:``. Requests may run concurrently from
    any number of tasks. Parameters: ``max_per_peer`` connections per ``(host, port)``;
    ``max_waiters`` requests waiting per peer when all its connections are busy;
    ``connect_timeout`` seconds for a TCP connect (also bounded by the request's own
    timeout); ``idle_timeout`` seconds after which an unused connection is closed;
    ``max_response_bytes`` for a response body; ``max_header_bytes`` for a response
    head.
    """

    def __init__(
        self,
        *,
        max_per_peer: int = 4,
        max_waiters: int = 64,
        connect_timeout: float = 5.0,
        idle_timeout: float = 30.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_header_bytes: int = 16 * 1024,
    ) -> None:
        # ValueError: a bug in the caller (config.py checks what an operator sets).
        if max_per_peer < 1 or max_waiters < 0:
            raise ValueError("max_per_peer must be >= 1 and max_waiters >= 0")
        if connect_timeout <= 0 or idle_timeout <= 0:
            raise ValueError("timeouts must be positive")
        self.max_per_peer = max_per_peer
        self.max_waiters = max_waiters
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_response_bytes = max_response_bytes
        self.max_header_bytes = max_header_bytes
        self._peers: dict[tuple[str, int], _Peer] = {}
        self._open: set[_Conn] = set()
        self._closed = False
        self._next_sweep = 0.0
        self._requests: dict[tuple[object, ...], h11.Request] = {}

    # --- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> PeerPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every connection. Requests still running fail with HopUnreachable.

        Idempotent; the pool refuses new requests afterwards (RuntimeError).
        """
        self._closed = True
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._peers.clear()
        await trio.lowlevel.checkpoint()

    @property
    def open_connections(self) -> int:
        """How many connections are open now, over all peers (busy or idle)."""
        return len(self._open)

    # --- requests ----------------------------------------------------------------------

    async def post(
        self,
        host: str,
        port: int,
        path: str,
        body: bytes,
        *,
        timeout: float | None,
        headers: Iterable[Header] = (),
        retry_stale: bool = True,
    ) -> tuple[int, bytes]:
        """POST ``body`` to ``http://host:port/path``; return ``(status code, body)``.

        ``timeout`` bounds the whole request: waiting for a free connection, connecting,
        sending and reading the response. ``timeout=None`` sets no deadline here, for a
        caller that already runs the request inside its own cancel scope (one scope less
        per packet on a relay's hot path, about 10 us on this project's machines); its
        expiry then reaches the caller as a cancellation, and only a connect still has
        ``connect_timeout``. Raises HopTimeout when ``timeout`` runs out,
        HopUnreachable when the peer cannot be reached or answers with something that is
        not a bounded HTTP response, RateLimited when too many requests already wait for
        this peer; ValueError for a path or header that is not valid HTTP (a caller's
        bug). See the module note for when a request is retried once. If the calling
        task is cancelled, the connection it was using is closed (never reused) and
        Cancelled propagates.
        """
        return await self._request(b"POST", host, port, path, body, timeout, headers, retry_stale)

    async def get(
        self,
        host: str,
        port: int,
        path: str,
        *,
        timeout: float | None,
        headers: Iterable[Header] = (),
    ) -> tuple[int, bytes]:
        """GET ``http://host:port/path``; return ``(status code, body)``.

        Same errors, bounds and cancellation behaviour as :meth:`post`; a GET is always
        eligible for the stale-connection retry.
        """
        return await self._request(b"GET", host, port, path, None, timeout, headers, True)

    async def _request(
        self,
        method: bytes,
        host: str,
        port: int,
        path: str,
        body: bytes | None,
        timeout: float | None,
        headers: Iterable[Header],
        retry_stale: bool,
    ) -> tuple[int, bytes]:
        if self._closed:
            # Misuse (a request after aclose): a bug in the node, never an operator's error.
            raise RuntimeError("PeerPool is closed")
        now = trio.current_time()
        if now >= self._next_sweep:
            self._sweep(now)
        request = make_request(self._requests, method, host, port, path, body, headers)
        key = (host, port)
        peer = self._peers.get(key)
        if peer is None:
            peer = self._peers[key] = _Peer(trio.Semaphore(self.max_per_peer))
        if timeout is None:
            # The caller's own cancel scope bounds the request (see post()).
            return await self._in_slot(key, peer, request, body, retry_stale)
        with trio.move_on_at(now + timeout):
            return await self._in_slot(key, peer, request, body, retry_stale)
        # Only our own deadline lands here: an outer cancellation propagates.
        self._forget_if_unused(key, peer)
        raise HopTimeout(f"{host}:{port} did not answer within {timeout:g} s")

    async def _in_slot(
        self,
        key: tuple[str, int],
        peer: _Peer,
        request: h11.Request,
        body: bytes | None,
        retry_stale: bool,
    ) -> tuple[int, bytes]:
        """Take one of the peer's slots (waiting FIFO if need be) and run the request."""
        try:
            # trio's Semaphore hands a released slot straight to a parked waiter, so a
            # free slot here means nobody is queued: taking it keeps FIFO order.
            peer.slots.acquire_nowait()
        except trio.WouldBlock:
            if peer.waiters >= self.max_waiters:
                raise RateLimited(f"too many requests waiting for {key[0]}:{key[1]}") from None
            peer.waiters += 1
            try:
                await peer.slots.acquire()
            finally:
                peer.waiters -= 1
        try:
            return await self._exchange(peer, key[0], key[1], request, body, retry_stale)
        finally:
            peer.slots.release()
            self._forget_if_unused(key, peer)

    async def _exchange(
        self,
        peer: _Peer,
        host: str,
        port: int,
        request: h11.Request,
        body: bytes | None,
        retry_stale: bool,
    ) -> tuple[int, bytes]:
        conn = self._checkout(peer)
        reused = conn is not None
        if conn is None:
            conn = await self._connect(host, port)
        try:
            status, data, keep = await roundtrip(conn, request, body, self.max_response_bytes)
        except _StaleConnection as exc:
            self._discard(conn)
            if not (reused and retry_stale):
                raise HopUnreachable(f"{host}:{port}: {exc}") from None
            conn = await self._connect(host, port)
            try:
                status, data, keep = await roundtrip(conn, request, body, self.max_response_bytes)
            except _StaleConnection as exc2:
                self._discard(conn)
                raise HopUnreachable(f"{host}:{port}: {exc2}") from None
            except BaseException:
                self._discard(conn)
                raise
        except BaseException:
            # Cancelled, timed out, or failed mid-response: the HTTP state is unknown.
            self._discard(conn)
            raise
        if keep and not self._closed:
            conn.idle_since = trio.current_time()
            peer.idle.append(conn)
        else:
            self._discard(conn)
        return status, data

    # --- connections -------------------------------------------------------------------

    def _checkout(self, peer: _Peer) -> _Conn | None:
        """The most recently used idle connection that still looks alive, if any."""
        oldest_ok = trio.current_time() - self.idle_timeout
        while peer.idle:
            conn = peer.idle.pop()
            if conn.idle_since < oldest_ok or _socket_readable(conn.stream):
                self._discard(conn)
                continue
            return conn
        return None

    async def _connect(self, host: str, port: int) -> _Conn:
        with trio.move_on_after(self.connect_timeout) as scope:
            try:
                stream = await trio.open_tcp_stream(host, port)
            except OSError as exc:
                raise HopUnreachable(f"cannot connect to {host}:{port}: {exc}") from None
        if scope.cancelled_caught:
            raise HopTimeout(f"connecting to {host}:{port} timed out")
        conn = _Conn(stream, self.max_header_bytes)
        if self._closed:
            conn.close()
            raise HopUnreachable("PeerPool closed while connecting")
        self._open.add(conn)
        return conn

    def _discard(self, conn: _Conn) -> None:
        conn.close()
        self._open.discard(conn)

    def _forget_if_unused(self, key: tuple[str, int], peer: _Peer) -> None:
        if (
            not peer.idle
            and peer.waiters == 0
            and peer.slots.value == self.max_per_peer
            and self._peers.get(key) is peer
        ):
            del self._peers[key]

    def _sweep(self, now: float) -> None:
        """Close idle connections past ``idle_timeout`` and forget unused peers."""
        self._next_sweep = now + self.idle_timeout / 2
        oldest_ok = now - self.idle_timeout
        for key, peer in list(self._peers.items()):
            if peer.idle and peer.idle[0].idle_since < oldest_ok:
                keep = []
                for conn in peer.idle:
                    if conn.idle_since < oldest_ok:
                        self._discard(conn)
                    else:
                        keep.append(conn)
                peer.idle[:] = keep
            self._forget_if_unused(key, peer)
