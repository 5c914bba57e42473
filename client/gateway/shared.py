"""What every route of the gateway shares: :class:`Gateway`.

Design note
-----------
A :class:`Gateway` holds the :class:`~veil.client.bot.Bot` the routes work through, the
gateway's store (:class:`~veil.client.gateway.tokens.TokenBook`,
:class:`~veil.client.gateway.idempotency.IdempotencyBook`), its metrics and the nursery
that runs broadcasts in the background. Two rules every route follows live here:

* a per-recipient limit on messages (:data:`MESSAGES_PER_MINUTE`; more: 429 with
  ``Retry-After``), so that a leaked token cannot flood someone's inbox;
* every call to the veil network is bounded (:meth:`Gateway.network`): the network
  unreachable, or slower than ``call_timeout_s``, is a 503 with ``Retry-After`` (a
  swarm that rate-limits sends, a 429), so a request never hangs.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from veil.client.bot import Bot
from veil.client.errors import NoConsensus, OnionRequestFailed
from veil.client.gateway.idempotency import IdempotencyBook
from veil.client.gateway.metrics import GatewayMetrics
from veil.client.gateway.problems import Problem
from veil.client.gateway.store import GatewayStore
from veil.client.gateway.tokens import TokenBook
from veil.onion.errors import NetworkError

__all__ = ["DEFAULT_CALL_TIMEOUT_S", "MESSAGES_PER_MINUTE", "UNAVAILABLE_RETRY_S", "Gateway"]

#: A request's network work (a send, a post) is given up after this long: 503.
DEFAULT_CALL_TIMEOUT_S = 20.0
#: What a 503 tells a client to wait (s).
UNAVAILABLE_RETRY_S = 5
#: Messages to one recipient through the gateway per minute (more: 429, Retry-After), so
#: a leaked token cannot flood someone's inbox. Codes have their own limits (the bot's).
MESSAGES_PER_MINUTE = 20


class Gateway:
    """What the routes share: the bot, the gateway's store (tokens, idempotency), the
    metrics, and a nursery for background work (broadcasts)."""

    def __init__(
        self,
        bot: Bot,
        store: GatewayStore,
        *,
        call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
        messages_per_minute: int = MESSAGES_PER_MINUTE,
    ) -> None:
        self.bot = bot
        self.messages_per_minute = messages_per_minute
        self._sent: dict[str, deque[float]] = {}
        self.store = store
        self.tokens = TokenBook(store)
        self.idempotency = IdempotencyBook(store)
        self.metrics = GatewayMetrics()
        self.call_timeout_s = call_timeout_s
        self.nursery: trio.Nursery | None = None

    def may_send(self, to: str) -> None:
        """Count a message to ``to``; :class:`Problem` 429 past the per-minute limit."""
        now = time.monotonic()
        times = self._sent.setdefault(to, deque())
        while times and times[0] <= now - 60:
            times.popleft()
        if len(times) >= self.messages_per_minute:
            raise Problem(
                429,
                "too-many-messages",
                "Too many messages to this recipient",
                f"at most {self.messages_per_minute} a minute to one recipient",
                retry_after=times[0] + 60 - now,
            )
        times.append(now)
        if len(self._sent) > 100_000:  # forget idle recipients
            for key in [k for k, v in self._sent.items() if not v or v[-1] <= now - 60]:
                del self._sent[key]

    async def network(self, what: str, work: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``work`` (a call to the veil network) bounded by ``call_timeout_s``."""
        try:
            with trio.fail_after(self.call_timeout_s):
                return await work()
        except trio.TooSlowError:
            self.metrics.unavailable.inc()
            raise Problem(
                503,
                "network-unavailable",
                "The veil network did not answer in time",
                f"{what}: no answer within {self.call_timeout_s:g} s; nothing was sent "
                "for sure; retry later with the same Idempotency-Key",
                retry_after=UNAVAILABLE_RETRY_S,
            ) from None
        except OnionRequestFailed as exc:
            if exc.status == "rate_limited":
                raise Problem(
                    429,
                    "rate-limited",
                    "The recipient's swarm is rate limiting sends",
                    f"{what}: {exc}",
                    retry_after=UNAVAILABLE_RETRY_S,
                ) from None
            self.metrics.unavailable.inc()
            raise Problem(
                503,
                "network-unavailable",
                "The veil network is unreachable",
                f"{what}: {exc}",
                retry_after=UNAVAILABLE_RETRY_S,
            ) from None
        except (NetworkError, NoConsensus) as exc:
            # NoConsensus: the consensus lists too few nodes for a path (nodes stopped).
            self.metrics.unavailable.inc()
            raise Problem(
                503,
                "network-unavailable",
                "The veil network is unreachable",
                f"{what}: {exc}",
                retry_after=UNAVAILABLE_RETRY_S,
            ) from None
