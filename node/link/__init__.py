"""Node-to-node links on trio: one multiplexed connection per peer, for onion packets
and replication frames.

Design note
===========

The frames and the handshake are in :mod:`veil.onion.link` (sans-IO); this package moves
them: ``pool.py`` is the sending side (:class:`LinkPool`, :class:`HttpForwarder`),
``serve.py`` the receiving side (:func:`serve_link`), ``writer.py`` the frame writer
both use, ``auth.py`` who may open a link (:class:`~veil.node.link.auth.LinkGate`: in a
network, only a node listed in the consensus, with a fresh signed proof in the upgrade;
a standalone node takes links from anyone). The modules import their siblings, never
this package.

:class:`LinkPool` is the sending side: a relay calls :meth:`LinkPool.forward` for each
packet, and swarm replication (node/replication/requests.py) :meth:`LinkPool.replicate`
for each sealed push, pull or forward frame (``veil-link/3``: kinds 3-5, each the body
its ``POST /replicate...`` would carry). Both share the link to a peer. Per peer
``(host, port)`` there is at most one link, opened on first use (a TCP connect and the
``GET /link`` upgrade, within ``connect_timeout``). Many packets are in flight on it at
once, each a stream; a reader task per link matches responses to their waiting requests
by stream number. Sending needs no task of its own: the request that finds the link idle
writes, and keeps writing what other requests queue meanwhile, so a busy link sends a
batch of frames per system call. A write is shielded from its request's cancellation (a
frame cut in half would break the framing for everyone) and bounded by ``write_timeout``
per 256 KiB instead; a link whose write times out is closed.

A peer that answers the upgrade with 400, 404, 405, 426 or 501 (a node of an older
version, or one that will not link with us) is reached over HTTP (``POST /onion``, or a
replication frame's ``POST /replicate``, ``/replicate/pull`` or ``/replicate/forward``,
through :class:`veil.node.peers.PeerPool`) for ``fallback_ttl`` seconds, after which the
upgrade is tried again. A 403 (the peer's consensus does not list us yet) or a 503 (it
has no consensus yet, or is shutting down) sends that peer's packets over HTTP for a few
seconds only, then the link is tried again. Any other failure of the upgrade (a 429, a
reset) is the peer's trouble, not its version: HopUnreachable or RateLimited.

Bounds: at most ``max_streams`` requests in flight per link (one more is refused at
once with :class:`~veil.onion.errors.RateLimited`: this hop is over capacity towards that
peer); a response payload is bounded by the framing (:data:`veil.onion.link.MAX_RESPONSE_LEN`).

Errors: a failed connect or handshake, a reset, an EOF or a framing error while a
request waits give :class:`~veil.onion.errors.HopUnreachable`; running out of the
request's ``timeout`` gives :class:`~veil.onion.errors.HopTimeout`. That deadline is not
a cancel scope per packet (which cost about 5 % of a relayed packet's CPU): it rides
with the request, and a watchdog task fails late requests four times a second, so a
timeout may come up to a quarter second late. When a link that had already carried a
response breaks before answering a request, the request is sent once more on a new link
(a peer may close a link it thinks idle just as we use it); that is safe for onion
packets because the next hop's replay cache refuses a second copy of a packet, so a
packet takes effect at most once. Replication frames get the same single resend, of the
same bytes, and for the same reason: the receiver's
:class:`~veil.onion.replication_frames.ReplayGuard` accepts a request frame once per
sender, so a push re-sent is never stored twice, nor a forwarded delete run twice. The
resend is nearly always of a request the peer never read (the race with an idle close,
whose unread bytes the peer drops); in the rare case that the first copy did take effect
and only its answer was lost, the resend is answered 409 ``replayed``, which the caller
counts as a failed attempt, as it would count the lost answer without a resend (a push
is retried later in a new frame, and a member ignores a copy of a message it holds; a
pull is asked again next round; a forward had taken effect). Without the resend, a link
closed as idle under a push would fail it, and the ack rule would count that member as
failed until its next push succeeded; PeerPool's stale-connection retry of ``POST
/replicate`` (node/peers.py) already made the same choice. Cancellation of a request (or
its timeout) only forgets its stream: a late response is dropped, and the link stays
usable.

:func:`serve_link` is the receiving side, run by the HTTP server on a connection that
asked for the upgrade: it reads request frames, runs each (an onion packet with
``handle``, a replication frame with ``replicate``) on a worker task of its own
(at most ``max_streams`` at once; beyond that it stops reading, so TCP pushes back on the
peer), and writes each response as its handler finishes, in any order. Workers are
parked and reused, not spawned per packet (:class:`_Workers`). ``admit`` is asked for
each request of either kind (the per-address rate limit, the same bucket as the HTTP
routes ``/onion`` and ``/replicate...``) and a refused request is answered 429 at once.
A link idle (no request in flight and none arriving) for ``idle_timeout`` is closed (a
task of its own keeps that clock; a deadline moved at every packet cost CPU at rest).

Both sides read and write with :class:`veil.node.sockio.SocketIO`, straight to the socket:
at rest, trio's stream layers cost about as much as the packet's cryptography.
When ``stopping`` is set, it reads no more requests, finishes those in flight and
returns; the caller closes the connection.

Structure: :func:`open_link_pool` runs the pool's reader tasks and its watchdog in its
own nursery and closes every link on exit; requests still waiting then fail with
HopUnreachable.
"""

from __future__ import annotations

from .pool import HttpForwarder, LinkPool, open_link_pool
from .serve import LinkHandler, ReplicationHandler, serve_link

__all__ = [
    "HttpForwarder",
    "LinkHandler",
    "LinkPool",
    "ReplicationHandler",
    "open_link_pool",
    "serve_link",
]
