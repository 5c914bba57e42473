"""The replay cache and timestamp window a hop enforces on onion packets.

A packet carries, for each hop, a timestamp only that hop can read; the hop refuses a
packet outside ``[now - window, now + window]`` and otherwise remembers its replay tag
until the packet could no longer pass the window check. So memory is bounded by the
packet rate times the window, and a hard ``max_entries`` cap bounds it absolutely: when
the cache is full of unexpired tags, new packets are refused (``rate_limited``) rather
than evicting tags, because evicting a live tag would let its packet be replayed.

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
        self, window_ms: int = DEFAULT_WINDOW_MS, max_entries: int = DEFAULT_MAX_ENTRIES
    ) -> None:
        self.window_ms = window_ms
        self.max_entries = max_entries
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
