"""The directory authority as a real process: registration, liveness, consensus, bad input.

Authorities and nodes run as subprocesses on 127.0.0.1 (tests/authorityutil.py,
tests/nodeutil.py) with a consensus interval of one second, so a test sees many epochs
in a few seconds. Waits poll with a deadline; nothing asserts on timing.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veil.node.config import HttpConfig
from veil.node.metrics import NodeMetrics
from veil.node.server import HttpServer, Request, Response, Route
from veil.onion import crypto
from veil.onion.directory import (
    CONSENSUS_DOMAIN,
    MAX_DESCRIPTOR_SIZE,
    Consensus,
    make_descriptor,
    parse_consensus_body,
    split_consensus,
    verify_consensus,
)
from veil.onion.errors import InvalidConsensus
from veil.onion.keys import NodeKeys, parse_node_id

from .authorityutil import (
    AuthorityHandle,
    Network,
    authority_init,
    fetch_consensus,
    make_network,
    node_config,
    start_authority,
    wait_for,
    wait_for_consensus,
)
from .nodeutil import REPO, NodeHandle, free_port, node_process, now_ms, running_node

HOUR = 3_600_000


def node_keys_of(node: NodeHandle) -> NodeKeys:
    """The keys a node keeps in its data dir (the test reads them to forge descriptors)."""
    doc = json.loads((node.data_dir / "node_keys.json").read_text())
    return NodeKeys(bytes.fromhex(doc["identity_seed"]), bytes.fromhex(doc["onion_secret"]))


def ids(consensus: Consensus) -> set[str]:
    return {n.node_id_hex for n in consensus.nodes}


def run_authority_command(*args: str) -> subprocess.CompletedProcess[str]:
    """``veil-node authority ARGS`` expected to fail at once (usage or config error)."""
    return subprocess.run(
        [sys.executable, "-m", "veil.node", "authority", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def post_descriptor(authority: AuthorityHandle, data: bytes) -> httpx.Response:
    return httpx.post(f"{authority.url}/descriptor", content=data, timeout=10)


@pytest.fixture(scope="module")
def authority(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Network, AuthorityHandle]]:
    """One authority (threshold 1) shared by the bad-input tests."""
    net = make_network(tmp_path_factory.mktemp("auth"), count=1)
    handle = start_authority(net, 0)
    yield net, handle
    code = handle.stop()
    assert code == 0, handle.log_text()


# --- authority-init and start-up ---------------------------------------------------------


def test_authority_init_prints_one_json_line_with_a_key_it_keeps(tmp_path: Path) -> None:
    key, done = authority_init(tmp_path / "auth")
    assert done.stdout == json.dumps({"key": key}) + "\n"
    parse_node_id(key)  # 64 hex characters of a valid Ed25519 key
    assert stat.S_IMODE(os.stat(tmp_path / "auth").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "auth" / "authority_keys.json").st_mode) == 0o600
    again, _ = authority_init(tmp_path / "auth")
    assert again == key


def test_an_authority_not_in_the_network_file_refuses_to_start(tmp_path: Path) -> None:
    net = make_network(tmp_path / "net", count=1)
    stranger = tmp_path / "stranger"
    authority_init(stranger)
    run = run_authority_command(
        "--data-dir",
        str(stranger),
        "--listen",
        f"127.0.0.1:{free_port()}",
        "--network",
        str(net.path),
    )
    assert run.returncode == 2
    assert "not listed in the network file" in run.stderr


def test_an_authority_on_port_0_is_a_usage_error(tmp_path: Path) -> None:
    net = make_network(tmp_path / "net", count=1)
    run = run_authority_command(
        "--data-dir", str(net.dirs[0]), "--listen", "127.0.0.1:0", "--network", str(net.path)
    )
    assert run.returncode == 2
    assert "not 0" in run.stderr


def test_no_consensus_before_the_first_epoch_then_a_clean_exit(tmp_path: Path) -> None:
    net = make_network(tmp_path, count=1)
    # A minute-long interval: the first consensus is at least vote_delay (10 s) away.
    handle = start_authority(net, 0, config={"authority": {"interval_ms": 60_000}})
    try:
        r = httpx.get(f"{handle.url}/consensus", timeout=10)
        assert r.status_code == 503
        assert r.text.startswith("unavailable:")
        assert httpx.get(f"{handle.url}/vote", timeout=10).status_code == 404
        info = handle.info()
        assert info["key"] == net.authorities[0].key_hex
        assert info["epoch"] is None
        assert info["nodes"] == 0
        doc = json.loads((handle.data_dir / "authority.json").read_text())
        assert doc["pid"] == handle.pid and doc["key"] == info["key"]
        assert doc["address"] == f"127.0.0.1:{net.authorities[0].port}"
    finally:
        code = handle.stop()
    assert code == 0, handle.log_text()
    assert "listening on 127.0.0.1:" in handle.log_text()
    assert not (handle.data_dir / "authority.json").exists()


# --- registration and liveness ------------------------------------------------------------


@pytest.mark.slow
def test_a_node_is_listed_and_disappears_once_stopped(tmp_path: Path) -> None:
    net = make_network(tmp_path / "net", count=1)
    handle = start_authority(net, 0)
    try:
        with node_process(tmp_path / "n1", config=node_config(net)) as n1:
            with node_process(tmp_path / "n2", config=node_config(net)) as n2:
                c = wait_for_consensus(net, lambda c: {n1.node_id, n2.node_id} <= ids(c))
                assert c.signers == {net.authorities[0].key}
                entry = c.node(n1.node_id)
                assert entry is not None
                assert (entry.host, entry.port, entry.onion_key) == (
                    n1.host,
                    n1.port,
                    n1.onion_key,
                )
                # The node's own view: /info shows the epoch and its swarm.
                info = wait_for("n1's view", lambda: _info_at(n1, c.epoch))
                assert info["swarm_id"] == entry.swarm_id
                stopped_at = wait_for_consensus(net).epoch
            after = wait_for_consensus(
                net, lambda c: c.epoch > stopped_at and n2.node_id not in ids(c)
            )
            assert n1.node_id in ids(after)
    finally:
        code = handle.stop()
    assert code == 0, handle.log_text()


def _info_at(node: NodeHandle, epoch: int) -> dict | None:
    info = node.info()
    return info if (info.get("epoch") or -1) >= epoch else None


@pytest.mark.slow
def test_a_node_whose_info_shows_another_onion_key_is_not_listed(tmp_path: Path) -> None:
    net = make_network(tmp_path / "net", count=1)
    handle = start_authority(net, 0)
    try:
        # Standalone nodes: the test publishes their descriptors itself.
        with node_process(tmp_path / "good") as good, node_process(tmp_path / "bad") as bad:
            real = node_keys_of(bad)
            lying = NodeKeys(real.identity_seed, bytes([7]) * 32)  # same ID, other onion key
            forged = make_descriptor(lying, bad.host, bad.port, "0.1.0", now_ms())
            assert post_descriptor(handle, forged).status_code == 200
            honest = make_descriptor(node_keys_of(good), good.host, good.port, "0.1.0", now_ms())
            assert post_descriptor(handle, honest).status_code == 200
            c = wait_for_consensus(net, lambda c: good.node_id in ids(c))
            assert bad.node_id not in ids(c)
            log = handle.log_text()
            assert "another onion key than the descriptor" in log
    finally:
        code = handle.stop()
    assert code == 0, handle.log_text()


@pytest.mark.slow
async def test_a_node_that_fakes_info_but_has_not_the_onion_key_is_not_listed(
    tmp_path: Path,
) -> None:
    """GET /info is easy to fake; the one-hop onion request is not."""
    net = await trio.to_thread.run_sync(lambda: make_network(tmp_path / "net", count=1))
    handle = await trio.to_thread.run_sync(lambda: start_authority(net, 0))
    keys = NodeKeys.generate()
    info = json.dumps({"node_id": keys.node_id, "onion_key": keys.onion_public.hex()}).encode()

    async def fake_info(request: Request) -> Response:
        return Response(200, info, b"application/json")

    async def fake_onion(request: Request) -> Response:
        return Response(200, os.urandom(2048), b"application/octet-stream")

    server = HttpServer(
        {"/info": Route(("GET",), fake_info), "/onion": Route(("POST",), fake_onion, 1 << 20)},
        HttpConfig(),
        metrics=NodeMetrics(),
    )
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    try:
        async with trio.open_nursery() as nursery, running_node(tmp_path / "good") as good:
            await nursery.start(server.serve, listeners)
            fake = make_descriptor(keys, "127.0.0.1", port, "0.1.0", now_ms())
            honest = make_descriptor(node_keys_of(good), good.host, good.port, "0.1.0", now_ms())
            for data in (fake, honest):
                r = await trio.to_thread.run_sync(post_descriptor, handle, data)
                assert r.status_code == 200
            c = await trio.to_thread.run_sync(
                lambda: wait_for_consensus(net, lambda c: good.node_id in ids(c))
            )
            assert keys.node_id not in ids(c)
            assert "bad onion reply" in handle.log_text()
            server.stop()
    finally:
        code = await trio.to_thread.run_sync(handle.stop)
    assert code == 0, handle.log_text()


# --- bad input -----------------------------------------------------------------------------


def test_bad_descriptors_get_4xx_and_the_authority_carries_on(
    authority: tuple[Network, AuthorityHandle],
) -> None:
    _, handle = authority
    keys = NodeKeys.generate()
    now = now_ms()
    good = make_descriptor(keys, "127.0.0.1", free_port(), "0.1.0", now)
    cases = {
        "garbage": (b"\x00not a descriptor", 400, "bad_request"),
        "not cbor of a descriptor": (b"\xa1\x61a\x01", 400, "bad_request"),
        "tampered": (good[:-1] + bytes([good[-1] ^ 1]), 401, "unauthorized"),
        "expired": (
            make_descriptor(keys, "127.0.0.1", 9, "0.1.0", now - 3 * HOUR, HOUR),
            406,
            "clock_skew",
        ),
        "from the future": (
            make_descriptor(keys, "127.0.0.1", 9, "0.1.0", now + HOUR),
            406,
            "clock_skew",
        ),
        "oversize": (b"\x00" * (MAX_DESCRIPTOR_SIZE + 1), 413, "too_large"),
    }
    for name, (data, status, wire) in cases.items():
        r = post_descriptor(handle, data)
        assert r.status_code == status, (name, r.status_code, r.text)
        assert r.text.startswith(wire), (name, r.text)
    assert post_descriptor(handle, good).status_code == 200
    assert post_descriptor(handle, good).status_code == 200  # the same again: unchanged
    older = make_descriptor(keys, "127.0.0.1", 9, "0.1.0", now - 1000)
    r = post_descriptor(handle, older)
    assert r.status_code == 409 and r.text.startswith("replayed")
    assert handle.info()["nodes"] >= 1


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.binary(max_size=MAX_DESCRIPTOR_SIZE + 64))
def test_random_bytes_as_a_descriptor_get_4xx(
    authority: tuple[Network, AuthorityHandle], data: bytes
) -> None:
    _, handle = authority
    r = post_descriptor(handle, data)
    assert 400 <= r.status_code < 500, r.text


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/consensus?epoch=x", 400),
        ("/consensus?epoch=5", 404),
        ("/consensus?other=1", 400),
        ("/vote?epoch=1&epoch=2", 400),
        ("/vote?epoch=3", 404),
        ("/signature", 400),
        ("/signature?epoch=1&digest=zz", 400),
        (f"/signature?epoch=1&digest={'00' * 32}", 404),
        ("/consensus?" + "a" * 300, 400),
    ],
)
def test_bad_queries_get_clear_4xx(
    authority: tuple[Network, AuthorityHandle], path: str, status: int
) -> None:
    _, handle = authority
    r = httpx.get(f"{handle.url}{path}", timeout=10)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("text/plain")


def test_the_served_consensus_verifies_against_the_pinned_key(
    authority: tuple[Network, AuthorityHandle],
) -> None:
    net, handle = authority
    data = wait_for("a consensus", lambda: fetch_consensus(handle.url))
    body, signatures = split_consensus(data)
    key = net.authorities[0].key
    assert {s.key for s in signatures} == {key}
    for s in signatures:
        crypto.verify(key, CONSENSUS_DOMAIN, body, s.signature)
    c = parse_consensus_body(body)
    # The epoch is the authority's clock over the interval; times follow the epoch.
    assert c.valid_after_ms == c.epoch * handle.info()["interval_ms"]
    # This authority holds no node, so its consensus lists none, which readers refuse
    # however well it is signed (verify_consensus checks the signatures first).
    with pytest.raises(InvalidConsensus, match="lists no nodes"):
        verify_consensus(data, pinned=[key], threshold=1, now_ms=now_ms())
    # Served by epoch too (the last few epochs are kept).
    r = httpx.get(f"{handle.url}/consensus?epoch={c.epoch}", timeout=10)
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-type"] == "application/cbor"


@pytest.mark.slow
def test_descriptors_expire_unless_renewed(tmp_path: Path) -> None:
    """A node renews its descriptor at half its lifetime and stays listed; a descriptor
    nobody renews drops out once it expires."""
    net = make_network(tmp_path / "net", count=1)
    handle = start_authority(net, 0)
    lifetime = 10_000  # the shortest a node may use
    try:
        member_config = node_config(net, descriptor_lifetime_ms=lifetime)
        with (
            node_process(tmp_path / "member", config=member_config) as member,
            node_process(tmp_path / "once") as once,
        ):
            published = now_ms()
            data = make_descriptor(
                node_keys_of(once), once.host, once.port, "0.1.0", published, lifetime
            )
            assert post_descriptor(handle, data).status_code == 200
            wait_for_consensus(net, lambda c: {member.node_id, once.node_id} <= ids(c))
            # The member published its first descriptor before `published`, so by the
            # time `once` has expired the member's first descriptor has too.
            c = wait_for_consensus(net, lambda c: once.node_id not in ids(c), timeout=60)
            assert c.valid_after_ms >= published + lifetime - handle.info()["interval_ms"]
            assert member.node_id in ids(c)
    finally:
        code = handle.stop()
    assert code == 0, handle.log_text()


@pytest.mark.slow
def test_a_restarted_authority_remembers_its_nodes_and_consensus(tmp_path: Path) -> None:
    net = make_network(tmp_path / "net", count=1)
    handle = start_authority(net, 0)
    try:
        with node_process(tmp_path / "n1", config=node_config(net)) as n1:
            c = wait_for_consensus(net, lambda c: n1.node_id in ids(c))
            assert handle.stop() == 0, handle.log_text()
            handle = start_authority(net, 0)
            # At once, before the node could publish again: the saved registry and the
            # saved consensus (a node only re-publishes when a consensus omits it).
            assert handle.info()["nodes"] == 1
            data = fetch_consensus(handle.url)
            assert data is not None
            saved = verify_consensus(
                data, pinned=net.file.pinned_keys, threshold=1, now_ms=now_ms()
            )
            assert saved.epoch >= c.epoch and n1.node_id in ids(saved)
            later = wait_for_consensus(net, lambda x: x.epoch > saved.epoch + 1)
            assert n1.node_id in ids(later)
    finally:
        code = handle.stop()
    assert code == 0, handle.log_text()


@pytest.mark.slow
def test_a_restarted_authority_does_not_vote_before_it_has_checked_its_nodes(
    tmp_path: Path,
) -> None:
    """The node is paused (SIGSTOP) across the restart, so the authority's first check of
    it cannot finish: meanwhile the authority casts no vote, whatever epochs begin, and
    serves its saved consensus, which lists the node. Once the check answers, it votes
    and the consensus goes on with the node."""
    net = make_network(tmp_path / "net", count=1)
    # A check that outlasts the pause: the node answers it late, but it answers.
    config = {"authority": {"check_timeout": 60.0}}
    handle = start_authority(net, 0, config=config)
    try:
        with node_process(tmp_path / "n1", config=node_config(net)) as n1:
            wait_for_consensus(net, lambda c: n1.node_id in ids(c))
            assert handle.stop() == 0, handle.log_text()
            n1.process.send_signal(signal.SIGSTOP)
            try:
                handle = start_authority(net, 0, config=config)
                info = handle.info()
                assert info["nodes"] == 1  # the saved registry
                # Two epochs begin (by the authority's clock), each past its vote_delay.
                interval = info["interval_ms"]
                later = (info["time_ms"] // interval + 2) * interval + interval // 2
                wait_for("two epochs", lambda: handle.info()["time_ms"] >= later)
                r = httpx.get(f"{handle.url}/vote", timeout=10)
                assert r.status_code == 404, "it voted before its first check finished"
                data = fetch_consensus(handle.url)
                assert data is not None
                body, _ = split_consensus(data)
                saved = verify_consensus(
                    data,
                    pinned=net.file.pinned_keys,
                    threshold=1,
                    now_ms=parse_consensus_body(body).valid_after_ms,
                )
                assert n1.node_id in ids(saved)
                assert handle.info()["measured"] is False
            finally:
                n1.process.send_signal(signal.SIGCONT)
            wait_for("the first round of checks", lambda: handle.info()["measured"])
            after = wait_for_consensus(net, lambda c: c.epoch > saved.epoch)
            assert n1.node_id in ids(after)
            r = httpx.get(f"{handle.url}/vote", timeout=10)
            assert r.status_code == 200
    finally:
        code = handle.stop()
    assert code == 0, handle.log_text()


async def test_a_peer_authority_serving_bad_votes_is_logged_once_a_minute_and_counted(
    tmp_path: Path,
) -> None:
    # Authority 1 of a two-authority network is an impostor at its pinned address that
    # answers every /vote with bytes that are no vote. Authority 0 asks it every round:
    # each refusal is counted, but the log gets one line a minute, not one a round.
    net = await trio.to_thread.run_sync(lambda: make_network(tmp_path / "net", count=2))
    address = net.authorities[1]
    asked = 0

    async def bad_vote(request: Request) -> Response:
        nonlocal asked
        asked += 1
        return Response(200, b"\xa1\x61v\x63bad" + os.urandom(32), b"application/cbor")

    server = HttpServer({"/vote": Route(("GET",), bad_vote)}, HttpConfig(), metrics=NodeMetrics())
    listeners = await trio.open_tcp_listeners(address.port, host=address.host)
    authority = await trio.to_thread.run_sync(lambda: start_authority(net, 0))
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, listeners)
            with trio.fail_after(60):
                while asked < 4:
                    await trio.sleep(0.05)
            server.stop()
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"{net.url(0)}/metrics")).text
    finally:
        code = await trio.to_thread.run_sync(authority.stop)
    assert code == 0, authority.log_text()
    counted = [
        line
        for line in metrics.splitlines()
        if line.startswith('veil_peer_errors_total{cause="vote_refused"}')
    ]
    assert counted and float(counted[0].split()[-1]) >= 3, metrics
    assert authority.log_text().count("event=vote_refused") == 1, authority.log_text()
