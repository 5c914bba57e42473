"""./scripts/bench gateway: one-time codes through the bot's HTTP gateway (issue 15).

What is measured (all on 127.0.0.1, in one run)
===============================================

A devnet of ``NODES`` ``veil-node`` processes (one authority) in a temporary directory.
One trio process runs, as ``veil bot serve`` does, a :class:`veil.client.bot.Bot` and its
gateway (FastAPI on hypercorn's trio worker, on a loopback port), and the HTTP client
(httpx on trio) and ``FOLLOWERS`` recipient clients. The same hypercorn server also
serves a bare ASGI endpoint (``/bare``: a raw ASGI callable that answers 200 with a
small JSON body, no framework), the floor under any request.

* ``codes_per_s``: ``POST /v1/codes`` to ``CODES`` distinct fresh recipients,
  ``CONCURRENCY`` at a time, from the first request to the last 201 (each: a bearer
  token checked, the body validated, the ticket written, the code's message stored
  through the onion). ``direct_codes_per_s``: :meth:`Bot.send_code` to as many other
  fresh recipients, same concurrency, in rounds interleaved with the gateway's (a noisy
  machine slows both alike); ``gateway_vs_direct`` = their ratio (1.0: the HTTP layer
  costs nothing beside the network).
* ``bare_rps`` and ``status_rps``: requests per second, ``CONCURRENCY`` keep-alive
  connections of a load generator in a child process (raw HTTP/1.1 on trio sockets, so
  that the client's cost neither shares the server's thread nor hides its cost), of
  ``GET /bare`` and of ``GET /v1/codes/{ticket}`` (a token checked, a ticket read from
  SQLite: the gateway's own work, no network), interleaved; ``overhead_ratio`` =
  ``bare_rps / status_rps`` (how many bare requests one gateway request costs) and
  ``overhead_ms`` = ``1000 / status_rps - 1000 / bare_rps`` (per request, at this
  concurrency).
* ``delivery_ms_p50`` / ``_p99``: ``DELIVERY_CODES`` codes, one at a time, to the live
  followers in turn (``async for m in client.messages()``); from the gateway's 201
  arriving at the HTTP client to the follower's iterator yielding that code's message.
  It can be near zero or below: a follower's long poll is answered while the store's
  acknowledgement travels back (as in ``bench bot``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchnet import NODES, percentile, run_on_devnet

CONCURRENCY = 8
WARMUP = 10
CODES = 150  # per kind (gateway, direct), in ROUNDS interleaved rounds
ROUNDS = 3
LOCAL_REQUESTS = 3000  # per kind (bare, status), in ROUNDS rounds
FOLLOWERS = 8
DELIVERY_CODES = FOLLOWERS * 5  # 5 codes per recipient and purpose per 10 min
DELIVERY_TIMEOUT_S = 10.0
SETTLE_S = 0.03


def run() -> dict[str, float]:
    return run_on_devnet("gateway", _measure)


def _bare_app(gateway_app: Any) -> Any:
    """The gateway's app, with ``/bare`` answered by a raw ASGI callable first."""
    body = b'{"ok":true}'

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/bare":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await gateway_app(scope, receive, send)

    return app


async def _rate(n: int, each: Any) -> float:
    import trio

    limiter = trio.CapacityLimiter(CONCURRENCY)

    async def one(i: int) -> None:
        async with limiter:
            await each(i)

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(one, i)
    return n / (time.perf_counter() - t0)


async def _measure(tmp: Path, network_file: Path) -> dict[str, float]:
    from contextlib import AsyncExitStack

    import httpx
    import trio

    from veil.client.bot import Bot
    from veil.client.gateway import Gateway, GatewayStore, Listen, create_app, serve_gateway
    from veil.client.veil_client import open_client
    from veil.onion.keys import Account

    figures: dict[str, float] = {}
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
        bot = Bot(client, name="bench gateway")
        stack.callback(bot.close)
        store = GatewayStore(tmp / "bot" / "bot")
        stack.callback(store.close)
        gateway = Gateway(bot, store)
        token, _ = gateway.tokens.create(["codes", "read"], "bench")
        app = _bare_app(create_app(gateway))
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                lambda task_status: serve_gateway(
                    gateway, app, Listen("127.0.0.1", 0), run_bot=False, task_status=task_status
                )
            )
            url = binds[0]
            async with httpx.AsyncClient(
                base_url=url,
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
                limits=httpx.Limits(max_connections=CONCURRENCY * 2),
            ) as http:
                figures = await _run_all(bot, http, followers)
            nursery.cancel_scope.cancel()
    return {
        "nodes": float(NODES),
        "concurrency": float(CONCURRENCY),
        "codes": float(CODES),
        "delivery_codes": float(DELIVERY_CODES),
        **figures,
    }


async def _run_all(bot: Any, http: Any, followers: list[Any]) -> dict[str, float]:
    import trio

    from veil.onion.keys import Account

    async def via_gateway(_: int) -> None:
        to = str(Account.generate().id)
        answer = await http.post("/v1/codes", json={"to": to, "purpose": "bench"})
        if answer.status_code != 201:
            raise SystemExit(f"bench gateway: POST /v1/codes: {answer.status_code} {answer.text}")

    async def direct(_: int) -> None:
        await bot.send_code(Account.generate().id, "bench")

    await _rate(WARMUP, via_gateway)
    await _rate(WARMUP, direct)
    gw_times: list[float] = []
    direct_times: list[float] = []
    per_round = CODES // ROUNDS
    for _ in range(ROUNDS):
        gw_times.append(per_round / await _rate(per_round, via_gateway))
        direct_times.append(per_round / await _rate(per_round, direct))
    codes_per_s = per_round * ROUNDS / sum(gw_times)
    direct_per_s = per_round * ROUNDS / sum(direct_times)

    ticket = (
        await http.post("/v1/codes", json={"to": str(Account.generate().id), "purpose": "bench"})
    ).json()["ticket"]

    # The local figures: a load generator in another process (raw HTTP/1.1 keep-alive
    # over CONCURRENCY sockets: far cheaper than httpx, and off the server's trio thread).
    host, port = http.base_url.host, http.base_url.port
    auth = http.headers["authorization"]
    bare_t = status_t = 0.0
    per_round = LOCAL_REQUESTS // ROUNDS
    await _load(host, port, "/bare", 100, auth)
    await _load(host, port, f"/v1/codes/{ticket}", 100, auth)
    for _ in range(ROUNDS):
        bare_t += per_round / await _load(host, port, "/bare", per_round, auth)
        status_t += per_round / await _load(host, port, f"/v1/codes/{ticket}", per_round, auth)
    bare_rps = per_round * ROUNDS / bare_t
    status_rps = per_round * ROUNDS / status_t

    delays: list[float] = []
    for i in range(DELIVERY_CODES):
        follower = followers[i % FOLLOWERS]
        got = trio.Event()
        arrived: list[float] = []
        sent_at: list[float] = []

        async def watch(
            follower: Any = follower, got: trio.Event = got, arrived: list[float] = arrived
        ) -> None:
            async for _message in follower.messages():
                arrived.append(time.perf_counter())
                got.set()
                return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            await trio.sleep(SETTLE_S)
            answer = await http.post(
                "/v1/codes", json={"to": str(follower.account_id), "purpose": "delivery"}
            )
            sent_at.append(time.perf_counter())
            if answer.status_code != 201:
                raise SystemExit(f"bench gateway: delivery code: {answer.status_code}")
            with trio.move_on_after(DELIVERY_TIMEOUT_S):
                await got.wait()
            nursery.cancel_scope.cancel()
        if not arrived:
            raise SystemExit(f"bench gateway: code {i} not delivered in {DELIVERY_TIMEOUT_S} s")
        delays.append((arrived[0] - sent_at[0]) * 1000)

    return {
        "codes_per_s": codes_per_s,
        "direct_codes_per_s": direct_per_s,
        "gateway_vs_direct": codes_per_s / direct_per_s,
        "bare_rps": bare_rps,
        "status_rps": status_rps,
        "overhead_ratio": bare_rps / status_rps,
        "overhead_ms": 1000 / status_rps - 1000 / bare_rps,
        "delivery_ms_p50": percentile(delays, 50),
        "delivery_ms_p99": percentile(delays, 99),
    }


async def _load(host: str, port: int, path: str, n: int, auth: str) -> float:
    """Requests per second of ``n`` GETs of ``path``, from a child process."""
    import sys

    import trio

    done = await trio.run_process(
        [sys.executable, __file__, "--load", host, str(port), path, str(n), auth],
        capture_stdout=True,
    )
    return float(done.stdout.decode().strip())


def _load_main(host: str, port: int, path: str, n: int, auth: str) -> None:
    """The child: ``CONCURRENCY`` keep-alive sockets sharing ``n`` requests."""
    import trio

    request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\n\r\n").encode()
    left = [n]

    async def worker() -> None:
        stream = await trio.open_tcp_stream(host, port)
        buffer = b""
        async with stream:
            while left[0] > 0:
                left[0] -= 1
                await stream.send_all(request)
                while True:
                    head, sep, rest = buffer.partition(b"\r\n\r\n")
                    if sep:
                        length = 0
                        for line in head.split(b"\r\n")[1:]:
                            name, _, value = line.partition(b":")
                            if name.strip().lower() == b"content-length":
                                length = int(value)
                        if not head.startswith(b"HTTP/1.1 200"):
                            raise SystemExit(f"load: {head[:80]!r}")
                        if len(rest) >= length:
                            buffer = rest[length:]
                            break
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        raise SystemExit("load: connection closed")
                    buffer += chunk

    async def main() -> float:
        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(CONCURRENCY):
                nursery.start_soon(worker)
        return n / (time.perf_counter() - t0)

    print(trio.run(main))


def describe(r: dict[str, float]) -> str:
    return "\n".join(
        [
            f"gateway on a {r['nodes']:.0f}-node devnet, {r['concurrency']:.0f} requests at a time",
            f"  codes through the gateway   {r['codes_per_s']:8.1f} /s  (POST /v1/codes)",
            f"  codes by Bot.send_code      {r['direct_codes_per_s']:8.1f} /s  "
            f"(gateway/direct {r['gateway_vs_direct']:.2f})",
            f"  bare ASGI endpoint          {r['bare_rps']:8.0f} req/s",
            f"  GET /v1/codes/{{ticket}}      {r['status_rps']:8.0f} req/s  "
            f"(overhead x{r['overhead_ratio']:.2f}, {r['overhead_ms']:.2f} ms/request)",
            f"  201 -> code in the iterator p50 {r['delivery_ms_p50']:.1f} ms, "
            f"p99 {r['delivery_ms_p99']:.1f} ms ({r['delivery_codes']:.0f} codes)",
        ]
    )


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 7 and sys.argv[1] == "--load":
        _load_main(sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6])
