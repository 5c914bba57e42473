"""Replication on node-to-node links (veil-link/3) against real node processes.

Devnets of ``veil-node`` processes on 127.0.0.1 (tests/devnetutil.py):

* a swarm of 3 replicates over its links: every acknowledged message is at every member
  at once (the ack rule), a client's delete is forwarded, and each node's
  ``veil_http_requests_total`` counts ``LINK /replicate`` (and ``/replicate/pull``,
  ``/replicate/forward``) and no ``POST /replicate``;
* with ``[link] enabled = false`` the same swarm replicates by ``POST /replicate``;
* a member that does not speak this link (it answers the upgrade 426, as a
  ``veil-link/2`` node does, or 404, as a node from before links) still gets every
  push, by ``POST``: such a member is a real node behind a small proxy at its listed
  address that answers ``GET /link`` as the older node would and passes every other
  request on;
* hostile frames, sent by the test as a listed node (its keys read from its data dir,
  the link opened with its signed proof) on a real link to a real node: a replayed push
  (refused ``replayed``, stored once), garbage and forged frames of each kind (typed
  refusals, the link goes on), a replication head over its limit (the link is closed,
  the node serves on), and a flood of frames far beyond ``max_streams`` (the node reads
  at most that many ahead of its answers, so its memory does not follow the flood; it
  serves others meanwhile; every frame is answered once, refused).

No timed assertions: waits on the network are polls with generous deadlines.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.devnetutil import devnet, running_devnet
from tests.nodeutil import free_port, now_ms
from tests.swarmutil import DAY_MS, account_in, call, eventually, read_hashes, settled, store
from veil.client.devnet import Devnet
from veil.node.keystore import load_or_create_keys
from veil.onion import replication_frames as wire
from veil.onion import rpc
from veil.onion.directory import Consensus, ConsensusNode
from veil.onion.errors import STATUS_CODES
from veil.onion.keys import Account, NodeKeys
from veil.onion.link import (
    MAX_REPLICATION_REQUEST,
    MAX_RESPONSE_LEN,
    PROOF_HEADER,
    REPLICATE_FORWARD,
    REPLICATE_PULL,
    REPLICATE_PUSH,
    RESPONSE,
    UPGRADE_PATH,
    UPGRADE_TOKEN,
    Frame,
    FrameReader,
    encode_replication_request,
    make_link_proof,
)

pytestmark = pytest.mark.slow

NODE_CONFIG = {"replication": {"sync_interval": 0.5, "ack_timeout": 10.0}}
ROUTES = ("/replicate", "/replicate/pull", "/replicate/forward")


# --- helpers ------------------------------------------------------------------------------


async def requests_counted(url: str) -> dict[tuple[str, str, str], float]:
    """A node's ``veil_http_requests_total``: (method, path, status) -> count."""
    async with httpx.AsyncClient(trust_env=False) as client:
        text = (await client.get(f"{url}/metrics", timeout=10)).text
    counts: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "veil_http_requests_total":
                labels = sample.labels
                counts[(labels["method"], labels["path"], labels["status"])] = sample.value
    return counts


def served(counts: dict[tuple[str, str, str], float], method: str, path: str) -> float:
    """Requests of ``method`` to ``path``, any status."""
    return sum(v for (m, p, _), v in counts.items() if m == method and p == path)


async def store_at_each_member(
    client: httpx.AsyncClient, consensus: Consensus, per_member: int
) -> list[tuple[Account, bytes]]:
    """``per_member`` messages stored at each member of the (one) swarm; checks the ack
    rule (every member holds each message as soon as the store is answered)."""
    swarm = next(iter(consensus.swarms.values()))
    stored: list[tuple[Account, bytes]] = []
    for member in swarm.members:
        account = account_in(consensus, swarm.swarm_id)
        for i in range(per_member):
            result = await store(client, member.as_hop(), account.id, b"m%d " % i + os.urandom(8))
            for other in swarm.members:
                held = await read_hashes(client, other.as_hop(), account)
                assert result.hash in held, f"{other.port} lacks an acknowledged message"
            stored.append((account, result.hash))
    return stored


def keys_of(net: Devnet, node: ConsensusNode) -> NodeKeys:
    """A devnet node's keys, read from its data dir (to act as that listed node)."""
    keys, created = load_or_create_keys(net.node(node.node_id.hex()).data_dir)
    assert not created
    return keys


# --- links on, links off --------------------------------------------------------------------


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    with devnet(
        tmp_path_factory.mktemp("replinks"), nodes=3, swarm_size=3, node_config=NODE_CONFIG
    ) as running:
        running.wait_for_consensus(lambda c: len(c.nodes) == 3, what="three nodes")
        yield running


async def replication_counts(net: Devnet) -> dict[tuple[str, str], float]:
    """(method, route) -> requests served, summed over the devnet's nodes."""
    totals: dict[tuple[str, str], float] = {}
    for member in net.nodes:
        counts = await requests_counted(member.url)
        for method in ("LINK", "POST"):
            for route in ROUTES:
                totals[method, route] = totals.get((method, route), 0) + served(
                    counts, method, route
                )
    return totals


async def links_carry_everything(net: Devnet) -> None:
    """Wait until replication goes on links only. A node that starts before its peers
    list it is refused the upgrade (403/503) and uses POST for a few seconds (node/link/):
    the steady state is reached when, over a few sync rounds, pulls are served on links
    and nothing of replication's by POST."""

    async def steady() -> bool:
        before = await replication_counts(net)
        await trio.sleep(1.5)  # three sync rounds of every node
        after = await replication_counts(net)
        posted = sum(after["POST", r] - before["POST", r] for r in ROUTES)
        return posted == 0 and after["LINK", "/replicate/pull"] > before["LINK", "/replicate/pull"]

    await eventually(steady, what="replication on links only")


async def test_a_swarm_replicates_over_its_links(net: Devnet) -> None:
    consensus = await settled(net)
    swarm = next(iter(consensus.swarms.values()))
    assert len(swarm.members) == 3
    await links_carry_everything(net)
    before = await replication_counts(net)
    async with httpx.AsyncClient(trust_env=False) as client:
        stored = await store_at_each_member(client, consensus, per_member=3)
        # A client's delete at one member is forwarded to the others.
        account, deleted = stored[0]
        delete = rpc.make_delete(account, [deleted], now_ms=now_ms())
        (await call(client, swarm.members[0].as_hop(), delete)).raise_for_status()

        async def deleted_everywhere() -> bool:
            for member in swarm.members:
                if deleted in await read_hashes(client, member.as_hop(), account):
                    return False
            return True

        await eventually(deleted_everywhere, what="the delete reaches every member")
    after = await replication_counts(net)
    # 9 stores, each pushed to the 2 other members, and the forwarded delete: all on
    # links, none by POST.
    assert after["LINK", "/replicate"] - before["LINK", "/replicate"] >= 18
    assert after["LINK", "/replicate/forward"] - before["LINK", "/replicate/forward"] >= 2
    for route in ROUTES:
        assert after["POST", route] == before["POST", route], route
    # The pushes were answered 200 on the links.
    pushes_ok = 0.0
    for member in net.nodes:
        pushes_ok += (await requests_counted(member.url)).get(("LINK", "/replicate", "200"), 0)
    assert pushes_ok >= 18


async def test_with_links_off_a_swarm_replicates_over_http(tmp_path: Path) -> None:
    config = {**NODE_CONFIG, "link": {"enabled": False}}
    async with (
        running_devnet(tmp_path, nodes=3, swarm_size=3, node_config=config) as net,
        httpx.AsyncClient(trust_env=False) as client,
    ):
        consensus = await settled(net)
        await store_at_each_member(client, consensus, per_member=2)
        posted = 0.0
        for member in net.nodes:
            counts = await requests_counted(member.url)
            posted += served(counts, "POST", "/replicate")
            for route in ROUTES:
                assert served(counts, "LINK", route) == 0, (member.name, route)
        assert posted >= 12  # 6 stores, each pushed to 2 members


# --- a member that does not speak veil-link/3 ------------------------------------------------


def http_answer(status: bytes, text: bytes) -> bytes:
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\ncontent-type: text/plain\r\ncontent-length: "
        + str(len(text)).encode()
        + b"\r\nconnection: close\r\n\r\n"
        + text
    )


#: What a node of an earlier version answers ``GET /link`` with ``Upgrade: veil-link/3``.
OLDER_ANSWERS = [
    (
        "veil-link/2",
        http_answer(
            b"426 Upgrade Required", b"upgrade_required: /link takes Upgrade: veil-link/2\n"
        ),
    ),
    ("no link", http_answer(b"404 Not Found", b"not_found: no route\n")),
]


class OlderFace:
    """A TCP front for a real node at its listed address that answers ``GET /link`` as
    an older node would (``answer``) and passes every other connection through."""

    def __init__(self, answer: bytes, target_port: Callable[[], int]) -> None:
        self.answer = answer
        self.target_port = target_port
        self.port = free_port()
        self.upgrades_refused = 0

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        task_status.started()
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        async with stream:
            head = b""
            while b"\r\n\r\n" not in head:
                data = await stream.receive_some(65536)
                if not data:
                    return
                head += data
            if head.startswith(b"GET " + UPGRADE_PATH.encode() + b" "):
                self.upgrades_refused += 1
                await stream.send_all(self.answer)
                return
            try:
                node = await trio.open_tcp_stream("127.0.0.1", self.target_port())
            except OSError:
                return
            async with node:
                await node.send_all(head)
                async with trio.open_nursery() as nursery:

                    async def pipe(src: trio.SocketStream, dst: trio.SocketStream) -> None:
                        try:
                            while data := await src.receive_some(65536):
                                await dst.send_all(data)
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            pass
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(pipe, stream, node)
                    nursery.start_soon(pipe, node, stream)


def node_port(data_dir: Path) -> int:
    return int(json.loads((data_dir / "node.json").read_text())["port"])


async def test_members_without_this_link_still_get_every_push(tmp_path: Path) -> None:
    async with (
        running_devnet(tmp_path, nodes=2, swarm_size=4, node_config=NODE_CONFIG) as net,
        httpx.AsyncClient(trust_env=False) as client,
        trio.open_nursery() as nursery,
    ):
        faces: dict[str, tuple[OlderFace, Any]] = {}
        for kind, answer in OLDER_ANSWERS:
            index = len(net.nodes)
            data_dir = net.dir / f"node-{index}"
            face = OlderFace(answer, functools.partial(node_port, data_dir))
            await nursery.start(face.run)
            # The node advertises the face's address, so the consensus lists it there.
            net.node_config = {**NODE_CONFIG, "network": {"advertise": f"127.0.0.1:{face.port}"}}
            member = await trio.to_thread.run_sync(lambda: net.add_node())
            assert member.data_dir == data_dir
            faces[kind] = (face, member)
        net.node_config = NODE_CONFIG
        consensus = await trio.to_thread.run_sync(
            lambda: net.wait_for_consensus(lambda c: len(c.nodes) == 4, what="four nodes")
        )
        consensus = await settled(net)
        swarm = next(iter(consensus.swarms.values()))
        assert len(consensus.swarms) == 1 and len(swarm.members) == 4
        await store_at_each_member(client, consensus, per_member=2)
        for kind, (face, member) in faces.items():
            counts = await requests_counted(f"http://127.0.0.1:{node_port(member.data_dir)}")
            # Its peers tried the link, were answered as by an older node, and pushed by
            # POST, which the ack rule counted (store_at_each_member read it at once).
            assert face.upgrades_refused >= 1, kind
            assert served(counts, "POST", "/replicate") >= 6, (kind, counts)
            assert served(counts, "LINK", "/replicate") == 0, kind
        # Between the members that speak it, pushes go on the link (once each lists the
        # other: before that, a refused upgrade sends POSTs for a few seconds).
        older_ports = {face.port for face, _ in faces.values()}
        speakers = [m for m in swarm.members if m.port not in older_ports]
        assert len(speakers) == 2
        account = account_in(consensus, swarm.swarm_id)

        async def pushed_on_links() -> bool:
            for member in speakers:
                await store(client, member.as_hop(), account.id, os.urandom(16))
            for member in speakers:
                counts = await requests_counted(f"http://{member.host}:{member.port}")
                if not served(counts, "LINK", "/replicate"):
                    return False
            return True

        await eventually(pushed_on_links, what="pushes on links between /3 members")
        nursery.cancel_scope.cancel()


# --- hostile frames on a real link ------------------------------------------------------------

_HEAD = struct.Struct(">BBHII")


class RawLink:
    """A link opened by the test, as listed node ``keys``, to ``node`` (blocking socket)."""

    def __init__(self, node: ConsensusNode, keys: NodeKeys) -> None:
        self.sock = socket.create_connection((node.host, node.port), timeout=30)
        proof = make_link_proof(keys, node.node_id, now_ms())
        self.sock.sendall(
            b"GET " + UPGRADE_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\n"
            b"Connection: Upgrade\r\nUpgrade: "
            + UPGRADE_TOKEN
            + b"\r\n"
            + PROOF_HEADER
            + b": "
            + proof
            + b"\r\n\r\n"
        )
        got = b""
        while b"\r\n\r\n" not in got:
            data = self.sock.recv(65536)
            assert data, "closed during the upgrade"
            got += data
        head, _, rest = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        self.reader = FrameReader(RESPONSE, MAX_RESPONSE_LEN)
        self.reader.receive_data(rest)

    def send(self, kind: int, stream: int, payload: bytes) -> None:
        self.sock.sendall(encode_replication_request(kind, stream, payload))

    def answer(self) -> Frame:
        while (frame := self.reader.next_frame()) is None:
            data = self.sock.recv(262144)
            assert data, "the node closed the link"
            self.reader.receive_data(data)
        return frame

    def exchange(self, kind: int, stream: int, payload: bytes) -> Frame:
        self.send(kind, stream, payload)
        frame = self.answer()
        assert frame.stream == stream
        return frame

    def closed_by_peer(self) -> bool:
        try:
            return self.sock.recv(65536) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def refusal(frame: Frame) -> tuple[int, str]:
    return frame.status, frame.payload.decode().split(":")[0]


def pid_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def node_answers(node: ConsensusNode) -> bool:
    async with httpx.AsyncClient(trust_env=False) as client:
        return (await client.get(f"http://{node.host}:{node.port}/info", timeout=10)).is_success


async def test_a_replayed_push_on_a_link_is_refused_and_stored_once(net: Devnet) -> None:
    consensus = await settled(net)
    swarm = next(iter(consensus.swarms.values()))
    receiver, peer = swarm.members[0], swarm.members[1]
    alice = account_in(consensus, swarm.swarm_id)
    peer_keys = keys_of(net, peer)
    t = now_ms()
    data = b"replayed on a link " + os.urandom(8)
    h = rpc.message_hash(alice.id, rpc.INBOX, data)
    m = wire.ReplicaMessage(alice.id.x25519_public, rpc.INBOX, h, data, t, t + DAY_MS)
    frame, digest = wire.seal_push(peer_keys, receiver, [m], now_ms=t)
    link = await trio.to_thread.run_sync(RawLink, receiver, peer_keys)
    try:
        first = await trio.to_thread.run_sync(link.exchange, REPLICATE_PUSH, 1, frame)
        assert first.status == 200
        ack = wire.open_pushed(first.payload, peer_keys, receiver, digest, now_ms=now_ms())
        assert ack.stored == 1 and not ack.refused
        # The same bytes again, on the same link and on a new one, and over HTTP.
        again = await trio.to_thread.run_sync(link.exchange, REPLICATE_PUSH, 2, frame)
        assert refusal(again) == (409, "replayed")
        other = await trio.to_thread.run_sync(RawLink, receiver, peer_keys)
        try:
            got = await trio.to_thread.run_sync(other.exchange, REPLICATE_PUSH, 1, frame)
            assert refusal(got) == (409, "replayed")
        finally:
            other.close()
        async with httpx.AsyncClient(trust_env=False) as client:
            r = await client.post(
                f"http://{receiver.host}:{receiver.port}/replicate", content=frame, timeout=10
            )
            assert r.status_code == 409
            # Stored once: the owner deletes it, and the replayed frame does not bring it back.
            delete = rpc.make_delete(alice, [h], now_ms=now_ms())
            (await call(client, receiver.as_hop(), delete)).raise_for_status()
            got = await trio.to_thread.run_sync(link.exchange, REPLICATE_PUSH, 3, frame)
            assert refusal(got) == (409, "replayed")
            assert h not in await read_hashes(client, receiver.as_hop(), alice)
    finally:
        link.close()


async def test_garbage_and_forged_frames_get_typed_refusals_and_the_link_goes_on(
    net: Devnet,
) -> None:
    consensus = await settled(net)
    swarm = next(iter(consensus.swarms.values()))
    receiver, peer, third = swarm.members
    peer_keys = keys_of(net, peer)
    alice = account_in(consensus, swarm.swarm_id)
    t = now_ms()
    data = b"forged " + os.urandom(8)
    h = rpc.message_hash(alice.id, rpc.INBOX, data)
    m = wire.ReplicaMessage(alice.id.x25519_public, rpc.INBOX, h, data, t, t + DAY_MS)
    # Sealed by the peer "to" another node; sealed as a node "from" the peer with
    # another key (forged); truncated; one byte flipped inside the box.
    to_other, _ = wire.seal_push(peer_keys, third, [m], now_ms=t)
    forged, _ = wire.seal_push(NodeKeys.generate(), receiver, [m], now_ms=t)
    good, _ = wire.seal_push(peer_keys, receiver, [m], now_ms=t)
    flipped = bytearray(good)
    flipped[-100] ^= 1
    bad = {
        "random 2 KiB": (REPLICATE_PUSH, os.urandom(2048)),
        "empty pull": (REPLICATE_PULL, b""),
        "random forward": (REPLICATE_FORWARD, os.urandom(16384)),
        "push to another node": (REPLICATE_PUSH, to_other),
        "pull frame as a forward": (REPLICATE_FORWARD, good),
        "forged sender": (REPLICATE_PUSH, forged),
        "truncated": (REPLICATE_PUSH, good[:-1]),
        "flipped": (REPLICATE_PUSH, bytes(flipped)),
    }
    link = await trio.to_thread.run_sync(RawLink, receiver, peer_keys)
    try:
        for stream, (name, (kind, payload)) in enumerate(bad.items()):
            got = await trio.to_thread.run_sync(link.exchange, kind, stream, payload)
            status, typed = refusal(got)
            assert 400 <= status < 500 and typed in STATUS_CODES, (name, got)
        # The same link still carries a good frame.
        got = await trio.to_thread.run_sync(link.exchange, REPLICATE_PUSH, 99, good)
        assert got.status == 200, got
    finally:
        link.close()
    async with httpx.AsyncClient(trust_env=False) as client:
        assert h in await read_hashes(client, receiver.as_hop(), alice)


async def test_a_replication_head_over_its_limit_closes_the_link_and_the_node_serves_on(
    net: Devnet,
) -> None:
    consensus = await settled(net)
    receiver, peer = next(iter(consensus.swarms.values())).members[:2]
    peer_keys = keys_of(net, peer)
    for kind in (REPLICATE_PUSH, REPLICATE_PULL, REPLICATE_FORWARD):
        link = await trio.to_thread.run_sync(RawLink, receiver, peer_keys)
        try:
            # A head alone, announcing one byte over the limit: refused before any payload.
            await trio.to_thread.run_sync(
                link.sock.sendall, _HEAD.pack(kind, 0, 0, 1, MAX_REPLICATION_REQUEST + 1)
            )
            assert await trio.to_thread.run_sync(link.closed_by_peer)
        finally:
            link.close()
        assert await node_answers(receiver)
    # A new link works.
    link = await trio.to_thread.run_sync(RawLink, receiver, peer_keys)
    try:
        got = await trio.to_thread.run_sync(link.exchange, REPLICATE_PULL, 1, b"x")
        assert got.status == 400
    finally:
        link.close()


async def test_a_flood_beyond_max_streams_is_bounded_and_answered(net: Devnet) -> None:
    consensus = await settled(net)
    receiver, peer = next(iter(consensus.swarms.values())).members[:2]
    peer_keys = keys_of(net, peer)
    pid = net.node(receiver.node_id.hex()).pid
    assert pid is not None
    before_kib = pid_rss_kib(pid)
    # 4,000 frames of the 16 KiB class (64 MB) in one stream of writes, far beyond
    # max_streams (256): the node reads at most max_streams ahead of its answers (then
    # TCP pushes back), so its memory does not follow the flood.
    n, payload = 4000, os.urandom(16384)
    flood = b"".join(encode_replication_request(REPLICATE_PUSH, i, payload) for i in range(n))
    link = await trio.to_thread.run_sync(RawLink, receiver, peer_keys)
    statuses: dict[int, int] = {}
    peak_kib = [0]

    def send_all() -> None:
        with contextlib.suppress(OSError):
            link.sock.sendall(flood)

    def read_all() -> None:
        for i in range(n):
            frame = link.answer()
            statuses[frame.status] = statuses.get(frame.status, 0) + 1
            if i % 200 == 0:
                peak_kib[0] = max(peak_kib[0], pid_rss_kib(pid))

    sender = threading.Thread(target=send_all, daemon=True)
    sender.start()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, read_all)
            # The node serves others during the flood.
            assert await node_answers(receiver)
    finally:
        link.close()
        sender.join(timeout=30)
    # Every frame answered once, refused as the garbage it is (or rate limited).
    assert sum(statuses.values()) == n and set(statuses) <= {400, 429}, statuses
    grown_kib = peak_kib[0] - before_kib
    assert grown_kib < 32 * 1024, f"the node grew by {grown_kib} KiB during a 64 MB flood"
    assert await node_answers(receiver)
