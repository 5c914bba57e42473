"""A real ``veil-node`` process (and a chain of three) driven through real onion packets.

TTL expiry uses the node's test-only clock control (``[debug] clock_control = true``
makes ``POST /debug/clock`` shift the node's clock; the store, the RPC's signature window
and the replay cache all read that clock), so the test does not wait ten seconds.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from veil.onion import cbor, rpc
from veil.onion.keys import Account, NodeKeys
from veil.onion.packet import Hop, HopError, build_packet

from .nodeutil import (
    NodeHandle,
    free_port,
    node_process,
    now_ms,
    onion_request,
    onion_rpc,
    post_packet,
    run_node_with_config,
    running_node,
    start_node,
    write_toml,
)

# --- fixtures and helpers ----------------------------------------------------------------


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeHandle]:
    data = tmp_path_factory.mktemp("single") / "node"
    with node_process(data, config={"debug": {"clock_control": True}}) as n:
        yield n


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[NodeHandle]]:
    base = tmp_path_factory.mktemp("chain")
    with (
        node_process(base / "a") as a,
        node_process(base / "b") as b,
        node_process(base / "c") as c,
    ):
        yield [a, b, c]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60) as c:
        yield c


async def store(
    client: httpx.AsyncClient, path: list[Hop], to: Account, data: bytes, ttl_ms: int = 600_000
) -> rpc.StoreResult:
    reply = await onion_rpc(client, path, rpc.make_store(to.id, data, ttl_ms, now_ms=now_ms()))
    result = rpc.StoreResult.from_wire(reply.raise_for_status())
    return result


async def retrieve(
    client: httpx.AsyncClient, path: list[Hop], account: Account, **kwargs: object
) -> rpc.RetrieveResult:
    request = rpc.make_retrieve(account, now_ms=now_ms(), **kwargs)  # type: ignore[arg-type]
    reply = await onion_rpc(client, path, request)
    return rpc.RetrieveResult.from_wire(reply.raise_for_status())


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of sample ``name`` with ``labels`` in a Prometheus exposition, if any."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


async def wait_for_metric(client: httpx.AsyncClient, node: NodeHandle, name: str, want: float):
    """Poll /metrics until ``name`` reaches ``want`` (a sync point, not a timing check)."""
    for _ in range(500):
        text = (await client.get(f"{node.url}/metrics")).text
        if (metric(text, name) or 0) >= want:
            return
        await trio.sleep(0.02)
    raise AssertionError(f"{name} never reached {want}")


async def set_clock(client: httpx.AsyncClient, node: NodeHandle, offset_ms: int) -> int:
    r = await client.post(f"{node.url}/debug/clock", json={"offset_ms": offset_ms})
    assert r.status_code == 200, r.text
    return int(r.json()["time_ms"])


# --- storage through onions ------------------------------------------------------------------


async def test_store_then_retrieve_through_one_hop(node: NodeHandle, client) -> None:
    alice = Account.generate()
    stored = await store(client, [node.hop()], alice, b"hello alice")
    assert stored.created
    assert stored.hash == rpc.message_hash(alice.id, 0, b"hello alice")

    got = await retrieve(client, [node.hop()], alice)
    assert [m.data for m in got.messages] == [b"hello alice"]
    assert got.messages[0].hash == stored.hash
    assert not got.more


async def test_store_then_retrieve_through_a_chain_of_three_nodes(chain, client) -> None:
    a, b, c = chain
    path = [a.hop(), b.hop(), c.hop()]
    bob = Account.generate()
    await store(client, path, bob, b"via three nodes")

    got = await retrieve(client, path, bob)
    assert [m.data for m in got.messages] == [b"via three nodes"]
    # The message lives on the destination only; the relays relayed.
    direct = await retrieve(client, [a.hop()], bob)
    assert direct.messages == []
    for relay in (a, b):
        relayed = metric(relay.metrics(), "veil_onion_relayed_total")
        assert relayed is not None and relayed >= 2
    assert (metric(c.metrics(), "veil_onion_delivered_total") or 0) >= 2
    assert (metric(c.metrics(), "veil_onion_relayed_total") or 0) == 0


async def test_retrieve_is_paginated(node: NodeHandle, client) -> None:
    carol = Account.generate()
    bodies = [f"message {i}".encode() for i in range(7)]
    for body in bodies:
        await store(client, [node.hop()], carol, body)

    seen: list[bytes] = []
    last: bytes | None = None
    pages = 0
    while True:
        page = await retrieve(client, [node.hop()], carol, limit=3, last_hash=last)
        pages += 1
        seen += [m.data for m in page.messages]
        if not page.more:
            break
        last = page.messages[-1].hash
    assert seen == bodies
    assert pages == 3


async def test_long_poll_is_woken_by_a_store(node: NodeHandle, client) -> None:
    dave = Account.generate()
    polled: list[rpc.RetrieveResult] = []

    async def poll() -> None:
        polled.append(await retrieve(client, [node.hop()], dave, wait_s=25))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll)
        await wait_for_metric(client, node, "veil_storage_waiting_polls", 1)
        await store(client, [node.hop()], dave, b"wake up")
    assert [m.data for m in polled[0].messages] == [b"wake up"]


async def test_messages_expire_after_their_ttl(node: NodeHandle, client) -> None:
    erin = Account.generate()
    try:
        await store(client, [node.hop()], erin, b"short lived", ttl_ms=rpc.MIN_TTL_MS)
        await store(client, [node.hop()], erin, b"long lived", ttl_ms=3_600_000)
        assert len((await retrieve(client, [node.hop()], erin)).messages) == 2
        await set_clock(client, node, rpc.MIN_TTL_MS + 1_000)
        got = await retrieve(client, [node.hop()], erin)
        assert [m.data for m in got.messages] == [b"long lived"]
    finally:
        await set_clock(client, node, 0)


async def test_delete_removes_a_message(node: NodeHandle, client) -> None:
    frank = Account.generate()
    keep = await store(client, [node.hop()], frank, b"keep")
    drop = await store(client, [node.hop()], frank, b"drop")
    reply = await onion_rpc(
        client, [node.hop()], rpc.make_delete(frank, [drop.hash], now_ms=now_ms())
    )
    assert rpc.DeleteResult.from_wire(reply.raise_for_status()).deleted == [drop.hash]
    got = await retrieve(client, [node.hop()], frank)
    assert [m.hash for m in got.messages] == [keep.hash]


async def test_retrieving_someone_elses_inbox_is_refused(node: NodeHandle, client) -> None:
    victim, mallory = Account.generate(), Account.generate()
    await store(client, [node.hop()], victim, b"private")

    unsigned = rpc.encode_request("retrieve", {"pubkey": str(victim.id), "namespace": 0})
    reply = await onion_rpc(client, [node.hop()], unsigned)
    assert reply.status == "unauthorized"

    # Mallory signs a retrieve and swaps in the victim's ID.
    doc = cbor.decode(rpc.make_retrieve(mallory, now_ms=now_ms()), max_size=4096)
    doc["params"]["pubkey"] = str(victim.id)
    reply = await onion_rpc(client, [node.hop()], cbor.encode(doc))
    assert reply.status == "unauthorized"
    assert reply.result is None
    assert abs(reply.t_ms - now_ms()) < 60_000  # every reply carries the node's time


# --- onion-level errors ------------------------------------------------------------------------


async def test_a_packet_ten_minutes_off_gets_clock_skew_with_the_node_time(
    node: NodeHandle, client
) -> None:
    with pytest.raises(HopError) as err:
        await onion_request(client, [node.hop()], rpc.make_info(), at_ms=now_ms() - 600_000)
    assert err.value.hop == 0
    assert err.value.status == "clock_skew"
    prefix, _, node_time = err.value.message.partition("node time ")
    assert prefix == ""
    info_time = (await client.get(f"{node.url}/info")).json()["time_ms"]
    assert abs(int(node_time) - info_time) < 60_000


async def test_a_replayed_packet_gets_replayed(node: NodeHandle, client) -> None:
    packet, opener = build_packet([node.hop()], rpc.make_info(), now_ms=now_ms())
    first = await post_packet(client, node.hop(), packet)
    assert rpc.decode_reply(opener.open(first.content)).ok
    again = await post_packet(client, node.hop(), packet)
    assert again.status_code == 200
    with pytest.raises(HopError) as err:
        opener.open(again.content)
    assert (err.value.hop, err.value.status) == (0, "replayed")
    text = node.metrics()
    assert (metric(text, "veil_onion_replay_rejections_total", reason="replayed") or 0) >= 1


async def test_a_dead_next_hop_gives_a_layered_bad_gateway(chain, client) -> None:
    a = chain[0]
    ghost = NodeKeys.generate()
    dead = Hop(ghost.identity_public, ghost.onion_public, "127.0.0.1", free_port())
    # The client timeout (10 s) is far below the relay's hop timeout (40 s): the answer
    # must come from the refused connect, not from a timeout.
    with pytest.raises(HopError) as err:
        await onion_request(client, [a.hop(), dead], rpc.make_info(), timeout=10)
    assert (err.value.hop, err.value.status) == (0, "bad_gateway")
    assert "unreachable" in err.value.message
    text = a.metrics()
    assert (metric(text, "veil_onion_relay_failures_total", reason="unreachable") or 0) >= 1


async def test_a_silent_next_hop_gives_a_layered_timeout(tmp_path: Path, client) -> None:
    # A listener that never accepts: the connect succeeds (the kernel's backlog), the
    # request is sent, and no answer ever comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        ghost = NodeKeys.generate()
        hole = Hop(ghost.identity_public, ghost.onion_public, "127.0.0.1", silent.getsockname()[1])
        config = {"onion": {"hop_timeout": 1.0, "deliver_timeout": 0.5}}
        async with running_node(tmp_path / "impatient", config=config) as relay:
            with pytest.raises(HopError) as err:
                await onion_request(client, [relay.hop(), hole], rpc.make_info(), timeout=20)
            text = relay.metrics()
    assert (err.value.hop, err.value.status) == (0, "timeout")
    assert (metric(text, "veil_onion_relay_failures_total", reason="timeout") or 0) == 1


async def test_a_middle_relay_pointing_at_a_dead_hop_is_the_one_blamed(chain, client) -> None:
    a, b, _ = chain
    ghost = NodeKeys.generate()
    dead = Hop(ghost.identity_public, ghost.onion_public, "127.0.0.1", free_port())
    with pytest.raises(HopError) as err:
        await onion_request(client, [a.hop(), b.hop(), dead], rpc.make_info(), timeout=10)
    assert (err.value.hop, err.value.status) == (1, "bad_gateway")


# --- /info, /metrics, node.json, keys ---------------------------------------------------------


async def test_info_and_metrics(node: NodeHandle, client) -> None:
    info = (await client.get(f"{node.url}/info")).json()
    doc = json.loads((node.data_dir / "node.json").read_text())
    assert info["node_id"] == doc["node_id"] == node.node_id
    assert info["onion_key"] == doc["onion_key"] == node.onion_key.hex()
    assert info["address"] == doc["address"] == node.address
    assert doc["pid"] == node.pid
    assert info["version"] == "0.1.0"
    assert abs(info["time_ms"] - now_ms()) < 60_000
    assert f"listening on {node.address}" in node.log_text()

    await store(client, [node.hop()], Account.generate(), b"counted")
    r = await client.get(f"{node.url}/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    ok_onions = metric(text, "veil_http_requests_total", method="POST", path="/onion", status="200")
    assert ok_onions is not None and ok_onions >= 1
    assert (metric(text, "veil_http_requests_total", path="/info", status="200") or 0) >= 1
    assert (metric(text, "veil_onion_delivered_total") or 0) >= 1
    assert (metric(text, "veil_store_messages") or 0) >= 1
    assert (metric(text, "veil_store_size_bytes") or 0) > 0
    assert (metric(text, "veil_store_stored_total") or 0) >= 1
    assert metric(text, "veil_onion_relayed_total") == 0
    assert metric(text, "veil_rate_limited_total") == 0
    assert "veil_onion_replay_rejections" in text


def test_keys_are_private_and_survive_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "keys"
    with node_process(data) as first:
        node_id, onion_key = first.node_id, first.onion_key
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "node_keys.json").stat().st_mode) == 0o600
    assert node_id not in (data / "node_keys.json").read_text()  # secrets, not public keys
    with node_process(data) as second:
        assert (second.node_id, second.onion_key) == (node_id, onion_key)


def test_a_second_node_on_the_same_data_dir_is_refused(node: NodeHandle) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "veil.node",
            "run",
            "--data-dir",
            str(node.data_dir),
            "--listen",
            "127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "another veil-node is running" in run.stderr


def test_an_unknown_config_key_is_refused_clearly(tmp_path: Path) -> None:
    config = write_toml(tmp_path / "bad.toml", {"http": {"idle_timout": 5}})
    run = run_node_with_config(tmp_path / "d", config)
    assert run.returncode == 2
    assert "unknown key http.idle_timout" in run.stderr
    assert "idle_timeout" in run.stderr  # the keys it does know


# --- shutdown ---------------------------------------------------------------------------------


def test_sigterm_exits_0_and_closes_the_store(tmp_path: Path) -> None:
    data = tmp_path / "term"
    node = start_node(data)
    assert (data / "store.sqlite-wal").exists()  # open in WAL mode
    node.process.send_signal(signal.SIGTERM)
    assert node.process.wait(30) == 0
    log = node.log_text()
    assert "event=stopping signal=SIGTERM" in log
    assert "event=store_closed" in log
    # SQLite checkpoints and removes the WAL when its last connection closes cleanly.
    assert not (data / "store.sqlite-wal").exists()
    assert not (data / "node.json").exists()


async def test_sigterm_answers_waiting_long_polls_at_once_then_exits_0(tmp_path: Path) -> None:
    # A long grace: a poll that held the drain would keep the node for 30 s. A stopping
    # node answers its waiting polls at once (with what they have: nothing here), so the
    # relays of their paths are not held either.
    config = {"http": {"shutdown_grace": 30.0}}
    async with httpx.AsyncClient(timeout=60) as client:
        node = await trio.to_thread.run_sync(lambda: start_node(tmp_path / "drain", config=config))
        try:
            answers: list[tuple[int, bytes]] = []

            async def poll() -> None:
                request = rpc.make_retrieve(Account.generate(), now_ms=now_ms(), wait_s=25)
                packet, _ = build_packet([node.hop()], request, now_ms=now_ms())
                response = await post_packet(client, node.hop(), packet)
                answers.append((response.status_code, response.content))

            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(poll)
                await wait_for_metric(client, node, "veil_storage_waiting_polls", 3)
                stopped_at = trio.current_time()
                os.kill(node.pid, signal.SIGTERM)
            assert [status for status, _ in answers] == [200, 200, 200]
            assert await trio.to_thread.run_sync(node.process.wait) == 0
            # Well inside the 30 s grace and the polls' 25 s wait (slack for a busy machine).
            assert trio.current_time() - stopped_at < 10
        finally:
            node.kill()


async def test_sigterm_cuts_a_request_still_busy_after_the_grace_with_503(tmp_path: Path) -> None:
    # A packet relayed to a next hop that never answers stays in flight; the drain waits
    # the grace for it, then the node answers it 503 and exits 0.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        ghost = NodeKeys.generate()
        hole = Hop(ghost.identity_public, ghost.onion_public, "127.0.0.1", silent.getsockname()[1])
        config = {"http": {"shutdown_grace": 0.5}, "onion": {"hop_timeout": 60.0}}
        async with httpx.AsyncClient(timeout=60) as client:
            node = await trio.to_thread.run_sync(
                lambda: start_node(tmp_path / "drain", config=config)
            )
            try:
                statuses: list[int] = []

                async def relay() -> None:
                    packet, _ = build_packet([node.hop(), hole], rpc.make_info(), now_ms=now_ms())
                    statuses.append((await post_packet(client, node.hop(), packet)).status_code)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(relay)
                    await trio.sleep(1.0)  # the packet reaches the silent hop
                    os.kill(node.pid, signal.SIGTERM)
                assert statuses == [503]  # cut after the grace period, with an answer
                assert await trio.to_thread.run_sync(node.process.wait) == 0
            finally:
                node.kill()


async def test_running_node_helper_starts_and_stops(tmp_path: Path) -> None:
    async with running_node(tmp_path / "helper") as n, httpx.AsyncClient() as c:
        assert (await c.get(f"{n.url}/info")).json()["node_id"] == n.node_id
    assert n.process.returncode == 0


# --- node-to-node links ---------------------------------------------------------------------


async def test_relays_carry_packets_to_the_next_hop_over_links(chain, client) -> None:
    a, b, c = chain
    path = [a.hop(), b.hop(), c.hop()]
    reply = await onion_rpc(client, path, rpc.make_info())
    assert reply.ok
    # a got the packet over HTTP from the client; b and c got theirs over links (their
    # requests are counted with method LINK), each opened by the hop before with an
    # upgrade of GET /link.
    for relay_or_dest in (b, c):
        text = relay_or_dest.metrics()
        linked = metric(
            text, "veil_http_requests_total", method="LINK", path="/onion", status="200"
        )
        assert linked is not None and linked >= 1
        upgrades = metric(text, "veil_http_requests_total", method="GET", status="101")
        assert upgrades is not None and upgrades >= 1
    assert metric(a.metrics(), "veil_http_requests_total", method="LINK") is None


async def test_a_chain_with_links_disabled_relays_over_http(tmp_path: Path, client) -> None:
    off = {"link": {"enabled": False}}
    async with (
        running_node(tmp_path / "a", config=off) as a,
        running_node(tmp_path / "b", config=off) as b,
        running_node(tmp_path / "c") as c,
    ):
        path = [a.hop(), b.hop(), c.hop()]
        carol = Account.generate()
        await store(client, path, carol, b"over plain http")
        got = await retrieve(client, path, carol)
        assert [m.data for m in got.messages] == [b"over plain http"]
        for hop in (b, c):
            text = hop.metrics()
            posts = metric(
                text, "veil_http_requests_total", method="POST", path="/onion", status="200"
            )
            assert posts is not None and posts >= 2
            assert metric(text, "veil_http_requests_total", method="LINK") is None
            assert metric(text, "veil_http_requests_total", status="101") is None
        assert (metric(a.metrics(), "veil_onion_relayed_total") or 0) >= 2
        assert (metric(b.metrics(), "veil_onion_relayed_total") or 0) >= 2
