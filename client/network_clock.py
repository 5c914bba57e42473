"""The network's clock: the local wall clock plus an offset measured from nodes' replies.

Nodes check packet timestamps (a window of minutes) and signed requests' timestamps
(about a minute), and every reply carries the node's time ``t``. :class:`NetworkClock`
is the local clock plus an offset, the median of the last few samples
``t - (sent + received) / 2`` (the median, so one node with a wrong clock does not move
it). :class:`~veil.client.onion_client.OnionClient` samples it on every reply and resets
it when a node refuses our time; the offset is persisted in the client's state, so the
next start needs no correction. No I/O, no locks: it is read and written from one trio
thread.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable

__all__ = ["LocalClock", "NetworkClock", "local_clock_ms"]

#: The local wall clock, ms since the epoch (tests inject one that is off).
LocalClock = Callable[[], float]


def local_clock_ms() -> float:
    """The local wall clock in ms since the epoch, with its fraction: the client's default
    :data:`LocalClock`. Not :func:`veil.onion.wallclock.wall_clock_ms`, which rounds down
    to whole ms: a sample averages a request's send and receive times, which on loopback
    are under a millisecond apart, so the fraction is kept (as it always was)."""
    return time.time_ns() / 1_000_000


class NetworkClock:
    """The network's time: a local clock (ms since the epoch) plus a measured offset.

    ``local`` is the local wall clock (tests inject one that is off); ``offset_ms`` the
    starting offset (the one persisted by the last run, or 0).
    """

    def __init__(self, local: LocalClock, offset_ms: int = 0, *, window: int = 9) -> None:
        self._local = local
        self._offset = int(offset_ms)
        self._samples: deque[int] = deque(maxlen=window)
        #: Samples taken since this clock was made (0: the offset is only remembered).
        self.measured = 0

    def local(self) -> float:
        """The local clock, ms."""
        return float(self._local())

    def now(self) -> int:
        """The network's time, ms: what timestamps in packets and signatures carry."""
        return int(self._local()) + self._offset

    @property
    def offset_ms(self) -> int:
        return self._offset

    def sample(self, node_ms: int, sent_local_ms: float, received_local_ms: float) -> None:
        """One reply's time ``node_ms``, for a request sent and answered at these local
        times: the offset becomes the median of the recent samples."""
        self._samples.append(round(node_ms - (sent_local_ms + received_local_ms) / 2))
        self._offset = int(statistics.median_low(self._samples))
        self.measured += 1

    def reset(self, node_ms: int, sent_local_ms: float, received_local_ms: float) -> None:
        """A node refused our time: forget earlier samples, trust this one."""
        self._samples.clear()
        self.sample(node_ms, sent_local_ms, received_local_ms)
