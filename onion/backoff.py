"""Exponential back-off with jitter: the delays between retries, as a pure policy.

Retry loops in the node and the client (a refused send, an authority that does not
answer, a poll that failed) all wait ``first_s * factor ** n`` capped at ``max_s``, and
most spread their retries with a random factor so that many peers that failed together
do not retry together. The loop itself (its ``trio.sleep``, its give-up rule) stays
with its owner; this module only says how long.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .errors import InvalidValue

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays ``first_s``, ``first_s * factor``, ... capped at ``max_s``; with ``jitter``
    ``j`` each is multiplied by a uniform factor in ``[1 - j, 1 + j)``."""

    first_s: float
    max_s: float
    factor: float = 2.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.first_s <= self.max_s:
            raise InvalidValue("a back-off needs 0 <= first_s <= max_s")
        if self.factor < 1 or not 0 <= self.jitter <= 1:
            raise InvalidValue("a back-off needs factor >= 1 and jitter in [0, 1]")

    def delay_s(self, failures: int, rng: random.Random | None = None) -> float:
        """The wait after ``failures`` failures in a row (1 for the first), in seconds."""
        exponent = max(failures - 1, 0)
        # min() before the power would overflow: factor ** 2000 is a float error.
        if exponent > 64:
            base = self.max_s
        else:
            base = min(self.first_s * self.factor**exponent, self.max_s)
        if not self.jitter:
            return base
        draw = (rng or random).random()
        return base * (1 - self.jitter + 2 * self.jitter * draw)
