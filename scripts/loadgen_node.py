"""Load for ONE node, for ``./scripts/bench scale``: fill its store, drive requests at it,
and hold connections and long-polls open on it.

Design note
-----------
Two ways to run it:

* ``loadgen_node.py fill --db PATH --seed S --first N0 --last N1 --accounts A`` (one shot):
  stores messages ``N0 .. N1 - 1`` of the benchmark's deterministic set straight into
  the store file with the node's own store (:func:`veil.node.store.open_store`,
  :meth:`~veil.node.store.MessageStore.store` from ``FILL_TASKS`` concurrent tasks:
  the batching writer the node's RPC uses, with ``synchronous=NORMAL`` and large
  batches to save time), no RPC. Message ``i`` goes to account ``i % A``; every
  ``EXPIRING_EVERY``-th one expires after an hour (the sweep's prey), the rest after 14
  days. It prints one JSON line: the fill rate and bytes of message data stored.
* ``loadgen_node.py`` with no argument serves JSON-line commands on stdin (one JSON
  answer line each) against a running node (its host, port and onion keys given in
  ``target``): ``stores`` and ``retrieves`` (1-layer onion packets to ``POST /onion``,
  built before the clock starts, sent over keep-alive connections with a fixed number
  in flight, every reply opened and checked), and ``hold`` / ``release`` (idle
  connections, or long-polls that wait at the node, spread over several loopback
  source addresses so that the node's per-address limits do not refuse them).

Why not the driver of scripts/bench_node.py: it sends from one address and reads every
answer as it comes; this one also binds source addresses and holds connections and
polls open. Both are plain ``selectors`` loops (not trio) for the same reason: the load
should cost as little CPU as possible on a 2-core machine.

Accounts: account ``i`` of seed ``S`` has the 32-byte seed BLAKE2b(S, i), so the filler,
the driver and the benchmark derive the same accounts without passing keys around.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import selectors
import socket
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from veil.onion import rpc
from veil.onion.keys import Account, parse_node_id
from veil.onion.packet import Hop, build_packet
from veil.onion.wallclock import wall_clock_ms

#: Bytes of a message body: a short text message's sealed, padded envelope is 256 bytes
#: (up to 31 characters) or 384 (200 characters) (onion/envelope.py).
MESSAGE_BYTES = 256
FILL_TASKS = 2048
EXPIRING_EVERY = 10
LONG_TTL_MS = 14 * 24 * 3600 * 1000
SHORT_TTL_MS = 3600 * 1000
RUN_TIMEOUT_S = 120.0


def account(seed: str, i: int) -> Account:
    """Account ``i`` of the benchmark's set ``seed`` (see the module note)."""
    return Account(hashlib.blake2b(f"{seed}/{i}".encode(), digest_size=32).digest())


def body(seed: str, i: int) -> bytes:
    """The data of message ``i``: ``MESSAGE_BYTES`` bytes that differ per message."""
    head = hashlib.blake2b(f"{seed}/m{i}".encode(), digest_size=32).digest()
    return head * (MESSAGE_BYTES // 32) + head[: MESSAGE_BYTES % 32]


# --- the filler ------------------------------------------------------------------------


def fill(db: Path, seed: str, first: int, last: int, accounts: int) -> dict[str, Any]:
    """Store messages ``first .. last - 1`` into the store at ``db`` (see the module note)."""
    import trio

    from veil.node.store import open_store

    ids = [account(seed, i).id for i in range(min(accounts, last))]

    async def main() -> dict[str, Any]:
        now = wall_clock_ms()
        it = iter(range(first, last))
        stored = 0

        async def worker() -> None:
            nonlocal stored
            for i in it:
                owner = ids[i % accounts]
                data = body(seed, i)
                ttl = SHORT_TTL_MS if i % EXPIRING_EVERY == 0 else LONG_TTL_MS
                h = rpc.message_hash(owner, rpc.INBOX, data)
                outcome = await store.store(owner, rpc.INBOX, h, data, now + ttl)
                stored += outcome.created

        # NORMAL: the fill's own durability is of no interest (the node that serves the
        # file runs with its default FULL); large batches: fewer commits.
        async with open_store(
            db, clock=wall_clock_ms, synchronous="NORMAL", queue_size=8192, max_batch=4096
        ) as store:
            t0 = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for _ in range(FILL_TASKS):
                    nursery.start_soon(worker)
            elapsed = time.perf_counter() - t0
        return {
            "stored": stored,
            "elapsed_s": round(elapsed, 2),
            "per_s": round((last - first) / max(elapsed, 1e-6), 1),
            "data_bytes": (last - first) * MESSAGE_BYTES,
        }

    return trio.run(main)


# --- HTTP over plain sockets -------------------------------------------------------------


class _Conn:
    __slots__ = ("buf", "index", "out", "sock", "t0")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.out = b""
        self.index = -1
        self.t0 = 0.0


def _connect(host: str, port: int, source: str | None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if source is not None:
        sock.bind((source, 0))
    sock.connect((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _wire(host: str, port: int, packet: bytes) -> bytes:
    return (
        f"POST /onion HTTP/1.1\r\nhost: {host}:{port}\r\n"
        "content-type: application/octet-stream\r\n"
        f"content-length: {len(packet)}\r\n\r\n"
    ).encode() + packet


def _parse_response(buf: bytearray) -> tuple[int, bytes] | None:
    """A complete response taken off ``buf``, or None if more bytes are needed (our node
    always sends Content-Length; anything else raises ValueError)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).lower()
    at = head.find(b"\r\ncontent-length:")
    if not head.startswith(b"http/1.1 ") or at < 0:
        raise ValueError(f"unexpected response head {head[:80]!r}")
    stop = head.find(b"\r\n", at + 2)
    length = int(head[at + 17 : stop if stop > 0 else len(head)])
    need = end + 4 + length
    if len(buf) < need:
        return None
    reply = bytes(buf[end + 4 : need])
    del buf[:need]
    return int(head[9:12]), reply


def drive(
    host: str, port: int, wire: list[bytes], concurrency: int
) -> tuple[float, list[tuple[int, bytes] | None], list[float], list[int]]:
    """Send every request over ``concurrency`` keep-alive connections, one in flight each;
    the elapsed time, each reply (None: its connection failed), each latency (s) and
    when each was sent (``time.monotonic_ns()``)."""
    replies: list[tuple[int, bytes] | None] = [None] * len(wire)
    latencies: list[float] = [0.0] * len(wire)
    sent_ns: list[int] = [0] * len(wire)
    sel = selectors.DefaultSelector()
    next_index = done = 0
    clock = time.perf_counter

    def start_next(c: _Conn) -> None:
        nonlocal next_index
        if next_index >= len(wire):
            c.index = -1
            return
        c.index, next_index = next_index, next_index + 1
        sent_ns[c.index] = time.monotonic_ns()
        c.t0 = clock()
        c.sock.sendall(wire[c.index])

    conns = []
    for _ in range(min(concurrency, len(wire))):
        c = _Conn(_connect(host, port, None))
        sel.register(c.sock, selectors.EVENT_READ, c)
        conns.append(c)
    start = clock()
    for c in conns:
        start_next(c)
    deadline = start + RUN_TIMEOUT_S
    while done < len(wire):
        if clock() > deadline:
            raise TimeoutError(f"{done} of {len(wire)} answered in {RUN_TIMEOUT_S:g} s")
        for key, _ in sel.select(timeout=1.0):
            c = key.data
            try:
                data = c.sock.recv(65536)
                if not data:
                    raise ConnectionError("closed")
                c.buf += data
                response = _parse_response(c.buf)
            except (OSError, ValueError):
                sel.unregister(c.sock)
                c.sock.close()
                done += 1 if c.index >= 0 else 0
                continue
            if response is None:
                continue
            replies[c.index] = response
            latencies[c.index] = clock() - c.t0
            done += 1
            start_next(c)
    elapsed = clock() - start
    for c in conns:
        c.sock.close()
    sel.close()
    return elapsed, replies, latencies, sent_ns


# --- the command server ------------------------------------------------------------------


class NodeLoad:
    """The state between commands: the target node and the connections held."""

    def __init__(self) -> None:
        self.held: list[socket.socket] = []

    def _hop(self, target: dict[str, Any]) -> Hop:
        return Hop(
            parse_node_id(target["node_id"]),
            bytes.fromhex(target["onion_key"]),
            target["host"],
            target["port"],
        )

    def stores(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Store message ``m`` of ``seed`` to account ``a`` for each ``[a, m]`` in
        ``items`` (1-layer packets, ``concurrency`` in flight; their time shifted by
        ``clock_offset_ms`` for a node whose clock was moved): the rate, each latency,
        when each was sent (``monotonic_ns``) and each message's hash (hex)."""
        target, seed = cmd["target"], cmd["seed"]
        hop, now = self._hop(target), wall_clock_ms() + cmd.get("clock_offset_ms", 0)
        packets, hashes = [], []
        for a, m in cmd["items"]:
            to = account(seed, a).id
            data = body(seed, m)
            hashes.append(rpc.message_hash(to, rpc.INBOX, data).hex())
            packets.append(
                build_packet([hop], rpc.make_store(to, data, LONG_TTL_MS, now_ms=now), now_ms=now)
            )
        elapsed, replies, latencies, sent_ns = drive(
            target["host"],
            target["port"],
            [_wire(target["host"], target["port"], p) for p, _ in packets],
            cmd["concurrency"],
        )
        errors = _check(packets, replies, lambda r: None)
        return {
            "n": len(packets),
            "errors": dict(errors),
            "elapsed_s": elapsed,
            "per_s": len(packets) / elapsed,
            "latency_ms": [x * 1000 for x in latencies],
            "sent_ns": sent_ns,
            "hashes": hashes,
        }

    def retrieves(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Owner-signed inbox retrieves by account ``a`` after hash ``h`` for each
        ``[a, h]`` in ``after``; each must return exactly one message (``expect``, hex)."""
        target, seed = cmd["target"], cmd["seed"]
        hop, now = self._hop(target), wall_clock_ms()
        packets = [
            build_packet(
                [hop],
                rpc.make_retrieve(account(seed, a), now_ms=now, last_hash=bytes.fromhex(h)),
                now_ms=now,
            )
            for a, h in cmd["after"]
        ]
        expect = iter(cmd["expect"])

        def check(result: dict[str, Any]) -> str | None:
            want = next(expect)
            got = [m["hash"].hex() for m in result["messages"]]
            return None if got == [want] else f"{len(got)} messages, not the one expected"

        elapsed, replies, latencies, _ = drive(
            target["host"],
            target["port"],
            [_wire(target["host"], target["port"], p) for p, _ in packets],
            cmd["concurrency"],
        )
        errors = _check(packets, replies, check)
        return {
            "n": len(packets),
            "errors": dict(errors),
            "elapsed_s": elapsed,
            "per_s": len(packets) / elapsed,
            "latency_ms": [x * 1000 for x in latencies],
        }

    def hold(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Open ``n`` more connections to the node from ``sources`` (round robin) and
        keep them: idle (``polls`` false), or each with a signed long-poll of its own
        account (``seed``, accounts ``first`` on) waiting ``wait_s`` at the node."""
        target = cmd["target"]
        host, port, sources = target["host"], target["port"], cmd["sources"]
        hop, now = self._hop(target), wall_clock_ms()
        opened = []
        for k in range(cmd["n"]):
            sock = _connect(host, port, sources[k % len(sources)])
            if cmd["polls"]:
                owner = account(cmd["seed"], cmd["first"] + k)
                req = rpc.make_retrieve(owner, now_ms=now, wait_s=cmd["wait_s"])
                packet, _ = build_packet([hop], req, now_ms=now)
                sock.sendall(_wire(host, port, packet))
            opened.append(sock)
        self.held.extend(opened)
        # An answer already on a connection means it is not waiting (a refused poll).
        answered = 0
        time.sleep(cmd.get("settle_s", 1.0))
        for sock in opened:
            sock.setblocking(False)
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    answered += 1
            except BlockingIOError:
                pass
            except OSError:
                answered += 1
            sock.setblocking(True)
        return {"held": len(self.held), "answered": answered}

    def release(self, cmd: dict[str, Any]) -> dict[str, Any]:
        for sock in self.held:
            sock.close()
        n, self.held = len(self.held), []
        return {"released": n}


def _check(packets: list[Any], replies: list[Any], check: Any) -> Counter[str]:
    from veil.onion.errors import VeilError

    errors: Counter[str] = Counter()
    for (_, opener), reply in zip(packets, replies, strict=True):
        if reply is None:
            errors["no reply (connection failed)"] += 1
            continue
        status, data = reply
        if status != 200:
            errors[f"HTTP {status}: {data[:60]!r}"] += 1
            continue
        try:
            answer = rpc.decode_reply(opener.open(data))
        except VeilError as exc:
            errors[f"{type(exc).__name__}: {exc}"] += 1
            continue
        if not answer.ok or answer.result is None:
            errors[f"{answer.status}: {answer.error}"] += 1
            continue
        problem = check(answer.result)
        if problem:
            errors[problem] += 1
    return errors


def _serve() -> int:
    load = NodeLoad()
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            name = cmd["cmd"]
            if name not in ("stores", "retrieves", "hold", "release"):
                raise ValueError(f"unknown command {name!r}")
            answer = getattr(load, name)(cmd)
        except Exception as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    load.release({})
    return 0


def main() -> int:
    if sys.argv[1:2] != ["fill"]:
        return _serve()
    parser = argparse.ArgumentParser(prog="loadgen_node.py fill")
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--seed", required=True)
    parser.add_argument("--first", type=int, required=True)
    parser.add_argument("--last", type=int, required=True)
    parser.add_argument("--accounts", type=int, required=True)
    args = parser.parse_args(sys.argv[2:])
    print(json.dumps(fill(args.db, args.seed, args.first, args.last, args.accounts)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
