"""Swarm replication: push on store, anti-entropy pulls, and handover between swarms.

Design note
-----------
Every member of a swarm holds every message of the swarm's accounts (DESIGN.md,
"Network"). Three mechanisms keep it so; all node-to-node traffic is sealed and signed
frames (:mod:`veil.onion.replication_frames`) over the node's
:class:`~veil.node.peers.PeerPool` (persistent per-peer h11 connections). Where each
part lives:

* ``outbox.py``: **push** (``POST /replicate``) of every message a client's store
  created, one queue and sender task per swarm peer, and the ack rule below;
* ``anti_entropy.py``: **anti-entropy and joining** (``POST /replicate/pull``), pulls
  of each peer's rows after a cursor kept per peer and scope;
* ``handover.py``: **handover** of the accounts a new consensus moves to another swarm;
* ``receive.py``: **receiving** a peer's push, pull or forward, every refusal typed;
* ``requests.py``: the outgoing requests (seal, post, open the answer) and the paths;
* ``replicator.py``: :class:`Replicator`, which runs all of it under one nursery and
  forwards client deletes and expiries (``POST /replicate/forward``);
* ``ring.py`` (ring positions, scopes) and ``counters.py`` (counters, metrics).

**The ack rule.** The client's store is answered after (1) the local commit, which is
fsynced (node/store/), and (2) a push attempt to every other member of the swarm has
completed (the peer stored it, or the attempt failed), or ``ack_timeout`` (2 s) has
passed, whichever is first. A peer whose last push failed counts as failed at once (the
store does not wait for it) until a push to it succeeds again. So an acknowledged
message is on disk here and at every member that was reachable when it was stored
(unless that member was slower than ``ack_timeout``); it is lost only if every member
that holds it fails for good before the others have pulled it. With every member up,
that means: no acknowledged message is lost when fewer than all members of the swarm
fail. A member that was down catches up from any survivor by pulling.

Limitations: there are no tombstones. A member that misses a forwarded delete (it was
down, or the forward came after the client's signature left the clock-skew window)
keeps its copy until it expires and serves it, and an anti-entropy pull that starts
over (a change of scope) may copy such a message back to members that deleted it. A
store that only extends the expiry of a message already held is not replicated.

The modules import their siblings, never this package, so there is no import circle.
This package re-exports the public names, as before the split.
"""

from __future__ import annotations

from ..errors import ReplicationRefused
from .counters import ReplicationCounters
from .replicator import Replicator
from .requests import FORWARD_PATH, PULL_PATH, PUSH_PATH
from .ring import ring_position, sync_scope

__all__ = [
    "FORWARD_PATH",
    "PULL_PATH",
    "PUSH_PATH",
    "ReplicationCounters",
    "ReplicationRefused",
    "Replicator",
    "ring_position",
    "sync_scope",
]
