"""The veil client library: :func:`open_client` gives a :class:`VeilClient`.

Design note
-----------
One object, like httpx's ``AsyncClient``, that owns everything a client needs and
closes it in order::

    async with open_client(home, "devnet/network.json") as client:
        await client.send("05ab...", "hello", ttl_s=3600)
        async for message in client.messages():
            print(message.sender, message.text)

What it owns: the state file (:mod:`veil.client.state`), the HTTP transport to guards
and authorities (:mod:`veil.client.transport`, pluggable: any
:class:`~veil.client.transport.Transport`), the consensus (:mod:`veil.client.consensus`),
guards and paths (:mod:`veil.client.paths`), the network's clock
(:mod:`veil.client.network_clock`), onion requests (:mod:`veil.client.onion_client`), and
messaging (:mod:`veil.client.messaging`). And a nursery,
for the background work that keeps it usable: the consensus refresh and forgetting
old failure counts.

Opening (:func:`open_client`): open the state; load the identity (unless an account is
given); read the network file; install the cached consensus if it still verifies, else
fetch one: from the guards kept from the last run if the cache expired less than a day
ago, else from the authorities (with a usable consensus, refreshes go to the client's
guards too: :mod:`veil.client.consensus`). A client whose clock is far off accepts
the fetched consensus tentatively, asks a node for the time through it, then verifies it
again on the corrected clock (see :mod:`veil.client.consensus`); the offset is kept in
the state, so the next start needs no such step.

Structured concurrency: the background tasks run in a nursery that the ``async with``
block encloses; leaving the block cancels them, closes the transport, then the state
file. An exception raised in the block comes out of it as itself (not wrapped in an
exception group: the background tasks never raise, so it is the only one). If the block
is cancelled, so are requests in flight; the state file is left consistent.

Delegated sessions (:mod:`veil.client.delegation`): ``open_client(home, network,
delegated=session)`` gives a client that acts for ``session.account`` without its
seed. Each signed request is checked against the session before it is built
(:meth:`VeilClient.signer`): expired by the network's clock
(:class:`~veil.client.errors.SessionExpired`) or not granted
(:class:`~veil.client.errors.NotAuthorized`, naming the missing action), and nothing
leaves. What needs the seed itself (sending a message: the envelope is signed by the
account; opening one; authorizing a first link) raises
:class:`~veil.client.errors.SeedRequired`. Its inbox messages come out sealed (see
:mod:`veil.client.messaging`). A client with the seed issues sessions
(:meth:`VeilClient.authorize`), and one with either revokes what it issued
(:meth:`VeilClient.revoke`): the revocation record goes to every member of the owner's
swarm that answers, and the issue is recorded in the home (``veil id delegations``).

Errors while opening: :class:`~veil.client.errors.HomeError` (no identity, wrong
passphrase, state file problems), :class:`~veil.onion.errors.NetworkFileError` (missing
or invalid network file), :class:`~veil.client.errors.AuthorityUnreachable` (no consensus
could be fetched), a :class:`~veil.onion.errors.ConsensusError` (none verified).

The package, by job: :mod:`~veil.client.veil_client.client` (:class:`VeilClient`),
:mod:`~veil.client.veil_client.opening` (:func:`open_client`),
:mod:`~veil.client.veil_client.config` (:class:`ClientConfig`),
:mod:`~veil.client.veil_client.revoking` (revoking delegated links, :class:`Revoked`),
:mod:`~veil.client.veil_client.status` (what ``veil status`` shows).
"""

from __future__ import annotations

from veil.client.veil_client.client import VeilClient
from veil.client.veil_client.config import ClientConfig
from veil.client.veil_client.opening import open_client
from veil.client.veil_client.revoking import Revoked

__all__ = ["ClientConfig", "Revoked", "VeilClient", "open_client"]
