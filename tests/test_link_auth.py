"""Who may open a link, and how many connections one address may hold (issue 11, item 9).

Against real node processes: a node in a network (one authority, two listed nodes)
refuses a link upgrade from an unlisted opener, without a proof, with a forged, stale or
replayed proof, and accepts a listed node's; listed nodes still relay to each other over
links (the next hop's LINK counters move). A standalone node with a small per-address
cap keeps answering GET /info from 127.0.0.2 while 127.0.0.1 holds far more links than
the cap. The attack this stops: 1,019 upgraded links from one address made a node
answer GET /info 503 for over 36 s.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from veil.node.keystore import load_or_create_keys
from veil.onion import rpc
from veil.onion.keys import NodeKeys
from veil.onion.link import PROOF_HEADER, UPGRADE_TOKEN, make_link_proof
from veil.onion.packet import build_packet
from veil.onion.wallclock import wall_clock_ms

from .authorityutil import (
    make_network,
    node_config,
    start_authority,
    wait_for,
    wait_for_consensus,
)
from .nodeutil import NodeHandle, node_process

pytestmark = pytest.mark.slow


def upgrade(
    host: str, port: int, proof: bytes | None = None, *, source: str = "127.0.0.1"
) -> tuple[socket.socket, bytes]:
    """A new connection from ``source`` that asks for a link (with ``proof``); the socket
    and the answer: its head after a 101, everything until the close after a refusal
    (the caller closes the socket)."""
    s = socket.create_connection((host, port), timeout=20, source_address=(source, 0))
    request = b"GET /link HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
    request += b"Upgrade: " + UPGRADE_TOKEN + b"\r\n"
    if proof is not None:
        request += PROOF_HEADER + b": " + proof + b"\r\n"
    got = b""
    try:
        s.sendall(request + b"\r\n")
        while b"\r\n\r\n" not in got:
            data = s.recv(65536)
            if not data:
                break
            got += data
        if got.startswith(b"HTTP/1.1 101"):
            return s, got.partition(b"\r\n\r\n")[0]
        while data:
            data = s.recv(65536)
            got += data
    except ConnectionResetError:  # closed without an answer (over every limit)
        pass
    return s, got


def upgrade_status(node: NodeHandle, proof: bytes | None) -> int:
    s, head = upgrade(node.host, node.port, proof)
    s.close()
    assert head.startswith(b"HTTP/1.1 "), head
    return int(head[9:12])


def link_requests(node: NodeHandle) -> int:
    """Packets ``node`` answered on links it accepted (its LINK request counters)."""
    total = 0.0
    for line in node.metrics().splitlines():
        if line.startswith("veil_http_requests_total{") and 'method="LINK"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


# --- a node in a network: only listed nodes open links ------------------------------------


class Pair:
    def __init__(self, n1: NodeHandle, n2: NodeHandle, keys1: NodeKeys) -> None:
        self.n1, self.n2, self.keys1 = n1, n2, keys1

    def proof(self, keys: NodeKeys, *, skew_ms: int = 0) -> bytes:
        """A proof by ``keys`` for a link to n2."""
        return make_link_proof(keys, bytes.fromhex(self.n2.node_id), wall_clock_ms() + skew_ms)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Two listed nodes, each holding a consensus that lists both."""
    root = tmp_path_factory.mktemp("link-auth")
    net = make_network(root / "net", count=1)
    authority = start_authority(net, 0)
    try:
        with (
            node_process(root / "n1", config=node_config(net)) as n1,
            node_process(root / "n2", config=node_config(net)) as n2,
        ):
            both = {n1.node_id, n2.node_id}
            c = wait_for_consensus(net, lambda c: both <= {n.node_id.hex() for n in c.nodes})
            for node in (n1, n2):
                wait_for("the node's view", lambda n=node: (n.info().get("epoch") or -1) >= c.epoch)
            keys1, _ = load_or_create_keys(root / "n1")
            assert keys1.node_id == n1.node_id
            yield Pair(n1, n2, keys1)
    finally:
        assert authority.stop() == 0, authority.log_text()


def test_an_unlisted_opener_is_refused_the_upgrade(pair: Pair) -> None:
    assert upgrade_status(pair.n2, None) == 403  # no proof at all
    # A valid proof by keys the consensus does not list.
    assert upgrade_status(pair.n2, pair.proof(NodeKeys.generate())) == 403
    s, answer = upgrade(pair.n2.host, pair.n2.port, b"0" * 240)
    s.close()
    assert b"only nodes in the consensus" in answer, answer


def test_a_forged_stale_or_replayed_proof_is_refused(pair: Pair) -> None:
    listed = pair.keys1.identity_public
    # Forged: n1's ID, signed by another key.
    impostor = NodeKeys.generate()
    forged = bytearray.fromhex(pair.proof(impostor).decode())
    forged[:32] = listed
    assert upgrade_status(pair.n2, forged.hex().encode()) == 403
    # Made for another node (n1 itself): no good at n2.
    other = make_link_proof(pair.keys1, listed, wall_clock_ms())
    assert upgrade_status(pair.n2, other) == 403
    # Out of the time window.
    assert upgrade_status(pair.n2, pair.proof(pair.keys1, skew_ms=-5 * 60_000)) == 403
    # Garbage of the right length, and a proof spelt in upper case (one spelling only).
    assert upgrade_status(pair.n2, b"zz" * 120) == 403
    good = pair.proof(pair.keys1)
    assert upgrade_status(pair.n2, good.upper()) == 403
    # The genuine proof opens one link, once.
    assert upgrade_status(pair.n2, good) == 101
    s, answer = upgrade(pair.n2.host, pair.n2.port, good)
    s.close()
    assert answer.startswith(b"HTTP/1.1 403") and b"already used" in answer, answer


def test_listed_nodes_still_relay_over_links(pair: Pair) -> None:
    # Replication uses the links too (veil-link/3), so n1 may have asked n2 for a link
    # at its start, before n2 held the consensus (503, or 403 while n2's did not list it
    # yet): then n1 goes by POST /onion for 5 s and asks again. What must hold: once both
    # hold the consensus, n1 reaches n2 over a link, and n2 never refuses it.
    log_before = len(pair.n1.log_text())
    before = link_requests(pair.n2)
    answered = 0
    deadline = time.monotonic() + 20
    with httpx.Client(trust_env=False, timeout=60) as http:
        while link_requests(pair.n2) < before + 3:
            assert time.monotonic() < deadline, "n1 never reached n2 over a link"
            packet, opener = build_packet(
                [pair.n1.hop(), pair.n2.hop()], rpc.make_info(), now_ms=wall_clock_ms()
            )
            r = http.post(f"{pair.n1.url}/onion", content=packet)
            assert r.status_code == 200, r.text
            assert rpc.decode_reply(opener.open(r.content)).ok
            answered += 1
            time.sleep(0.1)
    assert answered >= 3
    # n1 reached n2 over a link (not POST /onion): n2 answered the packets as LINK.
    assert re.search(r"link_refused", pair.n1.log_text()[log_before:]) is None


# --- one address cannot hold every connection --------------------------------------------


def test_one_address_over_its_cap_leaves_info_to_another(tmp_path: Path) -> None:
    """A standalone node (links from anyone) with room for 64 connections, 8 per
    address: 127.0.0.1 holds 100 upgraded links (idle, as in the attack), and GET /info
    from 127.0.0.2 is still answered 200."""
    config = {"http": {"max_connections": 64, "max_connections_per_address": 8}}
    with node_process(tmp_path / "node", config=config) as node:
        held: list[socket.socket] = []
        statuses: list[int] = []
        try:
            for _ in range(100):
                s, head = upgrade(node.host, node.port)
                held.append(s)
                statuses.append(int(head[9:12]) if head.startswith(b"HTTP/1.1 ") else 0)
            with httpx.Client(
                transport=httpx.HTTPTransport(local_address="127.0.0.2"), trust_env=False
            ) as other:
                r = other.get(f"{node.url}/info", timeout=20)
            assert r.status_code == 200, r.text
            assert statuses.count(101) == 8, statuses
        finally:
            for s in held:
                s.close()
