"""./scripts/bench rooms: posts into one room from many authors, and how soon readers see
them (issue 16), beside the same devnet's 1:1 messages in the same run.

What is measured (all on 127.0.0.1, in one run)
===============================================

A devnet (:func:`benchnet.run_on_devnet`: ``NODES`` ``veil-node`` processes in swarms of
5, at rest) is started in a temporary directory. One client creates a room (no proof of
work, the largest rate a room may set: 60 posts an author a minute); ``AUTHORS`` more
clients, each with its own home and account, are its authors; ``READERS`` more read it.

* ``posts_per_s``: every author posts ``POSTS_PER_ROUND`` posts one after another
  (:meth:`Room.post`: the post signed, checked against the room's rules held, stored
  unsigned through an onion path; the room's nodes judge it with
  :class:`~veil.onion.room.RoomState`), all authors at once, timed from the first call
  to the last return; ``ROUNDS`` rounds, each followed by the peer.
* ``send_per_s``, the peer: the same clients each send as many 1:1 messages
  (:meth:`VeilClient.send`, sealed and stored through an onion path) to fresh
  recipients, all at once; ``posts_send_ratio`` = ``posts_per_s / send_per_s``: what a
  room's record and the nodes' judging of it cost beside a plain message. Both are
  harmonic means over the rounds (total count over total time).
* ``read_ms_p50`` / ``_p99``: ``LATENCY_POSTS`` posts, one at a time (two more authors in
  turn, to stay within the room's rate), each read by every one of the ``READERS`` readers,
  whose ``async for event in room.messages()`` long-polls the room unsigned; from
  :meth:`Room.post` returning to each reader's iterator yielding that post (verified,
  moderation applied, recorded in its home). ``post_ms_p50`` is the post's own round
  trip.
* ``delivery_ms_p50`` / ``_p99``, the peer: as many 1:1 messages, one at a time, to the
  readers in turn (each also long-polls its inbox); from :meth:`VeilClient.send`
  returning to the recipient's iterator yielding it. Either can be near zero or below:
  a node answers the readers' poll while the store's acknowledgement travels back to
  the writer; so the ratio, ``read_delivery_ratio_p50``, is of the latencies counted
  from the call (``read_from_call_ms_p50`` / ``delivery_from_call_ms_p50``).
* ``pow_BITS_s_mean`` (BITS 16, 18, 20): what an honest poster's CPU spends on the
  room's proof of work, one post at a time in this process (``POW_POSTS[BITS]`` posts
  each: :func:`veil.onion.room.make_room_post` with ``pow_bits``); the floor is
  ``2**BITS`` hashes at the BLAKE2b rate measured in the same run (``pow_hash_per_s``,
  the solver's own loop), ``pow_BITS_ratio`` = mean / floor (about 1: the work is
  geometric with mean ``2**BITS`` tries).

Bounded: about a minute and a half; each post or message waits at most
``DELIVERY_TIMEOUT_S`` for its readers (the run stops with one line if one does not
arrive).
"""

from __future__ import annotations

import hashlib
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchnet import NODES, DeliveryMissing, percentile, run_on_devnet

if TYPE_CHECKING:
    from veil.client.rooms import Room
    from veil.client.veil_client import VeilClient
    from veil.onion.keys import AccountId

AUTHORS = 20
READERS = 5
POSTS_PER_ROUND = 20  # per author; ROUNDS + the warm-up + latency posts stay under 60
ROUNDS = 2
LATENCY_POSTS = 60
LATENCY_AUTHORS = 2  # LATENCY_POSTS / LATENCY_AUTHORS stay under the room's 60
TTL_S = 600
DELIVERY_TIMEOUT_S = 15.0
SETTLE_S = 0.03
POW_POSTS = {16: 64, 18: 24, 20: 12}
POW_HASHES = 200_000


def run() -> dict[str, float]:
    figures = run_on_devnet("rooms", _measure)
    figures |= _pow_costs()
    return figures


async def _measure(tmp: Path, network_file: Path) -> dict[str, float]:
    from contextlib import AsyncExitStack

    from veil.client.rooms import RoomRules, create_room, open_room
    from veil.client.veil_client import open_client
    from veil.onion.keys import Account

    async with AsyncExitStack() as stack:

        async def client(name: str) -> VeilClient:
            return await stack.enter_async_context(
                open_client(tmp / name, network_file, account=Account.generate())
            )

        owner = await client("owner")
        room = await create_room(owner, "bench", rules=RoomRules(rate=60))
        authors = [await client(f"author-{i}") for i in range(AUTHORS)]
        posters = [await client(f"poster-{i}") for i in range(LATENCY_AUTHORS)]
        readers = [await client(f"reader-{i}") for i in range(READERS)]
        rooms = [open_room(a, room.id) for a in authors]
        figures = await _throughput(rooms, authors)
        figures |= await _latency(
            [open_room(p, room.id) for p in posters], posters[0], readers, room.id
        )
    figures["posts_send_ratio"] = figures["posts_per_s"] / figures["send_per_s"]
    figures["read_delivery_ratio_p50"] = (
        figures["read_from_call_ms_p50"] / figures["delivery_from_call_ms_p50"]
    )
    return {
        "nodes": float(NODES),
        "authors": float(AUTHORS),
        "readers": float(READERS),
        "posts": float(AUTHORS * POSTS_PER_ROUND * ROUNDS),
        "latency_posts": float(LATENCY_POSTS),
        **figures,
    }


async def _throughput(rooms: list[Room], authors: list[VeilClient]) -> dict[str, float]:
    import trio

    from veil.onion.keys import Account

    async def all_at_once(each: Any) -> float:
        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for i in range(len(authors)):
                nursery.start_soon(each, i)
        return time.perf_counter() - t0

    async def warm(i: int) -> None:  # the room's rules read, paths built
        await rooms[i].post(f"hello from author {i}")
        await authors[i].send(Account.generate().id, "warm", ttl_s=TTL_S)

    async def posts(i: int) -> None:
        for n in range(POSTS_PER_ROUND):
            await rooms[i].post(f"post {n} from author {i}")

    async def sends(i: int) -> None:
        for n in range(POSTS_PER_ROUND):
            await authors[i].send(Account.generate().id, f"message {n}", ttl_s=TTL_S)

    await all_at_once(warm)
    post_s = send_s = 0.0
    for _ in range(ROUNDS):
        post_s += await all_at_once(posts)
        send_s += await all_at_once(sends)
    count = AUTHORS * POSTS_PER_ROUND * ROUNDS
    return {"posts_per_s": count / post_s, "send_per_s": count / send_s}


async def _latency(
    posters: list[Room], sender: VeilClient, readers: list[VeilClient], room_id: AccountId
) -> dict[str, float]:
    import trio

    from veil.client.rooms import open_room
    from veil.onion.room import RoomPost

    seen: dict[bytes, dict[int, float]] = {}
    events: dict[bytes, trio.Event] = {}
    caught_up = [trio.Event() for _ in readers]

    def arrived(key: bytes, who: int, wanted: int) -> None:
        seen.setdefault(key, {})[who] = time.perf_counter()
        if len(seen[key]) >= wanted:
            events.setdefault(key, trio.Event()).set()

    async def read_room(who: int) -> None:
        room = open_room(readers[who], room_id)
        await room.read()  # the history of the throughput rounds, then live
        caught_up[who].set()
        async for event in room.messages():
            if isinstance(event, RoomPost):
                arrived(event.post_id, who, len(readers))

    async def read_inbox(who: int) -> None:
        async for message in readers[who].messages():
            arrived(message.hash, who, 1)

    async def wait(key: bytes, what: str) -> None:
        event = events.setdefault(key, trio.Event())
        with trio.move_on_after(DELIVERY_TIMEOUT_S):
            await event.wait()
        if not event.is_set():
            raise DeliveryMissing(
                f"{what} had reached {len(seen.get(key, {}))} of its readers after "
                f"{DELIVERY_TIMEOUT_S:.0f} s"
            )

    read: list[float] = []
    read_from_call: list[float] = []
    post_rtt: list[float] = []
    delivery: list[float] = []
    delivery_from_call: list[float] = []
    send_rtt: list[float] = []
    async with trio.open_nursery() as nursery:
        for who in range(len(readers)):
            nursery.start_soon(read_room, who)
            nursery.start_soon(read_inbox, who)
        for event in caught_up:
            await event.wait()
        await trio.sleep(0.5)
        for i in range(LATENCY_POSTS):
            await trio.sleep(SETTLE_S)
            t0 = time.perf_counter()
            post = await posters[i % len(posters)].post(f"latency {i}")
            t1 = time.perf_counter()
            await wait(post.post_id, f"post {i + 1} of {LATENCY_POSTS}")
            read += [(t - t1) * 1000 for t in seen[post.post_id].values()]
            read_from_call += [(t - t0) * 1000 for t in seen[post.post_id].values()]
            post_rtt.append((t1 - t0) * 1000)
        for i in range(LATENCY_POSTS):
            to = readers[i % len(readers)]
            await trio.sleep(SETTLE_S)
            t0 = time.perf_counter()
            sent = await sender.send(to.account_id, f"latency {i}", ttl_s=TTL_S)
            t1 = time.perf_counter()
            await wait(sent.hash, f"message {i + 1} of {LATENCY_POSTS}")
            (t,) = seen[sent.hash].values()
            delivery.append((t - t1) * 1000)
            delivery_from_call.append((t - t0) * 1000)
            send_rtt.append((t1 - t0) * 1000)
        nursery.cancel_scope.cancel()
    return {
        "read_ms_p50": percentile(read, 50),
        "read_ms_p99": percentile(read, 99),
        "read_from_call_ms_p50": percentile(read_from_call, 50),
        "post_ms_p50": percentile(post_rtt, 50),
        "delivery_ms_p50": percentile(delivery, 50),
        "delivery_ms_p99": percentile(delivery, 99),
        "delivery_from_call_ms_p50": percentile(delivery_from_call, 50),
        "send_ms_p50": percentile(send_rtt, 50),
    }


def _pow_costs() -> dict[str, float]:
    """The proof of work's CPU per post, beside 2**bits hashes at the measured rate."""
    from veil.onion.keys import Account
    from veil.onion.room import make_room_post

    # The solver's loop: a keyed BLAKE2b-256 prefix copied and fed 8 bytes per try.
    prefix = hashlib.blake2b(b"x" * 200, digest_size=32, person=b"veil/room-pow")
    t0 = time.perf_counter()
    for counter in range(POW_HASHES):
        h = prefix.copy()
        h.update(counter.to_bytes(8, "big"))
        int.from_bytes(h.digest(), "big")
    hash_rate = POW_HASHES / (time.perf_counter() - t0)
    out: dict[str, float] = {"pow_hash_per_s": hash_rate}
    author, room = Account.generate(), Account.generate().id
    for bits, count in POW_POSTS.items():
        times = []
        for n in range(count):
            t0 = time.perf_counter()
            make_room_post(author, room, f"post {n}", now_ms=int(time.time() * 1000), pow_bits=bits)
            times.append(time.perf_counter() - t0)
        mean = statistics.fmean(times)
        out[f"pow_{bits}_s_mean"] = mean
        out[f"pow_{bits}_s_max"] = max(times)
        out[f"pow_{bits}_ratio"] = mean / (2**bits / hash_rate)
    return out


def describe(r: dict[str, float]) -> str:
    pow_lines = [
        f"  proof of work, {bits} bits: mean {r[f'pow_{bits}_s_mean']:6.3f} s a post (max "
        f"{r[f'pow_{bits}_s_max']:.3f} s of {POW_POSTS[bits]}); 2^{bits} hashes at "
        f"{r['pow_hash_per_s'] / 1e6:.2f} M/s: ratio {r[f'pow_{bits}_ratio']:.2f}"
        for bits in POW_POSTS
    ]
    return "\n".join(
        [
            f"rooms: {r['nodes']:.0f}-node devnet, one room, {r['authors']:.0f} authors "
            f"posting at once ({r['posts']:.0f} posts in {ROUNDS} rounds), "
            f"{r['readers']:.0f} readers",
            f"  posts into one room, all authors at once:  {r['posts_per_s']:8.1f} /s",
            f"  peer: 1:1 sends by the same clients:       {r['send_per_s']:8.1f} /s",
            f"  posts / sends: {r['posts_send_ratio']:.2f}x",
            f"  read latency, post returned -> each reader's iterator ({r['latency_posts']:.0f}"
            f" posts x {r['readers']:.0f} readers): p50 {r['read_ms_p50']:7.2f} ms   p99 "
            f"{r['read_ms_p99']:7.2f} ms   (post round trip p50 {r['post_ms_p50']:.2f} ms)",
            f"  peer: 1:1 delivery, send returned -> the recipient's iterator: p50 "
            f"{r['delivery_ms_p50']:7.2f} ms   p99 {r['delivery_ms_p99']:7.2f} ms   (send "
            f"round trip p50 {r['send_ms_p50']:.2f} ms)",
            f"  counted from the call: read p50 {r['read_from_call_ms_p50']:.2f} ms, delivery "
            f"p50 {r['delivery_from_call_ms_p50']:.2f} ms: ratio "
            f"{r['read_delivery_ratio_p50']:.2f}x",
            *pow_lines,
        ]
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    results: Any = run()
    print(describe(results))
    sys.exit(0)
