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

Broadcasts (one message to every subscriber of a topic, exactly once even across a
crash) are :class:`~veil.client.bot.broadcasts.Broadcasts`, a base class of
:class:`Bot`; answering commands posted in a room is
:class:`~veil.client.bot.rooms.RoomAnswers`, another.

One-time codes: :meth:`send_code` and friends, rules in :mod:`veil.client.bot.codes`;
the code's message lives on the swarm exactly as long as the code.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import trio

from veil.client.bot.broadcasts import (
    DEFAULT_CONCURRENCY,
    DEFAULT_RATE_PER_S,
    DEFAULT_RETRIES,
    RETRY_BACKOFF,
    TOPIC,
    BroadcastProgress,
    BroadcastResult,
    Broadcasts,
    check_topic,
)
from veil.client.bot.codes import (
    DEFAULT_TTL_S,
    CodeBook,
    CodeCheck,
    code_message,
)
from veil.client.bot.rooms import RoomAnswers
from veil.client.bot.store import BotStore
from veil.client.errors import InvalidArgument, OnionRequestFailed
from veil.client.messaging import SEND_BACKOFF, SEND_DEADLINE_S, check_ttl
from veil.onion import rpc
from veil.onion.channel import Command, format_bot_link, parse_command
from veil.onion.envelope import MAX_CONTENT, seal
from veil.onion.errors import InvalidCommand, InvalidId, VeilError
from veil.onion.keys import AccountId

if TYPE_CHECKING:
    from veil.client.messaging import InboxMessage
    from veil.client.rooms import Room
    from veil.client.veil_client import VeilClient

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_RATE_PER_S",
    "DEFAULT_RETRIES",
    "RETRY_BACKOFF",
    "Bot",
    "BotContext",
    "BroadcastProgress",
    "BroadcastResult",
]

log = logging.getLogger("veil.bot")

#: Replies to one sender per minute (more are dropped silently).
REPLIES_PER_MINUTE: Final = 20
#: Conversation state lives this long after its last write (s), unless told otherwise.
DEFAULT_STATE_TTL_S: Final = 3600
#: A reply's lifetime in the recipient's inbox (s).
DEFAULT_REPLY_TTL_S: Final = 7 * 86400
_COMMAND_NAME: Final = re.compile(r"[a-z0-9_]{1,32}")
_MAX_STATE_BYTES: Final = 16_384
_BUILTINS: Final = ("start", "help", "subscribe", "unsubscribe", "topics")

Handler = Callable[["BotContext"], "Awaitable[str | None] | str | None"]


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


class Bot(Broadcasts, RoomAnswers):
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
            check_topic(topic)
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

    async def run(
        self, *, rooms: Sequence[Room] = (), task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Resume unfinished broadcasts, then answer messages forever (cancel to stop);
        and the commands posted in ``rooms`` (:meth:`serve_room`)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.resume_broadcasts)
            for room in rooms:
                await nursery.start(functools.partial(self.serve_room, room))
            task_status.started()
            async for message in self.client.messages():
                await self.handle(message)

    async def handle(self, message: InboxMessage) -> None:
        """Answer one message (never raises but for cancellation)."""
        sender = message.sender
        if sender is None:
            return
        self.handled += 1
        replies = await self.answer(sender, message.text)
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

    async def answer(self, sender: AccountId, text: str) -> list[str]:
        """The replies to ``text`` from ``sender`` (nothing is sent): the command's
        handler's, the help for unknown or garbled input, "Sorry, something went wrong."
        for a handler that raised (logged; the bot goes on)."""
        try:
            return await self._dispatch(sender, text)
        except Exception:  # a handler's bug must not stop the bot
            log.exception("a bot handler failed")
            return ["Sorry, something went wrong."]

    def knows(self, name: str) -> bool:
        """Whether ``/name`` is one of this bot's commands (built in or registered)."""
        return name in _BUILTINS or name in self._commands

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
        if not TOPIC.fullmatch(topic) or (self.topics and topic not in self.topics):
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
        check_topic(topic)
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


def _account(to: AccountId | str) -> AccountId:
    if isinstance(to, AccountId):
        return to
    try:
        return AccountId.parse(to)
    except InvalidId as exc:
        raise InvalidArgument(f"not an account ID: {exc}") from None
