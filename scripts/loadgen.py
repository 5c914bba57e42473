"""A load generator process for ``./scripts/bench load``: many veil clients in one trio
process, driven by JSON lines on stdin (one JSON answer line on stdout per command).

Design note
-----------
The whole-network benchmark needs more clients than one Python process can drive
without becoming the bottleneck it measures, so the benchmark starts a few of these
processes and spreads the clients over them. Everything here goes through the public
client library (:func:`veil.client.veil_client.open_client`): every request takes the
client's default path (a guard, two relays, then the destination: four onion layers).

Roles: each process opens ``senders`` clients that send and ``followers`` clients that
follow their inbox (``async for message in client.messages()``: the long-poll, each
message opened, verified and persisted in the client's state file before it is
yielded). Followers run from ``open`` to ``close``.

Offered load is *open loop*: ``load`` schedules sends at a fixed rate for a fixed time
(send ``i`` is due at ``start + i / rate``), each in its own task, round robin over the
senders, to a follower chosen at random among every process's followers. A send's
latency is counted from the time it was *due*, not from when it started, so a process
that falls behind shows it as latency instead of hiding it (no coordinated omission).
At most ``max_in_flight`` sends run at once; beyond that the scheduler waits, and the
wait is in the latency too.

Timing across processes: the content of each message carries its due time on
``time.monotonic_ns()``, which on Linux is CLOCK_MONOTONIC, one clock for every
process of the machine, so a follower in another process computes the delivery
latency (due -> its iterator yields the message) from the message alone.

``ping`` is the floor's load: every client of the process (senders and followers'
twins: see below) pings (an ``info`` request to a random node over its default path)
one at a time in a loop for ``duration_s``. Followers are busy long-polling, so the
ping load uses the senders plus ``followers`` extra clients opened for it (the same
number of clients as the message load, each with one request in flight).

Commands (``cmd``): ``open``, ``load``, ``count``, ``collect``, ``ping``, ``channels``
(create and post), ``follow`` (channels, for ``bench scale``'s client memory), ``close``;
see :class:`LoadProcess`. An exception in a command is answered as ``{"error": ...}``
and the process goes on; EOF on stdin closes every client and exits.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import trio

from veil.client.veil_client import VeilClient, open_client
from veil.onion.keys import Account

#: TTL of the benchmark's messages (s): long enough for any step, short enough that the
#: nodes' stores do not keep them.
TTL_S = 600.0


class LoadProcess:
    """The clients of this process and what they measured, by step tag."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.senders: list[VeilClient] = []
        self.followers: list[VeilClient] = []
        self.pingers: list[VeilClient] = []
        self.recipients: list[str] = []
        #: tag -> [(latency_ms, arrival monotonic_ns)], as followers receive them.
        self.delivered: dict[str, list[tuple[float, int]]] = defaultdict(list)
        self.seen: set[bytes] = set()
        self.duplicates = 0
        self.foreign = 0
        self._stack: list[Any] = []
        self._follow_scopes: list[trio.CancelScope] = []

    # --- commands ------------------------------------------------------------------

    async def open(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Open ``senders`` + ``followers`` (+ as many ping-only) clients under ``home``
        on ``network``; start the followers. Answers the followers' account IDs."""
        home = Path(cmd["home"])
        network = Path(cmd["network"])
        started = time.perf_counter()
        opened: list[VeilClient] = []

        async def one(name: str) -> None:
            cm = open_client(home / name, network, account=Account.generate())
            client = await cm.__aenter__()
            self._stack.append(cm)
            opened.append(client)

        for role, n in (("s", cmd["senders"]), ("f", cmd["followers"]), ("p", cmd["followers"])):
            for i in range(n):
                await one(f"{role}{i}")
        senders, rest = opened[: cmd["senders"]], opened[cmd["senders"] :]
        self.senders = senders
        self.followers = rest[: cmd["followers"]]
        self.pingers = [*senders, *rest[cmd["followers"] :]]
        for client in self.followers:
            self.nursery.start_soon(self._follow, client)
        return {
            "followers": [str(c.account_id) for c in self.followers],
            "open_s": round(time.perf_counter() - started, 2),
        }

    async def load(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Send at ``rate`` messages/s for ``duration_s`` to ``recipients`` (open loop);
        answer when every send has returned or failed: each send's latency (ms, from its
        due time), the errors by type, and when the first and last sends were due."""
        tag, rate, duration_s = cmd["tag"], float(cmd["rate"]), float(cmd["duration_s"])
        recipients: list[str] = cmd["recipients"]
        cap = int(cmd.get("max_in_flight", 512))
        count = max(1, math.floor(rate * duration_s))
        rng = random.Random(cmd.get("seed"))
        send_ms: list[float] = []
        errors: Counter[str] = Counter()
        in_flight = 0
        room = trio.Condition()
        start_ns = time.monotonic_ns()
        step_ns = int(1e9 / rate)

        async def send(i: int, due_ns: int) -> None:
            nonlocal in_flight
            client = self.senders[i % len(self.senders)]
            to = recipients[rng.randrange(len(recipients))]
            try:
                await client.send(to, f"{tag} {i} {due_ns}", ttl_s=TTL_S)
                send_ms.append((time.monotonic_ns() - due_ns) / 1e6)
            except Exception as exc:
                errors[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1
            finally:
                in_flight -= 1
                async with room:
                    room.notify_all()

        async with trio.open_nursery() as nursery:
            for i in range(count):
                due = start_ns + i * step_ns
                delay = (due - time.monotonic_ns()) / 1e9
                if delay > 0:
                    await trio.sleep(delay)
                async with room:
                    while in_flight >= cap:
                        await room.wait()
                in_flight += 1
                nursery.start_soon(send, i, due)
        return {
            "sent": len(send_ms),
            "errors": dict(errors),
            "send_ms": send_ms,
            "first_due_ns": start_ns,
            "last_due_ns": start_ns + (count - 1) * step_ns,
        }

    async def count(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """How many messages of step ``tag`` this process's followers have received."""
        await trio.lowlevel.checkpoint()
        return {"received": len(self.delivered.get(cmd["tag"], ()))}

    async def collect(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Step ``tag``'s deliveries: latency (ms) and arrival time (monotonic ns) each."""
        await trio.lowlevel.checkpoint()
        got = self.delivered.get(cmd["tag"], [])
        return {
            "latency_ms": [d[0] for d in got],
            "arrival_ns": [d[1] for d in got],
            "duplicates": self.duplicates,
            "foreign": self.foreign,
        }

    async def ping(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Every ping client in a closed loop for ``duration_s``: pings done, their round
        trips (ms), and errors by type."""
        duration_s = float(cmd["duration_s"])
        rtts: list[float] = []
        errors: Counter[str] = Counter()

        async def loop(client: VeilClient, deadline: float) -> None:
            while time.monotonic() < deadline:
                t0 = time.monotonic()
                try:
                    await client.ping()
                except Exception as exc:
                    errors[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1
                    continue
                rtts.append((time.monotonic() - t0) * 1000)

        started = time.monotonic()
        async with trio.open_nursery() as nursery:
            for client in self.pingers:
                nursery.start_soon(loop, client, started + duration_s)
        return {
            "pings": len(rtts),
            "elapsed_s": time.monotonic() - started,
            "rtt_ms": rtts,
            "errors": dict(errors),
            "clients": len(self.pingers),
        }

    async def channels(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Create ``n`` channels with the first sender and post once to each: their IDs."""
        from veil.client.channels import create_channel

        ids = []
        for i in range(cmd["n"]):
            channel = create_channel(self.senders[0], f"bench-{i}")
            await channel.post(f"post of channel {i}")
            ids.append(str(channel.id))
        return {"channels": ids}

    async def follow(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Follow each of ``channels`` with the first sender (kept until ``close``);
        answer once each has yielded a post, or after ``timeout_s``: posts received."""
        from veil.client.channels import follow

        got: set[str] = set()
        everyone = trio.Event()
        wanted = set(cmd["channels"])

        async def one(channel: str) -> None:
            async for _post in follow(self.senders[0], channel):
                got.add(channel)
                if got >= wanted:
                    everyone.set()

        for channel in cmd["channels"]:
            self.nursery.start_soon(self._follow_channel, one, channel)
        with trio.move_on_after(float(cmd.get("timeout_s", 60))):
            await everyone.wait()
        return {"posts": len(got)}

    async def _follow_channel(self, one: Any, channel: str) -> None:
        scope = trio.CancelScope()
        self._follow_scopes.append(scope)
        with scope:
            await one(channel)

    async def close(self) -> None:
        """Close every client, last opened first (the followers' loops end with them)."""
        for scope in self._follow_scopes:
            scope.cancel()
        with trio.CancelScope(shield=True):
            await trio.sleep(0)  # let the followers' loops end before their clients close
            while self._stack:
                cm = self._stack.pop()
                try:
                    await cm.__aexit__(None, None, None)
                except Exception as exc:  # one client's close failing must not keep others
                    print(f"loadgen: closing a client: {exc!r}", file=sys.stderr)

    # --- the followers ---------------------------------------------------------------

    async def _follow(self, client: VeilClient) -> None:
        """Record every message this follower's iterator yields, by its step tag."""
        scope = trio.CancelScope()
        self._follow_scopes.append(scope)
        with scope:
            await self._record(client)

    async def _record(self, client: VeilClient) -> None:
        async for message in client.messages():
            now_ns = time.monotonic_ns()
            if message.hash in self.seen:  # the iterator yields a message once; check it
                self.duplicates += 1
                continue
            self.seen.add(message.hash)
            try:
                tag, _, due = message.text.split(" ")
                latency_ms = (now_ns - int(due)) / 1e6
            except ValueError:
                self.foreign += 1  # not a benchmark message
                continue
            self.delivered[tag].append((latency_ms, now_ns))


async def _serve() -> None:
    async with trio.open_nursery() as nursery:
        proc = LoadProcess(nursery)
        try:
            while True:
                line = await trio.to_thread.run_sync(sys.stdin.readline)
                if not line:
                    break
                cmd = json.loads(line)
                try:
                    name = cmd["cmd"]
                    if name == "close":
                        break
                    if name not in (
                        "open",
                        "load",
                        "count",
                        "collect",
                        "ping",
                        "channels",
                        "follow",
                    ):
                        raise ValueError(f"unknown command {name!r}")
                    answer = await getattr(proc, name)(cmd)
                except Exception as exc:
                    answer = {"error": f"{type(exc).__name__}: {exc}"}
                sys.stdout.write(json.dumps(answer) + "\n")
                sys.stdout.flush()
        finally:
            await proc.close()
            nursery.cancel_scope.cancel()
    sys.stdout.write(json.dumps({"closed": True}) + "\n")
    sys.stdout.flush()


def main() -> int:
    trio.run(_serve)
    return 0


if __name__ == "__main__":
    sys.exit(main())
