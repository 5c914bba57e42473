"""./scripts/bench client: the client library's onion round trip and delivery latency.

What is measured (all on 127.0.0.1, in one run)
===============================================

A devnet (:class:`veil.client.devnet.Devnet`: one authority and ``NODES`` ``veil-node``
processes, swarm target size ``SWARM_SIZE``, the node's default anti-entropy interval of
10 s instead of the devnet's 1 s) is started in a temporary directory, and
two clients are opened on it with :func:`veil.client.veil_client.open_client`, each with its own
home: a sender and a follower.

* ``onion_rtt_ms_p50`` / ``_p99``: ``PINGS`` calls of :meth:`VeilClient.ping`, one at a
  time: an ``info`` request to a random node over the client's default path (a guard
  and two relays, then the node: four onion layers), built, sent, every layer opened
  and the reply decoded. Timed around the whole call.
* Floors, in the same run, interleaved with the pings: ``http_floor_ms_p50``, a plain
  HTTP ``GET /info`` to one node over httpx's transport (the HTTP stack the client
  library uses: :class:`httpx.AsyncHTTPTransport`, no onion, one hop), and
  ``onion_rtt_ratio_p50`` = ``onion_rtt_ms_p50 / http_floor_ms_p50``: what the four
  hops and their cryptography cost, in plain round trips; ``h11_floor_ms_p50``, the same
  GET with bare h11 on a trio socket (no httpx): the difference is httpx's own CPU; and
  ``bare_onion_ms_p50``, the same 4-layer packet over the same path built and posted
  over the same httpx transport without the client library, so
  ``client_overhead_ms_p50`` (the difference) is what the library itself adds (path
  choice, retries' bookkeeping, clock, transport gate).
* ``delivery_ms_p50`` / ``_p99``: ``MESSAGES`` messages, one at a time, from the sender
  to the follower, whose ``async for message in client.messages()`` long-polls its
  inbox. From :meth:`VeilClient.send` returning to the follower's iterator yielding the
  message (decrypted, verified, recorded in its state file). It can be below the
  send's own round trip (the store's reply travels back to the sender while the
  follower's poll answers); ``send_ms_p50`` is that round trip, and
  ``delivery_from_send_start_ms_p50`` the latency counted from the send's start.

Targets on loopback: ``onion_rtt_ms_p50 <= 5``, ``delivery_ms_p50 <= 50``. Bounded: the
devnet starts in seconds, the pings take well under a minute, and each message waits at
most ``DELIVERY_TIMEOUT_S`` (the run stops with an error on the first that does not
arrive).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from benchnet import NODES, DeliveryMissing, percentile, run_on_devnet

from veil.onion.wallclock import wall_clock_ms

WARMUP = 30
PINGS = 400
MESSAGES = 100
TTL_S = 600
DELIVERY_TIMEOUT_S = 10.0
#: Lets the follower's next long-poll reach its node before the next message is sent
#: (a chat, not a flood: the figure is latency, not throughput).
SETTLE_S = 0.03


def run() -> dict[str, float]:
    return run_on_devnet("client", _measure, node_url=True)


async def _measure(tmp: Path, network_file: Path, node_url: str) -> dict[str, float]:
    import httpx
    import trio
    from httpx import URL

    from veil.client.veil_client import open_client
    from veil.onion.keys import Account

    sender_account, follower_account = Account.generate(), Account.generate()
    async with (
        open_client(tmp / "sender", network_file, account=sender_account) as sender,
        open_client(tmp / "follower", network_file, account=follower_account) as follower,
    ):
        # --- onion round trips, and two floors beside them, interleaved so that a
        # busy machine slows all three alike
        for _ in range(WARMUP):
            await sender.ping()
        rtts: list[float] = []
        bare: list[float] = []
        floor: list[float] = []
        h11_floor: list[float] = []
        nodes = sender.consensus.nodes
        info_url = URL(f"{node_url}/info")
        h11_get = await _H11Get.open(info_url.host, info_url.port or 80)
        # The client library's HTTP stack (client/transport.py): httpx's transport, used
        # directly, so that the floors and the library are measured on the same code.
        async with h11_get, httpx.AsyncHTTPTransport() as http:
            for _ in range(WARMUP):
                await _get(http, info_url)
                await h11_get.get("/info")
                await _bare_onion(http, sender, nodes[0])
            for i in range(PINGS):
                t0 = time.perf_counter()
                await sender.ping()
                rtts.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                await _bare_onion(http, sender, nodes[i % len(nodes)])
                bare.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                await _get(http, info_url)
                floor.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                await h11_get.get("/info")
                h11_floor.append((time.perf_counter() - t0) * 1000)

        # --- delivery: send, then wait for the follower's iterator to yield it
        arrived: dict[bytes, float] = {}
        wanted: dict[bytes, trio.Event] = {}

        async def follow() -> None:
            async for message in follower.messages():
                arrived[message.hash] = time.perf_counter()
                wanted.setdefault(message.hash, trio.Event()).set()

        delivery, from_start, send_rtt = [], [], []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            await sender.send(follower_account.id, "warm-up", ttl_s=TTL_S)
            await trio.sleep(0.5)
            for i in range(MESSAGES):
                await trio.sleep(SETTLE_S)
                t0 = time.perf_counter()
                sent = await sender.send(follower_account.id, f"message {i}", ttl_s=TTL_S)
                t1 = time.perf_counter()
                event = wanted.setdefault(sent.hash, trio.Event())
                with trio.move_on_after(DELIVERY_TIMEOUT_S):
                    await event.wait()
                if not event.is_set():
                    raise DeliveryMissing(
                        f"message {i + 1} of {MESSAGES} was stored (send returned) but the "
                        f"follower had not received it after {DELIVERY_TIMEOUT_S:.0f} s "
                        f"(last poll error: {follower.receiver.last_error})"
                    )
                send_rtt.append((t1 - t0) * 1000)
                delivery.append((arrived[sent.hash] - t1) * 1000)
                from_start.append((arrived[sent.hash] - t0) * 1000)
            nursery.cancel_scope.cancel()
        hops = len(sender.paths.paths[0].relays) + 1 if sender.paths.paths else 0

    rtt_p50, floor_p50 = percentile(rtts, 50), percentile(floor, 50)
    return {
        "nodes": float(NODES),
        "path_hops": float(hops),
        "pings": float(PINGS),
        "messages": float(MESSAGES),
        "onion_rtt_ms_p50": rtt_p50,
        "onion_rtt_ms_p99": percentile(rtts, 99),
        "http_floor_ms_p50": floor_p50,
        "http_floor_ms_p99": percentile(floor, 99),
        "onion_rtt_ratio_p50": rtt_p50 / floor_p50,
        "h11_floor_ms_p50": percentile(h11_floor, 50),
        "bare_onion_ms_p50": percentile(bare, 50),
        "client_overhead_ms_p50": rtt_p50 - percentile(bare, 50),
        "delivery_ms_p50": percentile(delivery, 50),
        "delivery_ms_p99": percentile(delivery, 99),
        "delivery_from_send_start_ms_p50": percentile(from_start, 50),
        "send_ms_p50": percentile(send_rtt, 50),
        "send_ms_p99": percentile(send_rtt, 99),
    }


async def _get(http: Any, url: Any) -> bytes:
    """GET ``url`` over an :class:`httpx.AsyncHTTPTransport`; the body (200 only)."""
    import httpx

    response = await http.handle_async_request(httpx.Request("GET", url))
    body = await response.aread()
    await response.aclose()
    if response.status_code != 200:
        raise RuntimeError(f"GET {url}: HTTP {response.status_code}")
    return body


async def _bare_onion(http: Any, client: Any, node: Any) -> None:
    """The same 4-layer ``info`` request without the client library: build the packet
    over the client's first path, POST it over httpx's transport, open the reply."""
    import httpx

    from veil.onion import rpc
    from veil.onion.packet import build_packet

    path = client.paths.paths[0]
    hops = path.hops(node.as_hop())
    packet, opener = build_packet(hops, rpc.make_info(), now_ms=wall_clock_ms())
    url = f"http://{hops[0].host}:{hops[0].port}/onion"
    response = await http.handle_async_request(httpx.Request("POST", url, content=packet))
    body = await response.aread()
    await response.aclose()
    if response.status_code != 200:
        raise RuntimeError(f"POST {url}: HTTP {response.status_code}")
    assert rpc.decode_reply(opener.open(body)).ok


class _H11Get:
    """Keep-alive ``GET`` with bare h11 on one trio socket: an HTTP round trip without
    httpx (the floor under ``http_floor``)."""

    def __init__(self, stream: Any, host: str) -> None:
        import h11

        self.stream = stream
        self.host = host
        self.conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, host: str, port: int) -> _H11Get:
        import trio

        return cls(await trio.open_tcp_stream(host, port), f"{host}:{port}")

    async def get(self, path: str) -> bytes:
        import h11

        conn = self.conn
        await self.stream.send_all(
            conn.send(h11.Request(method="GET", target=path, headers=[("host", self.host)]))
            + conn.send(h11.EndOfMessage())
        )
        status, chunks = 0, []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await self.stream.receive_some(65536)
                if not data:
                    raise RuntimeError("the node closed the connection")
                conn.receive_data(data)
            elif type(event) is h11.Response:
                status = event.status_code
            elif type(event) is h11.Data:
                chunks.append(bytes(event.data))
            elif type(event) is h11.EndOfMessage:
                break
        conn.start_next_cycle()
        if status != 200:
            raise RuntimeError(f"GET {path}: HTTP {status}")
        return b"".join(chunks)

    async def __aenter__(self) -> _H11Get:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stream.aclose()


def describe(r: dict[str, float]) -> str:
    return "\n".join(
        [
            f"client: {r['nodes']:.0f}-node devnet, default path of {r['path_hops']:.0f} hops "
            f"(guard, two relays, destination); {r['pings']:.0f} pings, "
            f"{r['messages']:.0f} messages one at a time",
            f"  onion round trip (info to a random node):  p50 {r['onion_rtt_ms_p50']:7.2f} ms"
            f"   p99 {r['onion_rtt_ms_p99']:7.2f} ms   (target p50 <= 5)",
            f"  floor: plain HTTP GET /info to one node:   p50 {r['http_floor_ms_p50']:7.2f} ms"
            f"   p99 {r['http_floor_ms_p99']:7.2f} ms   (httpx's transport)",
            f"  the same GET with bare h11 (no httpx):     p50 {r['h11_floor_ms_p50']:7.2f} ms",
            f"  onion round trip / floor (p50): {r['onion_rtt_ratio_p50']:.2f}x",
            f"  floor 2: the same 4-layer packet, no client library (httpx transport): p50 "
            f"{r['bare_onion_ms_p50']:.2f} ms; the library adds "
            f"{r['client_overhead_ms_p50']:+.2f} ms",
            f"  delivery, send returned -> iterator yield: p50 {r['delivery_ms_p50']:7.2f} ms"
            f"   p99 {r['delivery_ms_p99']:7.2f} ms   (target p50 <= 50)",
            f"  send round trip (store through the onion): p50 {r['send_ms_p50']:7.2f} ms"
            f"   p99 {r['send_ms_p99']:7.2f} ms",
            f"  delivery counted from the send's start:    p50 "
            f"{r['delivery_from_send_start_ms_p50']:7.2f} ms",
        ]
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    results: Any = run()
    print(describe(results))
    sys.exit(0)
