"""A bot in a room: it answers the commands people post there, in the room, exactly once.

Design note
-----------
:meth:`RoomAnswers.serve_room` reads the room with a reader of its own (``reader
"bot"``: its position and the posts handed to it are apart from the user's ``veil room
read`` on the same home), from the moment the bot first joined the room (older posts
are history, not requests). A post whose text is a command the bot knows (the built-ins
and those registered with ``@bot.command``) goes to the same dispatch as a message in
its inbox (:meth:`~veil.client.bot.Bot.answer`); the replies are posted in the room, as
the bot's account, each a reply to the command's post. Anything else (plain text, a
command the bot does not know, which may be another bot's, the bot's own posts) gets no
answer: a bot must not fill a room with help texts. Answers to one author are limited
as in the inbox (:data:`~veil.client.bot.bot.REPLIES_PER_MINUTE`), and the room's own
rules (size, rate, work) bind the bot like anyone: a reply is cut to the room's size,
and one over the room's rate waits for its turn.

**Exactly once across restarts.** Taking on a command is one transaction in the bot's
database (``room_commands`` and its replies' texts in ``room_replies``), written before
any reply leaves; each reply's signed post is written before it is sent, and marked
once a node took it. A bot killed at any point, on restart: sends again the replies
written and not marked (the same bytes: the nodes take them once), and answers the
command posts its reader handed over that have no row (the process died between the
reader's record and the bot's). A reply post kept too long to be dated "now" (the nodes
allow two minutes) is made anew, unless the room already holds the old one. The
handler itself runs once per command, unless the bot dies while it runs (then it runs
again at restart: make handlers' own side effects idempotent).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

import trio

from veil.client.rooms.errors import RoomClockSkew, RoomRateExceeded, RoomRefused
from veil.client.rooms.reader import shown_posts
from veil.onion.backoff import Backoff
from veil.onion.channel import parse_command
from veil.onion.errors import InvalidCommand, RoomError, VeilError
from veil.onion.keys import AccountId
from veil.onion.room import RoomPost, decode_room_record

if TYPE_CHECKING:
    from veil.client.bot.store import BotStore
    from veil.client.rooms.room import Room
    from veil.client.veil_client import VeilClient

__all__ = ["ROOM_READER", "RoomAnswers"]

log = logging.getLogger("veil.bot")

#: The bot's reader of a room (its own position and ``shown`` set in rooms.sqlite).
ROOM_READER: Final = "bot"
#: A reply post older than this is made anew (if the room does not hold it): nodes
#: take posts dated within two minutes of their clock.
FRESH_MS: Final = 60_000
#: Tries of a reply the network failed (each after a back-off); then it waits for the
#: next start, still written.
SEND_TRIES: Final = 5
SEND_BACKOFF: Final = Backoff(first_s=1.0, max_s=30.0)
#: Waiting for the room's rate when the nodes said it (the client knows no time).
RATE_WAIT_S: Final = 6.0


def _cut(text: str, size: int) -> str:
    """``text`` cut to at most ``size`` UTF-8 bytes (on a character boundary)."""
    return text.encode()[:size].decode("utf-8", errors="ignore")


class RoomAnswers:
    """Answering commands in rooms: a base class of :class:`~veil.client.bot.Bot` (see
    the module note); its methods are the bot's. What it needs of the bot:"""

    client: VeilClient
    store: BotStore
    handled: int
    refused: int

    if TYPE_CHECKING:  # the class this is a base of defines these; declared for mypy

        @property
        def id(self) -> AccountId: ...

        def knows(self, name: str) -> bool: ...

        async def answer(self, sender: AccountId, text: str) -> list[str]: ...

        def _may_reply(self, sender: AccountId) -> bool: ...

    # --- serving ---------------------------------------------------------------------

    def _joined(self, room: Room) -> int:
        """When the bot first served ``room`` (ms, network time): set once."""
        self.store.execute(
            "INSERT OR IGNORE INTO room_joins (room, joined_ms) VALUES (?, ?)",
            (str(room.id), self.client.clock.now()),
        )
        (joined,) = self.store.one(
            "SELECT joined_ms FROM room_joins WHERE room = ?", (str(room.id),)
        )
        return int(joined)

    async def serve_room(self, room: Room, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Answer the commands posted in ``room`` forever (cancel to stop): first what a
        previous run left, then new posts as they come (see the module note)."""
        joined = self._joined(room)
        for (post_id,) in self.store.all(
            "SELECT post_id FROM room_commands WHERE room = ? AND status = 'pending'",
            (str(room.id),),
        ):
            await self._send_replies(room, post_id)
        task_status.started()
        for post in shown_posts(self.client, room.id, ROOM_READER):
            if post.timestamp_ms >= joined:
                await self.answer_post(room, post)
        async for event in room.messages(since=joined, reader=ROOM_READER):
            if isinstance(event, RoomPost):
                await self.answer_post(room, event)

    def _command(self, post: RoomPost) -> bool:
        """Whether ``post`` is a command this bot answers (see the module note)."""
        if post.author == self.id:
            return False
        try:
            command = parse_command(post.text)
        except InvalidCommand:
            return False
        return command is not None and self.knows(command.name)

    async def answer_post(self, room: Room, post: RoomPost) -> bool:
        """Answer one post of ``room`` if it is a command for this bot not answered yet;
        whether it was taken on (never raises but for cancellation)."""
        if not self._command(post):
            return False
        key = (str(room.id), post.post_id)
        if self.store.one("SELECT 1 FROM room_commands WHERE room = ? AND post_id = ?", key):
            return False
        self.handled += 1
        replies = await self.answer(post.author, post.text)
        kept = []
        for reply in replies:
            if not self._may_reply(post.author):
                self.refused += 1
                break
            kept.append(reply)
        with self.store.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO room_commands (room, post_id, author, status) "
                "VALUES (?, ?, ?, 'pending')",
                (*key, str(post.author)),
            )
            for n, text in enumerate(kept):
                db.execute(
                    "INSERT OR IGNORE INTO room_replies (room, post_id, n, text, record, status) "
                    "VALUES (?, ?, ?, ?, NULL, 'pending')",
                    (*key, n, text),
                )
        await self._send_replies(room, post.post_id)
        return True

    # --- sending replies ---------------------------------------------------------------

    async def _send_replies(self, room: Room, post_id: bytes) -> None:
        key = (str(room.id), post_id)
        rows = self.store.all(
            "SELECT n, text, record FROM room_replies WHERE room = ? AND post_id = ? "
            "AND status = 'pending' ORDER BY n",
            key,
        )
        for n, text, record in rows:
            status = await self._send_reply(room, post_id, n, text, record)
            if status == "pending":
                return  # the network is down: the next start sends it
            self.store.execute(
                "UPDATE room_replies SET status = ? WHERE room = ? AND post_id = ? AND n = ?",
                (status, *key, n),
            )
        self.store.execute(
            "UPDATE room_commands SET status = 'done' WHERE room = ? AND post_id = ?", key
        )

    def _stale(self, record: bytes) -> bool:
        try:
            post = decode_room_record(record)
        except RoomError:
            return True
        return not isinstance(post, RoomPost) or self.client.clock.now() - post.timestamp_ms > (
            FRESH_MS
        )

    async def _send_reply(
        self, room: Room, post_id: bytes, n: int, text: str, record: bytes | None
    ) -> str:
        """Send one reply (making its post first if needed); ``sent``, ``failed`` (the
        room refused it for good: logged) or ``pending`` (the network failed)."""
        failures = 0
        while True:
            if record is not None and self._stale(record):
                if await room.holds(record):
                    return "sent"
                record = None
            if record is None:
                try:
                    rules = await room.rules()
                    post = await room.make_post(_cut(text, rules.size), reply_to=post_id)
                except RoomRateExceeded as exc:
                    await trio.sleep(exc.retry_after_s or RATE_WAIT_S)
                    continue
                except RoomRefused as exc:
                    log.warning("room reply not made: %s", exc)
                    return "failed"
                except VeilError as exc:  # the room's rules could not be read
                    failures += 1
                    if failures >= SEND_TRIES:
                        log.warning("room reply not made yet: %s", exc)
                        return "pending"
                    await trio.sleep(SEND_BACKOFF.delay_s(failures))
                    continue
                record = post.encoded
                self.store.execute(
                    "UPDATE room_replies SET record = ? WHERE room = ? AND post_id = ? AND n = ?",
                    (record, str(room.id), post_id, n),
                )
            made = decode_room_record(record)
            assert isinstance(made, RoomPost)
            try:
                await room.send_post(made)
                return "sent"
            except RoomRateExceeded:
                await trio.sleep(RATE_WAIT_S)
            except RoomClockSkew:  # dated outside the nodes' window: made anew
                if await room.holds(record):
                    return "sent"
                record = None
            except RoomRefused as exc:
                log.warning("room reply refused: %s", exc)
                return "failed"
            except VeilError as exc:
                failures += 1
                if failures >= SEND_TRIES:
                    log.warning("room reply not sent yet: %s", exc)
                    return "pending"
                await trio.sleep(SEND_BACKOFF.delay_s(failures))
