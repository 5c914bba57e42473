"""Replay protection of replication request frames: each accepted once (sans-IO).

Design note
-----------
See :class:`ReplayGuard` and the package note (version 3).
"""

from __future__ import annotations

import collections

from veil.onion.errors import ClockSkew, RateLimited, ReplayedPacket

__all__ = ["ReplayGuard", "ReplayedFrame"]


class ReplayedFrame(ReplayedPacket):
    """A request frame (push, pull, forward) that the receiver has already accepted
    (``replayed``, 409): a copy taken off the wire, sent again."""


class ReplayGuard:
    """The request frames a node has accepted, per sender, while they could still pass
    the clock-skew check: so that each is accepted once (sans-IO; the caller passes the
    time).

    A frame is known by the digest of its signed body, which covers the sender's random
    ``n`` and its time ``t``; a frame passes the time check until ``t + window_ms``, and
    its digest is kept that long (then dropped: the frame is refused as stale anyway).
    Memory is bounded per sender (``max_per_peer`` live digests: over it, the sender's
    frames are refused ``rate_limited`` rather than a live digest forgotten), and only
    listed nodes reach it (the caller checks the frame's signature first), so one peer
    cannot crowd the others out. Senders whose digests have all expired are dropped.
    The guard lives in memory: a node refuses every frame stamped before it started
    (``not_before_ms``, ``clock_skew``), since it may have accepted that frame before a
    restart. Replies need no guard: each names the digest of its request (``re``), and
    a requester opens one reply per request.
    """

    def __init__(self, *, window_ms: int, max_per_peer: int, not_before_ms: int) -> None:
        self.window_ms = window_ms
        self.max_per_peer = max_per_peer
        self.not_before_ms = not_before_ms
        #: sender -> (digest -> until, the digests in the order they came with their until)
        self._seen: dict[bytes, tuple[dict[bytes, int], collections.deque[tuple[int, bytes]]]] = {}
        self._checks = 0

    def __len__(self) -> int:
        return sum(len(until) for until, _ in self._seen.values())

    def check(self, sender: bytes, digest: bytes, sent_ms: int, now_ms: int) -> None:
        """Accept the frame ``digest`` of ``sender`` stamped ``sent_ms`` once, or raise
        :class:`ReplayedFrame`, :class:`~veil.onion.errors.ClockSkew` (outside the window
        or before the start), :class:`~veil.onion.errors.RateLimited` (the sender's share
        is full of live digests)."""
        if abs(sent_ms - now_ms) > self.window_ms:
            raise ClockSkew(f"frame time {sent_ms} is more than {self.window_ms} ms from ours")
        if sent_ms < self.not_before_ms:
            raise ClockSkew("the frame is older than this node's start: send a new one")
        self._checks += 1
        if self._checks % 4096 == 0:
            self._drop_idle(now_ms)
        entry = self._seen.get(sender)
        if entry is None:
            entry = self._seen[sender] = ({}, collections.deque())
        until, order = entry
        self._expire(until, order, now_ms)
        if digest in until:
            raise ReplayedFrame("this frame was already received")
        if len(until) >= self.max_per_peer:
            raise RateLimited("too many frames from this node in the clock-skew window")
        # A frame passes the window check until t + window: keep its digest that long.
        until[digest] = sent_ms + self.window_ms
        order.append((sent_ms + self.window_ms, digest))

    @staticmethod
    def _expire(
        until: dict[bytes, int], order: collections.deque[tuple[int, bytes]], now_ms: int
    ) -> None:
        """Drop the digests whose frames can no longer pass the window check. Frames
        come roughly in time order; one that came out of order is dropped a little
        later than it could be (when the ones before it go), never earlier."""
        while order and order[0][0] < now_ms:
            _, digest = order.popleft()
            if until.get(digest, now_ms) < now_ms:
                del until[digest]

    def _drop_idle(self, now_ms: int) -> None:
        for sender in list(self._seen):
            until, order = self._seen[sender]
            self._expire(until, order, now_ms)
            if not until:
                del self._seen[sender]
