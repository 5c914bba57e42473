"""Replication's outgoing requests: one sealed frame sent to a peer, its answer opened.

Design note
-----------
Push, pull and forward all take the same path: seal a frame
(:mod:`veil.onion.replication_frames`), send it on the node's link to the peer
(:meth:`veil.node.link.LinkPool.replicate`: kinds 3-5 of ``veil-link/3``, on the
multiplexed connection that carries the node's onion packets to that peer), or, when the
node's links are off (``[link] enabled = false``) or the peer does not speak the link,
``POST`` it to the frame's route over the node's :class:`~veil.node.peers.PeerPool`
(persistent per-peer h11 connections). Issue 17: at 70 messages/s on the 10-node devnet,
sending pushes was about 15 % of a node's CPU (the h11 exchange about 9 %), and serving
them a large share of the HTTP server's; ``bench node`` measures a push on a link
against one over HTTP. The bytes are the same either way, and so is the answer: refuse a
non-200 answer as :class:`~veil.node.errors.ReplicationRefused` (with the peer's HTTP
status, which the push queue uses to tell a lasting refusal from a passing one), and
open the sealed answer against the peer's keys and our clock. One attempt each: the
retry policy is the caller's (the push queue backs off; a pull waits for the next round;
a forward is never retried, as the client's signature is only good for the clock-skew
window). The link pool's one resend of the same bytes on a fresh link, when a link
that had answered breaks (node/link/), is not a second attempt: the receiver's
ReplayGuard takes a frame once, and answers a copy 409 ``replayed``.

Every frame sent here, and every sealed answer, is exactly one of
:data:`~veil.onion.replication_frames.SIZE_CLASSES` long (2, 16 or 128 KiB, padded
inside the box), so what a watcher of the link reads off a request is its class and
route (the link frame's kind, or the POST's path), never the length of the messages it
carries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from veil.onion import replication_frames as wire
from veil.onion.directory import ConsensusNode
from veil.onion.keys import NodeKeys
from veil.onion.link import REPLICATE_FORWARD, REPLICATE_PULL, REPLICATE_PUSH
from veil.onion.replica import ReplicaMessage, ReplicaPage

from ..config import ReplicationConfig
from ..errors import ReplicationRefused
from ..link import LinkPool
from ..peers import PeerPool

__all__ = ["FORWARD_PATH", "PULL_PATH", "PUSH_PATH", "PeerRequests"]

#: What a ``replication_frames.open_*`` function for a reply returns.
_Answer = TypeVar("_Answer")

PUSH_PATH = "/replicate"
PULL_PATH = "/replicate/pull"
FORWARD_PATH = "/replicate/forward"
#: The link frame kind of each route's frames.
_KINDS = {PUSH_PATH: REPLICATE_PUSH, PULL_PATH: REPLICATE_PULL, FORWARD_PATH: REPLICATE_FORWARD}


class PeerRequests:
    """The three requests this node makes to another; each raises a
    :class:`~veil.onion.errors.VeilError`: NetworkError or RateLimited (the link or
    the peer pool),
    :class:`ReplicationRefused` (an HTTP error), or the frame errors of the
    ``replication_frames.open_*`` function of its answer (a bad answer)."""

    def __init__(
        self,
        *,
        keys: NodeKeys,
        peers: PeerPool,
        clock: Callable[[], int],
        config: ReplicationConfig,
        links: LinkPool | None = None,
    ) -> None:
        """``links``: the node's link pool (None: every frame is a POST over ``peers``)."""
        self.keys = keys
        self.peers = peers
        self.links = links
        self.clock = clock
        self.config = config

    async def _post(self, peer: ConsensusNode, path: str, frame: bytes) -> bytes:
        """Send ``frame`` to ``peer``'s ``path`` (on the link, or POST); a 200's body."""
        timeout = self.config.request_timeout
        if self.links is not None:
            status, body = await self.links.replicate(
                peer.host, peer.port, _KINDS[path], frame, path=path, timeout=timeout
            )
        else:
            status, body = await self.peers.post(peer.host, peer.port, path, frame, timeout=timeout)
        if status != 200:
            raise ReplicationRefused(status, body[:200].decode("utf-8", "replace").strip())
        return body

    def _open_answer(
        self, opener: Callable[..., _Answer], body: bytes, peer: ConsensusNode, digest: bytes
    ) -> _Answer:
        """Open ``peer``'s sealed answer with ``opener`` (a ``replication_frames.open_*``
        for replies): checked against our keys, the request's digest and our clock."""
        return opener(
            body, self.keys, peer, digest, now_ms=self.clock(), skew_ms=self.config.clock_skew_ms
        )

    async def push(self, peer: ConsensusNode, messages: Sequence[ReplicaMessage]) -> wire.PushAck:
        """Push ``messages`` (one batch within the wire limits) to ``peer``; its ack."""
        frame, digest = wire.seal_push(self.keys, peer, messages, now_ms=self.clock())
        body = await self._post(peer, PUSH_PATH, frame)
        return self._open_answer(wire.open_pushed, body, peer, digest)

    async def pull(
        self,
        peer: ConsensusNode,
        after: int,
        scope: bytes,
        *,
        deletions: bool = False,
        revocations: bool = False,
        summary: bool = False,
    ) -> ReplicaPage:
        """One page of ``peer``'s rows (``deletions``: of the signed deletions it keeps;
        ``revocations``: of its revocation records; ``summary``: of a summary of its
        rows) after seq ``after``, of the accounts of ``scope`` (503 if the peer sees
        the scope otherwise)."""
        frame, digest = wire.seal_pull(
            self.keys,
            peer,
            after,
            scope,
            now_ms=self.clock(),
            deletions=deletions,
            revocations=revocations,
            summary=summary,
        )
        body = await self._post(peer, PULL_PATH, frame)
        return self._open_answer(wire.open_page, body, peer, digest)

    async def forward(self, peer: ConsensusNode, request: bytes) -> bytes:
        """Send a client's signed storage request to ``peer``; its storage reply."""
        frame, digest = wire.seal_forward(self.keys, peer, request, now_ms=self.clock())
        body = await self._post(peer, FORWARD_PATH, frame)
        return self._open_answer(wire.open_forwarded, body, peer, digest)
