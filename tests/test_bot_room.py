"""A bot in a room (issue 16), on a real devnet: it answers the commands it knows posted
in the room, in the room, as replies, and nothing else; and each command is answered
exactly once when the bot dies at any of the points that matter and is started again
on the same home (the crash is a BaseException raised inside the bot's own process at
that point; the network, the nodes and the databases are real)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.devnetutil import GROUP_NODE_CONFIG, devnet
from tests.swarmutil import eventually
from veil.client.bot import Bot
from veil.client.devnet import Devnet
from veil.client.home import Home
from veil.client.rooms import Room, create_room, open_room
from veil.client.veil_client import VeilClient, open_client
from veil.onion.keys import Account, AccountId
from veil.onion.room import RoomPost

pytestmark = pytest.mark.slow


class Crash(BaseException):
    """The bot's process dies here."""


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    with devnet(
        tmp_path_factory.mktemp("bot-rooms"), nodes=4, swarm_size=3, node_config=GROUP_NODE_CONFIG
    ) as running:
        yield running


@asynccontextmanager
async def client_at(net: Devnet, home: Path) -> AsyncIterator[VeilClient]:
    if not Home(home).has_identity():
        Home(home).save_identity(Account.generate())
    async with open_client(home, net.network_file) as client:
        yield client


def echo_bot(client: VeilClient, calls: list[str] | None = None) -> Bot:
    bot = Bot(client, name="echo")

    @bot.command("echo", "say it back")
    def echo(ctx: Any) -> str:
        if calls is not None:
            calls.append(ctx.args)
        return ctx.args

    return bot


async def everything(room: Room) -> list[RoomPost]:
    """Every post the room shows now (its swarm's records, moderation applied)."""
    return (await room.fetch_state()).posts()


def replies_to(posts: list[RoomPost], post: RoomPost, bot: AccountId) -> list[str]:
    return [p.text for p in posts if p.author == bot and p.reply_to == post.post_id]


async def serve_until(
    bot: Bot, room: Room, done: Callable[[], Awaitable[bool]], timeout: float = 60
) -> None:
    with trio.fail_after(timeout):
        async with trio.open_nursery() as nursery:
            await nursery.start(bot.serve_room, room)
            await eventually(done, timeout=timeout, what="the bot answered")
            nursery.cancel_scope.cancel()


async def test_a_bot_answers_its_commands_in_the_room_and_nothing_else(
    net: Devnet, tmp_path: Path
) -> None:
    async with client_at(net, tmp_path / "owner") as owner:
        room = await create_room(owner, "with a bot")
    async with (
        client_at(net, tmp_path / "bot") as bot_client,
        client_at(net, tmp_path / "alice") as alice,
    ):
        bot = echo_bot(bot_client)
        in_bot_room = open_room(bot_client, room.id)
        as_alice = open_room(alice, room.id)
        async with trio.open_nursery() as nursery:
            await nursery.start(bot.serve_room, in_bot_room)
            chatter = await as_alice.post("just talking")
            other = await as_alice.post("/weather for another bot")
            garbled = await as_alice.post("/" + "x" * 40)
            asked = await as_alice.post("/echo hello room")
            helped = await as_alice.post("/help")

            async def answered() -> bool:
                posts = await everything(as_alice)
                return bool(replies_to(posts, asked, bot.id) and replies_to(posts, helped, bot.id))

            await eventually(answered, what="the bot answers /echo and /help", timeout=60)
            nursery.cancel_scope.cancel()
        posts = await everything(as_alice)
        assert replies_to(posts, asked, bot.id) == ["hello room"]
        (help_text,) = replies_to(posts, helped, bot.id)
        assert "/echo - say it back" in help_text
        for quiet in (chatter, other, garbled):
            assert replies_to(posts, quiet, bot.id) == []
        mine = [p for p in posts if p.author == bot.id]
        assert len(mine) == 2  # and none to its own posts
        bot.close()


def crashed(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return any(crashed(e) for e in exc.exceptions)
    return isinstance(exc, Crash)


@pytest.mark.parametrize("where", ["before taking it on", "after the reply was stored"])
async def test_a_command_is_answered_once_across_a_crash(
    net: Devnet, tmp_path: Path, where: str
) -> None:
    async with client_at(net, tmp_path / "owner") as owner:
        room = await create_room(owner, "crashy")
    calls: list[str] = []
    async with (
        client_at(net, tmp_path / "bot") as client,
        client_at(net, tmp_path / "alice") as alice,
    ):
        bot = echo_bot(client, calls)
        in_room = open_room(client, room.id)
        if where == "before taking it on":
            # Its reader has recorded the post as handed over; the bot dies before
            # writing that it took the command on.
            async def dies(sender: AccountId, text: str) -> list[str]:
                raise Crash

            bot.answer = dies  # type: ignore[method-assign]
        else:
            # The reply's post reached the swarm; the bot dies before marking it sent.
            sending = in_room.send_post

            async def stored_then_dies(post: RoomPost) -> Any:
                await sending(post)
                raise Crash

            in_room.send_post = stored_then_dies  # type: ignore[method-assign]
        async with trio.open_nursery() as nursery:  # the bot joins the room: from now on
            await nursery.start(bot.serve_room, in_room)
            nursery.cancel_scope.cancel()
        asked = await open_room(alice, room.id).post("/echo once please")
        with pytest.raises(BaseException) as died:
            with trio.fail_after(60):
                await bot.serve_room(in_room)
        assert crashed(died.value), died.value
        bot.close()

    async with client_at(net, tmp_path / "bot") as client:  # the same home, started again
        bot = echo_bot(client, calls)
        in_room = open_room(client, room.id)

        async def answered() -> bool:
            return bool(replies_to(await everything(in_room), asked, bot.id))

        await serve_until(bot, in_room, answered)
        # Started once more: nothing is left to send, and nothing is sent again.
        async with trio.open_nursery() as nursery:
            await nursery.start(bot.serve_room, in_room)
            await trio.sleep(3)
            nursery.cancel_scope.cancel()
        assert replies_to(await everything(in_room), asked, bot.id) == ["once please"]
        assert calls == ["once please"]  # the handler ran once
        bot.close()
