"""``Bot``: commands, subscribers, broadcasts and one-time codes on a :class:`VeilClient`.

Design note
-----------
A bot is an account run by a service (DESIGN.md, "Channels and bots"); people reach it
as any account, with ``veil send BOT_ID "/subscribe news"``, and its answers arrive in
their inbox. :meth:`Bot.run` reads the bot's inbox with the client's exactly-once
receiver (:meth:`VeilClient.messages`) and answers each message:

* a command (``/name args``, :func:`veil.onion.channel.parse_command`) goes to its
  handler: the built-ins ``/start [param]`` (a deep link's ``?start=``), ``/help``,
  ``/subscribe TOPIC``, ``/unsubscribe [TOPIC]``, ``/topics``, or one registered with
  ``@bot.command("weather")``; other text to the catch-all (``@bot.on_message``);
* an unknown or malformed command, or any text without a catch-all, is answered with
  the help; a handler that raises is logged and answered "something went wrong": no
  input ends the loop. Answers to one sender are limited (:data:`REPLIES_PER_MINUTE`),
  so the bot cannot be used to flood someone's inbox with replies;
* a handler gets a :class:`BotContext`: the sender, the command, and the sender's
  conversation state (:meth:`BotContext.state`, persisted with an expiry).

Sending a message a crash must not repeat (broadcasts) uses the same property the
client's sends rely on (:mod:`veil.client.messaging`): a node names a message by the
hash of its bytes and stores a duplicate once, and the receiver drops a hash it holds.
So :meth:`Bot.broadcast` first seals one envelope per subscriber and writes them all,
with the job, in one transaction; then sends them (bounded concurrency, a rate limit,
retries with back-off), marking each sent once a node took it. A bot killed at any
point resumes the job on restart (:meth:`resume_broadcasts`, run first by
:meth:`run`) by sending the *same bytes* again to everyone not yet marked: a person whose
copy had been stored before the crash gets the same message hash again, which is dropped.
Every subscriber thus receives it exactly once.

One-time codes: :meth:`send_code` and friends, rules in :mod:`veil.client.bot.codes`;
the code's message lives on the swarm exactly as long as the code.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import trio

from veil.client.bot.codes import (
    DEFAULT_TTL_S,
    CodeBook,
    CodeCheck,
    code_message,
)
from veil.client.bot.store import BotStore
from veil.client.errors import InvalidArgument, OnionRequestFailed
from veil.client.messaging import SEND_BACKOFF, SEND_DEADLINE_S, check_ttl
from veil.onion import rpc
from veil.onion.backoff import Backoff
from veil.onion.channel import Command, format_bot_link, parse_command
from veil.onion.envelope import MAX_CONTENT, seal
from veil.onion.errors import InvalidCommand, InvalidId, VeilError
from veil.onion.keys import AccountId

if TYPE_CHECKING:
    from veil.client.messaging import InboxMessage
    from veil.client.veil_client import VeilClient

__all__ = ["Bot", "BotContext", "BroadcastProgress", "BroadcastResult"]

log = logging.getLogger("veil.bot")

#: Replies to one sender per minute (more are dropped silently).
REPLIES_PER_MINUTE: Final = 20
#: Conversation state lives this long after its last write (s), unless told otherwise.
DEFAULT_STATE_TTL_S: Final = 3600
#: A reply's lifetime in the recipient's inbox (s).
DEFAULT_REPLY_TTL_S: Final = 7 * 86400
#: A broadcast's defaults: Telegram's documented limit is about 30 messages/s.
DEFAULT_CONCURRENCY: Final = 8
DEFAULT_RATE_PER_S: Final = 30.0
DEFAULT_RETRIES: Final = 5
RETRY_BACKOFF: Final = Backoff(first_s=0.5, max_s=10.0)
_TOPIC: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_COMMAND_NAME: Final = re.compile(r"[a-z0-9_]{1,32}")
_MAX_STATE_BYTES: Final = 16_384
_BUILTINS: Final = ("start", "help", "subscribe", "unsubscribe", "topics")

Handler = Callable[["BotContext"], "Awaitable[str | None] | str | None"]


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


@dataclass
class BotContext:
    """What a handler gets: the sender, the message, the command (None for plain text)."""

    bot: Bot
    sender: AccountId
    text: str
    command: Command | None = None
    replies: list[str] = field(default_factory=list)

    @property
    def args(self) -> str:
        return self.command.args if self.command is not None else ""

    async def reply(self, text: str) -> None:
        """Answer the sender (in addition to what the handler returns)."""
        self.replies.append(text)

    def state(self) -> dict[str, Any]:
        """The sender's conversation state ({} if none or expired)."""
        return self.bot.get_state(self.sender)

    def save_state(self, data: dict[str, Any], *, ttl_s: float = DEFAULT_STATE_TTL_S) -> None:
        self.bot.set_state(self.sender, data, ttl_s=ttl_s)

    def clear_state(self) -> None:
        self.bot.set_state(self.sender, None)


@dataclass(frozen=True, slots=True)
class _Command:
    name: str
    description: str
    handler: Handler


class Bot:
    """A bot on ``client`` (see the module note). Its database and code secret live in
    ``directory`` (default: ``HOME/bot`` of the client's home). ``name`` is shown in the
    help and in code messages ("who asks"); ``topics``, if given, are the only topics
    one may subscribe to (name to description)."""

    def __init__(
        self,
        client: VeilClient,
        *,
        name: str | None = None,
        description: str = "",
        topics: dict[str, str] | None = None,
        directory: str | Path | None = None,
        now_ms: Callable[[], int] | None = None,
    ) -> None:
        self.client = client
        self.name = name or "a veil bot"
        self.description = description
        self.topics = dict(topics or {})
        for topic in self.topics:
            _check_topic(topic)
        self.store = BotStore(directory if directory is not None else client.home.path / "bot")
        #: The bot's clock (ms): codes, states and jobs are the bot's own business, on
        #: its local wall clock; messages are dated by the network's (the client's).
        self._now = now_ms or (lambda: int(time.time() * 1000))
        self.codes = CodeBook(self.store, self._now)
        self._commands: dict[str, _Command] = {}
        self._catch_all: Handler | None = None
        self._on_start: Handler | None = None
        self._replies: dict[AccountId, deque[float]] = {}
        self.handled = 0
        self.refused = 0

    @property
    def id(self) -> AccountId:
        return self.client.account_id

    def link(self, start: str | None = None) -> str:
        """The bot's deep link, ``veil://bot/<id>[?start=...]``."""
        return format_bot_link(self.id, start)

    def close(self) -> None:
        self.store.close()

    # --- registration ----------------------------------------------------------------------

    def command(self, name: str, description: str = "") -> Callable[[Handler], Handler]:
        """``@bot.command("weather", "the forecast")``: a handler for ``/weather ...``;
        it returns the reply's text (or None) and may be async."""
        if not isinstance(name, str) or not _COMMAND_NAME.fullmatch(name):
            raise InvalidArgument("a command name is 1 to 32 of a-z 0-9 _")

        def register(handler: Handler) -> Handler:
            if name == "start":
                self._on_start = handler
            else:
                self._commands[name] = _Command(name, description, handler)
            return handler

        return register

    def on_message(self, handler: Handler) -> Handler:
        """``@bot.on_message``: the catch-all for text that is not a command."""
        self._catch_all = handler
        return handler

    def help_text(self) -> str:
        lines = [f"{self.name}" + (f": {self.description}" if self.description else "")]
        lines.append("/start - begin")
        lines.append("/help - this list")
        lines.append("/subscribe TOPIC - get broadcasts on TOPIC")
        lines.append("/unsubscribe [TOPIC] - stop (every topic without one)")
        lines.append("/topics - the topics and your subscriptions")
        for cmd in sorted(self._commands.values(), key=lambda c: c.name):
            if cmd.name not in _BUILTINS:
                lines.append(f"/{cmd.name}" + (f" - {cmd.description}" if cmd.description else ""))
        return "\n".join(lines)

    # --- serving ---------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Resume unfinished broadcasts, then answer messages forever (cancel to stop)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.resume_broadcasts)
            task_status.started()
            async for message in self.client.messages():
                await self.handle(message)

    async def handle(self, message: InboxMessage) -> None:
        """Answer one message (never raises but for cancellation)."""
        sender = message.sender
        if sender is None:
            return
        self.handled += 1
        text = message.text
        try:
            replies = await self._dispatch(sender, text)
        except Exception:  # a handler's bug must not stop the bot
            log.exception("a bot handler failed")
            replies = ["Sorry, something went wrong."]
        for reply in replies:
            if not self._may_reply(sender):
                self.refused += 1
                return
            try:
                await self.send(sender, reply[: MAX_CONTENT // 4], ttl=DEFAULT_REPLY_TTL_S)
            except VeilError as exc:
                log.warning("reply not sent: %s", exc)

    def _may_reply(self, sender: AccountId) -> bool:
        now = time.monotonic()
        times = self._replies.setdefault(sender, deque())
        while times and times[0] < now - 60:
            times.popleft()
        if len(times) >= REPLIES_PER_MINUTE:
            return False
        times.append(now)
        if len(self._replies) > 10_000:  # forget idle senders
            for key in [k for k, v in self._replies.items() if not v][:5000]:
                del self._replies[key]
        return True

    async def _dispatch(self, sender: AccountId, text: str) -> list[str]:
        try:
            command = parse_command(text)
        except InvalidCommand:
            self.refused += 1
            return ["I did not understand that.\n" + self.help_text()]
        ctx = BotContext(self, sender, text, command)
        if command is None:
            if self._catch_all is None:
                return [self.help_text()]
            return await self._call(self._catch_all, ctx)
        name = command.name
        if name == "start":
            if self._on_start is not None:
                return await self._call(self._on_start, ctx)
            return [f"Welcome to {self.name}.\n{self.help_text()}"]
        if name == "help":
            return [self.help_text()]
        if name == "subscribe":
            return [self._subscribe(sender, command.args)]
        if name == "unsubscribe":
            return [self._unsubscribe(sender, command.args)]
        if name == "topics":
            return [self._topics_text(sender)]
        custom = self._commands.get(name)
        if custom is None:
            return [f"Unknown command /{name}.\n{self.help_text()}"]
        return await self._call(custom.handler, ctx)

    async def _call(self, handler: Handler, ctx: BotContext) -> list[str]:
        result = handler(ctx)
        if inspect.isawaitable(result):
            result = await result
        out = list(ctx.replies)
        if isinstance(result, str) and result:
            out.append(result)
        return out

    # --- subscribers -----------------------------------------------------------------------

    def _subscribe(self, sender: AccountId, args: str) -> str:
        topic = args.strip().lower()
        if not topic:
            return "Which topic? /subscribe TOPIC (see /topics)"
        if not _TOPIC.fullmatch(topic) or (self.topics and topic not in self.topics):
            return f"No topic {topic[:40]!r}. " + self._topics_text(sender)
        self.subscribe(sender, topic)
        return f"Subscribed to {topic}. /unsubscribe {topic} to stop."

    def _unsubscribe(self, sender: AccountId, args: str) -> str:
        topic = args.strip().lower() or None
        removed = self.unsubscribe(sender, topic)
        if topic is None:
            return f"Unsubscribed from every topic ({removed})."
        return f"Unsubscribed from {topic}." if removed else f"You were not subscribed to {topic}."

    def _topics_text(self, sender: AccountId) -> str:
        mine = self.subscriptions(sender)
        lines = []
        if self.topics:
            lines.append("Topics:")
            for topic, description in sorted(self.topics.items()):
                mark = " (subscribed)" if topic in mine else ""
                lines.append(f"  {topic}{mark}" + (f" - {description}" if description else ""))
        lines.append("Your subscriptions: " + (", ".join(sorted(mine)) if mine else "none"))
        return "\n".join(lines)

    def subscribe(self, who: AccountId, topic: str) -> None:
        _check_topic(topic)
        self.store.execute(
            "INSERT OR IGNORE INTO subscribers (recipient, topic, since_ms) VALUES (?, ?, ?)",
            (str(who), topic, self._now()),
        )

    def unsubscribe(self, who: AccountId, topic: str | None = None) -> int:
        if topic is None:
            cur = self.store.execute("DELETE FROM subscribers WHERE recipient = ?", (str(who),))
        else:
            cur = self.store.execute(
                "DELETE FROM subscribers WHERE recipient = ? AND topic = ?", (str(who), topic)
            )
        return int(cur.rowcount)

    def subscriptions(self, who: AccountId) -> set[str]:
        rows = self.store.all("SELECT topic FROM subscribers WHERE recipient = ?", (str(who),))
        return {r[0] for r in rows}

    def subscribers(self, topic: str) -> list[AccountId]:
        rows = self.store.all(
            "SELECT recipient FROM subscribers WHERE topic = ? ORDER BY recipient", (topic,)
        )
        return [AccountId.parse(r[0]) for r in rows]

    # --- conversation state ----------------------------------------------------------------

    def get_state(self, who: AccountId) -> dict[str, Any]:
        row = self.store.one(
            "SELECT data, expires_ms FROM conversations WHERE user = ?", (str(who),)
        )
        if row is None or row[1] <= self._now():
            return {}
        data = json.loads(row[0])
        return data if isinstance(data, dict) else {}

    def set_state(
        self, who: AccountId, data: dict[str, Any] | None, *, ttl_s: float = DEFAULT_STATE_TTL_S
    ) -> None:
        """Persist ``who``'s state for ``ttl_s`` seconds (None: forget it)."""
        now = self._now()
        self.store.execute("DELETE FROM conversations WHERE expires_ms <= ?", (now,))
        if data is None:
            self.store.execute("DELETE FROM conversations WHERE user = ?", (str(who),))
            return
        raw = json.dumps(data, separators=(",", ":"))
        if len(raw) > _MAX_STATE_BYTES:
            raise InvalidArgument(f"conversation state is at most {_MAX_STATE_BYTES} bytes of JSON")
        self.store.execute(
            "INSERT OR REPLACE INTO conversations (user, data, expires_ms) VALUES (?, ?, ?)",
            (str(who), raw, now + round(ttl_s * 1000)),
        )

    # --- sending ---------------------------------------------------------------------------

    def seal_for(self, to: AccountId, text: str) -> bytes:
        """The sealed envelope of ``text`` for ``to`` (signed by the bot's account)."""
        data = text.encode("utf-8")
        if len(data) > MAX_CONTENT:
            raise InvalidArgument(f"a message is at most {MAX_CONTENT} bytes")
        account = self.client.require_seed("a bot's message (signed by the account)")
        return seal(account, to, data, timestamp_ms=self.client.clock.now())

    async def send_sealed(self, to: AccountId, envelope: bytes, ttl_ms: int) -> rpc.StoreResult:
        """Store ``envelope`` (sealed already) in ``to``'s inbox, retrying while its
        swarm says rate_limited (as :func:`veil.client.messaging.send_message`). Sending
        the same bytes twice stores them once."""

        def build(now_ms: int) -> bytes:
            return rpc.make_store(to, envelope, ttl_ms, now_ms=now_ms)

        give_up = trio.current_time() + SEND_DEADLINE_S
        refusals = 0
        while True:
            try:
                reply = await self.client.call(build, account=to)
                break
            except OnionRequestFailed as exc:
                refusals += 1
                delay = SEND_BACKOFF.delay_s(refusals)
                if exc.status != "rate_limited" or trio.current_time() + delay > give_up:
                    raise
            await trio.sleep(delay)
        assert reply.result is not None
        return rpc.StoreResult.from_wire(reply.result)

    async def send(
        self, to: AccountId | str, text: str, *, ttl: float = DEFAULT_REPLY_TTL_S
    ) -> bytes:
        """Send ``text`` to ``to``, kept ``ttl`` seconds; the message's hash."""
        recipient = _account(to)
        ttl_ms = check_ttl(ttl)
        result = await self.send_sealed(recipient, self.seal_for(recipient, text), ttl_ms)
        return result.hash

    # --- one-time codes --------------------------------------------------------------------

    async def send_code(
        self,
        to: AccountId | str,
        purpose: str,
        ttl: int = DEFAULT_TTL_S,
        digits: int = 6,
        *,
        alphanumeric: bool = False,
    ) -> str:
        """Send a one-time code for ``purpose`` to ``to``; its ticket (status
        ``pending``). The ticket is written before the message leaves; the message's TTL
        is the code's. :class:`~veil.client.bot.errors.TooManyCodes`,
        :class:`~veil.client.bot.errors.InvalidCodeRequest` (nothing sent)."""
        recipient = _account(to)
        new = self.codes.new_code(
            str(recipient), purpose, ttl_s=ttl, digits=digits, alphanumeric=alphanumeric
        )
        who = f"{self.name} ({str(self.id)[:12]}...)"
        text = code_message(new.code, purpose, who, int(ttl))
        # The message leaves the swarm when the code expires: its TTL is what is left of
        # the ticket's lifetime (at least the swarm's minimum), not counted from now.
        ttl_ms = max(rpc.MIN_TTL_MS, new.expires_ms - self._now())
        try:
            result = await self.send_sealed(recipient, self.seal_for(recipient, text), ttl_ms)
        except BaseException:
            with trio.CancelScope(shield=True):
                self.codes.drop(new.ticket)
            raise
        self.codes.set_message_hash(new.ticket, result.hash)
        return new.ticket

    def check_code(self, ticket: str, code: str) -> CodeCheck:
        """``approved``, ``pending`` (with ``attempts_left``), ``expired``,
        ``max_attempts_reached`` or ``canceled``; :class:`CodeAlreadyUsed` for a ticket
        approved before, :class:`UnknownTicket`."""
        return self.codes.check(ticket, code)

    def code_status(self, ticket: str) -> CodeCheck:
        return self.codes.status(ticket)

    def cancel_code(self, ticket: str) -> CodeCheck:
        return self.codes.cancel(ticket)

    # --- broadcasts ------------------------------------------------------------------------

    def prepare_broadcast(self, topic: str, text: str, *, ttl: float = DEFAULT_REPLY_TTL_S) -> str:
        """Write a broadcast job: one sealed envelope per current subscriber of
        ``topic``, in one transaction. Its ID; :meth:`run_broadcast` sends it."""
        _check_topic(topic)
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
        ttl: float = DEFAULT_REPLY_TTL_S,
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


def _check_topic(topic: str) -> None:
    if not isinstance(topic, str) or not _TOPIC.fullmatch(topic):
        raise InvalidArgument("a topic is 1 to 32 of a-z 0-9 _ -")


def _account(to: AccountId | str) -> AccountId:
    if isinstance(to, AccountId):
        return to
    try:
        return AccountId.parse(to)
    except InvalidId as exc:
        raise InvalidArgument(f"not an account ID: {exc}") from None
