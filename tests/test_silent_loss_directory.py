"""A node's consensus fetches are not held back by an authority that never answers.

An authority whose cable is pulled sends no reset: a request to it waits for its
timeout (``[network] fetch_timeout``, 10 s). Here such authorities are stood for by
listening sockets that nobody accepts on (the kernel completes the handshake, takes
the request, and nothing ever answers): three of them, listed first in the node's
network file (as many as a round of the node's race keeps in flight), then an
authority that answers at once with a consensus signed by a key nobody pinned (a
hostile one, or a misconfigured one), then the real authority. Real processes on
127.0.0.1: the authority and the node are ``veil-node`` subprocesses with the default
fetch_timeout.

What must hold: the node adopts the first consensus that lists it within a few
seconds of the authority serving it (well under fetch_timeout), follows every later
epoch closely, never takes the forged one, and stops cleanly with requests to the
silent authorities still in flight.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from veil.onion.directory import (
    Authority,
    NetworkFile,
    assemble,
    make_consensus_body,
    make_descriptor,
    parse_descriptor,
    sign_consensus,
    verify_consensus,
)
from veil.onion.errors import VeilError
from veil.onion.keys import NodeKeys

from .authorityutil import Network, fetch_consensus, make_network, start_authority, wait_for
from .authorityutil import node_config as follow
from .nodeutil import NodeHandle, now_ms, start_node

HOST = "127.0.0.1"
#: The node config's default (asserted below): what one unanswered request costs.
FETCH_TIMEOUT_S = 10.0
#: How soon after the authority serves a consensus the node must hold it (s): a few of
#: its retry intervals (0.2 s) and a stagger, with room for a loaded machine.
ADOPT_WITHIN_S = 3.0
#: How many epochs (1 s each) the node may trail the authority while it follows.
MAX_LAG_EPOCHS = 2


@contextlib.contextmanager
def silent_authority() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel's backlog) and never answers."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        s.listen(64)
        yield s.getsockname()[1]


@contextlib.contextmanager
def forging_authority(document: bytes) -> Iterator[tuple[int, list[int]]]:
    """An HTTP server that answers ``GET /consensus`` at once with ``document`` and
    takes every descriptor; its port and the count of documents served."""
    served = [0]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/cbor")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            served[0] += 1
            self._answer(200, document)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._answer(200, b"ok\n")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((HOST, 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], served
    finally:
        server.shutdown()
        server.server_close()


def forged_document() -> bytes:
    """A consensus of a far later epoch, signed by a key that nobody pinned."""
    now = now_ms()
    stranger = NodeKeys.generate()
    descriptor = parse_descriptor(
        make_descriptor(stranger, "127.0.0.9", 9, "0.1.0", now), now_ms=now
    )
    body = make_consensus_body([descriptor], epoch=10**9, valid_after_ms=now)
    return assemble(body, [sign_consensus(body, NodeKeys.generate())])


def test_silent_authorities_listed_first_do_not_delay_a_nodes_consensus(
    tmp_path: Path,
) -> None:
    net = make_network(tmp_path / "net")
    real = net.authorities[0]
    with (
        silent_authority() as silent_1,
        silent_authority() as silent_2,
        silent_authority() as silent_3,
        forging_authority(forged_document()) as (
            forger_port,
            forged_served,
        ),
    ):
        # Pinned keys for the impostors that nobody holds: none of them can sign.
        node_network = NetworkFile(
            (
                *(
                    Authority(NodeKeys.generate().identity_public, HOST, port)
                    for port in (silent_1, silent_2, silent_3)
                ),
                Authority(NodeKeys.generate().identity_public, HOST, forger_port),
                real,
            ),
            1,
        )
        network_path = tmp_path / "node-network.json"
        network_path.write_text(node_network.to_json())
        config = follow(net)
        config["network"]["file"] = str(network_path)
        assert "fetch_timeout" not in config["network"]  # the default: FETCH_TIMEOUT_S
        authority = start_authority(net, 0)
        try:
            node = start_node(tmp_path / "node", config=config)
            try:
                follows_closely(net, node, forged_served)
            finally:
                started = time.monotonic()
                code = node.stop()
                # Requests to the silent authorities in flight do not hold up the exit.
                assert time.monotonic() - started < FETCH_TIMEOUT_S
                assert code == 0, node.log_text()
        finally:
            assert authority.stop() == 0
    # The forged document was looked at, and refused.
    assert "consensus_refused" in node.log_text()


def follows_closely(net: Network, node: NodeHandle, forged_served: list[int]) -> None:
    """The node adopts the first consensus listing it soon after the authority serves
    it, then trails the authority by at most MAX_LAG_EPOCHS (and never holds the forged
    epoch, which would be far ahead)."""
    me = bytes.fromhex(node.node_id)

    def listed() -> int | None:
        """The epoch of the authority's consensus if it lists the node (polled fast)."""
        data = fetch_consensus(net.url(0))
        if data is None:
            return None
        try:
            c = verify_consensus(data, pinned=net.file.pinned_keys, threshold=1, now_ms=now_ms())
        except VeilError:
            return None
        return c.epoch if c.node(me) is not None else None

    epoch = wait_for("the authority to list the node", listed, timeout=60)
    served_at = time.monotonic()
    wait_for(
        "the node to adopt it",
        lambda: (node.info().get("epoch") or -1) >= epoch,
        timeout=FETCH_TIMEOUT_S * 3,
    )
    took_s = time.monotonic() - served_at
    assert took_s < ADOPT_WITHIN_S, f"adopted {took_s:.1f} s after the authority served it"
    # Then it follows each epoch: sampled for longer than a fetch_timeout, so that a
    # round that waited for a silent authority would show.
    lags = []
    until = time.monotonic() + FETCH_TIMEOUT_S * 1.2
    while time.monotonic() < until:
        held = node.info().get("epoch") or 0
        served = listed() or held
        lags.append(served - held)
        time.sleep(0.25)
    assert min(lags) >= 0 and max(lags) <= MAX_LAG_EPOCHS, lags
    assert forged_served[0] > 0  # the forger was asked (and answered first, at times)
