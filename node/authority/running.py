"""An authority assembled and run: :class:`DirectoryAuthority`, and the functions that
start one.

Design note
-----------
:class:`DirectoryAuthority` is every job of the package on one state (the registry,
liveness, saved files, catch-up, epochs and routes, each a class of its own module
over :class:`~veil.node.authority.state.AuthorityState`), served by the node's own
:class:`~veil.node.server.HttpServer`. :meth:`DirectoryAuthority.run` runs the three
background jobs (the checker, the catch-up at start, the epoch loop) under one nursery.

:func:`open_authority` is the authority as a library (an async context manager);
``veil-node authority`` is :func:`run_authority` (the same plus the signal handling)
under ``trio.run``, and ``veil-node authority-init`` is :func:`init_authority`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack, asynccontextmanager, suppress
from pathlib import Path

import trio

from veil.onion.directory import NetworkFile
from veil.onion.keys import NodeKeys
from veil.onion.vote import MAX_VOTE_SIZE
from veil.onion.wallclock import wall_clock_ms

from ..config import NodeConfig
from ..keystore import (
    load_or_create_keys,
    lock_data_dir,
    prepare_data_dir,
    write_file_atomic,
)
from ..logging import log_event
from ..peers import PeerPool
from ..ratelimit import TokenBucketLimiter
from ..server import HttpServer
from .epochs import Epochs
from .liveness import Liveness
from .routes import Routes
from .state import AUTHORITY_INFO_FILE, AUTHORITY_KEYS_FILE

__all__ = ["DirectoryAuthority", "init_authority", "open_authority", "run_authority"]

log = logging.getLogger("veil.authority")

_INFO_FILE_KEYS = frozenset({"key", "address", "host", "port", "version"})


class DirectoryAuthority(Routes, Epochs, Liveness):
    """One directory authority (see :mod:`veil.node.authority`). Build it with
    :func:`open_authority`; tests may call its methods directly."""

    def __init__(
        self,
        *,
        keys: NodeKeys,
        network: NetworkFile,
        config: NodeConfig,
        data_dir: Path,
        clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        super().__init__(keys=keys, network=network, config=config, data_dir=data_dir, clock=clock)
        rl = config.rate_limit
        limiter = (
            TokenBucketLimiter(rl.rate, rl.burst, rl.max_clients, rl.exempt) if rl.rate else None
        )
        self.server = HttpServer(self._routes(), config.http, metrics=self.metrics, limiter=limiter)

    def stop(self) -> None:
        """Stop the background jobs and begin the server's graceful shutdown."""
        self._background.cancel()
        self.server.stop()

    async def run(self, pool: PeerPool) -> None:
        """The checker, the catch-up and the epoch loop, until :meth:`stop` or cancel.

        See :mod:`veil.node.authority` for errors and cancellation.
        """
        self._pool = pool
        with self._background:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._checker)
                nursery.start_soon(self._catch_up_at_start)
                nursery.start_soon(self._epoch_loop)


def init_authority(data_dir: str | Path) -> NodeKeys:
    """Create the authority's key in ``data_dir`` if missing (dir 0700, file 0600).

    Raises :class:`~veil.node.keystore.KeystoreError` for an unusable directory or key file.
    """
    path = Path(data_dir)
    prepare_data_dir(path)
    keys, created = load_or_create_keys(path, name=AUTHORITY_KEYS_FILE)
    if created:
        log_event(log, logging.INFO, "authority_key_created", key=keys.node_id)
    return keys


@asynccontextmanager
async def open_authority(
    data_dir: str | Path,
    host: str,
    port: int,
    network: NetworkFile,
    config: NodeConfig | None = None,
) -> AsyncIterator[DirectoryAuthority]:
    """Run a directory authority on ``host:port`` with its key in ``data_dir``.

    Yields the :class:`DirectoryAuthority` once it accepts connections and
    ``DIR/authority.json`` is written. When the block ends it stops its jobs, shuts the
    server down gracefully, saves the registry and removes ``authority.json``; if the
    block raises or is cancelled, requests are cut at once (files are still written).
    Raises :class:`~veil.node.keystore.KeystoreError` (data dir, key, lock),
    :class:`~veil.onion.errors.NetworkFileError` (this key is not in the network file) or
    ``OSError`` (listen) while starting.
    """
    config = config or NodeConfig()
    data_dir = Path(data_dir)
    with ExitStack() as files:
        prepare_data_dir(data_dir)
        files.enter_context(lock_data_dir(data_dir))
        keys, _ = load_or_create_keys(data_dir, name=AUTHORITY_KEYS_FILE)
        authority = DirectoryAuthority(keys=keys, network=network, config=config, data_dir=data_dir)
        authority.load_saved()
        listeners = await trio.open_tcp_listeners(port, host=host)
        files.callback(_close_listeners, listeners)
        sockname = listeners[0].socket.getsockname()
        authority.host, authority.port = str(sockname[0]), int(sockname[1])
        info_path = data_dir / AUTHORITY_INFO_FILE
        try:
            async with (
                PeerPool(
                    max_per_peer=config.peers.max_per_peer,
                    max_waiters=config.peers.max_waiters,
                    connect_timeout=config.peers.connect_timeout,
                    idle_timeout=config.peers.idle_timeout,
                    max_response_bytes=MAX_VOTE_SIZE + 4096,
                ) as pool,
                trio.open_nursery() as nursery,
            ):
                await nursery.start(authority.server.serve, listeners)
                nursery.start_soon(authority.run, pool)
                doc = {k: v for k, v in authority.info().items() if k in _INFO_FILE_KEYS}
                doc["pid"] = os.getpid()
                write_file_atomic(info_path, json.dumps(doc).encode() + b"\n", 0o644)
                log_event(
                    log,
                    logging.INFO,
                    "listening",
                    address=authority.address,
                    key=keys.node_id,
                    threshold=network.threshold,
                    authorities=len(network.authorities),
                )
                try:
                    yield authority
                except BaseException:
                    nursery.cancel_scope.cancel()
                    raise
                authority.stop()
        finally:
            authority.save_registry_now()
            with suppress(FileNotFoundError):
                info_path.unlink()


async def run_authority(
    data_dir: str | Path,
    host: str,
    port: int,
    network: NetworkFile,
    config: NodeConfig | None = None,
    *,
    on_ready: Callable[[DirectoryAuthority], None] | None = None,
) -> None:
    """Run an authority until SIGINT or SIGTERM, then shut it down and return.

    Must run in the main thread (signal handling). Errors as :func:`open_authority`.
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_authority(data_dir, host, port, network, config) as authority:
            if on_ready is not None:
                on_ready(authority)
            async for signum in signals:
                log_event(log, logging.INFO, "stopping", signal=signal.Signals(signum).name)
                break


def _close_listeners(listeners: list[trio.SocketListener]) -> None:
    for listener in listeners:
        listener.socket.close()
