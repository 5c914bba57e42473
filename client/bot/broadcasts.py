"""A bot's broadcasts: one message to every subscriber of a topic, exactly once even
across a crash of the bot.

Design note
-----------
Sending a message a crash must not repeat uses the same property the client's sends
rely on (:mod:`veil.client.messaging`): a node names a message by the hash of its bytes
and stores a duplicate once, and the receiver drops a hash it holds. So
:meth:`Broadcasts.broadcast` first seals one envelope per subscriber and writes them
all, with the job, in one transaction; then sends them (bounded concurrency, a rate
limit, retries with back-off), marking each sent once a node took it. A bot killed at
any point resumes the job on restart (:meth:`Broadcasts.resume_broadcasts`, run first
by :meth:`~veil.client.bot.Bot.run`) by sending the *same bytes* again to everyone not
yet marked: a person whose copy had been stored before the crash gets the same message
hash again, which is dropped. Every subscriber thus receives it exactly once.

:class:`Broadcasts` is a part of :class:`~veil.client.bot.Bot` (its base class), kept
apart because it is one job: the jobs' tables, the sending loop and its progress.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import trio

from veil.client.errors import InvalidArgument
from veil.client.messaging import check_ttl
from veil.onion import rpc
from veil.onion.backoff import Backoff
from veil.onion.envelope import MAX_CONTENT
from veil.onion.errors import VeilError
from veil.onion.keys import AccountId

if TYPE_CHECKING:
    from veil.client.bot.store import BotStore

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_RATE_PER_S",
    "DEFAULT_RETRIES",
    "RETRY_BACKOFF",
    "TOPIC",
    "BroadcastProgress",
    "BroadcastResult",
    "Broadcasts",
    "check_topic",
]

log = logging.getLogger("veil.bot")

#: A reply's and a broadcast's lifetime in the recipient's inbox (s).
DEFAULT_TTL_S: Final = 7 * 86400
#: A broadcast's defaults: Telegram's documented limit is about 30 messages/s.
DEFAULT_CONCURRENCY: Final = 8
DEFAULT_RATE_PER_S: Final = 30.0
DEFAULT_RETRIES: Final = 5
RETRY_BACKOFF: Final = Backoff(first_s=0.5, max_s=10.0)
#: A topic's name.
TOPIC: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


def check_topic(topic: str) -> None:
    if not isinstance(topic, str) or not TOPIC.fullmatch(topic):
        raise InvalidArgument("a topic is 1 to 32 of a-z 0-9 _ -")


@dataclass(frozen=True, slots=True)
class BroadcastProgress:
    """Where a broadcast stands: subscribers sent to, failed (after every retry), left."""

    job_id: str
    sent: int
    failed: int
    pending: int


@dataclass(frozen=True, slots=True)
class BroadcastResult:
    job_id: str
    topic: str
    sent: int
    failed: int
    total: int

    def to_json(self) -> dict[str, object]:
        return {
            "job_id": self.job_id,
            "topic": self.topic,
            "sent": self.sent,
            "failed": self.failed,
            "total": self.total,
        }


class Broadcasts:
    """Broadcast jobs: a base class of :class:`~veil.client.bot.Bot` (see the module
    note); its methods are the bot's. What it needs of the bot:"""

    store: BotStore
    _now: Callable[[], int]

    if TYPE_CHECKING:  # the class this is a base of defines these; declared for mypy

        def seal_for(self, to: AccountId, text: str) -> bytes: ...

        def subscribers(self, topic: str) -> list[AccountId]: ...

        async def send_sealed(
            self, to: AccountId, envelope: bytes, ttl_ms: int
        ) -> rpc.StoreResult: ...

    def prepare_broadcast(self, topic: str, text: str, *, ttl: float = DEFAULT_TTL_S) -> str:
        """Write a broadcast job: one sealed envelope per current subscriber of
        ``topic``, in one transaction. Its ID; :meth:`run_broadcast` sends it."""
        check_topic(topic)
        ttl_ms = check_ttl(ttl)
        if len(text.encode("utf-8")) > MAX_CONTENT:
            raise InvalidArgument(f"a message is at most {MAX_CONTENT} bytes")
        job_id = "bc_" + secrets.token_urlsafe(12)
        sealed = [(str(to), self.seal_for(to, text)) for to in self.subscribers(topic)]
        with self.store.transaction() as db:
            db.execute(
                "INSERT INTO broadcasts (job_id, topic, text, ttl_ms, created_ms) "
                "VALUES (?, ?, ?, ?, ?)",
                (job_id, topic, text, ttl_ms, self._now()),
            )
            for recipient, envelope in sealed:
                db.execute(
                    "INSERT INTO broadcast_items (job_id, recipient, envelope, status) "
                    "VALUES (?, ?, ?, 'pending')",
                    (job_id, recipient, envelope),
                )
        return job_id

    async def broadcast(
        self,
        topic: str,
        text: str,
        *,
        ttl: float = DEFAULT_TTL_S,
        progress: Callable[[BroadcastProgress], Any] | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        rate_per_s: float = DEFAULT_RATE_PER_S,
        retries: int = DEFAULT_RETRIES,
    ) -> BroadcastResult:
        """Send ``text`` to every subscriber of ``topic``, exactly once even across a
        crash (see the module note)."""
        job_id = self.prepare_broadcast(topic, text, ttl=ttl)
        return await self.run_broadcast(
            job_id,
            progress=progress,
            concurrency=concurrency,
            rate_per_s=rate_per_s,
            retries=retries,
        )

    def unfinished_broadcasts(self) -> list[str]:
        rows = self.store.all("SELECT job_id FROM broadcasts WHERE done = 0 ORDER BY created_ms")
        return [r[0] for r in rows]

    async def resume_broadcasts(self, **options: Any) -> list[BroadcastResult]:
        """Finish every broadcast a previous run left unfinished."""
        return [await self.run_broadcast(job, **options) for job in self.unfinished_broadcasts()]

    def broadcast_progress(self, job_id: str) -> BroadcastProgress:
        counts = dict(
            self.store.all(
                "SELECT status, COUNT(*) FROM broadcast_items WHERE job_id = ? GROUP BY status",
                (job_id,),
            )
        )
        return BroadcastProgress(
            job_id, counts.get("sent", 0), counts.get("failed", 0), counts.get("pending", 0)
        )

    async def run_broadcast(
        self,
        job_id: str,
        *,
        progress: Callable[[BroadcastProgress], Any] | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        rate_per_s: float = DEFAULT_RATE_PER_S,
        retries: int = DEFAULT_RETRIES,
    ) -> BroadcastResult:
        """Send a job's pending envelopes (the same bytes as written)."""
        if concurrency < 1 or rate_per_s <= 0 or retries < 0:
            raise InvalidArgument("concurrency >= 1, rate_per_s > 0, retries >= 0")
        job = self.store.one("SELECT topic, ttl_ms FROM broadcasts WHERE job_id = ?", (job_id,))
        if job is None:
            raise InvalidArgument(f"no broadcast {job_id!r}")
        topic, ttl_ms = job
        pending = self.store.all(
            "SELECT recipient, envelope FROM broadcast_items "
            "WHERE job_id = ? AND status = 'pending'",
            (job_id,),
        )
        limiter = trio.CapacityLimiter(concurrency)
        interval = 1.0 / rate_per_s
        next_slot = [trio.current_time()]
        # Counted once from the table, then kept in step with each item's update: a
        # count query per item made a job of N items cost O(N^2) (2.8 ms an item, on the
        # event loop, at 10,000 subscribers).
        counts = self.broadcast_progress(job_id)
        tally = {"sent": counts.sent, "failed": counts.failed, "pending": counts.pending}

        def report() -> None:
            if progress is not None:
                progress(
                    BroadcastProgress(job_id, tally["sent"], tally["failed"], tally["pending"])
                )

        async def one(recipient: str, envelope: bytes) -> None:
            to = AccountId.parse(recipient)
            tries = 0
            while True:
                try:
                    await self.send_sealed(to, envelope, ttl_ms)
                    status = "sent"
                    break
                except VeilError as exc:
                    tries += 1
                    if tries > retries:
                        log.warning("broadcast %s to %s failed: %s", job_id, recipient[:12], exc)
                        status = "failed"
                        break
                await trio.sleep(RETRY_BACKOFF.delay_s(tries))
            self.store.execute(
                "UPDATE broadcast_items SET status = ?, tries = tries + ? "
                "WHERE job_id = ? AND recipient = ?",
                (status, tries, job_id, recipient),
            )
            tally["pending"] -= 1
            tally[status] += 1
            report()

        async def paced(recipient: str, envelope: bytes) -> None:
            try:
                await one(recipient, envelope)
            finally:
                limiter.release_on_behalf_of(recipient)

        report()
        async with trio.open_nursery() as nursery:
            for recipient, envelope in pending:
                # The rate limit: one start per interval.
                now = trio.current_time()
                slot = max(now, next_slot[0])
                next_slot[0] = slot + interval
                await trio.sleep_until(slot)
                await limiter.acquire_on_behalf_of(recipient)  # bounded concurrency
                nursery.start_soon(paced, recipient, envelope)
        self.store.execute("UPDATE broadcasts SET done = 1 WHERE job_id = ?", (job_id,))
        final = self.broadcast_progress(job_id)
        return BroadcastResult(
            job_id, topic, final.sent, final.failed, final.sent + final.failed + final.pending
        )
