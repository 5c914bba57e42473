"""./scripts/bench network: swarm replication lag on a 10-node devnet, beside a store's round trip.

What is measured (all on 127.0.0.1, in one run)
===============================================

A devnet (:class:`veil.client.devnet.Devnet`: one authority and ``NODES`` ``veil-node``
processes, swarm target size ``SWARM_SIZE``) is started in a temporary directory. Then,
``MESSAGES`` times, one message at a time:

1. a fresh account is made, and its swarm looked up in the verified consensus; one
   member (taking turns) is the *storer*, the others are the *watchers*;
2. every watcher gets a long-poll retrieve for the account (signed, ``wait`` =
   ``POLL_WAIT_S``), each through a 1-hop onion packet straight to the watcher; the
   node's long-poll returns as soon as its store commits a message for that account;
   after ``SETTLE_S`` (so the polls are waiting), the clock starts and
3. an inbox store (:func:`veil.onion.rpc.make_store`, ``MESSAGE_BYTES`` of data) goes to the
   storer in a 1-hop onion packet; its reply must be ``ok``.

Figures:

* ``replication_ms_p50`` / ``replication_ms_p99``: from sending the store to the moment
  the *last* watcher's long-poll has returned the message to the client, that is the
  time until a client polling any member of the swarm sees it. A watcher whose poll
  returns without the message polls again. It includes the store's way to the storer
  and the last watcher's reply back to the client. It can be a little below the floor:
  a node that pushes a message to its swarm while (or before) it acknowledges the store
  lets the watchers see it before the storer's reply is back.
* ``store_rtt_ms_p50`` (the floor, measured on the same stores): the round trip of one
  store to one node, through the same 1-hop onion path. ``replication_ratio_p50`` =
  ``replication_ms_p50 / store_rtt_ms_p50``: how many store round trips a message takes
  to reach the whole swarm.

A message that has not reached every watcher ``REPLICATION_TIMEOUT_S`` after its store
stops the benchmark with an error naming the nodes (no figure is reported for a network
that does not replicate). Bounded: the devnet starts in seconds, each message takes
``SETTLE_S`` plus its lag, and the run stops at the first missing replica, so the
whole suite takes well under two minutes.
"""

from __future__ import annotations

import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from veil.onion.wallclock import wall_clock_ms

NODES = 10
SWARM_SIZE = 5
MESSAGES = 200
MESSAGE_BYTES = 200  # a short text message in its envelope
INTERVAL_MS = 2000  # consensus interval of the devnet
TTL_MS = 3_600_000
POLL_WAIT_S = 15  # long-poll of the watchers; longer than the timeout below
REPLICATION_TIMEOUT_S = 10.0
SETTLE_S = 0.02  # lets the watchers' long-polls reach the node before the store
HTTP_TIMEOUT_S = 30.0


class ReplicationMissing(Exception):
    """A stored message did not reach every member of its swarm in time."""


def run() -> dict[str, float]:
    from veil.client.devnet import Devnet, DevnetError

    with tempfile.TemporaryDirectory(prefix="veil-bench-network-") as tmp:
        net = Devnet(Path(tmp) / "devnet")
        try:
            with net:
                net.up(nodes=NODES, swarm_size=SWARM_SIZE, interval_ms=INTERVAL_MS)
                consensus = net.consensus()
                names = {bytes.fromhex(m.id): m.name for m in net.nodes}
                import trio

                rtts, lags = trio.run(_measure, consensus, names)
        except DevnetError as exc:
            raise SystemExit(f"bench network: the devnet did not start:\n{exc}") from None
        except (ReplicationMissing, BaseExceptionGroup) as exc:
            # trio wraps what fails inside a nursery in an exception group.
            leaf = _leaf(exc)
            if isinstance(leaf, ReplicationMissing):
                raise SystemExit(f"bench network: {leaf}") from None
            raise
    rtt_p50 = _percentile(rtts, 50)
    lag_p50 = _percentile(lags, 50)
    return {
        "nodes": float(NODES),
        "swarm_size": float(SWARM_SIZE),
        "swarms": float(len(consensus.swarms)),
        "messages": float(len(lags)),
        "replication_ms_p50": lag_p50,
        "replication_ms_p99": _percentile(lags, 99),
        "replication_ms_max": max(lags),
        "store_rtt_ms_p50": rtt_p50,
        "store_rtt_ms_p99": _percentile(rtts, 99),
        "replication_ratio_p50": lag_p50 / rtt_p50,
    }


def _leaf(exc: BaseException) -> BaseException:
    """The first :class:`ReplicationMissing` inside ``exc`` (an exception group from a
    nursery, perhaps), else ``exc``."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _leaf(inner)
            if isinstance(found, ReplicationMissing):
                return found
    return exc


def _percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil(n * p / 100), at least 1
    return ordered[int(rank) - 1]


async def _measure(consensus: Any, names: dict[bytes, str]) -> tuple[list[float], list[float]]:
    import httpx
    import trio

    from veil.onion import rpc
    from veil.onion.keys import Account

    rtts: list[float] = []
    lags: list[float] = []
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(trust_env=False, timeout=HTTP_TIMEOUT_S, limits=limits) as http:
        for i in range(MESSAGES):
            account = Account.generate()
            members = consensus.swarm_of(account.id).members
            if len(members) < 2:
                raise ReplicationMissing(
                    f"account {account.id} maps to a swarm of {len(members)} node: "
                    "nothing to replicate to"
                )
            storer = members[i % len(members)]
            watchers = [m for m in members if m is not storer]
            data = secrets.token_bytes(MESSAGE_BYTES)
            digest = rpc.message_hash(account.id, rpc.INBOX, data)
            arrived: dict[bytes, float] = {}
            all_arrived = trio.Event()

            async with trio.open_nursery() as nursery:
                for member in watchers:
                    nursery.start_soon(
                        _watch, http, member, account, digest, arrived, len(watchers), all_arrived
                    )
                await trio.sleep(SETTLE_S)
                t0 = time.perf_counter()
                store = rpc.make_store(account.id, data, TTL_MS, now_ms=wall_clock_ms())
                reply = await _onion_rpc(http, storer, store)
                rtts.append((time.perf_counter() - t0) * 1000)
                reply.raise_for_status()
                with trio.move_on_after(REPLICATION_TIMEOUT_S):
                    await all_arrived.wait()
                nursery.cancel_scope.cancel()  # the watchers still polling
            if not all_arrived.is_set():
                missing = [names.get(m.node_id, "?") for m in watchers if m.node_id not in arrived]
                have = [names.get(k, "?") for k in arrived]
                raise ReplicationMissing(
                    f"message {i + 1} of {MESSAGES}, stored at "
                    f"{names.get(storer.node_id, '?')} (store acknowledged), had not "
                    f"reached {', '.join(missing)} after {REPLICATION_TIMEOUT_S:.0f} s "
                    f"(reached: {', '.join(have) or 'none'}). Swarm replication is "
                    "missing or broken: no replication figure can be given."
                )
            lags.append((max(arrived.values()) - t0) * 1000)
    return rtts, lags


async def _watch(
    http: Any,
    member: Any,
    account: Any,
    digest: bytes,
    arrived: dict[bytes, float],
    expected: int,
    all_arrived: Any,
) -> None:
    """Long-poll ``member`` for ``account`` until the message ``digest`` is there; note
    when (``arrived``) and set ``all_arrived`` once ``expected`` watchers have it.

    Loops: a poll can return without the message (its wait ran out)."""
    from veil.onion import rpc
    from veil.onion.errors import VeilError

    while True:
        request = rpc.make_retrieve(account, now_ms=wall_clock_ms(), wait_s=POLL_WAIT_S)
        reply = await _onion_rpc(http, member, request)
        try:
            result = rpc.parse_result("retrieve", reply.raise_for_status())
        except VeilError as exc:
            raise ReplicationMissing(
                f"swarm member {member.node_id_hex[:12]} refused a retrieve for an account "
                f"of its swarm: {exc.status}: {exc}"
            ) from None
        if any(m.hash == digest for m in result.messages):
            arrived[member.node_id] = time.perf_counter()
            if len(arrived) == expected:
                all_arrived.set()
            return


async def _onion_rpc(http: Any, member: Any, request: bytes) -> Any:
    """``request`` in a 1-hop onion packet to ``member``; the decoded RPC reply."""
    from veil.onion import rpc
    from veil.onion.packet import build_packet

    hop = member.as_hop()
    packet, opener = build_packet([hop], request, now_ms=wall_clock_ms())
    response = await http.post(f"http://{hop.host}:{hop.port}/onion", content=packet)
    if response.status_code != 200:
        raise ReplicationMissing(
            f"node {member.node_id_hex[:12]} refused an onion packet: HTTP "
            f"{response.status_code} {response.text[:200]}"
        )
    return rpc.decode_reply(opener.open(response.content))




def describe(r: dict[str, float]) -> str:
    return "\n".join(
        [
            f"network: {r['nodes']:.0f} nodes in {r['swarms']:.0f} swarms (target size "
            f"{r['swarm_size']:.0f}), {r['messages']:.0f} messages, one at a time, each "
            "through a 1-hop onion packet",
            f"  replication lag, store sent -> on every swarm member:  "
            f"p50 {r['replication_ms_p50']:7.2f} ms   p99 {r['replication_ms_p99']:7.2f} ms   "
            f"max {r['replication_ms_max']:7.2f} ms",
            f"  floor: one store's round trip to one node:             "
            f"p50 {r['store_rtt_ms_p50']:7.2f} ms   p99 {r['store_rtt_ms_p99']:7.2f} ms",
            f"  replication lag / store round trip (p50): {r['replication_ratio_p50']:.2f}x",
        ]
    )


if __name__ == "__main__":
    results = run()
    print(describe(results))
    sys.exit(0)
