"""A peer's bad input is counted in full and logged in a bounded number of lines.

Issue 11, item 10: random frames on links made one node write 6,288 WARNING lines in
four minutes. :class:`veil.node.logging.PeerWarnings` is the one way such input reaches
the log; these tests check its rules with a fake clock, then against a real node process
sent many bad frames over many links from two loopback addresses.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio

from veil.node.config import HttpConfig
from veil.node.logging import PeerWarnings
from veil.node.metrics import NodeMetrics
from veil.node.server import HttpServer, Request, Response, Route
from veil.onion import rpc
from veil.onion.packet import Hop, HopError, build_packet

from .nodeutil import node_process, now_ms, upgrade_to_link

# --- the rules, with a fake clock ------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def fields(self) -> list[dict[str, object]]:
        return [dict(getattr(r, "veil_fields", {})) for r in self.records]


def make_logger(name: str) -> tuple[logging.Logger, Lines]:
    logger = logging.getLogger(f"veil.test.{name}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    lines = Lines()
    logger.handlers[:] = [lines]
    return logger, lines


def test_first_line_then_one_per_interval_with_the_count_left_out() -> None:
    clock, counted = Clock(), []
    warnings = PeerWarnings(count=counted.append, interval_s=60.0, clock=clock)
    logger, lines = make_logger("interval")
    for _ in range(100):
        warnings.warn(logger, "link_bad_frame", "192.0.2.1", error="x")
    assert len(lines.records) == 1 and lines.fields() == [{"error": "x"}]
    clock.now_s += 59.9
    warnings.warn(logger, "link_bad_frame", "192.0.2.1", error="x")
    assert len(lines.records) == 1
    clock.now_s += 0.1
    warnings.warn(logger, "link_bad_frame", "192.0.2.1", error="y")
    assert lines.fields()[-1] == {"error": "y", "suppressed": 100}
    assert counted == ["link_bad_frame"] * 102
    assert all(r.levelno == logging.WARNING for r in lines.records)


def test_each_peer_and_cause_has_its_first_line() -> None:
    warnings = PeerWarnings(clock=Clock())
    logger, lines = make_logger("keys")
    for source in ("192.0.2.1", "192.0.2.2"):
        for event in ("link_bad_frame", "link_bad_response"):
            warnings.warn(logger, event, source)
            warnings.warn(logger, event, source)
    assert [r.getMessage() for r in lines.records] == ["link_bad_frame", "link_bad_response"] * 2


def test_many_addresses_get_no_more_than_the_node_wide_budget() -> None:
    clock = Clock()
    warnings = PeerWarnings(interval_s=60.0, max_lines=20, max_peers=100, clock=clock)
    logger, lines = make_logger("budget")
    for i in range(10_000):
        warnings.warn(logger, "link_bad_frame", f"10.0.{i // 256}.{i % 256}")
    assert len(lines.records) == 20
    assert len(warnings._seen) == 100  # the oldest pairs were dropped
    clock.now_s += 60.0
    warnings.warn(logger, "link_bad_frame", "10.0.39.15")  # the last of the 10,000
    assert lines.fields()[-1] == {"suppressed": 1}


def test_nothing_is_logged_when_warnings_are_off_but_all_is_counted() -> None:
    counted: list[str] = []
    warnings = PeerWarnings(count=counted.append, clock=Clock())
    logger, lines = make_logger("off")
    logger.setLevel(logging.ERROR)
    for _ in range(5):
        warnings.warn(logger, "link_bad_frame", "192.0.2.1")
    assert lines.records == [] and len(counted) == 5


async def test_a_bug_a_request_sets_off_is_one_traceback_and_counted_each_time() -> None:
    async def boom(request: Request) -> Response:
        raise RuntimeError("a bug")

    metrics = NodeMetrics({"/boom": "/boom"})
    server = HttpServer({"/boom": Route(("GET",), boom)}, HttpConfig(), metrics=metrics)
    logger = logging.getLogger("veil.node.http")
    lines = Lines()
    logger.addHandler(lines)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.serve, listeners)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                for _ in range(10):
                    assert (await client.get("/boom")).status_code == 500
            server.stop()
    finally:
        logger.removeHandler(lines)
        logger.setLevel(old_level)
    assert [(r.getMessage(), r.levelno) for r in lines.records] == [
        ("handler_failed", logging.ERROR)
    ]
    assert lines.records[0].exc_info is not None  # with its traceback
    assert lines.fields() == [{"path": "/boom"}]
    cause = {"cause": "handler_failed"}
    assert metrics.registry.get_sample_value("veil_peer_errors_total", cause) == 10


# --- a real node -------------------------------------------------------------------------------

#: A frame head of an unknown kind: the node drops the link at once.
BAD_FRAME = b"\xff" + bytes(11)
LINKS_PER_ADDRESS = 40


def send_bad_frame(host: str, port: int, source: str) -> None:
    """Open a link from ``source`` (a loopback address), send a bad frame and wait until
    the node has closed the link (so it has seen the frame)."""
    with socket.create_connection((host, port), timeout=20, source_address=(source, 0)) as s:
        upgrade_to_link(s)
        s.sendall(BAD_FRAME)
        while s.recv(65536):
            pass


def test_bad_frames_from_many_links_are_all_counted_and_rarely_logged(tmp_path: Path) -> None:
    with node_process(tmp_path / "node") as node:
        for source in ("127.0.0.1", "127.0.0.2"):
            for _ in range(LINKS_PER_ADDRESS):
                send_bad_frame(node.host, node.port, source)
        metrics = httpx.get(f"{node.url}/metrics", timeout=10).text
        # The node goes on serving links: a good upgrade still gets its 101.
        with socket.create_connection((node.host, node.port), timeout=20) as s:
            upgrade_to_link(s)
        log = node.log_text()
    counted = re.search(r'veil_peer_errors_total\{cause="link_bad_frame"\} (\S+)', metrics)
    assert counted is not None, metrics
    assert float(counted.group(1)) == 2 * LINKS_PER_ADDRESS
    warned = [line for line in log.splitlines() if "event=link_bad_frame" in line]
    # One line per address at once; a second only if a minute went by (a slow machine).
    assert 2 <= len(warned) <= 4, "\n".join(warned)
    assert all("level=warning" in line for line in warned)
    assert "127.0.0.2" not in log  # a peer's address is a key, never written


@contextlib.contextmanager
def bad_next_hop() -> Iterator[tuple[str, int]]:
    """A next hop on loopback that accepts every link upgrade, then sends a bad frame."""
    listener = socket.create_server(("127.0.0.1", 0))
    address = listener.getsockname()
    stop = threading.Event()

    def serve() -> None:
        while True:
            conn, _ = listener.accept()
            with conn:
                if stop.is_set():
                    return
                got = b""
                while b"\r\n\r\n" not in got and (data := conn.recv(65536)):
                    got += data
                conn.sendall(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: veil-link/2\r\n"
                    b"Connection: Upgrade\r\n\r\n" + BAD_FRAME
                )
                with contextlib.suppress(OSError):
                    while conn.recv(65536):
                        pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield address
    finally:
        stop.set()
        socket.create_connection(address, timeout=10).close()  # wakes accept()
        thread.join(10)
        listener.close()


def test_bad_frames_from_a_next_hop_are_all_counted_and_rarely_logged(tmp_path: Path) -> None:
    packets = 20
    with node_process(tmp_path / "node") as node, bad_next_hop() as (host, port):
        fake = Hop(os.urandom(32), os.urandom(32), host, port)
        with httpx.Client(timeout=30) as http:
            for _ in range(packets):
                packet, opener = build_packet([node.hop(), fake], rpc.make_info(), now_ms=now_ms())
                r = http.post(f"{node.url}/onion", content=packet)
                assert r.status_code == 200
                with pytest.raises(HopError) as err:
                    opener.open(r.content)
                assert (err.value.hop, err.value.status) == (0, "bad_gateway")
            metrics = http.get(f"{node.url}/metrics").text
        log = node.log_text()
    counted = re.search(r'veil_peer_errors_total\{cause="link_bad_response"\} (\S+)', metrics)
    assert counted is not None, metrics
    assert float(counted.group(1)) == packets  # one link per packet: each broke at once
    warned = [line for line in log.splitlines() if "event=link_bad_response" in line]
    assert 1 <= len(warned) <= 2, "\n".join(warned)
    assert f"peer=127.0.0.1:{port}" in warned[0]  # a next hop's address may be named
