"""./scripts/bench bot: one bot's one-time codes and broadcasts (issue 14), beside plain sends.

What is measured (all on 127.0.0.1, in one run)
===============================================

A devnet (:class:`veil.client.devnet.Devnet`: one authority and ``NODES`` ``veil-node``
processes, the node's default anti-entropy interval of 10 s, as ``bench client``) is
started in a temporary directory. One client runs the bot (:class:`veil.client.bot.Bot`);
``FOLLOWERS`` more clients are the live recipients of the latency figure.

* ``codes_per_s``: :meth:`Bot.send_code` to ``CODES`` distinct recipients (fresh
  account IDs, no client behind them: the per-recipient limits of
  :mod:`veil.client.bot.codes` never bind), ``CONCURRENCY`` at a time (the broadcast's
  default concurrency), timed from the first call to the last return. Each code is a
  ticket written to the bot's SQLite (``synchronous=FULL``) and a store through the onion.
* ``send_per_s``: the peer, :meth:`VeilClient.send` by the bot's own client to
  ``CODES`` other fresh recipients, same concurrency, in rounds interleaved with the
  codes' (``ROUNDS`` each) so that a busy machine slows both alike;
  ``codes_send_ratio`` = ``codes_per_s / send_per_s``: what the code book costs.
* ``code_delivery_ms_p50`` / ``_p99``: ``DELIVERY_CODES`` codes, one at a time, to the
  live followers in turn (each long-polls with ``async for m in client.messages()``;
  ``FOLLOWERS`` x 10 codes, the per-recipient limit over two purposes); from
  ``send_code`` returning to the follower's iterator yielding that message (matched by
  the message hash the ticket records). It can be about zero or below: the swarm
  answers the follower's poll while the store's acknowledgement travels back to the
  bot (as ``delivery_ms`` of ``bench client``); ``send_code_ms_p50`` / ``_p99`` is
  that round trip and ``code_delivery_from_call_ms_p50`` the latency from the call.
* ``code_book_ms_p50``: the floor under the codes' cost, the bot's own work per code
  without the network (ticket written, message hash recorded: two ``synchronous=FULL``
  SQLite transactions, which run on the trio thread and so hold up every send in flight).
* ``broadcast_mps``: :meth:`Bot.broadcast` to ``SUBSCRIBERS`` subscribers (registered
  in the bot's store with :meth:`Bot.subscribe`, not by live clients) with the rate
  limit out of the way (``rate_per_s`` = 1e9) and the default concurrency, from the
  call (sealing included) to every envelope stored; ``broadcast_vs_telegram`` =
  ``broadcast_mps / 30`` (Telegram's documented broadcast limit, about 30 messages/s,
  which is also the bot's default rate), ``broadcast_send_ratio`` =
  ``broadcast_mps / send_per_s``. ``broadcast_default_mps``: the same at the default
  rate limit, to ``DEFAULT_RATE_SUBSCRIBERS`` others (it should read about 30).
  ``broadcast_adjacent_send_per_s``: ``SUBSCRIBERS`` plain sends (same concurrency),
  half just before the broadcast and half just after, and ``broadcast_adjacent_ratio``
  the broadcast's rate over it: a peer taken at the same minute as the broadcast, since
  ``send_per_s`` is measured a minute earlier and the machine's speed drifts.

Why these peers: the machine is shared and noisy, so every throughput is printed beside
the same devnet's plain send throughput measured in the same run, and the broadcast also
beside the external yardstick of the issue (Telegram's 30/s). Bounded: about 40 s
in all; each delivery waits at most ``DELIVERY_TIMEOUT_S``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchnet import NODES, DeliveryMissing, percentile, run_on_devnet

if TYPE_CHECKING:
    from veil.client.bot import Bot
    from veil.client.veil_client import VeilClient
    from veil.onion.keys import AccountId

CONCURRENCY = 8  # veil.client.bot.bot.DEFAULT_CONCURRENCY
WARMUP = 20
CODES = 300  # per kind (codes, plain sends), in ROUNDS interleaved rounds
ROUNDS = 3
FOLLOWERS = 8
PURPOSES = ("login", "reset")  # 5 codes each per recipient per 10 min, 10 in all
DELIVERY_CODES = FOLLOWERS * 10
BOOK_CODES = 200
SUBSCRIBERS = 1000
DEFAULT_RATE_SUBSCRIBERS = 150
TELEGRAM_PER_S = 30.0
UNLIMITED_RATE = 1e9
TTL_S = 600
DELIVERY_TIMEOUT_S = 10.0
#: Lets the follower's next long-poll reach its node before the next code is sent.
SETTLE_S = 0.03


def run() -> dict[str, float]:
    return run_on_devnet("bot", _measure)


def _fresh_ids(n: int) -> list[AccountId]:
    from veil.onion.keys import Account

    return [Account.generate().id for _ in range(n)]


async def _throughput(
    each: Callable[[AccountId], Awaitable[object]], recipients: list[AccountId]
) -> float:
    """Call ``each`` once per recipient, ``CONCURRENCY`` at a time; calls per second."""
    import trio

    limiter = trio.CapacityLimiter(CONCURRENCY)

    async def one(to: AccountId) -> None:
        async with limiter:
            await each(to)

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for to in recipients:
            nursery.start_soon(one, to)
    return len(recipients) / (time.perf_counter() - t0)


async def _measure(tmp: Path, network_file: Path) -> dict[str, float]:
    from contextlib import AsyncExitStack

    from veil.client.bot import Bot
    from veil.client.veil_client import open_client
    from veil.onion.keys import Account

    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(
            open_client(tmp / "bot", network_file, account=Account.generate())
        )
        followers = [
            await stack.enter_async_context(
                open_client(tmp / f"follower-{i}", network_file, account=Account.generate())
            )
            for i in range(FOLLOWERS)
        ]
        bot = Bot(client, name="bench bot")
        stack.callback(bot.close)
        figures = await _codes_and_sends(bot, client)
        figures["code_book_ms_p50"] = _code_book_ms(tmp / "code-book")
        figures |= await _delivery(bot, followers)
        figures |= await _broadcasts(bot, client)
    figures["codes_send_ratio"] = figures["codes_per_s"] / figures["send_per_s"]
    figures["broadcast_vs_telegram"] = figures["broadcast_mps"] / TELEGRAM_PER_S
    figures["broadcast_send_ratio"] = figures["broadcast_mps"] / figures["send_per_s"]
    return {
        "nodes": float(NODES),
        "concurrency": float(CONCURRENCY),
        "codes": float(CODES),
        "delivery_codes": float(DELIVERY_CODES),
        "subscribers": float(SUBSCRIBERS),
        "telegram_per_s": TELEGRAM_PER_S,
        **figures,
    }


def _code_book_ms(directory: Path) -> float:
    """The bot's own work per code, no network: a ticket written and its message's hash
    recorded (two ``synchronous=FULL`` SQLite transactions on the trio thread), in a
    store of its own; median of ``BOOK_CODES``."""
    from veil.client.bot import BotStore, CodeBook

    store = BotStore(directory)
    try:
        book = CodeBook(store, lambda: int(time.time() * 1000))
        times = []
        for to in _fresh_ids(BOOK_CODES):
            t0 = time.perf_counter()
            new = book.new_code(str(to), "login")
            book.set_message_hash(new.ticket, bytes(32))
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        store.close()
    return percentile(times, 50)


async def _codes_and_sends(bot: Bot, client: VeilClient) -> dict[str, float]:
    async def code(to: AccountId) -> None:
        await bot.send_code(to, "login")

    async def send(to: AccountId) -> None:
        await client.send(to, "hello from the bench", ttl_s=TTL_S)

    await _throughput(code, _fresh_ids(WARMUP))
    await _throughput(send, _fresh_ids(WARMUP))
    per_round = CODES // ROUNDS
    code_rates, send_rates = [], []
    for _ in range(ROUNDS):
        code_rates.append(await _throughput(code, _fresh_ids(per_round)))
        send_rates.append(await _throughput(send, _fresh_ids(per_round)))
    # Harmonic mean: the total count over the total time of the rounds.
    return {
        "codes_per_s": ROUNDS / sum(1 / r for r in code_rates),
        "send_per_s": ROUNDS / sum(1 / r for r in send_rates),
    }


async def _delivery(bot: Bot, followers: list[VeilClient]) -> dict[str, float]:
    import trio

    arrived: dict[bytes, float] = {}
    wanted: dict[bytes, trio.Event] = {}

    async def follow(follower: VeilClient) -> None:
        async for message in follower.messages():
            arrived[message.hash] = time.perf_counter()
            wanted.setdefault(message.hash, trio.Event()).set()

    delivery: list[float] = []
    from_start: list[float] = []
    send_code_rtt: list[float] = []
    async with trio.open_nursery() as nursery:
        for follower in followers:
            nursery.start_soon(follow, follower)
        await trio.sleep(0.5)
        for i in range(DELIVERY_CODES):
            follower = followers[i % FOLLOWERS]
            purpose = PURPOSES[(i // FOLLOWERS) % len(PURPOSES)]
            await trio.sleep(SETTLE_S)
            t0 = time.perf_counter()
            ticket = await bot.send_code(follower.account_id, purpose)
            t1 = time.perf_counter()
            # send_code returns the ticket, not the message: the ticket records its hash.
            row = bot.store.one("SELECT message_hash FROM codes WHERE ticket = ?", (ticket,))
            assert row is not None and row[0] is not None
            message_hash = bytes(row[0])
            event = wanted.setdefault(message_hash, trio.Event())
            with trio.move_on_after(DELIVERY_TIMEOUT_S):
                await event.wait()
            if not event.is_set():
                raise DeliveryMissing(
                    f"code {i + 1} of {DELIVERY_CODES} was stored (send_code returned) but "
                    f"its recipient had not received it after {DELIVERY_TIMEOUT_S:.0f} s "
                    f"(last poll error: {follower.receiver.last_error})"
                )
            delivery.append((arrived[message_hash] - t1) * 1000)
            from_start.append((arrived[message_hash] - t0) * 1000)
            send_code_rtt.append((t1 - t0) * 1000)
        nursery.cancel_scope.cancel()
    return {
        "code_delivery_ms_p50": percentile(delivery, 50),
        "code_delivery_ms_p99": percentile(delivery, 99),
        "code_delivery_from_call_ms_p50": percentile(from_start, 50),
        "send_code_ms_p50": percentile(send_code_rtt, 50),
        "send_code_ms_p99": percentile(send_code_rtt, 99),
    }


async def _broadcasts(bot: Bot, client: VeilClient) -> dict[str, float]:
    def subscribe(topic: str, n: int) -> None:
        for who in _fresh_ids(n):
            bot.subscribe(who, topic)

    subscribe("news", SUBSCRIBERS)
    subscribe("digest", DEFAULT_RATE_SUBSCRIBERS)

    async def send(to: AccountId) -> None:
        await client.send(to, "news for everyone", ttl_s=TTL_S)

    # The broadcast between two halves of as many plain sends: its adjacent peer.
    before = await _throughput(send, _fresh_ids(SUBSCRIBERS // 2))
    t0 = time.perf_counter()
    fast = await bot.broadcast("news", "news for everyone", ttl=TTL_S, rate_per_s=UNLIMITED_RATE)
    fast_s = time.perf_counter() - t0
    after = await _throughput(send, _fresh_ids(SUBSCRIBERS // 2))
    adjacent = 2 / (1 / before + 1 / after)
    t0 = time.perf_counter()
    paced = await bot.broadcast("digest", "the daily digest", ttl=TTL_S)
    paced_s = time.perf_counter() - t0
    if fast.sent != SUBSCRIBERS or paced.sent != DEFAULT_RATE_SUBSCRIBERS:
        raise SystemExit(
            f"bench bot: a broadcast was not stored for everyone ({fast.sent} of "
            f"{SUBSCRIBERS}, {paced.sent} of {DEFAULT_RATE_SUBSCRIBERS})"
        )
    return {
        "broadcast_mps": SUBSCRIBERS / fast_s,
        "broadcast_s": fast_s,
        "broadcast_default_mps": DEFAULT_RATE_SUBSCRIBERS / paced_s,
        "broadcast_adjacent_send_per_s": adjacent,
        "broadcast_adjacent_ratio": SUBSCRIBERS / fast_s / adjacent,
    }


def describe(r: dict[str, float]) -> str:
    return "\n".join(
        [
            f"bot: {r['nodes']:.0f}-node devnet, one bot, {r['concurrency']:.0f} sends at a "
            f"time; {r['codes']:.0f} codes and {r['codes']:.0f} plain sends (interleaved), "
            f"{r['delivery_codes']:.0f} codes one at a time to live recipients",
            f"  one-time codes (send_code), distinct recipients: {r['codes_per_s']:8.1f} /s",
            f"  peer: plain VeilClient.send, same concurrency:    {r['send_per_s']:8.1f} /s",
            f"  codes / sends: {r['codes_send_ratio']:.2f}x   (the code book alone, no "
            f"network: {r['code_book_ms_p50']:.2f} ms a code, p50)",
            f"  code delivery, send_code returned -> iterator yield: p50 "
            f"{r['code_delivery_ms_p50']:7.2f} ms   p99 {r['code_delivery_ms_p99']:7.2f} ms",
            f"  send_code round trip (one at a time):               p50 "
            f"{r['send_code_ms_p50']:7.2f} ms   p99 {r['send_code_ms_p99']:7.2f} ms",
            f"  delivery counted from the send_code call:           p50 "
            f"{r['code_delivery_from_call_ms_p50']:7.2f} ms",
            f"  broadcast to {r['subscribers']:.0f} subscribers, rate limit off: "
            f"{r['broadcast_mps']:8.1f} msg/s ({r['broadcast_s']:.1f} s, sealing included)",
            f"    / Telegram's {r['telegram_per_s']:.0f}/s: {r['broadcast_vs_telegram']:.2f}x"
            f"   / plain sends: {r['broadcast_send_ratio']:.2f}x",
            f"    peer 2: {r['subscribers']:.0f} plain sends, half just before and half "
            f"just after: {r['broadcast_adjacent_send_per_s']:.1f} /s; ratio "
            f"{r['broadcast_adjacent_ratio']:.2f}x",
            f"  broadcast at the default rate limit (30/s): "
            f"{r['broadcast_default_mps']:8.1f} msg/s",
        ]
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    results: Any = run()
    print(describe(results))
    sys.exit(0)
