"""Guards, path selection, failure counts and the network clock (client/paths.py,
client/network_clock.py), on real state files and real consensus documents.

No network here: consensus documents are built by onion.directory from descriptors of
real node keys, with whatever addresses a case needs (distinct /24s, or every node on
127.0.0.1 as on a devnet).
"""

from __future__ import annotations

import random
from pathlib import Path

import hypothesis.strategies as st
import pytest
import trio
from hypothesis import HealthCheck, given, settings

from veil.client.errors import InvalidArgument, NoConsensus
from veil.client.network_clock import NetworkClock
from veil.client.paths import OnionPath, PathPolicy, PathSelector, Route, subnet_of
from veil.client.state import ClientState
from veil.onion.directory import (
    Consensus,
    NodeDescriptor,
    make_consensus_body,
    parse_consensus_body,
)
from veil.onion.keys import NodeKeys

KEYS = [NodeKeys.generate() for _ in range(16)]
NOW = 1_800_000_000_000


def consensus_of(hosts: list[str], epoch: int = 1, keys: list[NodeKeys] | None = None) -> Consensus:
    """A consensus of ``hosts``, node i holding ``keys[i]`` (default: KEYS)."""
    descriptors = [
        NodeDescriptor(
            node_id=k.identity_public,
            onion_key=k.onion_public,
            host=host,
            port=7000 + i,
            version="test",
            published_ms=NOW,
            expires_ms=NOW + 3_600_000,
        )
        for i, (k, host) in enumerate(zip(keys or KEYS, hosts, strict=False))
    ]
    body = make_consensus_body(descriptors, epoch=epoch, valid_after_ms=NOW, swarm_size=5)
    return parse_consensus_body(body)


async def selector(state: ClientState, consensus: Consensus, seed: int = 1) -> PathSelector:
    paths = PathSelector(state, rng=random.Random(seed), now_ms=lambda: NOW)
    await paths.load()
    paths.set_consensus(consensus)
    return paths


@pytest.fixture
def state(tmp_path: Path) -> ClientState:
    s = ClientState.open(tmp_path / "state.sqlite3")
    yield s  # type: ignore[misc]
    s.close()


def test_subnets() -> None:
    assert subnet_of("10.1.2.3") == subnet_of("10.1.2.200") != subnet_of("10.1.3.3")
    assert subnet_of("2001:db8:1:2::1") == subnet_of("2001:db8:1:ffff::2")
    assert subnet_of("2001:db8:1::1") != subnet_of("2001:db8:2::1")


async def test_path_is_a_guard_and_two_others_in_distinct_subnets(state: ClientState) -> None:
    consensus = consensus_of([f"10.0.{i}.1" for i in range(10)])
    paths = await selector(state, consensus)
    path = await paths.choose_path()
    assert len(path.relays) == 3
    assert path.guard.node_id in {g.node_id for g in paths.guards}
    assert len({subnet_of(n.host) for n in path.relays}) == 3
    # The middle relays are not our other guard.
    assert not {n.node_id for n in path.relays[1:]} & {g.node_id for g in paths.guards}
    guards = await paths.ensure_guards()
    assert len(guards) == 2 and subnet_of(guards[0].host) != subnet_of(guards[1].host)


async def test_one_per_subnet_where_addresses_allow(state: ClientState) -> None:
    # Nine nodes in two /24s and one alone: relays take distinct subnets while any is
    # left among the candidates (the middle relays are never our guards).
    hosts = [f"10.0.1.{i}" for i in range(1, 5)] + [f"10.0.2.{i}" for i in range(1, 5)]
    consensus = consensus_of([*hosts, "10.0.3.1"])
    paths = await selector(state, consensus)
    guard_ids = {g.node_id for g in await paths.ensure_guards()}
    middle_nets = {subnet_of(n.host) for n in consensus.nodes if n.node_id not in guard_ids}
    for _ in range(5):
        path = await paths.choose_path()
        nets = {subnet_of(n.host) for n in path.relays}
        assert len(nets) == min(3, len(middle_nets | {subnet_of(path.guard.host)}))
        assert len(nets) >= 2  # never two relays of one /24 while another /24 is left
        for _ in range(3):
            await paths.path_failed(path)  # rebuilt: another draw


async def test_loopback_devnet_degrades_gracefully(state: ClientState) -> None:
    # Every node on 127.0.0.1: one /24, so the rule cannot hold; paths are still built
    # of distinct nodes.
    paths = await selector(state, consensus_of(["127.0.0.1"] * 6))
    path = await paths.choose_path()
    assert len({n.node_id for n in path.relays}) == 3
    member = consensus_of(["127.0.0.1"] * 6).nodes[0].as_hop()
    route = await paths.choose_route([member])
    assert route.destination == member and member.node_id not in route.path.node_ids


@pytest.mark.parametrize("count", [1, 2, 3])
async def test_tiny_networks_give_shorter_paths(state: ClientState, count: int) -> None:
    consensus = consensus_of(["127.0.0.1"] * count)
    paths = await selector(state, consensus)
    path = await paths.choose_path()
    assert len(path.relays) == min(3, count)
    assert len({n.node_id for n in path.relays}) == len(path.relays)
    # A destination is found even when every node is on the stored path: the request
    # goes on a shorter path without it. One node cannot be reached without being
    # its own guard: no route, rather than one that breaks the rule.
    members = [n.as_hop() for n in consensus.nodes]
    if count == 1:
        with pytest.raises(NoConsensus):
            await paths.choose_route(members)
        return
    route = await paths.choose_route(members)
    assert route.destination in members
    assert route.destination.node_id not in route.path.node_ids
    assert len(route.path.relays) == min(3, count - 1)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    subnets=st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=14),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_path_properties(tmp_path: Path, subnets: list[int], seed: int) -> None:
    """Any network: a path of min(3, n) distinct nodes, spread over as many subnets as
    the guard's and the middle candidates' subnets allow."""
    hosts = [f"10.0.{s}.{i + 1}" for i, s in enumerate(subnets)]
    consensus = consensus_of(hosts)

    async def check() -> None:
        with ClientState.open(tmp_path / f"p{seed}.sqlite3") as state:
            paths = await selector(state, consensus, seed)
            path = await paths.choose_path()
            guard_ids = {g.node_id for g in paths.guards}
            assert len(path.relays) == min(3, len(hosts))
            assert len({n.node_id for n in path.relays}) == len(path.relays)
            middle = [n for n in consensus.nodes if n.node_id not in guard_ids]
            if len(middle) >= 2:
                available = {subnet_of(path.guard.host)} | {subnet_of(n.host) for n in middle}
                spread = {subnet_of(n.host) for n in path.relays}
                assert len(spread) == min(3, len(available))

    trio.run(check)


async def test_guards_are_kept_and_replaced_after_three_failures(tmp_path: Path) -> None:
    consensus = consensus_of([f"10.0.{i}.1" for i in range(8)])
    with ClientState.open(tmp_path / "s.sqlite3") as state:
        paths = await selector(state, consensus)
        first = [g.node_id for g in await paths.ensure_guards()]
    with ClientState.open(tmp_path / "s.sqlite3") as state:
        paths = await selector(state, consensus, seed=99)  # another rng: same guards
        assert [g.node_id for g in await paths.ensure_guards()] == first
        bad = first[0]
        for n in range(1, 3):
            assert await paths.node_failed(bad) == n
            assert bad in [g.node_id for g in await paths.ensure_guards()]
        await paths.node_failed(bad)
        now = [g.node_id for g in await paths.ensure_guards()]
        assert bad not in now and first[1] in now and len(now) == 2
        assert paths.guards_replaced == 1
    with ClientState.open(tmp_path / "s.sqlite3") as state:
        assert {g.node_id for g in state.get_guards()} == set(now)
        assert state.node_failures().get(bad, 0) == 3


async def test_unchanged_guards_come_without_a_yield_and_a_change_is_waited_for(
    state: ClientState,
) -> None:
    import trio.testing

    paths = await selector(state, consensus_of([f"10.0.{i}.1" for i in range(8)]))
    first = [g.node_id for g in await paths.ensure_guards()]
    # Nothing to change: no lock, no checkpoint (a yield before the packet is sent).
    with trio.testing.assert_no_checkpoints():
        assert [g.node_id for g in await paths.ensure_guards()] == first
    # While one caller persists a change, another waits for it instead of using a
    # guard that is not yet on disk.
    for _ in range(3):
        await paths.node_failed(first[0])
    seen: list[list[bytes]] = []
    on_disk: list[set[bytes]] = []

    async def caller() -> None:
        seen.append([g.node_id for g in await paths.ensure_guards()])
        on_disk.append({g.node_id for g in state.get_guards()})  # as each caller returns

    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller)
        await trio.testing.wait_all_tasks_blocked()  # the first holds the lock, persisting
        nursery.start_soon(caller)
    assert len(seen) == 2 and seen[0] == seen[1] and first[0] not in seen[0]
    assert on_disk == [set(seen[0]), set(seen[0])]


async def test_guards_are_kept_when_all_of_them_fail(state: ClientState) -> None:
    """Every guard failing looks like our own network being down: no guard churn."""
    paths = await selector(state, consensus_of([f"10.0.{i}.1" for i in range(8)]))
    guards = [g.node_id for g in await paths.ensure_guards()]
    for _ in range(5):
        for guard in guards:
            await paths.node_failed(guard)
    assert [g.node_id for g in await paths.ensure_guards()] == guards
    assert paths.guards_replaced == 0
    # Once one works again, the other (still failing) is replaced.
    await paths.node_succeeded(guards[1])
    now = [g.node_id for g in await paths.ensure_guards()]
    assert guards[0] not in now and guards[1] in now and len(now) == 2


async def test_guard_that_leaves_the_consensus_is_replaced(state: ClientState) -> None:
    hosts = [f"10.0.{i}.1" for i in range(8)]
    paths = await selector(state, consensus_of(hosts))
    guards = [g.node_id for g in await paths.ensure_guards()]
    path = await paths.choose_path()
    gone = path.guard.node_id
    kept = [(k, h) for k, h in zip(KEYS, hosts, strict=False) if k.identity_public != gone]
    paths.set_consensus(consensus_of([h for _, h in kept], epoch=2, keys=[k for k, _ in kept]))
    assert path not in paths.paths  # a path through a node that left is dropped
    now = [g.node_id for g in await paths.ensure_guards()]
    assert gone not in now and len(now) == 2
    assert set(guards) - {gone} <= set(now)


async def test_path_is_rebuilt_after_three_failures(state: ClientState) -> None:
    paths = await selector(state, consensus_of([f"10.0.{i}.1" for i in range(10)]))
    path = await paths.choose_path()
    guard = path.guard.node_id
    for _ in range(2):
        await paths.path_failed(path)
        assert path in paths.paths
    await paths.path_failed(path)
    assert path not in paths.paths and paths.rebuilt == 1
    again = await paths.choose_path(exclude=[p for p in paths.paths])
    assert again is not path
    assert guard in {g.node_id for g in paths.guards}


async def test_failing_relay_is_avoided(state: ClientState) -> None:
    paths = await selector(state, consensus_of([f"10.0.{i}.1" for i in range(10)]))
    path = await paths.choose_path()
    dead = path.relays[1].node_id
    # This request routes around it at once, without dropping the stored path.
    detour = await paths.choose_path(avoid={dead})
    assert dead not in detour.node_ids
    # At the failure limit it is left out of every path.
    for _ in range(PathPolicy().node_failure_limit):
        await paths.node_failed(dead)
    assert not paths.usable(dead)
    for _ in range(10):
        assert dead not in (await paths.choose_path()).node_ids
    # A success makes it usable again (and clears the count in the state file).
    await paths.node_succeeded(dead)
    assert paths.usable(dead) and state.node_failures().get(dead, 0) == 0


async def test_destination_choice(state: ClientState) -> None:
    consensus = consensus_of([f"10.0.{i}.1" for i in range(10)])
    paths = await selector(state, consensus)
    guards = await paths.ensure_guards()
    members = [n.as_hop() for n in consensus.nodes[:5]]
    off_guards = [m for m in members if m.node_id not in {g.node_id for g in guards}]
    # Preferred member if it is usable and not excluded.
    route = await paths.choose_route(members, prefer=off_guards[0].node_id)
    assert route.destination == off_guards[0]
    route = await paths.choose_route(
        members, prefer=off_guards[0].node_id, exclude={off_guards[0].node_id}
    )
    assert route.destination != off_guards[0]
    # Never on the path.
    for _ in range(20):
        route = await paths.choose_route(members)
        assert route.destination.node_id not in route.path.node_ids


async def test_preferred_destination_on_the_path_means_another_path(state: ClientState) -> None:
    """The follower's case (issue 11): its preferred node is one of our guards or a
    middle relay of a stored path; the request goes on a path without it, and keeps it
    as destination."""
    consensus = consensus_of([f"10.0.{i}.1" for i in range(10)])
    paths = await selector(state, consensus)
    guards = await paths.ensure_guards()
    members = [n.as_hop() for n in consensus.nodes]
    by_id = {m.node_id: m for m in members}
    # A guard preferred: every request goes through the other guard.
    for _ in range(10):
        route = await paths.choose_route(members, prefer=guards[0].node_id)
        assert route.destination == by_id[guards[0].node_id]
        assert route.path.guard.node_id == guards[1].node_id
        assert guards[0].node_id not in route.path.node_ids
    # A middle relay of a stored path preferred: that stored path is rebuilt without it.
    stored = await paths.choose_path()
    middle = stored.relays[1].node_id
    for _ in range(10):
        route = await paths.choose_route(members, prefer=middle)
        assert route.destination.node_id == middle
        assert middle not in route.path.node_ids
    assert all(middle not in p.node_ids for p in paths.paths)
    assert paths.rebuilt == 0  # not a failure
    # One guard only, and it is preferred: another destination, never that guard.
    with ClientState.open(state.path.parent / "one.sqlite3") as one_state:
        one = PathSelector(
            one_state, policy=PathPolicy(guards=1), rng=random.Random(3), now_ms=lambda: NOW
        )
        await one.load()
        one.set_consensus(consensus)
        (guard,) = await one.ensure_guards()
        route = await one.choose_route([*members[:3], by_id[guard.node_id]], prefer=guard.node_id)
        assert route.destination.node_id != guard.node_id
        assert route.destination.node_id not in route.path.node_ids


def test_route_refuses_a_destination_on_its_path() -> None:
    consensus = consensus_of([f"10.0.{i}.1" for i in range(4)])
    nodes = consensus.nodes
    with pytest.raises(InvalidArgument):
        Route(OnionPath((nodes[0], nodes[1])), nodes[1].as_hop())
    with pytest.raises(InvalidArgument):
        Route(OnionPath((nodes[0], nodes[1], nodes[0])), nodes[2].as_hop())
    assert Route(OnionPath((nodes[0], nodes[1])), nodes[2].as_hop()).hops()[-1] == nodes[2].as_hop()


def test_network_clock_median_and_reset() -> None:
    local = [1_000_000.0]
    clock = NetworkClock(lambda: local[0], offset_ms=0)
    assert clock.now() == 1_000_000
    # Replies from nodes 300 s ahead, one outlier: the median ignores the outlier.
    for node_offset in (300_000, 300_010, 9_999_999, 299_990, 300_005):
        clock.sample(int(local[0]) + node_offset, local[0] - 2, local[0] + 2)
    assert abs(clock.offset_ms - 300_000) <= 10
    assert clock.now() == int(local[0]) + clock.offset_ms
    # A refusal carries the node's time: earlier samples are forgotten at once.
    clock.reset(int(local[0]) - 60_000, local[0], local[0])
    assert clock.offset_ms == -60_000
    assert clock.measured == 6
