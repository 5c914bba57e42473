"""The sending side of node-to-node links: :class:`LinkPool`, one multiplexed link per peer.

Design note
-----------
A relay calls :meth:`LinkPool.forward` for each packet, and replication
(node/replication/requests.py) :meth:`LinkPool.replicate` for each push, pull and
forward frame, on the same links. Per peer ``(host, port)`` there is at most one link,
opened on first use (a TCP connect and the ``GET /link`` upgrade, within
``connect_timeout``). Many packets are in flight on it at once, each a stream; a reader
task per link matches responses to their waiting requests by stream number. Sending
needs no task of its own (writer.py). A peer that answers the upgrade with 400, 404,
405, 426 or 501 is reached over HTTP (``POST /onion``, or a replication frame's ``POST
/replicate...``) for ``fallback_ttl`` seconds. The upgrade carries this node's proof of
identity for the peer's node ID (veil.onion.link; ``server_id_for`` finds the ID listed
at the peer's address, once per link opened), without which a node in a network answers
403. A 403 also comes from a peer whose consensus does not list this node yet (a node
that just joined, until its peers fetch the next consensus), and a 503 from a peer that
has no consensus yet to check the proof against (it just started): that packet, and the
peer's packets for ``_NOT_LISTED_RETRY_S``, go by ``POST /onion``, which any node takes
(rate limited as a client's until the peer lists us), and then the link is tried again.
Deadlines ride with the request and a watchdog fails late ones four times a second (a
cancel scope per packet cost about 5 % of a relayed packet's CPU). This is the relay's
hot path: ``./scripts/bench node`` measures it. The whole contract (bounds, errors, the
one resend on a fresh link) is in the package's note, node/link/__init__.py.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import h11
import trio

from veil.onion.errors import HopTimeout, HopUnreachable, RateLimited
from veil.onion.hostport import format_hostport
from veil.onion.keys import NodeKeys
from veil.onion.link import (
    MAX_RESPONSE_LEN,
    PROOF_HEADER,
    REPLICATION_KINDS,
    REQUEST,
    RESPONSE,
    UPGRADE_PATH,
    UPGRADE_TOKEN,
    FrameReader,
    LinkProtocolError,
    encode_replication_request,
    encode_request,
    make_link_proof,
)

from ..logging import PeerWarnings, log_event
from ..peers import PeerPool
from ..sockio import SocketIO
from .writer import _FRAMES_PER_CHECKPOINT, _RECV_BYTES, _FrameWriter, _LinkDown

__all__ = ["HttpForwarder", "LinkPool", "open_link_pool"]

log = logging.getLogger("veil.node.link")

#: Answers to the upgrade that mean "no link here" (use POST /onion); any other
#: failure (429, a reset) is the peer's trouble, not its version.
_NO_LINK_STATUSES = frozenset({400, 404, 405, 426, 501})
#: Answers that mean "no link from you yet": 403, the peer does not list this node (yet)
#: or refused its proof; 503, the peer has no consensus yet to check the proof against
#: (it just started), or is shutting down (then POST /onion fails as the link would).
_NOT_YET_STATUSES = frozenset({403, 503})
#: Such a peer gets POST /onion for this long, then the link is tried again: its
#: consensus lists a node that just joined within an interval or so.
_NOT_LISTED_RETRY_S = 5.0
#: How often the pool's watchdog looks for requests past their deadline (seconds).
_TICK_S = 0.25
#: The largest HTTP head accepted in answer to the upgrade request.
_MAX_HANDSHAKE_HEAD = 8192

#: Who this node is when it opens a link: its keys, the node ID listed at a peer's
#: ``(host, port)`` (None: unknown, the upgrade goes without a proof), and its clock (ms).
LinkIdentity = tuple[NodeKeys, Callable[[str, int], bytes | None], Callable[[], int]]


class _NotListed(Exception):
    """The peer refused our link upgrade for now, 403 or 503 (see ``_NOT_YET_STATUSES``)."""

    def __init__(self, hostport: str, status: int) -> None:
        super().__init__(f"{hostport} refused the link upgrade with {status}")
        self.status = status


class _Link:
    """One outgoing link: its stream, writer, and the requests waiting for responses."""

    __slots__ = ("_next", "answered", "closed", "io", "last_used", "stream", "waiting", "writer")

    def __init__(self, stream: trio.SocketStream, write_timeout: float) -> None:
        self.stream = stream
        self.io = SocketIO(stream)
        self.writer = _FrameWriter(self.io, write_timeout)
        #: stream number -> [task, result, parked, deadline]: result is (status,
        #: payload), _LinkDown or HopTimeout; the task is rescheduled only once parked
        #: (it may still be sending); deadline is on trio's clock.
        self.waiting: dict[int, list[Any]] = {}
        self._next = 0
        self.answered = 0
        self.closed = False
        self.last_used = trio.current_time()

    def next_stream(self) -> int:
        n = self._next
        self._next = (n + 1) & 0xFFFF_FFFF
        return n

    def fail_all(self, reason: str) -> None:
        """Wake every waiting request with _LinkDown (the link is gone)."""
        self.closed = True
        self.writer.broken = True
        waiting, self.waiting = self.waiting, {}
        for slot in waiting.values():
            slot[1] = _LinkDown(reason)
            if slot[2]:
                trio.lowlevel.reschedule(slot[0])


class LinkPool:
    """Outgoing links to peers; see the module docstring. Made by :func:`open_link_pool`."""

    def __init__(
        self,
        nursery: trio.Nursery,
        http: PeerPool,
        *,
        max_streams: int = 256,
        connect_timeout: float = 5.0,
        idle_timeout: float = 60.0,
        write_timeout: float = 10.0,
        fallback_ttl: float = 600.0,
        warnings: PeerWarnings | None = None,
        identity: LinkIdentity | None = None,
    ) -> None:
        """``identity`` proves who opens each link (None: no proof, which only a
        standalone node accepts; tests and benchmarks)."""
        self._nursery = nursery
        self.identity = identity
        #: Where a next hop's bad frames go (rate-limited lines and a metric).
        self.warnings = warnings or PeerWarnings()
        self.http = http
        self.max_streams = max_streams
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.write_timeout = write_timeout
        self.fallback_ttl = fallback_ttl
        self._links: dict[tuple[str, int], _Link] = {}
        self._opening: dict[tuple[str, int], trio.Event] = {}
        #: Peers that refused the upgrade -> when to try it again.
        self._http_until: dict[tuple[str, int], float] = {}
        self._next_sweep = trio.current_time() + idle_timeout / 2
        self._closed = False

    @property
    def open_links(self) -> int:
        return len(self._links)

    async def forward(
        self, host: str, port: int, packet: bytes, *, timeout: float
    ) -> tuple[int, bytes]:
        """Send onion ``packet`` to the node at ``host:port``; its ``(status, body)``.

        Status 200 carries the next hop's reply; other statuses carry its explanation
        (as ``POST /onion`` answers would). ``timeout`` bounds everything: waiting for a
        link to open, sending, and the response. Raises HopTimeout, HopUnreachable, or
        RateLimited (too many requests in flight to that peer). If the calling task is
        cancelled, its stream is forgotten and Cancelled propagates; the link stays up.
        """
        return await self._request(host, port, REQUEST, packet, "/onion", timeout)

    async def replicate(
        self, host: str, port: int, kind: int, frame: bytes, *, path: str, timeout: float
    ) -> tuple[int, bytes]:
        """Send replication ``frame`` (a sealed push, pull or forward; ``kind`` one of
        :data:`veil.onion.link.REPLICATION_KINDS`) to the node at ``host:port``; its
        ``(status, body)``, as ``POST path`` would answer (``path`` is the frame's HTTP
        route, used when the peer does not speak the link).

        Everything else as :meth:`forward`: the same link per peer (shared with onion
        packets), fallback, timeout, errors, cancellation, and the one resend on a fresh
        link, which is safe because the receiver's ReplayGuard takes a frame at most once
        (see the package note). Raises ValueError for a kind that is not replication's.
        """
        if kind not in REPLICATION_KINDS:
            raise ValueError(f"{kind} is not a replication request kind")
        return await self._request(host, port, kind, frame, path, timeout)

    async def _request(
        self, host: str, port: int, kind: int, payload: bytes, path: str, timeout: float
    ) -> tuple[int, bytes]:
        if self._closed:
            # Misuse (a packet after close): a bug in the node, never an operator's error.
            raise RuntimeError("LinkPool is closed")
        key = (host, port)
        now = trio.current_time()
        if now >= self._next_sweep:
            self._sweep(now)
        until = self._http_until.get(key)
        if until is not None:
            if now < until:
                return await self.http.post(host, port, path, payload, timeout=timeout)
            del self._http_until[key]
        # No cancel scope per packet (it costs about 5 % of a relayed packet): the
        # deadline rides with the request and the pool's watchdog enforces it. Opening a
        # link has its own connect_timeout.
        return await self._send(key, kind, payload, path, now + timeout)

    async def _send(
        self, key: tuple[str, int], kind: int, payload: bytes, path: str, deadline: float
    ) -> tuple[int, bytes]:
        link = self._links.get(key)
        opened = link is None
        if link is None:
            link = await self._get_link(key)
            if link is None:  # the peer does not speak the link: HTTP it is
                return await self._post(key, path, payload, deadline)
        try:
            return await self._exchange(link, kind, payload, deadline)
        except _LinkDown as exc:
            if opened or not link.answered:
                raise HopUnreachable(f"{key[0]}:{key[1]}: {exc}") from None
        # A link that worked broke under us: perhaps closed as idle. Once more, anew (the
        # same bytes: the next hop's replay cache, or a replication frame's ReplayGuard,
        # lets a request take effect at most once; see the package note).
        link = await self._get_link(key)
        if link is None:
            return await self._post(key, path, payload, deadline)
        try:
            return await self._exchange(link, kind, payload, deadline)
        except _LinkDown as exc:
            raise HopUnreachable(f"{key[0]}:{key[1]}: {exc}") from None

    async def _post(
        self, key: tuple[str, int], path: str, payload: bytes, deadline: float
    ) -> tuple[int, bytes]:
        left = deadline - trio.current_time()
        if left <= 0:
            raise HopTimeout(f"{key[0]}:{key[1]} did not answer in time")
        return await self.http.post(key[0], key[1], path, payload, timeout=left)

    async def _exchange(
        self, link: _Link, kind: int, payload: bytes, deadline: float
    ) -> tuple[int, bytes]:
        if len(link.waiting) >= self.max_streams:
            raise RateLimited("too many requests in flight to the next hop")
        stream_id = link.next_stream()
        frame = (
            encode_request(stream_id, payload)
            if kind == REQUEST
            else encode_replication_request(kind, stream_id, payload)
        )
        slot: list[Any] = [trio.lowlevel.current_task(), None, False, deadline]
        link.waiting[stream_id] = slot
        link.last_used = trio.current_time()
        try:
            await link.writer.send(frame)
        except _LinkDown:
            link.waiting.pop(stream_id, None)
            self._close_link(link, "send failed")
            raise

        def abort(_: object) -> trio.lowlevel.Abort:
            link.waiting.pop(stream_id, None)
            return trio.lowlevel.Abort.SUCCEEDED

        if slot[1] is None:
            slot[2] = True
            await trio.lowlevel.wait_task_rescheduled(abort)
        else:
            await trio.lowlevel.checkpoint()
        result = slot[1]
        if isinstance(result, Exception):  # _LinkDown, HopTimeout
            raise result
        return result

    async def _watchdog(self) -> None:
        """Every _TICK_S seconds, fail the requests past their deadline with HopTimeout."""
        while True:
            await trio.sleep(_TICK_S)
            now = trio.current_time()
            for (host, port), link in list(self._links.items()):
                late = [n for n, slot in link.waiting.items() if slot[3] <= now]
                for n in late:
                    slot = link.waiting.pop(n)
                    slot[1] = HopTimeout(f"{host}:{port} did not answer in time")
                    if slot[2]:
                        trio.lowlevel.reschedule(slot[0])

    async def _get_link(self, key: tuple[str, int]) -> _Link | None:
        """The peer's open link, opening it if need be; None if it refuses the upgrade."""
        while True:
            if self._closed:
                raise HopUnreachable("LinkPool is closed")
            link = self._links.get(key)
            if link is not None:
                if not link.closed:
                    return link
                # Closed (a failed write) but its reader has not run yet to forget it:
                # forget it now, so that a retry opens a new link instead of this one.
                del self._links[key]
            if key in self._http_until:
                return None
            pending = self._opening.get(key)
            if pending is None:
                break
            await pending.wait()  # someone else is opening it: use theirs
        done = self._opening[key] = trio.Event()
        try:
            try:
                stream = await self._open(key)
            except _NotListed as exc:
                self._http_until[key] = trio.current_time() + _NOT_LISTED_RETRY_S
                log_event(log, logging.INFO, "link_refused", fallback="http", status=exc.status)
                return None
            if stream is None:
                self._http_until[key] = trio.current_time() + self.fallback_ttl
                log_event(log, logging.INFO, "link_refused", fallback="http")
                return None
            if self._closed:
                await trio.aclose_forcefully(stream[0])
                raise HopUnreachable("LinkPool closed while connecting")
            link = _Link(stream[0], self.write_timeout)
            self._links[key] = link
            self._nursery.start_soon(self._read, key, link, stream[1])
            return link
        finally:
            del self._opening[key]
            done.set()

    async def _open(self, key: tuple[str, int]) -> tuple[trio.SocketStream, bytes] | None:
        """Connect and upgrade: the stream and bytes already read after the 101."""
        host, port = key
        with trio.move_on_after(self.connect_timeout) as scope:
            try:
                stream = await trio.open_tcp_stream(host, port)
            except OSError as exc:
                raise HopUnreachable(f"cannot connect to {host}:{port}: {exc}") from None
            try:
                extra = await _handshake(stream, host, port, self._proof(host, port))
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
            if extra is None:
                await trio.aclose_forcefully(stream)
                return None
            return stream, extra
        assert scope.cancelled_caught
        raise HopTimeout(f"opening a link to {host}:{port} timed out")

    async def _read(self, key: tuple[str, int], link: _Link, initial: bytes) -> None:
        """The link's reader task: responses to their requests, until the link ends."""
        reader = FrameReader(RESPONSE, MAX_RESPONSE_LEN)
        reason = "closed by the peer"
        try:
            if initial:
                reader.receive_data(initial)
            unread = 0
            while True:
                frame = reader.next_frame()
                if frame is None:
                    data = await link.io.receive_some(_RECV_BYTES)
                    if not data:
                        break
                    reader.receive_data(data)
                    unread = 0
                    continue
                unread += 1
                if unread % _FRAMES_PER_CHECKPOINT == 0:
                    await trio.lowlevel.checkpoint()  # see _FRAMES_PER_CHECKPOINT
                slot = link.waiting.pop(frame.stream, None)
                if slot is None:
                    continue  # its request was cancelled or timed out
                link.answered += 1
                slot[1] = (frame.status, frame.payload)
                if slot[2]:
                    trio.lowlevel.reschedule(slot[0])
        except LinkProtocolError as exc:
            reason = f"bad frame: {exc}"
            self.warnings.warn(
                log,
                "link_bad_response",
                key,
                peer=format_hostport(*key),  # a relay's address: public in the directory
                error=str(exc)[:80],
            )
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            reason = f"connection lost: {exc}"
        finally:
            self._close_link(link, reason)
            if self._links.get(key) is link:
                del self._links[key]
            await trio.aclose_forcefully(link.stream)

    def _proof(self, host: str, port: int) -> bytes | None:
        """The upgrade's proof header for the peer at ``host:port``, if we can make one."""
        if self.identity is None:
            return None
        keys, server_id_for, clock = self.identity
        server_id = server_id_for(host, port)
        if server_id is None:
            return None  # not listed (or standalone): a node in a network will say 403
        return make_link_proof(keys, server_id, clock())

    def _close_link(self, link: _Link, reason: str) -> None:
        if not link.closed:
            link.fail_all(reason)
            # Wakes the reader (ClosedResourceError), which forgets the link.
            link.stream.socket.close()

    def _sweep(self, now: float) -> None:
        """Close links with nothing in flight and unused for ``idle_timeout``."""
        self._next_sweep = now + self.idle_timeout / 2
        oldest_ok = now - self.idle_timeout
        for link in list(self._links.values()):
            if not link.waiting and link.last_used < oldest_ok:
                self._close_link(link, "idle")
        for key, until in list(self._http_until.items()):
            if until <= now:
                del self._http_until[key]

    def close(self) -> None:
        self._closed = True
        for link in list(self._links.values()):
            self._close_link(link, "the pool is closing")


async def _handshake(
    stream: trio.SocketStream, host: str, port: int, proof: bytes | None
) -> bytes | None:
    """Ask for the upgrade (with ``proof``, if any); the bytes after the 101, or None if
    the peer does not speak this link (use POST /onion)."""
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HANDSHAKE_HEAD)
    hostport = format_hostport(host, port)
    headers = [
        (b"host", hostport.encode("ascii")),
        (b"connection", b"Upgrade"),
        (b"upgrade", UPGRADE_TOKEN),
    ]
    if proof is not None:
        headers.append((PROOF_HEADER, proof))
    request = h11.Request(method="GET", target=UPGRADE_PATH, headers=headers)
    try:
        await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(_RECV_BYTES)
                if len(data) > _MAX_HANDSHAKE_HEAD:
                    return None  # not an answer to an upgrade
                conn.receive_data(data)
                continue
            if type(event) is h11.InformationalResponse and event.status_code == 101:
                if conn.our_state is not h11.SWITCHED_PROTOCOL:
                    return None
                return bytes(conn.trailing_data[0])
            if type(event) is h11.InformationalResponse:
                continue  # e.g. 100 Continue
            if type(event) is h11.Response:
                if event.status_code in _NO_LINK_STATUSES:
                    return None  # a node without links (or that refuses ours)
                if event.status_code in _NOT_YET_STATUSES:
                    raise _NotListed(hostport, event.status_code)
                if event.status_code == 429:
                    raise RateLimited(f"{hostport} is rate limiting, slow down")
                raise HopUnreachable(f"{hostport} answered the link upgrade {event.status_code}")
            raise HopUnreachable(f"{hostport} closed the connection during the link upgrade")
    except h11.ProtocolError as exc:
        raise HopUnreachable(f"{hostport} answered the link upgrade with bad HTTP: {exc}") from None
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        raise HopUnreachable(f"link handshake with {hostport} failed: {exc}") from None


@asynccontextmanager
async def open_link_pool(
    http: PeerPool,
    *,
    max_streams: int = 256,
    connect_timeout: float = 5.0,
    idle_timeout: float = 60.0,
    write_timeout: float = 10.0,
    fallback_ttl: float = 600.0,
    warnings: PeerWarnings | None = None,
    identity: LinkIdentity | None = None,
) -> AsyncIterator[LinkPool]:
    """A :class:`LinkPool` whose reader tasks live in a nursery of its own.

    On exit (normal, error or cancellation) every link is closed and requests still
    waiting on one fail with HopUnreachable. ``http`` is the pool for peers that do not
    speak the link; it stays open (its owner closes it).
    """
    async with trio.open_nursery() as nursery:
        pool = LinkPool(
            nursery,
            http,
            max_streams=max_streams,
            connect_timeout=connect_timeout,
            idle_timeout=idle_timeout,
            write_timeout=write_timeout,
            fallback_ttl=fallback_ttl,
            warnings=warnings,
            identity=identity,
        )
        try:
            nursery.start_soon(pool._watchdog)
            yield pool
        finally:
            pool.close()
            nursery.cancel_scope.cancel()


class HttpForwarder:
    """Packets to the next hop as one ``POST /onion`` each (``[link] enabled = false``)."""

    def __init__(self, http: PeerPool) -> None:
        self.http = http

    async def forward(
        self, host: str, port: int, packet: bytes, *, timeout: float
    ) -> tuple[int, bytes]:
        """As :meth:`LinkPool.forward`, over :meth:`veil.node.peers.PeerPool.post`."""
        return await self.http.post(host, port, "/onion", packet, timeout=timeout)
