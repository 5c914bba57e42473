"""The directory authority: registers nodes, checks that they answer, and signs consensuses.

Design note
-----------
Tor's directory authorities in miniature (see :mod:`veil.onion.vote` for the documents).
An authority is a small HTTP server (:class:`veil.node.server.HttpServer`, the node's own)
with three background jobs under one nursery: the *checker*, the *epoch loop* and, at
start, a *catch-up* with its peers. Everything it knows lives in memory, plus two files
so that a restart loses nothing: ``DIR/descriptors.cbor`` (the registered descriptors)
and ``DIR/consensus.cbor`` (the latest consensus signed by a threshold of authorities).

Where each job is (each module's note says how and why)::

    state.py      what it holds (registry, votes, documents) and how it asks its peers
    registry.py   registering descriptors (and who may: per source, per address:port,
                  eviction), expiring them, listing the live nodes
    liveness.py   the checker and its probe (a real request to every node); "measured"
    saved.py      descriptors.cbor and consensus.cbor: saved as they change, loaded at start
    catch_up.py   merging the peers' consensus documents; learning their nodes at start
    epochs.py     one vote and one consensus per epoch: freeze, fetch, combine, sign
    routes.py     the HTTP routes and ``/info``
    running.py    DirectoryAuthority (all of the above), init/open/run_authority

Each job module builds on the one below it (state, registry, then liveness, saved,
catch-up, epochs, routes), and none imports this package's ``__init__``.

Network use: only the authorities of ``network.json`` and the addresses of registered
descriptors are contacted (:class:`veil.node.peers.PeerPool`, bounded responses).

Errors and cancellation: :meth:`DirectoryAuthority.run` raises nothing for what peers
or nodes do (each failure is logged and that step skipped); cancelling it stops every
job at once, leaving the served state as it was. :func:`open_authority` shuts the server
down gracefully and saves the registry when its block ends.
"""

from __future__ import annotations

from .running import DirectoryAuthority, init_authority, open_authority, run_authority
from .state import AUTHORITY_INFO_FILE, AUTHORITY_KEYS_FILE, CONSENSUS_FILE, DESCRIPTORS_FILE

__all__ = [
    "AUTHORITY_INFO_FILE",
    "AUTHORITY_KEYS_FILE",
    "CONSENSUS_FILE",
    "DESCRIPTORS_FILE",
    "DirectoryAuthority",
    "init_authority",
    "open_authority",
    "run_authority",
]
