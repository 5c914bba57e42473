"""The replay cache and timestamp window a hop enforces on onion packets.

A packet carries, for each hop, a timestamp only that hop can read; the hop refuses a
packet outside ``[now - window, now + window]`` and otherwise remembers its replay tag
until the packet could no longer pass the window check. So memory is bounded by the
packet rate times the window, and a hard ``max_entries`` cap bounds it absolutely: when
the cache is full of unexpired tags, new packets are refused (``rate_limited``) rather
than evicting tags, because evicting a live tag would let its packet be replayed.

The cache lives in memory, so a restarted node would forget the tags it had seen; it
therefore also refuses every packet stamped before it started (``not_before_ms``): a
packet it processed before the restart carries an older stamp. Clients whose packet
is refused this way in the first seconds after a restart simply build a new one.

Sans-IO: the caller passes the time in; nothing here reads a clock.
"""

from __future__ import annotations

import heapq

from .errors import RateLimited, ReplayedPacket, StalePacket

DEFAULT_WINDOW_MS = 120_000
DEFAULT_MAX_ENTRIES = 1_000_000


class ReplayCache:
    """Replay tags seen within the window, with their expiry times."""

    def __init__(
        self,
        window_ms: int = DEFAULT_WINDOW_MS,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        not_before_ms: int = 0,
    ) -> None:
        self.window_ms = window_ms
        self.max_entries = max_entries
        # Packet stamps are whole seconds: round the start down so that a packet built in
        # the same second as the start is not refused.
        self.not_before_ms = not_before_ms // 1000 * 1000
        self._expiry: dict[bytes, int] = {}
        self._heap: list[tuple[int, bytes]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def check(self, tag: bytes, timestamp_ms: int, now_ms: int) -> None:
        """Accept a packet's tag once, or raise.

        Raises :class:`StalePacket` outside the window, :class:`ReplayedPacket` for a
        tag already seen, :class:`RateLimited` when the cache is full of live tags.
        """
        if abs(now_ms - timestamp_ms) > self.window_ms:
            raise StalePacket(f"packet time is {(timestamp_ms - now_ms) // 1000} s off this node's")
        if timestamp_ms < self.not_before_ms:
            raise StalePacket("packet is older than this node's start: build a new one")
        self._expire(now_ms)
        if tag in self._expiry:
            raise ReplayedPacket("packet already seen")
        if len(self._expiry) >= self.max_entries:
            raise RateLimited("replay cache is full")
        # The packet passes the window check until timestamp + window; keep it that long.
        expiry = timestamp_ms + self.window_ms
        self._expiry[tag] = expiry
        heapq.heappush(self._heap, (expiry, tag))

    def _expire(self, now_ms: int) -> None:
        heap = self._heap
        while heap and heap[0][0] < now_ms:
            _, tag = heapq.heappop(heap)
            self._expiry.pop(tag, None)
