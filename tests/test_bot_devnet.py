"""Bots on a real devnet (issue 14): a person subscribes with ``veil send`` and gets a
broadcast; hostile commands are answered, never crash the bot; a one-time-code flow end
to end (approved, a reused code, a sixth check, an expired code, failures that survive a
new code, the message's TTL equal to the code's); a broadcast to many subscribers, each
receiving it exactly once, with the bot process SIGKILLed halfway and resumed.

One devnet (an authority and five ``veil-node`` processes, swarms of three) serves
every test of this module. The broadcast goes to ``VEIL_BOT_SUBSCRIBERS`` subscribers
(default 500, the issue's number: about 30 s on a 2-core machine, the kill included).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.devnetutil import devnet
from veil.client.bot import (
    APPROVED,
    EXPIRED,
    MAX_ATTEMPTS_REACHED,
    PENDING,
    Bot,
    BotStore,
    CodeAlreadyUsed,
)
from veil.client.devnet import Devnet
from veil.client.home import Home
from veil.client.veil_client import VeilClient, open_client
from veil.onion import rpc
from veil.onion.envelope import open_envelope
from veil.onion.errors import ProtocolError
from veil.onion.keys import Account, AccountId

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
SUBSCRIBERS = int(os.environ.get("VEIL_BOT_SUBSCRIBERS", "500"))


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    with devnet(tmp_path_factory.mktemp("bot"), nodes=5, swarm_size=3) as running:
        yield running


def new_home(tmp_path: Path, name: str) -> tuple[Home, Account]:
    home = Home(tmp_path / name)
    account = Account.generate()
    home.save_identity(account)
    return home, account


def veil(home: Path, network: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "veil.client",
        "--home",
        str(home),
        "--network",
        str(network),
        *args,
    ]


async def inbox_texts(client: VeilClient, whom: Account, sender: AccountId) -> list[str]:
    """Every message from ``sender`` in ``whom``'s inbox at one node of its swarm (raw:
    a message stored twice would show twice)."""
    texts: list[str] = []
    last: bytes | None = None
    while True:
        reply = await client.call(
            lambda now, last=last: rpc.make_retrieve(whom, now_ms=now, last_hash=last),
            account=whom.id,
        )
        assert reply.result is not None
        page = rpc.RetrieveResult.from_wire(reply.result)
        for message in page.messages:
            try:
                opened = open_envelope(whom, message.data)
            except ProtocolError:
                continue
            if opened.sender == sender:
                texts.append(opened.content.decode())
        if not page.more or not page.messages:
            return texts
        last = page.messages[-1].hash


async def wait_for(client: VeilClient, predicate, timeout: float = 60):  # type: ignore[no-untyped-def]
    got = []
    with trio.fail_after(timeout):
        async for message in client.messages():
            got.append(message)
            if predicate(message):
                return got
    raise AssertionError("unreachable")


# --- subscribe by messaging the bot, receive a broadcast; hostile input ---------------------


async def test_a_person_subscribes_with_veil_send_and_gets_the_broadcast(
    net: Devnet, tmp_path: Path
) -> None:
    bot_home, bot_account = new_home(tmp_path, "bot")
    person_home, person = new_home(tmp_path, "person")
    async with (
        open_client(bot_home, net.network_file) as bot_client,
        open_client(person_home, net.network_file) as person_client,
    ):
        bot = Bot(bot_client, name="News bot", topics={"news": "the news"})
        seen: list[str] = []

        @bot.command("echo", "say it back")
        def echo(ctx):  # type: ignore[no-untyped-def]
            seen.append(ctx.args)
            return f"echo: {ctx.args}"

        @bot.command("boom", "a handler with a bug")
        def boom(ctx):  # type: ignore[no-untyped-def]
            raise RuntimeError("bug")

        async with trio.open_nursery() as nursery:
            await nursery.start(bot.run)
            # The person uses the command line, as a person would.
            for text in (
                "/subscribe news",
                "/" + "x" * 5000,  # over the command limit
                "/no_such_command",
                "/!!",
                "/boom",
                "/echo still alive",
            ):
                done = await trio.run_process(
                    veil(person_home.path, net.network_file, "send", str(bot_account.id), text),
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
                assert done.returncode == 0, done.stderr
                if text == "/boom":  # bytes that are not UTF-8, from the library
                    await person_client.send(bot_account.id, b"\xff\xfe\x00/garbage")
            got = await wait_for(person_client, lambda m: m.text.startswith("echo:"))
            texts = [m.text for m in got]
            assert "Subscribed to news. /unsubscribe news to stop." in texts
            assert any(t.startswith("I did not understand that.") for t in texts)
            assert any(t.startswith("Unknown command /no_such_command.") for t in texts)
            assert "Sorry, something went wrong." in texts
            assert texts[-1] == "echo: still alive" and seen == ["still alive"]
            assert bot.subscribers("news") == [person.id]

            result = await bot.broadcast("news", "breaking: veil has bots")
            assert (result.sent, result.failed, result.total) == (1, 0, 1)
            got = await wait_for(person_client, lambda m: m.text == "breaking: veil has bots")
            assert got[-1].sender == bot_account.id
            nursery.cancel_scope.cancel()
        bot.close()


# --- one-time codes end to end ---------------------------------------------------------------


async def test_a_code_flow_end_to_end(net: Devnet, tmp_path: Path) -> None:
    bot_home, _ = new_home(tmp_path, "bot")
    person_home, person = new_home(tmp_path, "person")
    async with (
        open_client(bot_home, net.network_file) as bot_client,
        open_client(person_home, net.network_file) as person_client,
    ):
        bot = Bot(bot_client, name="Example Bank")

        async def code_for(purpose: str, **kwargs: int) -> tuple[str, str]:
            ticket = await bot.send_code(person.id, purpose, **kwargs)
            pattern = re.compile(rf"^(\d+) is your {purpose} code from Example Bank \(05")
            got = await wait_for(person_client, lambda m: pattern.match(m.text) is not None)
            match = pattern.match(got[-1].text)
            assert match is not None
            return ticket, match.group(1)

        # Approved once; the same code again is refused.
        ticket, code = await code_for("login")
        assert bot.code_status(ticket).status == PENDING
        assert bot.check_code(ticket, "000000" if code != "000000" else "111111").attempts_left == 4
        assert bot.check_code(ticket, code).status == APPROVED
        with pytest.raises(CodeAlreadyUsed):
            bot.check_code(ticket, code)

        # The code's message lives on the swarm as long as the code (60 s here).
        ticket, code = await code_for("payment", ttl=60, digits=8)
        assert len(code) == 8
        raw = await person_client.retrieve(rpc.INBOX)
        lifetimes = [m.expiry_ms - m.timestamp_ms for m in raw.messages]
        assert any(55_000 <= life <= 65_000 for life in lifetimes), lifetimes
        # An expired code is refused (the bot's clock moved past the ticket's TTL).
        real = bot.codes.now_ms
        bot.codes.now_ms = lambda: real() + 61_000
        assert bot.check_code(ticket, code).status == EXPIRED
        bot.codes.now_ms = real

        # A sixth check is refused, even with the right code.
        ticket, code = await code_for("transfer")
        wrong = str((int(code) + 1) % 10**6).zfill(6)
        for _ in range(5):
            bot.check_code(ticket, wrong)
        assert bot.check_code(ticket, code).status == MAX_ATTEMPTS_REACHED

        # Failures survive a new code: 3 on the first ticket, 2 on the second, then none.
        first, code1 = await code_for("reset")
        for _ in range(3):
            assert bot.check_code(first, str((int(code1) + 1) % 10**6).zfill(6)).status == PENDING
        second, code2 = await code_for("reset")
        bad2 = str((int(code2) + 1) % 10**6).zfill(6)
        assert bot.check_code(second, bad2).attempts_left == 1
        assert bot.check_code(second, bad2).status == MAX_ATTEMPTS_REACHED
        assert bot.check_code(second, code2).status == MAX_ATTEMPTS_REACHED
        bot.close()


def test_code_send_and_check_through_the_cli(net: Devnet, tmp_path: Path) -> None:
    bot_home, _ = new_home(tmp_path, "bot")
    _, person = new_home(tmp_path, "person")
    sent = subprocess.run(
        veil(
            bot_home.path,
            net.network_file,
            "--json",
            "bot",
            "code",
            "send",
            str(person.id),
            "--purpose",
            "login",
            "--ttl",
            "120",
        ),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        cwd=REPO,
    )
    assert sent.returncode == 0, sent.stderr
    ticket = json.loads(sent.stdout)["ticket"]
    checked = subprocess.run(
        veil(bot_home.path, net.network_file, "--json", "bot", "code", "check", ticket, "12"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert checked.returncode == 1
    assert json.loads(checked.stdout) == {"ticket": ticket, "status": "pending", "attempts_left": 4}


# --- a broadcast to many, SIGKILLed halfway ----------------------------------------------------


async def test_a_broadcast_resumes_after_sigkill_and_everyone_gets_it_once(
    net: Devnet, tmp_path: Path
) -> None:
    bot_home, bot_account = new_home(tmp_path, "bot")
    subscribers = [Account.generate() for _ in range(SUBSCRIBERS)]
    store = BotStore(bot_home.path / "bot")
    with store.transaction() as db:
        for sub in subscribers:
            db.execute(
                "INSERT INTO subscribers (recipient, topic, since_ms) VALUES (?, 'news', 0)",
                (str(sub.id),),
            )
    store.close()
    text = "broadcast: exactly once"
    started = time.monotonic()
    proc = subprocess.Popen(
        veil(
            bot_home.path,
            net.network_file,
            "--json",
            "bot",
            "broadcast",
            "news",
            text,
            "--rate",
            "15",
            "--concurrency",
            "4",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    assert proc.stdout is not None
    killed_at = None
    for line in proc.stdout:
        progress = json.loads(line)
        if "sent" in progress and progress["sent"] >= SUBSCRIBERS // 2:
            proc.send_signal(signal.SIGKILL)
            killed_at = progress["sent"]
            break
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    assert killed_at is not None and killed_at < SUBSCRIBERS
    resumed = subprocess.run(
        veil(
            bot_home.path,
            net.network_file,
            "--json",
            "bot",
            "broadcast",
            "--resume",
            "--rate",
            "30",
            "--concurrency",
            "8",
        ),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO,
    )
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout.splitlines()[-1])["result"]
    assert result["sent"] == SUBSCRIBERS and result["failed"] == 0
    elapsed = time.monotonic() - started

    # Every subscriber's inbox holds the message exactly once.
    checker_home, _ = new_home(tmp_path, "checker")
    counts: dict[AccountId, int] = {}
    async with open_client(checker_home, net.network_file) as client:
        limiter = trio.CapacityLimiter(8)

        async def count(sub: Account) -> None:
            async with limiter:
                texts = await inbox_texts(client, sub, bot_account.id)
            counts[sub.id] = texts.count(text)

        async with trio.open_nursery() as nursery:
            for sub in subscribers:
                nursery.start_soon(count, sub)
    assert sorted(set(counts.values())) == [1], counts
    print(f"broadcast to {SUBSCRIBERS} with a SIGKILL at {killed_at}: {elapsed:.1f} s")


def test_veil_bot_run_serves_a_person_and_a_cli_broadcast_reaches_them(
    net: Devnet, tmp_path: Path
) -> None:
    bot_home, bot_account = new_home(tmp_path, "bot")
    person_home, _ = new_home(tmp_path, "person")
    server = subprocess.Popen(
        veil(bot_home.path, net.network_file, "--json", "bot", "run", "--name", "CLI bot"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        sent = subprocess.run(
            veil(
                person_home.path, net.network_file, "send", str(bot_account.id), "/subscribe news"
            ),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=REPO,
        )
        assert sent.returncode == 0, sent.stderr
        assert server.stdout is not None
        line = json.loads(server.stdout.readline())
        assert line["text"] == "/subscribe news"
        cast = subprocess.run(
            veil(bot_home.path, net.network_file, "--json", "bot", "broadcast", "news", "hi all"),
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
            cwd=REPO,
        )
        assert cast.returncode == 0, cast.stderr
        assert json.loads(cast.stdout.splitlines()[-1])["result"]["sent"] == 1
        inbox = subprocess.run(
            veil(person_home.path, net.network_file, "--json", "inbox"),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=REPO,
        )
        texts = [json.loads(x).get("text") for x in inbox.stdout.splitlines()]
        assert "hi all" in texts and "Subscribed to news. /unsubscribe news to stop." in texts
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
