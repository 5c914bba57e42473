"""The node's HTTP/1.1 server: accepting, one task per connection, the watchdog, drain.

Design note
-----------
:class:`HttpServer` is the connection loop of the package's design (node/server/
__init__.py): accept (at most ``max_connections``, and ``max_connections_per_address`` from one
address; a few 503s beyond), read a request
(reading.py), run its route's handler, write the answer with a cached head, keep the
connection alive or close it, and on :meth:`HttpServer.stop` drain. It is one class
because every step shares the connection's state and the node's hot path (``POST
/onion``) runs through all of them: trio + h11 here served about 5,100 small POSTs a
second on one core, against about 1,200 for hypercorn's trio worker. Reading a request's
parts is reading.py's, writing a response (with its cached head) writing.py's.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
from collections.abc import Mapping, Sequence

import h11
import trio

from ..config import HttpConfig
from ..logging import PeerWarnings, log_event
from ..metrics import NodeMetrics
from ..ratelimit import TokenBucketLimiter, client_key
from ..sockio import AnySocketIO, SocketIO
from .messages import (
    Request,
    Response,
    Route,
    _head_too_large,
    _protocol_error,
    _too_large,
    text_response,
)
from .reading import (
    _IDLE,
    _LINGER_SECONDS,
    _READING,
    _RECV_BYTES,
    _WORKING,
    _WRITING,
    _asks_upgrade,
    _ClientGone,
    _ConnState,
    _linger,
    _next_event,
    _read_body,
    _Refusal,
)
from .writing import ResponseWriter

__all__ = ["HttpServer"]

log = logging.getLogger("veil.node.http")

#: 503 answers to connections over the limit that may be in progress at once.
_MAX_REFUSALS = 32
#: How often the watchdog looks for connections past their deadline (seconds).
_TICK_S = 0.25
_ACCEPT_RETRY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


class HttpServer:
    """Serves ``routes`` on listeners until :meth:`stop`; see the module docstring."""

    def __init__(
        self,
        routes: Mapping[str, Route],
        config: HttpConfig,
        *,
        metrics: NodeMetrics,
        limiter: TokenBucketLimiter | None = None,
        warnings: PeerWarnings | None = None,
    ) -> None:
        """``warnings`` takes the tracebacks of bugs a request set off (rate limited per
        client address, counted in ``metrics``)."""
        self.routes = dict(routes)
        self.warnings = warnings or PeerWarnings(count=metrics.count_peer_error)
        self.config = config
        self.metrics = metrics
        self.limiter = limiter
        self._open = 0
        #: Open connections per client key (node.ratelimit.client_key of the address).
        self._per_address: dict[str, int] = {}
        self._refusals = 0
        self._draining = False
        self._stop = trio.Event()
        self._all_closed = trio.Event()
        # Open connections' timers: on shutdown, idle ones are cancelled at once and
        # working ones after the grace period.
        self._states: set[_ConnState] = set()
        #: Validated response heads by (status, content type, length, close).
        self._writer = ResponseWriter()

    @property
    def open_connections(self) -> int:
        return self._open

    def stop(self) -> None:
        """Begin a graceful shutdown (idempotent); :meth:`serve` returns when it is done."""
        self._stop.set()

    async def serve(
        self,
        listeners: Sequence[trio.SocketListener],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept and serve connections until :meth:`stop`, then drain and return.

        Reports started once every listener is accepting. The listeners are closed on
        return. If cancelled, open connections are closed at once (no grace).
        """
        try:
            async with trio.open_nursery() as watch:
                watch.start_soon(self._watchdog)
                try:
                    await self._serve(listeners, task_status)
                finally:
                    watch.cancel_scope.cancel()
        finally:
            for listener in listeners:
                await trio.aclose_forcefully(listener)

    async def _serve(
        self, listeners: Sequence[trio.SocketListener], task_status: trio.TaskStatus[None]
    ) -> None:
        cfg = self.config
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as acceptors:
                for listener in listeners:
                    acceptors.start_soon(self._accept_loop, listener, connections)
                task_status.started()
                await self._stop.wait()
                acceptors.cancel_scope.cancel()
            for listener in listeners:
                await trio.aclose_forcefully(listener)
            self._draining = True
            self._cancel(_IDLE)
            if self._open:
                log_event(log, logging.INFO, "draining", connections=self._open)
                with trio.move_on_after(cfg.shutdown_grace):
                    await self._all_closed.wait()
                self._cancel(_WORKING)
                # Backstop: answering the 503s and closing may take one more second.
                connections.cancel_scope.deadline = trio.current_time() + 1.0

    async def _watchdog(self) -> None:
        """Cancel each connection whose phase deadline has passed, every _TICK_S seconds.

        Coarse timers on purpose: moving a cancel scope's deadline at every phase of
        every request (idle, reading, working, writing) cost about 5 % of a small
        request's CPU; a plain attribute and a scan a few times a second cost nothing
        per request, and the limits are seconds long, so a quarter second late is fine.
        """
        while True:
            await trio.sleep(_TICK_S)
            now = trio.current_time()
            for state in list(self._states):
                if state.deadline <= now:
                    state.deadline = math.inf
                    state.timer.cancel()

    def _cancel(self, phase: int) -> None:
        for state in list(self._states):
            if state.phase == phase:
                state.timer.cancel()

    # --- accepting ------------------------------------------------------------------------

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_RETRY_ERRNOS:
                    raise
                # Out of file descriptors or memory: wait for connections to close.
                log_event(log, logging.WARNING, "accept_failed", error=errno.errorcode[exc.errno])
                await trio.sleep(0.1)
                continue
            # Per address, so that one address cannot hold every connection (a flood of
            # idle links once did): a getpeername per connection, not per request.
            key = _peer_key(stream)
            held = self._per_address.get(key, 0)
            if (
                self._open >= self.config.max_connections
                or held >= self.config.max_connections_per_address
            ):
                self.metrics.connections_refused.inc()
                if self._refusals < _MAX_REFUSALS:
                    self._refusals += 1
                    nursery.start_soon(self._refuse, stream)
                else:
                    await trio.aclose_forcefully(stream)
                continue
            # Counted here, not in the task, so a burst of accepts cannot overshoot.
            self._open += 1
            self._per_address[key] = held + 1
            self.metrics.connections.inc()
            nursery.start_soon(self._connection, stream, key)

    async def _refuse(self, stream: trio.SocketStream) -> None:
        try:
            body = b"unavailable: too many connections, try again later\n"
            head = (
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8"
                b"\r\nconnection: close\r\ncontent-length: %d\r\n\r\n" % len(body)
            )
            with trio.move_on_after(1.0):
                await stream.send_all(head + body)
                await _linger(stream, 0.5)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            self._refusals -= 1
            await trio.aclose_forcefully(stream)

    # --- one connection --------------------------------------------------------------------

    async def _connection(self, stream: trio.SocketStream, key: str) -> None:
        state = _ConnState(trio.CancelScope())
        try:
            await self._serve_connection(stream, state)
        except (trio.BrokenResourceError, trio.ClosedResourceError, _ClientGone):
            pass
        except Exception:
            # A bug: log it (never the peer; rate limited per peer, who may set it off
            # again and again), answer 500 if h11 still allows a response, and drop this
            # connection, not the server.
            self.warnings.warn(
                log, "connection_failed", _peer_key(stream), level=logging.ERROR, exc_info=True
            )
            await self._answer_500(stream, state)
        finally:
            self._open -= 1
            held = self._per_address[key] - 1
            if held:
                self._per_address[key] = held
            else:
                del self._per_address[key]
            self.metrics.connections.dec()
            await trio.aclose_forcefully(stream)
            if self._draining and self._open == 0:
                self._all_closed.set()

    async def _answer_500(self, stream: trio.SocketStream, state: _ConnState) -> None:
        conn = state.conn
        if conn is None or conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        response = text_response(500, "internal: the node failed to handle this", close=True)
        with (
            trio.move_on_after(1.0),
            contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
        ):
            await self._writer.send_response(conn, SocketIO(stream), response)

    async def _serve_connection(self, stream: trio.SocketStream, state: _ConnState) -> None:
        cfg = self.config
        try:
            peer = str(stream.socket.getpeername()[0])
        except (OSError, IndexError):
            peer = ""
        limiter = self.limiter
        bucket = client_key(peer) if limiter is not None else ""
        conn = state.conn = h11.Connection(
            h11.SERVER, max_incomplete_event_size=cfg.max_header_bytes
        )
        head = ["-", "-"]  # method and path of the current request, once known
        # One cancel scope for the connection's whole life, cancelled by the watchdog when
        # the phase's ``state.deadline`` passes (a scope per phase, or moving a scope's
        # deadline at each phase, costs more than the rest of a small request).
        timer = state.timer
        # Reads and writes go straight to the socket (node/sockio.py): at rest, trio's
        # stream layers cost about as much as the rest of a small request.
        io = SocketIO(stream)
        self._states.add(state)
        try:
            with timer:
                while True:
                    # Between requests: up to idle_timeout for the next one to begin.
                    if not conn.trailing_data[0]:
                        if self._draining:
                            return
                        state.phase = _IDLE
                        state.deadline = trio.current_time() + cfg.idle_timeout
                        data = await io.receive_some(_RECV_BYTES)
                        if not data:
                            return
                        conn.receive_data(data)
                    else:
                        # Pipelined: the next request is here already. A read is the
                        # loop's only sure checkpoint (a write that completes at once is
                        # none): without this one, a client pipelining thousands of small
                        # requests in one segment would hold the whole node until done.
                        await trio.lowlevel.checkpoint()

                    # The whole request within request_timeout of its first byte.
                    # Armed lazily (by _next_event) when reading has to wait: most
                    # requests arrive whole in the first read and never need it.
                    state.phase = _READING
                    state.read_deadline = trio.current_time() + cfg.request_timeout
                    head[0] = head[1] = "-"
                    response: Response | None = None
                    try:
                        route, request = await self._read_request(
                            conn, io, state, head, limiter, bucket, peer
                        )
                    except _Refusal as refusal:
                        response = refusal.response
                    except h11.RemoteProtocolError as exc:
                        response = _protocol_error(exc)
                    if response is None and route.upgrade is not None:
                        await self._switch(conn, stream, state, head, route, peer)
                        return
                    if response is None:
                        # No deadline while the handler works: a long-poll may wait long;
                        # the handlers bound their own time (hop and deliver timeouts).
                        state.phase = _WORKING
                        state.deadline = math.inf
                        request.peer = peer
                        response = await self._run_handler(route, request)

                    state.phase = _WRITING
                    state.deadline = trio.current_time() + cfg.write_timeout
                    if not await self._respond(conn, io, head, response):
                        return
                    if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                        # A refusal (Connection: close) or the client asked to close.
                        if response.close:
                            await _linger(stream, _LINGER_SECONDS)
                        return
                    conn.start_next_cycle()
        finally:
            self._states.discard(state)
        # Only the timer (a deadline, or shutdown) gets here: answer if there is a request
        # to answer, then close. Idle and writing connections just close.
        if state.phase == _READING:
            late = text_response(408, "request_timeout: the request did not arrive in time")
        elif state.phase == _WORKING:
            late = text_response(503, "unavailable: the node is shutting down")
        else:
            return
        late.close = True
        with trio.move_on_after(cfg.write_timeout):
            if await self._respond(conn, io, head, late):
                await _linger(stream, _LINGER_SECONDS)

    async def _switch(
        self,
        conn: h11.Connection,
        stream: trio.SocketStream,
        state: _ConnState,
        head: list[str],
        route: Route,
        peer: str,
    ) -> None:
        """Answer 101 and hand the connection to ``route.upgrade`` until it returns.

        The upgraded connection counts as working: on shutdown its handler sees the
        stop event at once, and is cancelled after ``shutdown_grace`` like a request.
        """
        assert route.upgrade is not None
        state.phase = _WRITING
        state.deadline = trio.current_time() + self.config.write_timeout
        switch = h11.InformationalResponse(
            status_code=101,
            headers=[(b"upgrade", route.upgrade_token), (b"connection", b"Upgrade")],
        )
        self.metrics.count_request(head[0], self.metrics.path_label(head[1]), 101)
        await stream.send_all(conn.send(switch) or b"")
        initial = bytes(conn.trailing_data[0])
        state.phase = _WORKING
        state.deadline = math.inf
        await route.upgrade(stream, initial, peer, self._stop)

    async def _respond(
        self, conn: h11.Connection, io: AnySocketIO, head: list[str], response: Response
    ) -> bool:
        if self._draining:
            response.close = True
        self.metrics.count_request(head[0], self.metrics.path_label(head[1]), response.status)
        return await self._writer.send_response(conn, io, response)

    async def _read_request(
        self,
        conn: h11.Connection,
        io: AnySocketIO,
        state: _ConnState,
        head: list[str],
        limiter: TokenBucketLimiter | None,
        bucket: str,
        peer: str,
    ) -> tuple[Route, Request]:
        """Read one request; raises _Refusal (answer and close), _ClientGone, or h11's errors.

        Fills ``head`` with the method and path as soon as they are known.
        """
        event = await _next_event(conn, io, state)
        if type(event) is not h11.Request:
            # ConnectionClosed between requests: nothing to answer.
            raise _ClientGone
        # h11 bounds a head that is still arriving; one that arrived whole in a single
        # read is measured here, so the limit holds however the bytes were split.
        size = len(event.method) + len(event.target) + 12
        for name, value in event.headers:
            size += len(name) + len(value) + 4
        if size > self.config.max_header_bytes:
            raise _Refusal(_head_too_large())
        method = event.method.decode("ascii", "replace")
        target = event.target.decode("ascii", "replace")
        path, _, query = target.partition("?")
        head[0] = method
        head[1] = path
        route = self.routes.get(path)
        if route is None:
            raise _Refusal(text_response(404, f"not_found: no resource at {path[:64]}", close=True))
        if method not in route.methods:
            allowed = ", ".join(route.methods)
            raise _Refusal(
                text_response(405, f"method_not_allowed: {path} takes {allowed}", close=True)
            )
        if (
            route.rate_limited
            and limiter is not None
            and not limiter.allow(bucket, trio.current_time())
            # Exemption is asked only of a client over its limit (cheap on the hot path),
            # and per request: the set of exempt relays changes with each consensus.
            and not limiter.is_exempt(peer)
        ):
            self.metrics.rate_limited.inc()
            raise _Refusal(
                text_response(429, "rate_limited: too many requests, slow down", close=True)
            )
        for name, value in event.headers:
            if name == b"content-length":
                # h11 has checked that it is a number; compare before reading any body.
                if int(value) > route.max_body:
                    raise _Refusal(_too_large(route.max_body))
                break
        if route.upgrade is not None:
            if not _asks_upgrade(event.headers, route.upgrade_token):
                token = route.upgrade_token.decode("ascii", "replace")
                raise _Refusal(
                    text_response(
                        426, f"upgrade_required: {path} takes Upgrade: {token}", close=True
                    )
                )
            # Who may upgrade (links: a listed node's proof), once per connection.
            refused = route.upgrade_check and route.upgrade_check(event.headers)
            if refused:
                raise _Refusal(text_response(refused[0], refused[1], close=True))
        if conn.they_are_waiting_for_100_continue:
            go_on = h11.InformationalResponse(status_code=100, headers=[])
            await io.send_all(conn.send(go_on) or b"")
        body = await _read_body(conn, io, state, route.max_body)
        return route, Request(method, path, query, body, "")

    async def _run_handler(self, route: Route, request: Request) -> Response:
        try:
            return await route.handler(request)
        except Exception:
            self.warnings.warn(
                log,
                "handler_failed",
                client_key(request.peer),
                level=logging.ERROR,
                exc_info=True,
                path=request.path,
            )
            return text_response(500, "internal: the node failed to handle this")


def _peer_key(stream: trio.SocketStream) -> str:
    """The rate-limit key of the peer of ``stream`` ("" if the socket cannot say)."""
    try:
        return client_key(str(stream.socket.getpeername()[0]))
    except (OSError, IndexError):
        return ""
