"""The client's HTTP transport: onion packets to guards, documents from authorities.

Design note
-----------
The client speaks plain HTTP/1.1 to two kinds of peers: its guard nodes (``POST /onion``
with a packet, the answer is the layered reply) and the directory authorities (``GET
/consensus``). :class:`Transport` is the interface the rest of the client uses, so a
program (or a test) can plug in another one; :class:`HttpxTransport` is the default,
built on httpx as DESIGN.md says.

**One small pool per peer, and a gate in front of it.** httpcore's connection pool
scans every queued request against every connection each time a request starts or ends
(encode/httpx#3215): with hundreds of requests queued on one pool, throughput collapses.
So there is one :class:`httpx.AsyncClient` per ``(host, port)`` (a client talks to two
guards and a few authorities, so these are few), each limited to ``pool_size``
connections, and a :class:`trio.Semaphore` of the same size in front of it: requests
beyond the pool wait on the semaphore (FIFO, O(1) per wake-up), never in httpcore's
queue, which therefore never holds more than ``pool_size`` requests.

**httpx's transport, not its client.** Each peer gets an :class:`httpx.AsyncHTTPTransport`
(httpx's connection pool) and requests go to it directly, not through an
:class:`httpx.AsyncClient`: the client layer (URL merging, default headers, cookies,
auth and redirect hooks, event hooks) does nothing this transport needs and cost about
0.3 ms of CPU a request on this project's 2-core machines, a tenth of a loopback onion
round trip. The transport has no proxy support from the environment either (a guard is
an IP literal from the consensus; nothing may sit in between). The URL of each path is
parsed once per peer and kept.

**The answer first, the bookkeeping after.** Releasing a connection to httpcore's pool
once its response is read (``aclose``: the connection's state lock, the pool's
reassignment) cost about 0.3 ms of a loopback onion round trip here, after the answer
had arrived. While :meth:`HttpxTransport.run` runs (the client runs it in its nursery),
a fully read response is handed to it and closed a millisecond later, in the time the
event loop spends waiting for the next answer; the pool slot (the gate, below) is
released only then, so a connection still being released counts as busy and the pool
never needs more than ``pool_size`` connections. Without :meth:`~HttpxTransport.run`,
responses are closed at once, as before. A response that failed is always closed at
once.

**Bounded everything.** Every call has a timeout covering the whole exchange (waiting
for the gate, connecting, sending, reading); bodies are read as a stream and refused
past ``max_bytes`` before they are buffered whole, so a hostile peer cannot make the
client allocate more than a reply's size.

**Errors** (typed, so the caller classifies them by type):
:class:`~veil.onion.errors.HopUnreachable` (connect refused, reset, protocol error),
:class:`~veil.onion.errors.HopTimeout` (the timeout expired),
:class:`~veil.client.errors.PeerRefused` (an HTTP status other than 200; its ``code``
and the peer's short explanation), and :class:`~veil.onion.errors.TooLarge` (a body
over ``max_bytes``); :class:`~veil.client.errors.TransportClosed` for a call after
:meth:`~HttpxTransport.aclose`.

Cancellation: a cancelled call closes its in-flight HTTP exchange (httpx does) and
releases its slot of the gate; the pool stays usable. :meth:`HttpxTransport.aclose`
closes every pool.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Protocol

import httpx
import trio

from veil.client.errors import MAX_ERROR_TEXT, InvalidArgument, PeerRefused, TransportClosed
from veil.onion.errors import HopTimeout, HopUnreachable, TooLarge
from veil.onion.hostport import format_hostport
from veil.onion.packet import MAX_REPLY_LEN, Hop

__all__ = [
    "DEFAULT_POOL_SIZE",
    "HttpxTransport",
    "Transport",
    "TransportConfig",
]

#: Connections (and requests in flight) per peer. Small on purpose; see the module note.
DEFAULT_POOL_SIZE = 8
#: Parsed URLs kept per peer (the paths a client uses are a handful).
_MAX_URLS = 64
#: Seconds between handing a read response to HttpxTransport.run and closing it.
_CLOSE_DELAY_S = 0.001


class Transport(Protocol):
    """How the client reaches guards and authorities. Implementations raise only the
    errors named in the module note (and :class:`trio.Cancelled`)."""

    async def post_onion(self, guard: Hop, packet: bytes, *, timeout_s: float) -> bytes:
        """POST ``packet`` to ``guard``'s ``/onion``; the reply body (at most a reply's
        largest size class)."""
        ...

    async def get(
        self, host: str, port: int, path: str, *, timeout_s: float, max_bytes: int
    ) -> bytes:
        """GET ``path`` from ``host:port``; the body, at most ``max_bytes``."""
        ...

    async def aclose(self) -> None:
        """Close every connection. The transport is not used afterwards."""
        ...


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """Limits of :class:`HttpxTransport`."""

    #: Connections and in-flight requests per peer (the gate's size).
    pool_size: int = DEFAULT_POOL_SIZE
    #: Seconds a connect may take (within the call's own timeout).
    connect_timeout_s: float = 5.0
    #: Seconds an idle keep-alive connection is kept (below the nodes' idle timeout, 30 s).
    keepalive_expiry_s: float = 20.0
    #: The local IP address outgoing connections are made from (an IP literal, e.g.
    #: ``"127.0.0.77"`` to tell a test client apart from the devnet's nodes, which all
    #: use 127.0.0.1; or one address of a multi-homed host). None: the OS chooses.
    local_address: str | None = None

    def __post_init__(self) -> None:
        if self.pool_size < 1:
            raise InvalidArgument("pool_size must be at least 1")
        if self.connect_timeout_s <= 0 or self.keepalive_expiry_s <= 0:
            raise InvalidArgument("timeouts must be positive")
        if self.local_address is not None:
            try:
                ipaddress.ip_address(self.local_address)
            except ValueError:
                raise InvalidArgument(
                    f"local_address must be an IP address, not {self.local_address!r}"
                ) from None


class _Peer:
    __slots__ = ("base", "gate", "pool", "urls")

    def __init__(self, pool: httpx.AsyncHTTPTransport, base: str, size: int) -> None:
        self.pool = pool
        self.base = base
        self.gate = trio.Semaphore(size)
        #: Parsed URLs by path: few (``/onion`` and a handful of GETs), parsed once.
        self.urls: dict[str, httpx.URL] = {}

    def url(self, path: str) -> httpx.URL:
        url = self.urls.get(path)
        if url is None:
            if len(self.urls) >= _MAX_URLS:
                self.urls.clear()
            url = self.urls[path] = httpx.URL(self.base + path)
        return url


class HttpxTransport:
    """:class:`Transport` over httpx: one small pool per peer (see the module note)."""

    def __init__(self, config: TransportConfig | None = None) -> None:
        self.config = config or TransportConfig()
        self._peers: dict[tuple[str, int], _Peer] = {}
        self._closed = False
        #: Read responses waiting to be closed, with their gate (see run); None while
        #: run is not running (responses are then closed at once).
        self._to_close: list[tuple[httpx.AsyncByteStream, trio.Semaphore]] | None = None
        self._close_soon = trio.Event()
        # httpx's per-request timeouts: only connect is bounded by httpx (see _exchange).
        self._timeouts: dict[str, float | None] = {
            "connect": self.config.connect_timeout_s,
            "read": None,
            "write": None,
            "pool": None,
        }

    def _peer(self, host: str, port: int) -> _Peer:
        if self._closed:
            raise TransportClosed("the transport is closed")
        key = (host, port)
        peer = self._peers.get(key)
        if peer is None:
            size = self.config.pool_size
            pool = httpx.AsyncHTTPTransport(
                limits=httpx.Limits(
                    max_connections=size,
                    max_keepalive_connections=size,
                    keepalive_expiry=self.config.keepalive_expiry_s,
                ),
                # Peers are IP literals from the consensus or the network file: nothing
                # from the environment applies (a bare transport takes no proxy anyway).
                trust_env=False,
                # Plain HTTP only (every URL here is http://: packets are end-to-end
                # encrypted, answers authenticated by signatures): no TLS context to
                # build, which with the system's CA bundle costs about 40 ms per peer.
                verify=False,
                local_address=self.config.local_address,
            )
            peer = self._peers[key] = _Peer(pool, f"http://{format_hostport(host, port)}", size)
        return peer

    async def post_onion(self, guard: Hop, packet: bytes, *, timeout_s: float) -> bytes:
        return await self._exchange(
            "POST",
            guard.host,
            guard.port,
            "/onion",
            packet,
            timeout_s=timeout_s,
            max_bytes=MAX_REPLY_LEN,
            content_type="application/octet-stream",
        )

    async def get(
        self, host: str, port: int, path: str, *, timeout_s: float, max_bytes: int
    ) -> bytes:
        return await self._exchange(
            "GET", host, port, path, None, timeout_s=timeout_s, max_bytes=max_bytes
        )

    async def _exchange(
        self,
        method: str,
        host: str,
        port: int,
        path: str,
        body: bytes | None,
        *,
        timeout_s: float,
        max_bytes: int,
        content_type: str | None = None,
    ) -> bytes:
        peer = self._peer(host, port)
        where = f"{host}:{port}"
        # One deadline for the whole exchange, gate included; httpx's own timeouts are
        # only a backstop (its connect timeout keeps a black-holed SYN from using it all).
        with trio.move_on_after(timeout_s) as scope:
            gate = peer.gate
            try:
                # A free slot is taken without yielding (``async with`` would yield once
                # even then, and let every other ready task run before the request).
                gate.acquire_nowait()
            except trio.WouldBlock:
                await gate.acquire()
            handed_over = False
            try:
                status, data, stream = await self._send(
                    peer, method, path, body, max_bytes, content_type
                )
                pending = self._to_close
                if pending is None:
                    await stream.aclose()
                else:
                    # run() closes it (and frees the slot) once we have answered.
                    pending.append((stream, gate))
                    handed_over = True
                    self._close_soon.set()
            except httpx.TimeoutException:
                raise HopTimeout(f"{where} did not answer in time") from None
            except httpx.HTTPError as exc:
                raise HopUnreachable(f"{where} unreachable: {_reason(exc)}") from None
            finally:
                if not handed_over:
                    gate.release()
            if status != 200:
                raise PeerRefused(status, data[:MAX_ERROR_TEXT].decode("utf-8", "replace"))
            return data
        assert scope.cancelled_caught
        raise HopTimeout(f"{where} did not answer within {timeout_s:g} s")

    async def _send(
        self,
        peer: _Peer,
        method: str,
        path: str,
        body: bytes | None,
        max_bytes: int,
        content_type: str | None,
    ) -> tuple[int, bytes, httpx.AsyncByteStream]:
        """The status, the body and the response's still open stream (read to its end);
        on any failure the stream is closed here."""
        headers = [(b"content-type", content_type.encode())] if content_type else None
        request = httpx.Request(
            method,
            peer.url(path),
            content=body,
            headers=headers,
            extensions={"timeout": self._timeouts},
        )
        response = await peer.pool.handle_async_request(request)
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        try:
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise TooLarge(f"answer of {declared} bytes is over the limit of {max_bytes}")
            chunks: list[bytes] = []
            size = 0
            # The body as it arrives (httpx's stream maps httpcore's errors to its own),
            # counted before it is kept.
            async for chunk in stream:
                size += len(chunk)
                if size > max_bytes:
                    raise TooLarge(f"answer is over the limit of {max_bytes} bytes")
                chunks.append(chunk)
        except BaseException:
            # Shielded inside httpcore: a cancelled exchange still releases (or drops)
            # its connection.
            await stream.aclose()
            raise
        return response.status_code, b"".join(chunks), stream

    async def run(self) -> None:
        """Close read responses shortly after their answers were returned (see the
        module note), until cancelled; then close what is still waiting (shielded).

        Run it in a nursery that outlives the requests (the client's own). Never
        raises: a response that fails to close is dropped with its connection.
        """
        if self._to_close is not None:
            raise TransportClosed("HttpxTransport.run is already running")
        self._to_close = []
        try:
            while True:
                await self._close_soon.wait()
                await trio.sleep(_CLOSE_DELAY_S)
                self._close_soon = trio.Event()
                await self._close_waiting()
        finally:
            with trio.CancelScope(shield=True):
                await self._close_waiting()
                self._to_close = None

    async def _close_waiting(self) -> None:
        pending = self._to_close
        while pending:
            stream, gate = pending.pop()
            try:
                await stream.aclose()
            except (httpx.HTTPError, OSError):
                pass  # httpcore has dropped the connection: nothing more to release
            finally:
                gate.release()

    async def aclose(self) -> None:
        """Close every pool (idempotent). Shielded: closing finishes even if cancelled."""
        self._closed = True
        peers, self._peers = list(self._peers.values()), {}
        with trio.CancelScope(shield=True):
            await self._close_waiting()
            for peer in peers:
                await peer.pool.aclose()


def _reason(exc: httpx.HTTPError) -> str:
    """Why a connection failed, in a few words ("connection refused").

    httpx's own message is vague ("all attempts to connect ... failed"); the OSError
    that says why sits further down the chain of causes, inside trio's exception group
    of connection attempts.
    """
    stack: list[BaseException] = [exc]
    seen: set[int] = set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and (current.errno or current.strerror):
            text = os.strerror(current.errno) if current.errno else str(current.strerror)
            return text.lower()
        if isinstance(current, BaseExceptionGroup):
            stack.extend(current.exceptions)
        for link in (current.__cause__, current.__context__):
            if link is not None:
                stack.append(link)
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:200]
