"""A notices bot: people subscribe by messaging it, and every line you type is broadcast
to them.

    veil --home ./notices id new                      # the bot's account (once)
    python examples/notices_bot.py --home ./notices --network .devnet/network.json

A person subscribes with ``veil send BOT_ID "/subscribe notices"`` (or opens the bot's
link, ``veil://bot/BOT_ID?start=notices``), and gets every notice in their inbox; ``/latest``
repeats the last one. Each broadcast is a persisted job: a bot stopped halfway finishes
it on its next start, and every subscriber gets it exactly once.

The same bot behind HTTP: ``veil bot serve --topic notices`` and ``POST /v1/broadcasts``
(see examples/curl.md).
"""

from __future__ import annotations

import argparse
import contextlib
import sys

import trio

from veil.client.bot import Bot, BotContext
from veil.client.veil_client import open_client

TOPIC = "notices"


async def main(home: str, network: str) -> None:
    async with open_client(home, network) as client:
        bot = Bot(
            client,
            name="Notices",
            description="notices, as they happen",
            topics={TOPIC: "every notice"},
        )
        latest: list[str] = []

        @bot.command("start", "subscribe")
        def start(ctx: BotContext) -> str:
            bot.subscribe(ctx.sender, TOPIC)
            return "Subscribed to notices. /unsubscribe to stop, /latest for the last one."

        @bot.command("latest", "the last notice")
        def last(ctx: BotContext) -> str:
            return latest[-1] if latest else "No notice yet."

        async def from_stdin() -> None:
            lines = trio.wrap_file(sys.stdin)
            async for line in lines:
                text = line.strip()
                if not text:
                    continue
                latest.append(text)
                result = await bot.broadcast(TOPIC, text)
                print(f"sent to {result.sent} of {result.total} ({result.failed} failed)")

        print(f"notices bot {bot.id}\nlink: {bot.link(TOPIC)}\ntype a notice, Enter to send")
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(bot.run)
                await from_stdin()
                nursery.cancel_scope.cancel()
        finally:
            bot.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="a notices bot on veil")
    parser.add_argument("--home", required=True, help="the bot's home (veil id new)")
    parser.add_argument("--network", required=True, help="the network's network.json")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(main, args.home, args.network)
