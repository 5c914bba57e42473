"""Opening a client: :func:`open_client` (see the package's design note,
:mod:`veil.client.veil_client`, for what it does in order, and its errors)."""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from veil.client.delegation.session import (
    DelegatedSession,
)
from veil.client.errors import InvalidArgument
from veil.client.files import read_network_file
from veil.client.home import Home
from veil.client.network_clock import LocalClock, NetworkClock, local_clock_ms
from veil.client.state import open_state
from veil.client.transport import HttpxTransport, Transport
from veil.client.veil_client.client import VeilClient
from veil.client.veil_client.config import ClientConfig
from veil.onion.directory import NetworkFile
from veil.onion.keys import Account

__all__ = ["open_client"]


@asynccontextmanager
async def open_client(
    home: Home | str | os.PathLike[str],
    network: NetworkFile | str | os.PathLike[str],
    *,
    account: Account | None = None,
    passphrase: str | None = None,
    delegated: DelegatedSession | str | None = None,
    transport: Transport | None = None,
    config: ClientConfig | None = None,
    clock: LocalClock | None = None,
    rng: random.Random | None = None,
) -> AsyncIterator[VeilClient]:
    """Open a client on ``home`` (a :class:`Home` or its directory) and ``network`` (a
    :class:`NetworkFile` or the path of ``network.json``); see the module note.

    ``account`` overrides the identity stored in the home (``passphrase`` opens a sealed
    one). ``delegated`` (a :class:`DelegatedSession` or its serialized string) makes a
    client that acts for the session's account without its seed; the home then needs
    no identity (it keeps the client's state: use one home per worker). ``transport``
    replaces the httpx one (it is closed with the client either way).
    ``clock`` is the local wall clock in ms, for tests (e.g. one five minutes off);
    ``rng`` drives path choice (default: the OS's CSPRNG).
    """
    home = home if isinstance(home, Home) else Home(home)
    if isinstance(delegated, str):
        delegated = DelegatedSession.from_string(delegated)
    if delegated is not None and account is not None:
        raise InvalidArgument("give an account or a delegated session, not both")
    if not isinstance(network, NetworkFile):
        network = read_network_file(network)
    config = config or ClientConfig()
    local = clock or local_clock_ms
    state = await trio.to_thread.run_sync(lambda: open_state(home, clock=lambda: int(local())))
    ours: HttpxTransport | None = None
    own_transport: Transport
    if transport is None:
        own_transport = ours = HttpxTransport(config.transport)
    else:
        own_transport = transport
    try:
        if account is None and delegated is None:
            account = await trio.to_thread.run_sync(home.load_identity, passphrase)
        offset = state.get_clock_offset() or 0
        client = VeilClient(
            account=account,
            home=home,
            network=network,
            state=state,
            transport=own_transport,
            clock=NetworkClock(local, offset),
            config=config,
            rng=rng or random.SystemRandom(),
            delegated=delegated,
        )
        await client._start()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(client.directory.run)
                nursery.start_soon(client._maintain)
                nursery.start_soon(client.onion.prepared.run)
                if client._sessions is not None:
                    await nursery.start(client._sessions.cache.run)
                if ours is not None:
                    # Ours: it may hand read responses to run() (client/transport.py). A
                    # transport given by the caller is the caller's to run, or not.
                    nursery.start_soon(ours.run)
                try:
                    yield client
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The background tasks do not raise: the group holds the block's exception.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
    finally:
        with trio.CancelScope(shield=True):
            await own_transport.aclose()
            await trio.to_thread.run_sync(state.close)
