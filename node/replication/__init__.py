"""Swarm replication: push on store, anti-entropy pulls, and handover between swarms.

Design note
-----------
Every member of a swarm holds every message of the swarm's accounts (DESIGN.md,
"Network"). Three mechanisms keep it so; all node-to-node traffic is sealed and signed
frames (:mod:`veil.onion.replication_frames`) on the node's links to its peers
(:mod:`veil.node.link`, ``veil-link/3``: the multiplexed connection per peer that also
carries onion packets), or, with links off or to a peer that does not speak them, one
``POST`` each over the node's :class:`~veil.node.peers.PeerPool` (persistent per-peer h11
connections); the bytes and the answers are the same either way. Issue 17: one POST
per push cost about 0.4 ms of h11 per exchange on both nodes, 1.6 ms per message
delivered to a swarm of 5. Where each part lives:

* ``outbox.py``: **push** (``POST /replicate``) of every message a client's store
  created, one queue and sender task per swarm peer, and the ack rule below;
* ``anti_entropy.py``: **anti-entropy and joining** (``POST /replicate/pull``), pulls
  of each peer's summary and of the rows it names that are not held here, of the
  owners' signed deletes it executed, and of the revocations of delegated keys it
  keeps, after cursors kept per peer and scope;
* ``handover.py``: **handover** of the accounts a new consensus moves to another swarm;
* ``receive.py``: **receiving** a peer's push, pull or forward, every refusal typed;
* ``requests.py``: the outgoing requests (seal, send on the link or post, open the
  answer) and the paths;
* ``replicator.py``: :class:`Replicator`, which runs all of it under one nursery and
  forwards client deletes and expiries (``POST /replicate/forward``);
* ``held.py``: the messages stored here lately, by hash, which anti-entropy's
  summaries are checked against before the store;
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

**Integrity** (issue 11, items 5 and 6). Every request frame (push, pull, forward) is
accepted once: the receiver remembers each frame's digest per sender for the clock-skew
window (:class:`~veil.onion.replication_frames.ReplayGuard`) and refuses a copy
``replayed``; a reply names its request's digest. A message in an owner-written
namespace travels with its owner's signed store (its *proof*,
:mod:`veil.onion.rpc.proof`), and every member that receives a copy, by push, handover
or pull, checks it as if it were the client's request, and that the expiry is no later
than the signed TTL allows; inbox messages (anyone writes them) carry none. So a listed
node, of this swarm or another, adds to an account only inbox messages, and moves no
expiry beyond what the owner signed. Messages stored before proofs existed (store schema
2) stay where they are, served, and are never replicated, until they expire.

Deletes leave tombstones (node/store/): a delete or delete_all, the client's or a
forwarded one, leaves one per deleted hash (and per hash a delete names that is not
held), which lives until every copy a peer could still send has expired, in SQLite
(across restarts), swept with expired rows. No push, pull or handover stores a copy of
a tombstoned message that was first stored before the deletion (or within the clock
skew after it); a later store of the same bytes (a new signed store, more than the
clock skew after the deletion) is a new message and replicates as one. The same bytes
stored again within that minute stay on the member that took them.
A signed delete_all is executed once per node, so a copy of it sent again (within its
signature's window) deletes nothing stored since.

Deletes replicate as the owner signed them: a member keeps every delete and delete_all
it executed (the client's signed bytes, table ``deletions``) until every message it
could have deleted has expired, and each anti-entropy round also pulls the peers'
deletions after a cursor (``anti_entropy.py``). A member that missed one (it was down,
or the forward came after the client's signature left the clock-skew window) checks
the owner's signature (not its age) and applies it as of its signed time: it deletes
what was first stored up to then (plus the clock skew), leaves the tombstones, and
keeps the request for the next member. So a missed delete reaches every member within
a round or two of its coming back, and no pull in between brings the message back to
the members that hold the tombstone.

Revocations of delegated keys (issue 12) replicate with the same care as deletions:
a member that keeps a client's ``revoke`` (verified, in SQLite: store table
``revocations``) forwards it at once to the other members, each round also pulls the
peers' revocation records after a third cursor (``anti_entropy.py``), each verified
again before it is kept, and a handover sends the records of the accounts it moves to
their new swarm before their messages (``handover.py``). So a member that was down when
a key was revoked refuses it within a round of coming back, and a restart loses none
(they are loaded from SQLite at start). A message whose owner proof is a delegated
key's carries its chain; members check it at the proof's signed time and refuse a copy
whose chain they know to be revoked (what is already stored stays until it expires).

Limitations. An inbox message's store time is unsigned, so a node that re-sends a
deleted inbox message as if stored later gets it stored again (anyone holding its bytes
could store it anew anyway). A store that only extends the expiry of a message already
held is not replicated, and an owner's ``expire`` travels only by forward (one attempt):
a copy carries the expiry its proof allows, and a member that missed an expire that
shortened it keeps the longer one.

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
