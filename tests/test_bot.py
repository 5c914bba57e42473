"""The Bot's logic without a network: commands, the catch-all, hostile input, the
subscriber store, conversation state with its expiry, and a broadcast job that survives
a crash (sends fail halfway; a new Bot on the same home resumes with the same bytes)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from veil.client.bot import Bot, BroadcastProgress
from veil.client.errors import InvalidArgument
from veil.client.messaging import InboxMessage
from veil.onion import rpc
from veil.onion.envelope import open_envelope
from veil.onion.keys import Account, AccountId


class Clock:
    def __init__(self) -> None:
        self.ms = 1_767_225_600_000

    def __call__(self) -> int:
        return self.ms


def fake_client(tmp_path: Path, account: Account) -> Any:
    return SimpleNamespace(
        home=SimpleNamespace(path=tmp_path / "home"),
        account_id=account.id,
        account=account,
        clock=SimpleNamespace(now=lambda: 1_767_225_600_000),
        require_seed=lambda what: account,
    )


class Recorder:
    """Stands in for the network: keeps what the bot stores, by (recipient, hash)."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.stored: dict[tuple[AccountId, bytes], bytes] = {}
        self.calls = 0
        self.fail_after = fail_after

    async def __call__(self, to: AccountId, envelope: bytes, ttl_ms: int) -> rpc.StoreResult:
        self.calls += 1
        digest = rpc.message_hash(to, rpc.INBOX, envelope)
        created = (to, digest) not in self.stored
        self.stored[(to, digest)] = envelope
        if self.fail_after is not None and self.calls > self.fail_after:
            raise Crash  # the process dies after the node took it, before it is marked
        return rpc.StoreResult(hash=digest, expiry_ms=0, created=created)


class Crash(BaseException):
    pass


def make_bot(
    tmp_path: Path, clock: Clock, **kwargs: Any
) -> tuple[Bot, Account, list[tuple[AccountId, str]]]:
    account = Account(b"\x07" * 32)
    bot = Bot(fake_client(tmp_path, account), now_ms=clock, **kwargs)
    sent: list[tuple[AccountId, str]] = []

    async def send(to: AccountId | str, text: str, *, ttl: float = 0) -> bytes:
        sent.append((to if isinstance(to, AccountId) else AccountId.parse(to), text))
        return b""

    bot.send = send  # type: ignore[method-assign]
    return bot, account, sent


def message(sender: AccountId, text: str | bytes) -> InboxMessage:
    content = text.encode() if isinstance(text, str) else text
    return InboxMessage(b"h" * 32, sender, content, 0, 0)


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def test_commands_catch_all_and_hostile_input(tmp_path: Path, clock: Clock) -> None:
    bot, _, sent = make_bot(tmp_path, clock, name="Weather", topics={"news": "the news"})
    alice = Account.generate().id

    @bot.command("weather", "the forecast")
    async def weather(ctx):  # type: ignore[no-untyped-def]
        await ctx.reply("looking...")
        return f"sunny in {ctx.args or 'Paris'}"

    @bot.command("start")
    def start(ctx):  # type: ignore[no-untyped-def]
        return f"welcome, ref={ctx.args}"

    texts = []
    for text in (
        "/start ref42",
        "/weather Oslo",
        "/help",
        "hello",
        "/nope",
        "/" + "x" * 10_000,
        b"\xff\xfe\x00",
        "/subscribe sports",
        "/subscribe news",
        "/topics",
        "/unsubscribe",
    ):
        sent.clear()
        await bot.handle(message(alice, text))
        texts.append([t for _, t in sent])
    assert texts[0] == ["welcome, ref=ref42"]
    assert texts[1] == ["looking...", "sunny in Oslo"]
    assert "/weather - the forecast" in texts[2][0] and "/subscribe TOPIC" in texts[2][0]
    assert texts[3] == [bot.help_text()]  # no catch-all: the help
    assert texts[4][0].startswith("Unknown command /nope.")
    assert texts[5][0].startswith("I did not understand that.")
    assert texts[6] == [bot.help_text()]
    assert texts[7][0].startswith("No topic 'sports'.")
    assert texts[8] == ["Subscribed to news. /unsubscribe news to stop."]
    assert "news (subscribed) - the news" in texts[9][0]
    assert texts[10] == ["Unsubscribed from every topic (1)."]

    @bot.on_message
    def echo(ctx):  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug")

    sent.clear()
    await bot.handle(message(alice, "hello"))
    assert [t for _, t in sent] == ["Sorry, something went wrong."]
    with pytest.raises(InvalidArgument):
        bot.command("Bad Name")


async def test_replies_to_one_sender_are_limited(tmp_path: Path, clock: Clock) -> None:
    bot, _, sent = make_bot(tmp_path, clock)
    alice = Account.generate().id
    for _ in range(30):
        await bot.handle(message(alice, "/help"))
    assert len(sent) == 20 and bot.refused == 10


def test_conversation_state_persists_and_expires(tmp_path: Path, clock: Clock) -> None:
    bot, account, _ = make_bot(tmp_path, clock)
    alice = Account.generate().id
    bot.set_state(alice, {"step": 2}, ttl_s=60)
    bot.close()
    again = Bot(fake_client(tmp_path, account), now_ms=clock)
    assert again.get_state(alice) == {"step": 2}
    clock.ms += 60_000
    assert again.get_state(alice) == {}
    with pytest.raises(InvalidArgument):
        again.set_state(alice, {"x": "y" * 20_000})


async def test_a_broadcast_resumes_after_a_crash_with_the_same_bytes(
    tmp_path: Path, clock: Clock
) -> None:
    bot, account, _ = make_bot(tmp_path, clock)
    people = [Account.generate() for _ in range(20)]
    for person in people:
        bot.subscribe(person.id, "news")
    crashing = Recorder(fail_after=8)
    bot.send_sealed = crashing  # type: ignore[method-assign]
    with pytest.raises(BaseException):  # noqa: B017 (Crash, maybe in a group)
        await bot.broadcast("news", "hello all", concurrency=1, rate_per_s=1000)
    first_bytes = dict(crashing.stored)
    # 8 marked sent; the 9th (and maybe a 10th, already started) stored but not marked.
    assert len(first_bytes) in (9, 10)
    bot.close()

    # A new process on the same home: the job is found and finished.
    again, _, _ = make_bot(tmp_path, clock)
    (job,) = again.unfinished_broadcasts()
    assert again.broadcast_progress(job).sent == 8
    network = Recorder()
    network.stored.update(first_bytes)
    again.send_sealed = network  # type: ignore[method-assign]
    seen: list[BroadcastProgress] = []
    (result,) = await again.resume_broadcasts(progress=seen.append, rate_per_s=1000)
    assert (result.sent, result.failed, result.total) == (20, 0, 20)
    assert seen[-1].pending == 0 and seen[-1].sent == 20
    # Every report adds up to the job and moves one subscriber on from the one before
    # (kept in step in memory, not counted again from the table for each item).
    assert seen[0] == BroadcastProgress(job, 8, 0, 12)
    assert all(p.sent + p.failed + p.pending == 20 for p in seen)
    assert [p.sent for p in seen] == list(range(8, 21))
    # Each person has one envelope, which opens to the message from the bot; the ones
    # stored before the crash were sent again byte for byte (at most the one in flight).
    per_person: dict[AccountId, int] = {}
    for (to, _digest), envelope in network.stored.items():
        per_person[to] = per_person.get(to, 0) + 1
        person = next(p for p in people if p.id == to)
        opened = open_envelope(person, envelope)
        assert opened.sender == account.id and opened.content == b"hello all"
    assert per_person == {p.id: 1 for p in people}
    assert network.calls == 12  # the 9th (and 10th) again, the same bytes: one copy each
    assert again.unfinished_broadcasts() == []


async def test_failed_sends_are_retried_then_counted(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from veil.onion.errors import HopTimeout

    bot, _, _ = make_bot(tmp_path, clock)
    bot.subscribe(Account.generate().id, "news")
    calls = 0

    async def flaky(to: AccountId, envelope: bytes, ttl_ms: int) -> rpc.StoreResult:
        nonlocal calls
        calls += 1
        raise HopTimeout("down")

    bot.send_sealed = flaky  # type: ignore[method-assign]
    import veil.client.bot.broadcasts as module  # where run_broadcast reads it

    monkeypatch.setattr(module, "RETRY_BACKOFF", module.Backoff(first_s=0.01, max_s=0.02))
    with trio.fail_after(30):
        result = await bot.broadcast("news", "x", retries=2)
    assert (result.sent, result.failed, calls) == (0, 1, 3)
