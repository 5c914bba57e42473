"""Several authorities agreeing on a consensus, and nodes following it.

The first tests drive :class:`veil.node.network_view.NetworkView` in-process with real signed
consensus documents. The rest run real processes on 127.0.0.1 (tests/authorityutil.py):
three authorities of which one never starts, a restart, a node that follows the
network, a fake authority serving a forged consensus, and relays that forward only to
listed next hops.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from veil.client.devnet import Devnet
from veil.node.config import HttpConfig
from veil.node.metrics import NodeMetrics
from veil.node.network_view import NetworkView
from veil.node.server import HttpServer, Request, Response, Route
from veil.onion import rpc
from veil.onion.directory import (
    Consensus,
    assemble,
    make_consensus_body,
    make_descriptor,
    parse_consensus_body,
    parse_descriptor,
    sign_consensus,
    split_consensus,
    verify_consensus,
)
from veil.onion.errors import BelowThreshold, InvalidId
from veil.onion.keys import Account, NodeKeys
from veil.onion.packet import Hop, HopError

from .authorityutil import (
    fetch_consensus,
    make_network,
    node_config,
    start_authority,
    wait_for,
    wait_for_consensus,
)
from .devnetutil import running_devnet
from .nodeutil import (
    REPO,
    NodeHandle,
    node_process,
    now_ms,
    onion_request,
    onion_rpc,
    running_node,
    start_node,
    write_toml,
)

AUTHORITY = NodeKeys(bytes([201]) * 32, bytes([202]) * 32)


def consensus_of(
    nodes: list[NodeKeys],
    *,
    epoch: int = 1,
    swarm_size: int = 2,
    host: str = "10.0.0.1",
    previous: Consensus | None = None,
) -> Consensus:
    now = now_ms()
    descriptors = [
        parse_descriptor(make_descriptor(k, host, 5000 + i, "0.1.0", now), now_ms=now)
        for i, k in enumerate(nodes)
    ]
    body = make_consensus_body(
        descriptors,
        epoch=epoch,
        valid_after_ms=now,
        swarm_size=swarm_size,
        previous=None if previous is None else previous.assignment,
    )
    data = assemble(body, [sign_consensus(body, AUTHORITY)])
    return verify_consensus(data, pinned=[AUTHORITY.identity_public], threshold=1, now_ms=now)


NODES = [NodeKeys(bytes([i]) * 32, bytes([100 + i]) * 32) for i in range(1, 7)]


def ids(consensus: Consensus) -> set[str]:
    return {n.node_id_hex for n in consensus.nodes}


# --- NetworkView, in-process -------------------------------------------------------------


def test_a_standalone_view_owns_every_account_and_allows_every_hop() -> None:
    view = NetworkView(NODES[0].identity_public, standalone=True)
    account = Account.generate().id
    assert view.ready and view.is_mine(account)
    assert view.swarm_for(account) is None and view.my_swarm() is None
    assert view.swarm_peers() == []
    assert view.next_hop_allowed(NODES[1].identity_public, "10.9.9.9", 1)
    assert not view.is_relay_address("10.0.0.1")
    with pytest.raises(RuntimeError):
        view.update(consensus_of(NODES))


def test_a_member_view_answers_from_its_consensus() -> None:
    me = NODES[0]
    view = NetworkView(me.identity_public, standalone=False)
    account = Account.generate().id
    assert not view.ready and not view.is_mine(account) and view.swarm_for(account) is None
    # Before the first consensus every next hop is allowed (nothing to check against).
    assert view.next_hop_allowed(NODES[1].identity_public, "10.9.9.9", 1)

    c = consensus_of(NODES)  # 6 nodes, target 2: three swarms
    assert view.update(c)
    assert view.ready and view.epoch == 1
    mine = view.my_swarm()
    assert mine is not None and me.identity_public in mine
    assert {n.node_id for n in view.swarm_peers()} == set(mine.node_ids) - {me.identity_public}
    # Exactly the accounts of my swarm are mine.
    accounts = [Account.generate().id for _ in range(40)]
    for a in accounts:
        found = view.swarm_for(a)
        assert found is not None and found == c.swarm_of(a)
        assert view.is_mine(a) == (found.swarm_id == mine.swarm_id)
    assert any(view.is_mine(a) for a in accounts) and not all(view.is_mine(a) for a in accounts)
    with pytest.raises(InvalidId):
        view.swarm_for("05nothex")
    # Next hops: listed node at its listed address only.
    other = c.node(NODES[1].identity_public)
    assert other is not None
    assert view.next_hop_allowed(other.node_id, other.host, other.port)
    assert not view.next_hop_allowed(other.node_id, other.host, other.port + 1)
    assert not view.next_hop_allowed(NodeKeys.generate().identity_public, other.host, other.port)
    assert view.is_relay_address("10.0.0.1") and view.is_relay_address("::ffff:10.0.0.1")
    assert not view.is_relay_address("10.0.0.2")
    assert view.node(other.node_id_hex) == other


async def test_subscribers_get_every_newer_consensus_in_order() -> None:
    view = NetworkView(NODES[0].identity_public, standalone=False)
    updates = view.subscribe()
    first = consensus_of(NODES, epoch=5)
    assert view.update(first)
    assert not view.update(consensus_of(NODES, epoch=5))  # not newer
    assert not view.update(consensus_of(NODES, epoch=4))  # a rollback
    second = consensus_of(NODES[:4], epoch=6, previous=first)
    assert view.update(second)
    assert [updates.receive_nowait().epoch for _ in range(2)] == [5, 6]
    with pytest.raises(trio.WouldBlock):
        updates.receive_nowait()
    await updates.aclose()
    view.update(consensus_of(NODES[:4], epoch=7, previous=second))  # a closed subscriber is dropped


# --- several authorities -----------------------------------------------------------------

MULTI = {"authority": {"interval_ms": 1500}}


@pytest.mark.slow
def test_two_of_three_authorities_agree_and_carry_on_after_a_restart(tmp_path: Path) -> None:
    net = make_network(tmp_path / "net", count=3, threshold=2)  # authority 2 never starts
    keys = {a.key for a in net.authorities[:2]}
    a0 = start_authority(net, 0, config=MULTI)
    a1 = start_authority(net, 1, config=MULTI)
    try:
        with node_process(tmp_path / "n1", config=node_config(net)) as node:
            c = wait_for_consensus(net, lambda c: node.node_id in ids(c), indexes=(0, 1))
            data = fetch_consensus(a0.url)
            assert data is not None
            _, signatures = split_consensus(data)
            # Both running authorities signed the same bytes; with threshold 2 it verifies.
            if {s.key for s in signatures} != keys:  # a0 may not have b's signature yet
                data = wait_for(
                    "both signatures",
                    lambda: _signed_by(fetch_consensus(a0.url), keys),
                )
            good = verify_consensus(data, pinned=net.file.pinned_keys, threshold=2, now_ms=now_ms())
            assert good.signers == keys
            with pytest.raises(BelowThreshold):
                verify_consensus(data, pinned=net.file.pinned_keys, threshold=3, now_ms=now_ms())

            # The node follows: its /info reports the epoch and its swarm.
            info = wait_for("the node's view", lambda: _info_at(node, c.epoch))
            entry = c.node(node.node_id)
            assert entry is not None and info["swarm_id"] == entry.swarm_id

            # Restart authority 0: the network carries on with new epochs.
            before = wait_for_consensus(net, indexes=(1,)).epoch
            assert a0.stop() == 0, a0.log_text()
            a0 = start_authority(net, 0, config=MULTI)
            after = wait_for_consensus(
                net, lambda x: x.epoch > before + 1 and node.node_id in ids(x), indexes=(0,)
            )
            later = wait_for_consensus(net, lambda x: x.epoch > after.epoch, indexes=(1,))
            assert node.node_id in ids(later)
            # Sticky swarms: the node kept its swarm through the restart.
            moved = later.node(node.node_id)
            assert moved is not None and moved.swarm_id == entry.swarm_id
            wait_for("the node to follow", lambda: _info_at(node, later.epoch))
    finally:
        codes = [a.stop() for a in (a0, a1)]
    assert codes == [0, 0], a0.log_text() + a1.log_text()


@pytest.mark.slow
def test_a_cut_off_authority_does_not_hold_back_the_others_signatures(tmp_path: Path) -> None:
    """Authority 2 of 3 (threshold 2) is cut off: its port takes connections and never
    answers, so every request to it runs into ``check_timeout`` (4 s, four intervals).
    The two others must still serve a consensus that both signed while it is fresh:
    each signature is merged when it arrives, not when the slowest peer gives up."""
    net = make_network(tmp_path / "net", count=3, threshold=2)
    black_hole = socket.socket()
    black_hole.bind((net.file.authorities[2].host, net.file.authorities[2].port))
    black_hole.listen(64)  # the kernel completes handshakes; nothing ever reads or answers
    config = {"authority": {"interval_ms": 1000, "check_timeout": 4.0}}
    a0 = start_authority(net, 0, config=config)
    a1 = start_authority(net, 1, config=config)
    try:
        with node_process(tmp_path / "n1", config=node_config(net)) as node:
            fresh = wait_for_consensus(
                net,
                lambda c: node.node_id in ids(c) and now_ms() < c.fresh_until_ms,
                indexes=(0, 1),
                timeout=30.0,
            )
            assert fresh.signers == {a.key for a in net.authorities[:2]}
            # And it goes on: a later epoch is signed by both while fresh, too.
            later = wait_for_consensus(
                net,
                lambda c: c.epoch > fresh.epoch + 2 and now_ms() < c.fresh_until_ms,
                indexes=(0, 1),
                timeout=30.0,
            )
            assert node.node_id in ids(later)
    finally:
        codes = [a.stop() for a in (a0, a1)]
        black_hole.close()
    assert codes == [0, 0], a0.log_text() + a1.log_text()


# --- a restarted authority -------------------------------------------------------------

# vote_delay_ms under half the interval (the maximum): a restarted authority whose first
# round of checks ends early in an epoch still votes in it (node/authority/liveness.py). A long
# check_timeout: the paused node's first check must wait for it, not fail.
RESTART_CONFIG = {"authority": {"vote_delay_ms": 400, "check_timeout": 30.0}}


@pytest.mark.slow
async def test_a_restarted_authority_keeps_every_node_listed_and_the_network_serving(
    tmp_path: Path,
) -> None:
    """One authority (threshold 1), three nodes in one swarm. After a restart the
    authority must not vote before it has checked its nodes again: every consensus it
    serves keeps listing all three, and onion requests through all three work.

    The second restart pauses one node (SIGSTOP) until the authority's clock is past the
    first epoch boundary after it came back, so that its first check of that node is
    certainly unfinished when that epoch's vote is due; an authority that voted then
    would list two nodes (or none, for checks slower still)."""
    async with (
        running_devnet(tmp_path, nodes=3, swarm_size=3, authority_config=RESTART_CONFIG) as net,
        httpx.AsyncClient(trust_env=False) as client,
    ):
        everyone = {bytes.fromhex(m.id) for m in net.nodes}
        assert {n.node_id for n in (await trio.to_thread.run_sync(net.consensus)).nodes} == (
            everyone
        )
        account = Account.generate()
        hops = [m.hop() for m in net.nodes]
        stored: set[bytes] = set()

        # 1. A plain restart: requests work at once, and the network carries on.
        await trio.to_thread.run_sync(net.restart_authority, 0)
        stored.add(await _store_via_three_hops(client, hops, account, b"right after"))
        assert await _read_via_three_hops(client, hops[::-1], account) == stored
        await trio.to_thread.run_sync(_watch_served_consensus, net, everyone, 3)

        # 2. A restart while one node answers its first check late.
        paused = net.node(2)
        assert paused.process is not None
        paused.process.send_signal(signal.SIGSTOP)
        try:
            await trio.to_thread.run_sync(net.restart_authority, 0)
            await trio.to_thread.run_sync(_wait_past_first_boundary, net)
        finally:
            paused.process.send_signal(signal.SIGCONT)
        served = await trio.to_thread.run_sync(_watch_served_consensus, net, everyone, 3)
        # The nodes follow the authority's new consensus, and route and store by it.
        await trio.to_thread.run_sync(net.wait_for_sync, served)
        stored.add(await _store_via_three_hops(client, hops, account, b"after the pause"))
        assert await _read_via_three_hops(client, hops[1:] + hops[:1], account) == stored
        info = await trio.to_thread.run_sync(lambda: net.http.get(f"{net.authority(0).url}/info"))
        assert info.json()["measured"] is True


async def _store_via_three_hops(
    client: httpx.AsyncClient, path: list[Hop], account: Account, data: bytes
) -> bytes:
    """Store ``data`` for ``account`` at ``path[-1]`` through ``path``; its hash."""
    request = rpc.make_store(account.id, data, 3_600_000, now_ms=now_ms())
    reply = await onion_rpc(client, path, request, timeout=30)
    result = rpc.StoreResult.from_wire(reply.raise_for_status())
    assert result.created
    return result.hash


async def _read_via_three_hops(
    client: httpx.AsyncClient, path: list[Hop], account: Account
) -> set[bytes]:
    request = rpc.make_retrieve(account, now_ms=now_ms())
    reply = await onion_rpc(client, path, request, timeout=30)
    result = rpc.RetrieveResult.from_wire(reply.raise_for_status())
    assert not result.more
    return {m.hash for m in result.messages}


def _authority_time(net: Devnet) -> tuple[int, int]:
    """The authority's clock and interval (ms), from its GET /info."""
    info = net.http.get(f"{net.authority(0).url}/info").json()
    return int(info["time_ms"]), int(info["interval_ms"])


def _wait_past_first_boundary(net: Devnet) -> None:
    """Return once the authority's clock is a little past the first epoch boundary after
    now (polls its /info: its clock, not ours, decides when it votes)."""
    now, interval = _authority_time(net)
    boundary = (now // interval + 1) * interval
    wait_for("the authority's next epoch", lambda: _authority_time(net)[0] >= boundary + 50)


def _watch_served_consensus(net: Devnet, nodes: set[bytes], epochs: int) -> Consensus:
    """Poll the authority's ``GET /consensus`` until it serves a consensus ``epochs``
    epochs past the authority's current one; every document served meanwhile must carry
    the pinned authority's valid signature and list exactly ``nodes``. The last one."""
    now, interval = _authority_time(net)
    until = now // interval + epochs
    pinned = net.network.pinned_keys
    seen: dict[bytes, Consensus] = {}

    def check() -> Consensus | None:
        r = net.http.get(f"{net.authority(0).url}/consensus")
        assert r.status_code == 200, r.text
        if r.content not in seen:
            body, _ = split_consensus(r.content)
            # Checked at its own valid_after: what is asserted is whom it lists.
            at = parse_consensus_body(body).valid_after_ms
            c = verify_consensus(r.content, pinned=pinned, threshold=1, now_ms=at)
            listed = {n.node_id for n in c.nodes}
            assert listed == nodes, (
                f"epoch {c.epoch} lists {len(listed)} of {len(nodes)} nodes\n"
                + net.authority(0).log_tail(40)
            )
            seen[r.content] = c
        latest = seen[r.content]
        return latest if latest.epoch >= until else None

    return wait_for("later epochs", check, timeout=60)  # type: ignore[no-any-return]


def _signed_by(data: bytes | None, keys: set[bytes]) -> bytes | None:
    if data is None:
        return None
    _, signatures = split_consensus(data)
    return data if {s.key for s in signatures} >= keys else None


def _info_at(node: NodeHandle, epoch: int) -> dict | None:
    info = node.info()
    return info if (info.get("epoch") or -1) >= epoch else None


@pytest.mark.slow
async def test_a_node_refuses_a_forged_consensus_and_keeps_its_view(tmp_path: Path) -> None:
    net = await trio.to_thread.run_sync(lambda: make_network(tmp_path / "net", count=1))
    real = await trio.to_thread.run_sync(lambda: start_authority(net, 0))
    address = net.authorities[0]
    async with running_node(tmp_path / "n1", config=node_config(net)) as node:
        await trio.to_thread.run_sync(lambda: wait_for("a consensus", lambda: _info_at(node, 0)))
        assert await trio.to_thread.run_sync(real.stop) == 0
        held = (await trio.to_thread.run_sync(node.info))["epoch"]

        # A fake authority on the real one's address, serving a consensus of a later
        # epoch that lists the node but is signed by a key nobody pinned.
        forger = NodeKeys.generate()
        now = now_ms()
        keys = json.loads((node.data_dir / "node_keys.json").read_text())
        node_keys = NodeKeys(
            bytes.fromhex(keys["identity_seed"]), bytes.fromhex(keys["onion_secret"])
        )
        descriptor = parse_descriptor(
            make_descriptor(node_keys, node.host, node.port, "0.1.0", now), now_ms=now
        )
        body = make_consensus_body([descriptor], epoch=held + 1000, valid_after_ms=now)
        forged = assemble(body, [sign_consensus(body, forger)])
        served = 0

        async def consensus(request: Request) -> Response:
            nonlocal served
            served += 1
            return Response(200, forged, b"application/cbor")

        async def descriptor_ok(request: Request) -> Response:
            return Response(200, b"ok\n")

        server = HttpServer(
            {
                "/consensus": Route(("GET",), consensus),
                "/descriptor": Route(("POST",), descriptor_ok, 4096),
            },
            HttpConfig(),
            metrics=NodeMetrics(),
        )
        listeners = await trio.open_tcp_listeners(address.port, host=address.host)
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, listeners)
            with trio.fail_after(60):
                while served < 3:
                    await trio.sleep(0.05)
            server.stop()
        info = await trio.to_thread.run_sync(node.info)
        assert info["epoch"] == held
        assert "consensus_refused" in node.log_text()
        assert "BelowThreshold" in node.log_text()


# --- relays and the consensus --------------------------------------------------------------


@pytest.mark.slow
async def test_relays_forward_only_to_next_hops_in_the_consensus(tmp_path: Path) -> None:
    net = await trio.to_thread.run_sync(lambda: make_network(tmp_path / "net", count=1))
    authority = await trio.to_thread.run_sync(lambda: start_authority(net, 0))
    try:
        async with (
            running_node(tmp_path / "n1", config=node_config(net)) as n1,
            running_node(tmp_path / "n2", config=node_config(net)) as n2,
            running_node(tmp_path / "outsider") as outsider,
            httpx.AsyncClient() as client,
        ):
            c = await trio.to_thread.run_sync(
                lambda: wait_for_consensus(net, lambda c: {n1.node_id, n2.node_id} <= ids(c))
            )
            await trio.to_thread.run_sync(
                lambda: wait_for("n1's view", lambda: _info_at(n1, c.epoch))
            )
            reply = rpc.decode_reply(
                await onion_request(client, [n1.hop(), n2.hop()], rpc.make_info())
            )
            assert reply.ok
            with pytest.raises(HopError) as err:
                await onion_request(client, [n1.hop(), outsider.hop()], rpc.make_info())
            assert (err.value.hop, err.value.status) == (0, "bad_gateway")
            assert err.value.message == "next hop not in consensus"
            # A listed node at another address is not the listed node.
            moved = Hop(n2.hop().node_id, n2.onion_key, n2.host, outsider.port)
            with pytest.raises(HopError) as err:
                await onion_request(client, [n1.hop(), moved], rpc.make_info())
            assert err.value.message == "next hop not in consensus"
    finally:
        code = await trio.to_thread.run_sync(authority.stop)
    assert code == 0, authority.log_text()


@pytest.mark.slow
def test_listed_relays_are_exempt_from_the_per_address_rate_limit(tmp_path: Path) -> None:
    """Every node here connects from 127.0.0.1, a listed node's address: once a node holds
    a consensus, that address is a relay's and is not limited; a standalone node with the
    same limit refuses the same burst."""
    net = make_network(tmp_path / "net", count=1)
    authority = start_authority(net, 0)
    limit = {"rate": 0.01, "burst": 30.0}
    try:
        member_config = node_config(net)
        member_config["rate_limit"] = limit
        member = start_node(tmp_path / "member", config=member_config)
        alone = start_node(tmp_path / "alone", config={"rate_limit": limit})
        try:
            wait_for("the member to be listed", lambda: member.info().get("swarm_id") is not None)
            for node, limited in ((member, False), (alone, True)):
                with httpx.Client() as client:  # one fresh connection
                    codes = [
                        client.post(f"{node.url}/onion", content=b"x", timeout=10).status_code
                        for _ in range(40)
                    ]
                assert (429 in codes) == limited, codes
                assert set(codes) <= {400, 429}
        finally:
            codes = [member.stop(), alone.stop()]
        assert codes == [0, 0]
    finally:
        assert authority.stop() == 0


@pytest.mark.slow
def test_a_restarted_node_starts_with_its_saved_consensus(tmp_path: Path) -> None:
    net = make_network(tmp_path / "net", count=1)
    # Long enough a consensus life (3 intervals) to outlast the node's restart.
    authority = start_authority(net, 0, config={"authority": {"interval_ms": 5000}})
    config = node_config(net)
    node = start_node(tmp_path / "n1", config=config)
    try:
        wait_for("a consensus listing the node", lambda: node.info().get("swarm_id") is not None)
        assert authority.stop() == 0
        epoch = node.info()["epoch"]
        assert node.stop() == 0
        node = start_node(tmp_path / "n1", config=config)
        # No authority runs: the view can only come from DIR/consensus.cbor.
        info = node.info()
        assert info["epoch"] == epoch and info["swarm_id"] is not None
        assert "saved_consensus_loaded" in node.log_text()
    finally:
        assert node.stop() == 0
        authority.stop()


def run_node_briefly(data_dir: Path, config: Path) -> subprocess.CompletedProcess[str]:
    """``veil-node run`` expected to exit at once with a configuration error."""
    args = ["run", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0", "--config", str(config)]
    return subprocess.run(
        [sys.executable, "-m", "veil.node", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("file", "message"),
    [
        ("/nonexistent/network.json", "cannot read network file"),
        ("relative/network.json", "must be an absolute path"),
    ],
)
def test_a_node_with_a_bad_network_file_exits_2_before_making_keys(
    tmp_path: Path, file: str, message: str
) -> None:
    config = write_toml(tmp_path / "node.toml", {"network": {"file": file}})
    run = run_node_briefly(tmp_path / "n", config)
    assert run.returncode == 2
    assert message in run.stderr
    assert not (tmp_path / "n" / "node_keys.json").exists()


def test_a_network_file_without_authorities_is_refused_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "network.json"
    bad.write_text('{"version": 1, "threshold": 1, "authorities": []}')
    config = write_toml(tmp_path / "node.toml", {"network": {"file": str(bad)}})
    run = run_node_briefly(tmp_path / "n", config)
    assert run.returncode == 2
    assert "1 to 32 authorities" in run.stderr
