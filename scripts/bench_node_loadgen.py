"""The load generator process of ``./scripts/bench node``, driven by JSON lines.

Design note
-----------
Started by the suite (``bench_node_procs.LoadGen``) on the core it shares with the sink,
it serves commands on stdin, one JSON answer line per command: ``build`` makes every
packet before any timing (relay packets through the node to the sink, 1-layer store
packets for the node; the node's replay cache refuses a packet twice, so each timed
request is a fresh one), ``run`` sends ``n`` of them over ``concurrency`` keep-alive
connections, one request in flight each, and times the lot. Its loop is plain
``selectors``, not trio: it should spend as little CPU per request as possible, so that
the process under test, not the load, is the bottleneck. Replies are checked after the
timing (:func:`_check`).
"""

from __future__ import annotations

import json
import secrets
import selectors
import socket
import sys
import time
from collections import Counter
from typing import Any

from bench_node_common import HOST, REPLY_BYTES, RUN_TIMEOUT, _accounts

from veil.onion.wallclock import wall_clock_ms


def _load_main() -> int:
    """Serve JSON commands on stdin (see LoadGen), one JSON answer line per command."""
    state: dict[str, Any] = {}
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            answer = _build(state, cmd) if cmd["cmd"] == "build" else _run(state, cmd)
        except Exception as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    return 0


def _build(state: dict[str, Any], cmd: dict[str, Any]) -> dict[str, Any]:
    from veil.onion import rpc
    from veil.onion.keys import NodeKeys, parse_node_id
    from veil.onion.packet import Hop, build_packet

    node = cmd["node"]
    node_hop = Hop(
        parse_node_id(node["node_id"]),
        bytes.fromhex(node["onion_key"]),
        node["host"],
        node["port"],
    )
    fake = NodeKeys.generate()
    sink_hop = Hop(fake.identity_public, fake.onion_public, cmd["sink"][0], cmd["sink"][1])
    start = time.perf_counter()
    now = wall_clock_ms()
    path = [node_hop, sink_hop]
    relay = [build_packet(path, bytes(512), now_ms=now) for _ in range(cmd["relay"])]
    accounts = _accounts(cmd["accounts"])
    store = [
        build_packet(
            [node_hop],
            rpc.make_store(
                accounts[i % len(accounts)],
                secrets.token_bytes(cmd["message_bytes"]),
                86_400_000,
                now_ms=now,
            ),
            now_ms=now,
        )
        for i in range(cmd["store"])
    ]
    elapsed = time.perf_counter() - start
    state["relay"] = relay
    state["store"] = store
    state["used"] = {"relay": 0, "store": 0}
    return {"built": len(relay) + len(store), "per_s": round((len(relay) + len(store)) / elapsed)}


def _run(state: dict[str, Any], cmd: dict[str, Any]) -> dict[str, Any]:
    kind, n = cmd["kind"], cmd["n"]
    if kind == "forward":
        # The forwarder does not read packets: any packet-sized body will do.
        packets = [state["relay"][i % len(state["relay"])] for i in range(n)]
    else:
        first = state["used"][kind]
        packets = state[kind][first : first + n]
        if len(packets) < n:
            raise RuntimeError(f"only {len(packets)} fresh {kind} packets left")
        state["used"][kind] = first + n
    head = (
        f"POST /onion HTTP/1.1\r\nhost: {HOST}:{cmd['port']}\r\n"
        "content-type: application/octet-stream\r\ncontent-length: "
    ).encode()
    wire = [head + b"%d\r\n\r\n" % len(p) + p for p, _ in packets]
    elapsed, replies, latencies = _drive(cmd["port"], wire, cmd["concurrency"])
    errors = _check(kind, packets, replies)
    latencies.sort()
    return {
        "n": n,
        "ok": n - sum(errors.values()),
        "errors": dict(errors),
        "elapsed": elapsed,
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2) if latencies else 0.0,
    }


def _check(kind: str, packets: list[Any], replies: list[Any]) -> Counter[str]:
    """Why replies are not what the measured path should give (after the timing)."""
    from veil.onion import rpc
    from veil.onion.errors import IntegrityError, VeilError
    from veil.onion.packet import HopError

    errors: Counter[str] = Counter()
    for (_, opener), reply in zip(packets, replies, strict=True):
        if reply is None:
            errors["no reply (connection failed)"] += 1
            continue
        status, body = reply
        if status != 200 or len(body) != REPLY_BYTES:
            errors[f"HTTP {status}, {len(body)} bytes: {body[:60]!r}"] += 1
            continue
        if kind == "relay":
            # The sink's bytes under the node's layer: no key of ours opens them. An
            # error the node originated would open (as a HopError from hop 0).
            try:
                opener.open(body)
            except IntegrityError:
                continue
            except HopError as exc:
                errors[f"node error: {exc.status}: {exc.message}"] += 1
                continue
            errors["relay reply opened as a destination reply"] += 1
        elif kind == "store":
            try:
                reply_obj = rpc.decode_reply(opener.open(body))
            except VeilError as exc:
                errors[f"{type(exc).__name__}: {exc}"] += 1
                continue
            if not reply_obj.ok:
                errors[f"store: {reply_obj.status}"] += 1
    return errors


class _Client:
    """One load-generator connection: one request in flight at a time."""

    __slots__ = ("buf", "index", "out", "sock", "t0")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.out = b""
        self.index = -1
        self.t0 = 0.0


def _drive(
    port: int, wire: list[bytes], concurrency: int
) -> tuple[float, list[tuple[int, bytes] | None], list[float]]:
    """Send every request over ``concurrency`` keep-alive connections; time the lot.

    A plain ``selectors`` loop, not trio: the load generator shares its core with the
    sink, and it should spend as little CPU per request as possible so that the process
    under test, not the load, is the bottleneck. A connection that fails loses its
    request (counted as failed by the caller) and is replaced.
    """
    replies: list[tuple[int, bytes] | None] = [None] * len(wire)
    latencies: list[float] = []
    sel = selectors.DefaultSelector()
    next_index = 0
    done = 0
    clock = time.perf_counter

    def connect() -> _Client:
        sock = socket.create_connection((HOST, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        client = _Client(sock)
        sel.register(sock, selectors.EVENT_READ, client)
        return client

    def send(c: _Client) -> None:
        try:
            sent = c.sock.send(c.out)
        except BlockingIOError:
            sent = 0
        c.out = c.out[sent:]
        sel.modify(c.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if c.out else 0), c)

    def start_next(c: _Client) -> None:
        nonlocal next_index
        if next_index >= len(wire):
            c.index = -1
            return
        c.index = next_index
        next_index += 1
        c.t0 = clock()
        c.out = wire[c.index]
        send(c)

    def fail(c: _Client) -> None:
        nonlocal done
        sel.unregister(c.sock)
        c.sock.close()
        if c.index >= 0:
            done += 1
        start_next(connect())

    clients = [connect() for _ in range(concurrency)]
    start = clock()
    for c in clients:
        start_next(c)
    deadline = start + RUN_TIMEOUT
    while done < len(wire):
        if clock() > deadline:
            raise TimeoutError(f"{done} of {len(wire)} answered in {RUN_TIMEOUT:g} s")
        for key, mask in sel.select(timeout=1.0):
            c = key.data
            try:
                if mask & selectors.EVENT_WRITE and c.out:
                    send(c)
                if not mask & selectors.EVENT_READ:
                    continue
                data = c.sock.recv(65536)
                if not data:
                    raise ConnectionError("closed")
                c.buf += data
                response = _parse_response(c.buf)
            except (OSError, ValueError):
                fail(c)
                continue
            if response is None:
                continue
            status, body, close = response
            replies[c.index] = (status, body)
            latencies.append(clock() - c.t0)
            done += 1
            if close:
                c.index = -1
                fail(c)
            else:
                start_next(c)
    elapsed = clock() - start
    for key in list(sel.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    sel.close()
    return elapsed, replies, latencies


def _parse_response(buf: bytearray) -> tuple[int, bytes, bool] | None:
    """A complete response taken off ``buf``, or None if more bytes are needed.

    Minimal on purpose (the load generator's only peers are our node and forwarder,
    which always send Content-Length); raises ValueError for anything else.
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > 65536:
            raise ValueError("response head too large")
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
    body = bytes(buf[end + 4 : need])
    del buf[:need]
    return int(head[9:12]), body, b"\r\nconnection: close" in head


if __name__ == "__main__":
    sys.exit(_load_main())
