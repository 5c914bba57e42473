"""The path rule of every request (issue 11), as a property of the path selector
(client/paths.py) over random consensuses: the destination is never on the path, no
node is on it twice, the guard is one of the client's guards, and a preferred
destination is kept whenever a path of ours can leave it out.

No network: real state files and consensus documents, as in test_client_paths.py; the
attack on real node processes is tests/test_path_rules_on_devnet.py.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import hypothesis.strategies as st
import pytest
import trio
from hypothesis import HealthCheck, given, settings

from tests.test_client_paths import KEYS, NOW, consensus_of
from veil.client.errors import NoConsensus
from veil.client.paths import OnionPath, PathPolicy, PathSelector
from veil.client.state import ClientState
from veil.onion.packet import Hop

#: A node of a swarm hint (wrong_swarm) that our consensus does not list.
OUTSIDER = Hop(KEYS[-1].identity_public, KEYS[-1].onion_public, "10.9.9.9", 7999)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data())
def test_every_route_keeps_the_rule(data: st.DataObject) -> None:
    count = data.draw(st.integers(min_value=1, max_value=12), label="nodes")
    subnets = data.draw(st.lists(st.integers(0, 3), min_size=count, max_size=count))
    hosts = [f"10.0.{s}.{i + 1}" for i, s in enumerate(subnets)]
    consensus = consensus_of(hosts)
    nodes = consensus.nodes
    policy = PathPolicy(
        relays=data.draw(st.integers(1, 5), label="relays"),
        guards=data.draw(st.integers(1, 2), label="guards"),
    )
    seed = data.draw(st.integers(0, 2**32), label="seed")
    # The destination swarm: any non-empty set of nodes, now and then with a node our
    # consensus does not list (a wrong_swarm hint).
    indexes = data.draw(st.sets(st.integers(0, count - 1), min_size=1), label="swarm")
    members = [nodes[i].as_hop() for i in sorted(indexes)]
    if data.draw(st.booleans(), label="outsider"):
        members.append(OUTSIDER)
    ids = [n.node_id for n in nodes] + [OUTSIDER.node_id]
    failing = data.draw(st.lists(st.sampled_from(ids), max_size=8), label="failures")
    requests = data.draw(st.integers(1, 6), label="requests")

    async def check() -> None:
        # A state file of its own per example (guards and failures live in it).
        with (
            tempfile.TemporaryDirectory() as tmp,
            ClientState.open(Path(tmp) / "s.sqlite3") as state,
        ):
            paths = PathSelector(state, policy=policy, rng=random.Random(seed), now_ms=lambda: NOW)
            await paths.load()
            paths.set_consensus(consensus)
            for node_id in failing:
                await paths.node_failed(node_id)
            tried: list[OnionPath] = []
            for _ in range(requests):
                # A preferred node that may be a member, a guard, a stored path's relay,
                # or nothing; members and relays failed in this request.
                stored = [n for p in paths.paths for n in p.node_ids]
                guard_ids = [g.node_id for g in await paths.ensure_guards()]
                prefer = data.draw(
                    st.none() | st.sampled_from([*ids, *stored, *guard_ids]), label="prefer"
                )
                avoid = data.draw(st.sets(st.sampled_from(ids), max_size=3), label="avoid")
                exclude = data.draw(st.sets(st.sampled_from(ids), max_size=3), label="exclude")
                try:
                    route = await paths.choose_route(
                        members,
                        exclude_paths=tried,
                        avoid=avoid,
                        exclude=exclude,
                        prefer=prefer,
                    )
                except NoConsensus:
                    # Only when no path of ours can leave out every member: our one
                    # guard is the one node that holds the account.
                    guards = await paths.ensure_guards()
                    assert len(guards) == 1
                    assert {m.node_id for m in members} == {guards[0].node_id}
                    continue
                path_ids = route.path.node_ids
                assert route.destination.node_id not in path_ids
                assert len(set(path_ids)) == len(path_ids)
                assert route.path.guard.node_id in {g.node_id for g in paths.guards}
                assert route.destination in members
                assert all(consensus.node(n) is not None for n in path_ids)
                # A shorter path only when the network is smaller than a path.
                assert len(path_ids) >= min(policy.relays, count - 1)
                # The preference gives way only when no guard but the preferred node
                # (or one failed in this request) could carry the request.
                candidates = [m for m in members if m.node_id not in exclude] or members
                healthy = [m for m in candidates if paths.usable(m.node_id)] or candidates
                others = [g for g in paths.guards if g.node_id not in (prefer, *avoid)]
                if prefer in {m.node_id for m in healthy} and others:
                    assert route.destination.node_id == prefer
                if data.draw(st.booleans(), label="path failed"):
                    tried.append(route.path)
                    await paths.path_failed(route.path)

    trio.run(check)


@pytest.mark.parametrize("count", [2, 3, 4])
async def test_a_swarm_that_is_the_whole_small_network(tmp_path: Path, count: int) -> None:
    """Every node holds the account and the network is no larger than a path: each
    request still leaves its destination out, on a shorter path."""
    consensus = consensus_of(["127.0.0.1"] * count)
    members = [n.as_hop() for n in consensus.nodes]
    with ClientState.open(tmp_path / "s.sqlite3") as state:
        paths = PathSelector(state, rng=random.Random(count), now_ms=lambda: NOW)
        await paths.load()
        paths.set_consensus(consensus)
        seen = set()
        for _ in range(40):
            for prefer in (None, *(m.node_id for m in members)):
                route = await paths.choose_route(members, prefer=prefer)
                assert route.destination.node_id not in route.path.node_ids
                assert prefer is None or route.destination.node_id == prefer
                seen.add(route.destination.node_id)
        assert seen == {m.node_id for m in members}
