"""The local wall clock in whole milliseconds since the Unix epoch.

The protocol's functions never read a clock: they take ``now_ms`` (sans-IO). This is
the one place the node and the client read the wall clock for them (each may wrap it,
the client with the network's measured offset, the node with a test-only one), so
that the unit and the rounding (down, from ``time.time_ns``, never a float) are the
same everywhere.
"""

from __future__ import annotations

import time

__all__ = ["wall_clock_ms"]


def wall_clock_ms() -> int:
    """Milliseconds since the epoch, rounded down."""
    return time.time_ns() // 1_000_000
