"""A service node assembled: keys, store, peers, onion handler and HTTP routes.

Design note
-----------
:func:`open_node` is the node as a library: an async context manager that opens the data
directory, the storage service and the peer pool, binds the listener and serves until
its block ends, then shuts down gracefully. The benchmark and tests may run a node in
their own process with it; ``veil-node run`` is :func:`run_node` (the same thing plus
the signal handling) under ``trio.run``.

Routes (all answers to bad requests are short ``text/plain`` bodies)::

    POST /onion          body: a packet; 200 + the reply (octets), or 400/413/429
    GET  /info           JSON: node_id, onion_key (hex), version, time_ms, address,
                         and epoch and swarm_id once a consensus lists the node
    GET  /consensus      with [network] file only: the signed consensus the node adopted,
                         byte for byte (``?after=E``: 304 unless newer than epoch E);
                         503 before it has one (node/consensus_route.py)
    GET  /metrics        Prometheus text format, this node's registry only
    POST /debug/clock    only with [debug] clock_control: JSON {"offset_ms": int}
                         shifts the node's clock (tests of TTL expiry and clock skew)

The node's clock (:class:`NodeClock`) is wall-clock ms plus an offset that is always 0
unless ``clock_control`` is on; the store, the RPC's signature window, the replay cache
and ``/info`` all read it, so a test that moves it moves the whole node consistently.

Network: with ``[network] file`` set, :attr:`Node.network` follows the authorities'
consensus (:mod:`veil.node.network_view`; its directory client, :mod:`veil.node.directory_client`,
starts before ``node.json`` is written, with the saved consensus loaded), the relay
forwards only to listed next hops, and the ``/onion`` rate limit exempts the addresses of
listed nodes (relays). Without it, :attr:`Node.network` is a standalone view that owns
every account.

Start-up order: data directory and its lock, keys, store, peer pool, listener, then
``DIR/node.json`` (so a file that names a pid means that node answers). Shut-down order
is the reverse: stop accepting, drain requests (``http.shutdown_grace``), close the peer
pool, close the store (queued writes are committed first), remove ``node.json``, release
the lock. A node that is cancelled instead skips the grace (requests are cut) but still
closes the store.

What lives elsewhere: the storage figures ``/metrics`` reads (node/storage_figures.py)
and the small HTTP pieces (node/http_parts.py: the replication routes' adapter, the
relay-exempt limit). What stays here (about 500 lines) is where the node's parts meet:
the routes and the start-up and shut-down order above, each a few lines wiring other
modules to the :class:`Node`'s fields; split further, each part would reach back into
those fields and the order would be read across files.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from veil.onion import __version__
from veil.onion.errors import (
    PacketError,
)
from veil.onion.hostport import format_hostport
from veil.onion.keys import NodeKeys
from veil.onion.link import (
    REPLICATE_FORWARD,
    REPLICATE_PULL,
    REPLICATE_PUSH,
    REQUEST,
    UPGRADE_PATH,
    UPGRADE_TOKEN,
)
from veil.onion.packet import MAX_PACKET_LEN
from veil.onion.replay import ReplayCache
from veil.onion.replication_frames import MAX_FRAME
from veil.onion.wallclock import wall_clock_ms

from .config import NodeConfig
from .consensus_route import CONSENSUS_PATH, consensus_route
from .directory_client import DirectoryClient, advertised_address, load_network_file
from .http_parts import RelayExemptLimiter, frame_answer, frame_route, take_body
from .keystore import (
    NODE_INFO_FILE,
    STORE_FILE,
    load_or_create_keys,
    lock_data_dir,
    prepare_data_dir,
    write_file_atomic,
)
from .link import HttpForwarder, LinkPool, open_link_pool, serve_link
from .link.auth import LinkGate, listed_node_id
from .logging import PeerWarnings, log_event
from .metrics import CONTENT_TYPE, METRICS_FORBIDDEN, MetricsAccess, NodeMetrics, StorageFigure
from .network_view import NetworkView
from .onion_handler import OnionHandler
from .peers import PeerPool
from .ratelimit import client_key
from .replication import FORWARD_PATH, PULL_PATH, PUSH_PATH, Replicator
from .server import HttpServer, Request, Response, Route, text_response
from .service import StorageService, open_storage_service
from .storage_figures import storage_figures
from .swarm_guard import SwarmGuard

__all__ = ["Node", "NodeClock", "open_node", "run_node"]

log = logging.getLogger("veil.node")

_JSON = b"application/json"
_OCTETS = b"application/octet-stream"
_PATH_LABELS = {"/onion": "/onion", "/info": "/info", "/metrics": "/metrics"}
_PATH_LABELS["/debug/clock"] = "/debug/clock"
_PATH_LABELS[UPGRADE_PATH] = UPGRADE_PATH
_PATH_LABELS[CONSENSUS_PATH] = CONSENSUS_PATH
_PATH_LABELS[PUSH_PATH] = PUSH_PATH
_PATH_LABELS[PULL_PATH] = PULL_PATH
_PATH_LABELS[FORWARD_PATH] = FORWARD_PATH
#: The route whose label counts a request of each link frame kind (``LINK /replicate``).
_LINK_PATHS = {
    REQUEST: "/onion",
    REPLICATE_PUSH: PUSH_PATH,
    REPLICATE_PULL: PULL_PATH,
    REPLICATE_FORWARD: FORWARD_PATH,
}


class NodeClock:
    """The node's wall clock in ms since the epoch, plus a test-only offset."""

    __slots__ = ("offset_ms",)

    def __init__(self) -> None:
        self.offset_ms = 0

    def __call__(self) -> int:
        return wall_clock_ms() + self.offset_ms


class Node:
    """A running node, as :func:`open_node` yields it."""

    def __init__(
        self,
        *,
        keys: NodeKeys,
        config: NodeConfig,
        data_dir: Path,
        clock: NodeClock,
        metrics: NodeMetrics,
        storage: StorageService,
        peers: PeerPool,
        links: LinkPool | None = None,
        network: NetworkView | None = None,
        peer_warnings: PeerWarnings | None = None,
    ) -> None:
        """``links`` carries relayed packets to next hops and replication frames to
        peers (None: ``POST /onion`` and ``POST /replicate...``);
        ``peer_warnings`` logs and counts peers' bad input (the links' too)."""
        self.keys = keys
        self.network = network or NetworkView(keys.identity_public, standalone=True)
        #: The directory client, when the node is a member of a network.
        self.directory: DirectoryClient | None = None
        self.config = config
        self._metrics_access = MetricsAccess(config.http.metrics_allow)
        self.data_dir = data_dir
        self.clock = clock
        self.metrics = metrics
        self.peer_warnings = peer_warnings or PeerWarnings(count=metrics.count_peer_error)
        self.storage = storage
        self.peers = peers
        self.host = ""
        self.port = 0
        #: Swarm replication (node/replication/), when the node is in a network; the
        #: storage service then checks every account against this node's swarm.
        self.replication: Replicator | None = None
        if not self.network.standalone:
            self.replication = Replicator(
                keys=keys,
                view=self.network,
                service=storage,
                peers=peers,
                clock=clock,
                config=config.replication,
                # Frames go on the links when they are on (node/replication/requests.py).
                links=links,
            )
            storage.swarms = SwarmGuard(self.network)
            storage.replication = self.replication
        on = config.onion
        self.onion = OnionHandler(
            keys,
            storage=storage,
            forwarder=links if links is not None else HttpForwarder(peers),
            # Tags live in memory: refuse packets stamped before this start, so a packet
            # seen before a restart cannot be replayed after it (onion/replay.py).
            replay=ReplayCache(on.replay_window_ms, on.replay_max_entries, clock()),
            clock=clock,
            metrics=metrics,
            hop_timeout=on.hop_timeout,
            deliver_timeout=on.deliver_timeout,
            next_hop_allowed=None if self.network.standalone else self.network.next_hop_allowed,
        )
        #: Who may open a link to this node: listed nodes with a proof (node/link/auth.py).
        self.link_gate = LinkGate(self.network, clock)
        rl = config.rate_limit
        limiter = (
            RelayExemptLimiter(rl.rate, rl.burst, rl.max_clients, rl.exempt, self.network)
            if rl.rate
            else None
        )
        self.limiter = limiter
        self.server = HttpServer(
            self._routes(),
            config.http,
            metrics=metrics,
            limiter=limiter,
            warnings=self.peer_warnings,
        )
        metrics.set_storage_source(self._storage_figures)

    @property
    def address(self) -> str:
        """Where the node listens, ``host:port``."""
        return format_hostport(self.host, self.port)

    @property
    def node_id(self) -> str:
        return self.keys.node_id

    def info(self) -> dict[str, Any]:
        """What ``GET /info`` answers (and, with the pid, what node.json holds)."""
        doc: dict[str, Any] = {
            "node_id": self.keys.node_id,
            "onion_key": self.keys.onion_public.hex(),
            "version": __version__,
            "time_ms": self.clock(),
            "address": self.address,
            "host": self.host,
            "port": self.port,
        }
        if self.network.consensus is not None:
            doc["epoch"] = self.network.consensus.epoch
            me = self.network.me()
            if me is not None:
                doc["swarm_id"] = me.swarm_id
        return doc

    def stop(self) -> None:
        """Begin a graceful shutdown; the :func:`open_node` block's exit waits for it."""
        if self.directory is not None:
            self.directory.stop()
        if self.replication is not None:
            # Stores still draining answer without waiting for pushes; peers pull them.
            self.replication.stop()
        # Waiting long-polls answer now, here and so at every relay of their paths,
        # instead of holding the drain for its whole grace (node/service/waiters.py).
        self.storage.waiters.close()
        self.server.stop()

    # --- routes ---------------------------------------------------------------------

    def _routes(self) -> dict[str, Route]:
        routes = {
            "/onion": Route(("POST",), self._onion, MAX_PACKET_LEN, rate_limited=True),
            "/info": Route(("GET",), self._info),
            "/metrics": Route(("GET",), self._metrics),
            # Node-to-node links (node/link/): rate limited per frame, like /onion and
            # /replicate... (onion packets and replication frames travel on them).
            UPGRADE_PATH: Route(
                ("GET",),
                self._onion,  # never called: the route only upgrades
                rate_limited=True,
                upgrade=self._serve_link,
                upgrade_token=UPGRADE_TOKEN,
                upgrade_check=self.link_gate.check,
            ),
        }
        if not self.network.standalone:
            # Clients fetch the consensus from their guards (node/consensus_route.py).
            routes[CONSENSUS_PATH] = consensus_route(self.network, self.clock)
        if self.config.debug.clock_control:
            routes["/debug/clock"] = Route(("POST",), self._debug_clock, 256)
        if self.replication is not None:
            # Rate limited like /onion: the limiter exempts listed nodes' addresses.
            r = self.replication
            for path, handle in (
                (PUSH_PATH, r.handle_push),
                (PULL_PATH, r.handle_pull),
                (FORWARD_PATH, r.handle_forward),
            ):
                routes[path] = Route(("POST",), frame_route(handle), MAX_FRAME, rate_limited=True)
        return routes

    async def _onion(self, request: Request) -> Response:
        # The source, for the storage service's long-poll shares, is the connecting
        # address keyed as the rate limit keys it (an IPv6 /64 is one source): for an onion
        # request that is the previous hop. The body is taken out of the request and passed
        # without a local name, so that OnionHandler.handle holds the only reference and
        # can drop the packet (its size class) while a long-poll waits (node/service.py).
        try:
            reply = await self.onion.handle(take_body(request), source=client_key(request.peer))
        except PacketError as exc:
            return text_response(400, f"{exc.status}: {exc}")
        return Response(200, reply, _OCTETS)

    async def _serve_link(
        self, stream: trio.SocketStream, initial: bytes, peer: str, stopping: trio.Event
    ) -> None:
        limiter = self.limiter
        if limiter is None:
            admit = _admit_all
        else:
            bucket = client_key(peer)

            def admit() -> bool:
                return limiter.allow(bucket, trio.current_time()) or limiter.is_exempt(peer)

        metrics = self.metrics
        labels = {kind: metrics.path_label(path) for kind, path in _LINK_PATHS.items()}

        def counted(kind: int, status: int) -> None:
            # As the HTTP routes are counted, with method LINK: "LINK /onion",
            # "LINK /replicate", "LINK /replicate/pull", "LINK /replicate/forward".
            metrics.count_request("LINK", labels[kind], status)
            if status == 429:
                metrics.rate_limited.inc()

        link = self.config.link
        await serve_link(
            stream,
            initial,
            # The link's peer is the previous hop of every packet on it: the same source
            # (for the long-poll shares, node/service.py) as its POST /onion would be.
            functools.partial(self._link_request, source=client_key(peer)),
            max_streams=link.max_streams,
            idle_timeout=link.accept_idle_timeout,
            write_timeout=self.config.http.write_timeout,
            admit=admit,
            stopping=stopping,
            on_request=counted,
            replicate=self._link_replicate if self.replication is not None else None,
            peer=client_key(peer),
            warnings=self.peer_warnings,
        )

    async def _link_replicate(self, kind: int, frame: bytes) -> tuple[int, bytes]:
        # The handlers and the typed-error -> status mapping of the POST routes
        # (frame_route), so a frame is answered alike on a link and over HTTP.
        r = self.replication
        assert r is not None  # only passed to serve_link when replicating
        if kind == REPLICATE_PUSH:
            return await frame_answer(r.handle_push, frame)
        if kind == REPLICATE_PULL:
            return await frame_answer(r.handle_pull, frame)
        return await frame_answer(r.handle_forward, frame)

    async def _link_request(self, packet: bytes, *, source: str) -> tuple[int, bytes]:
        # As in _onion: the handler holds the only reference while it runs.
        pending = self.onion.handle(packet, source=source)
        del packet
        try:
            return 200, await pending
        except PacketError as exc:
            return 400, f"{exc.status}: {exc}".encode()[:1000]

    async def _info(self, request: Request) -> Response:
        return Response(200, json.dumps(self.info()).encode(), _JSON)

    async def _metrics(self, request: Request) -> Response:
        if not self._metrics_access.allows(request.peer):
            return Response(403, METRICS_FORBIDDEN)
        return Response(200, self.metrics.render(), CONTENT_TYPE.encode())

    async def _debug_clock(self, request: Request) -> Response:
        try:
            doc = json.loads(request.body)
            offset_ms = doc["offset_ms"]
            if type(offset_ms) is not int or abs(offset_ms) > 10 * 365 * 86_400_000:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return text_response(400, 'bad_request: expected {"offset_ms": <int>}')
        self.clock.offset_ms = offset_ms
        log_event(log, logging.WARNING, "clock_moved", offset_ms=offset_ms)
        return Response(200, json.dumps({"time_ms": self.clock()}).encode(), _JSON)

    def _storage_figures(self) -> list[StorageFigure]:
        return storage_figures(self.storage, self.replication)


@asynccontextmanager
async def open_node(
    data_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 0,
    config: NodeConfig | None = None,
) -> AsyncIterator[Node]:
    """Run a node on ``host:port`` (0: a free port) with its data in ``data_dir``.

    Yields the :class:`Node` once it accepts connections (``node.port`` is the bound
    port and ``DIR/node.json`` is written). When the block ends, the node shuts down
    gracefully (see the module docstring); if the block raises or is cancelled, in-flight
    requests are cut at once, and the store is still closed. Raises
    :class:`~veil.node.keystore.KeystoreError` (data dir, keys, lock),
    :class:`~veil.onion.errors.NetworkFileError` (``[network] file``),
    :class:`~veil.node.config.ConfigError` (no address to advertise), ``OSError`` (listen),
    ``sqlite3.Error`` or :class:`~veil.node.errors.StoreError` (store) while starting.
    """
    config = config or NodeConfig()
    data_dir = Path(data_dir)
    clock = NodeClock()
    metrics = NodeMetrics(_PATH_LABELS)
    peer_warnings = PeerWarnings(count=metrics.count_peer_error)
    with ExitStack() as files:
        # The network file first: a typo in it must not leave a new key behind.
        network_file = load_network_file(config.network.file) if config.network.file else None
        prepare_data_dir(data_dir)
        files.enter_context(lock_data_dir(data_dir))
        keys, created = load_or_create_keys(data_dir)
        if created:
            log_event(log, logging.INFO, "keys_created", node_id=keys.node_id)
        if config.debug.clock_control:
            log_event(log, logging.WARNING, "debug_clock_control_on")
        info_path = data_dir / NODE_INFO_FILE
        network = NetworkView(keys.identity_public, standalone=network_file is None)
        # Listen first: a taken port fails before the store is opened, and outside any
        # nursery (so the caller gets the OSError itself, not an exception group).
        # Connections that arrive before serving begins wait in the kernel's backlog.
        listeners = await trio.open_tcp_listeners(port, host=host)
        files.callback(_close_listeners, listeners)
        async with (
            open_storage_service(
                data_dir / STORE_FILE, clock=clock, config=config.storage
            ) as storage,
            PeerPool(
                max_per_peer=config.peers.max_per_peer,
                max_waiters=config.peers.max_waiters,
                connect_timeout=config.peers.connect_timeout,
                idle_timeout=config.peers.idle_timeout,
            ) as peers,
            open_link_pool(
                peers,
                max_streams=config.link.max_streams,
                connect_timeout=config.peers.connect_timeout,
                idle_timeout=config.link.idle_timeout,
                write_timeout=config.http.write_timeout,
                fallback_ttl=config.link.fallback_ttl,
                warnings=peer_warnings,
                # Our proof to each peer, for the node ID listed at its address.
                identity=(keys, functools.partial(listed_node_id, network), clock),
            ) as links,
        ):
            try:
                node = Node(
                    keys=keys,
                    config=config,
                    data_dir=data_dir,
                    clock=clock,
                    metrics=metrics,
                    storage=storage,
                    peers=peers,
                    links=links if config.link.enabled else None,
                    network=network,
                    peer_warnings=peer_warnings,
                )
                sockname = listeners[0].socket.getsockname()
                node.host, node.port = str(sockname[0]), int(sockname[1])
                if network_file is not None:
                    node.directory = DirectoryClient(
                        network,
                        keys=keys,
                        network=network_file,
                        config=config.network,
                        data_dir=data_dir,
                        address=advertised_address(config.network, node.host, node.port),
                        version=__version__,
                        clock=clock,
                    )
                async with trio.open_nursery() as nursery:
                    await nursery.start(node.server.serve, listeners)
                    if node.directory is not None:
                        await nursery.start(node.directory.run)
                    if node.replication is not None:
                        await nursery.start(node.replication.run)
                    doc = {**node.info(), "pid": os.getpid()}
                    del doc["time_ms"]
                    write_file_atomic(info_path, json.dumps(doc).encode() + b"\n", 0o644)
                    log_event(
                        log, logging.INFO, "listening", address=node.address, node_id=keys.node_id
                    )
                    try:
                        yield node
                    except BaseException:
                        nursery.cancel_scope.cancel()
                        raise
                    node.stop()
            finally:
                _remove(info_path)
        log_event(log, logging.INFO, "store_closed")


async def run_node(
    data_dir: str | Path,
    host: str,
    port: int,
    config: NodeConfig | None = None,
    *,
    on_ready: Callable[[Node], None] | None = None,
) -> None:
    """Run a node until SIGINT or SIGTERM, then shut it down gracefully and return.

    ``on_ready`` is called once the node is listening (the CLI prints the address).
    Must run in the main thread (signal handling). Errors as :func:`open_node`.
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_node(data_dir, host, port, config) as node:
            if on_ready is not None:
                on_ready(node)
            async for signum in signals:
                log_event(log, logging.INFO, "stopping", signal=signal.Signals(signum).name)
                break


def _admit_all() -> bool:
    return True


def _close_listeners(listeners: list[trio.SocketListener]) -> None:
    # Synchronous close (the server closes them too; closing twice is harmless).
    for listener in listeners:
        listener.socket.close()


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log_event(log, logging.WARNING, "cannot_remove", path=str(path), error=str(exc))
