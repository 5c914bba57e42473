"""Swarm assignment: accounts to swarms on the ring, nodes to swarms (onion/swarm.py)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.onion.keys import AccountId
from veil.onion.swarm import (
    DEFAULT_TARGET_SIZE,
    RING_SIZE,
    SwarmRing,
    assign_swarms,
    check_assignment,
    max_swarm_size,
    min_swarm_size,
    new_swarm_id,
    ring_distance,
    swarm_for,
)

TOP = RING_SIZE - 1

positions = st.integers(min_value=0, max_value=TOP)
edge_positions = st.one_of(
    positions, st.sampled_from([0, 1, 2**63 - 1, 2**63, 2**63 + 1, TOP - 1, TOP])
)
node_id = st.binary(min_size=32, max_size=32)
node_sets = st.frozensets(node_id, max_size=60)
targets = st.integers(min_value=1, max_value=8)


def sizes_of(assignment: dict[bytes, int]) -> Counter[int]:
    return Counter(assignment.values())


def assert_bounds(assignment: dict[bytes, int], k: int) -> None:
    """The size guarantee of the module note, checked directly (not via check_assignment)."""
    sizes = sizes_of(assignment)
    n = len(assignment)
    if n == 0:
        assert sizes == {}
        return
    assert max(sizes.values()) <= 2 * k - 1
    if len(sizes) >= 2:
        assert min(sizes.values()) >= (k + 1) // 2
    if n >= 2 * k:
        assert len(sizes) >= 2


def neighbours(sid: int, ids: list[int]) -> set[int]:
    """The swarm IDs on either side of ``sid`` on the ring (``sid`` itself excluded)."""
    ring = sorted(set(ids) | {sid})
    i = ring.index(sid)
    return {ring[i - 1], ring[(i + 1) % len(ring)]} - {sid}


# --- accounts to swarms ----------------------------------------------------------------


def test_ring_position_is_sessions_pubkey_to_swarm_space() -> None:
    # Vectors from Session's own tests (libsession-util, oxen-storage-server): real keys.
    assert (
        AccountId.parse(
            "05cf27da303a50ac8c4b2d43d27259505c9bcd73fc21cf2a57902c3d050730b604"
        ).ring_position
        == 10370619079776428163
    )
    assert (
        AccountId.parse(
            "05ffba630924aa1224bb930dde21c0d11bf004608f2812217f8ac812d6c7e3ad48"
        ).ring_position
        == 4532060000165252872
    )


SESSION_SWARMS = [100, 200, 300, 399, 498, 596, 694]


@pytest.mark.parametrize(
    ("position", "expected"),
    [
        # Exact matches.
        (100, 100),
        (200, 200),
        (498, 498),
        # Nearest.
        (0, 100),
        (1, 100),
        # Nearest the long way round: wrap-around in both directions.
        (0x8000000000000000, 694),
        (0xA000000000000000, 100),
        (TOP, 100),
        (TOP - 1, 100),
        # Exactly half-way between two swarms: the lower (counter-clockwise) one.
        (149, 100),
        (150, 100),
        (151, 200),
        (250, 200),
        (251, 300),
        (349, 300),
        (350, 399),
        (448, 399),
        (449, 498),
        (547, 498),
        (548, 596),
        (645, 596),
        (646, 694),
        # Half-way across the wrapping gap (694 -> 100): the tie goes to 694.
        (0x800000000000018C, 694),
        (0x800000000000018D, 694),
        (0x800000000000018E, 100),
    ],
)
def test_swarm_for_matches_sessions_rule(position: int, expected: int) -> None:
    # The cases of libsession-util's get_swarm test, written as ring positions.
    assert swarm_for(position, SESSION_SWARMS) == expected
    assert swarm_for(position, list(reversed(SESSION_SWARMS))) == expected


def test_swarm_for_ties_across_zero_and_at_the_top() -> None:
    ids = [*SESSION_SWARMS, RING_SIZE - 20]
    # Half-way between 2**64 - 20 and 100 is 40: the tie goes to the swarm before zero.
    assert swarm_for(39, ids) == RING_SIZE - 20
    assert swarm_for(40, ids) == RING_SIZE - 20
    assert swarm_for(41, ids) == 100
    # A swarm at 0 is 1 away from 2**64 - 1 (no overflow of the distance).
    ids = [0, *ids]
    assert swarm_for(TOP, ids) == 0
    assert swarm_for(TOP - 1, ids) == 0


def test_a_single_swarm_takes_every_account() -> None:
    ring = SwarmRing([12345])
    for position in (0, 12345, 2**63 + 12345, TOP):
        assert ring.swarm_for(position) == 12345


def test_swarm_for_refuses_no_swarms_and_bad_positions() -> None:
    with pytest.raises(ValueError, match="no swarms"):
        swarm_for(5, [])
    with pytest.raises(ValueError, match="ring position"):
        swarm_for(RING_SIZE, [1])
    with pytest.raises(ValueError, match="ring position"):
        swarm_for(-1, [1])
    with pytest.raises(ValueError, match="swarm ID"):
        SwarmRing([RING_SIZE])


@settings(max_examples=300)
@given(st.lists(edge_positions, min_size=1, max_size=12), edge_positions)
def test_swarm_for_is_the_nearest_swarm_with_ties_to_the_left(ids: list[int], pos: int) -> None:
    got = swarm_for(pos, ids)
    assert got in ids
    best = min(ring_distance(pos, sid) for sid in ids)
    assert ring_distance(pos, got) == best
    tied = [sid for sid in set(ids) if ring_distance(pos, sid) == best]
    if len(tied) == 2:
        # Equal distance both ways: the one reached going down from the position.
        assert (pos - got) % RING_SIZE == best


@given(st.lists(positions, min_size=1, max_size=20, unique=True), st.lists(positions, max_size=50))
def test_every_account_is_in_exactly_one_swarm(ids: list[int], accounts: list[int]) -> None:
    ring = SwarmRing(ids)
    for pos in accounts:
        owners = {ring.swarm_for(pos), swarm_for(pos, reversed(ids)), swarm_for(pos, sorted(ids))}
        assert len(owners) == 1  # one answer, whatever the order of the IDs
        assert owners <= set(ids)


# --- new swarm IDs -----------------------------------------------------------------------


def test_new_swarm_id_is_the_midpoint_of_the_largest_gap() -> None:
    assert new_swarm_id([]) == 0
    assert new_swarm_id([0]) == 2**63
    assert new_swarm_id([0, 2**63]) == 2**62  # two equal gaps: the one starting lowest
    assert new_swarm_id([0, 2**62, 2**63]) == 3 * 2**62
    # The largest gap wraps round zero: the midpoint wraps too.
    assert new_swarm_id([2**62, 2**63]) == (2**63 + (2**64 - 2**62) // 2) % RING_SIZE
    assert new_swarm_id([TOP - 1]) == (TOP - 1 + 2**63) % RING_SIZE


# --- nodes to swarms ---------------------------------------------------------------------


def test_min_and_max_sizes() -> None:
    assert (min_swarm_size(5), max_swarm_size(5)) == (3, 9)
    assert (min_swarm_size(1), max_swarm_size(1)) == (1, 1)
    assert (min_swarm_size(4), max_swarm_size(4)) == (2, 7)
    with pytest.raises(ValueError):
        min_swarm_size(0)
    with pytest.raises(ValueError):
        assign_swarms([b"x" * 32], target_size=0)
    with pytest.raises(ValueError, match="swarm ID"):
        assign_swarms([b"x" * 32], 5, {b"x" * 32: RING_SIZE})


def test_empty_and_single_node_networks() -> None:
    assert assign_swarms([]) == {}
    only = b"\x01" * 32
    assert assign_swarms([only]) == {only: 0}
    # A network smaller than one swarm is one swarm, and stays one as nodes come and go.
    few = [bytes([i]) * 32 for i in range(1, 4)]
    first = assign_swarms(few)
    assert set(first.values()) == {0}
    assert assign_swarms(few[:1], previous=first) == {few[0]: 0}


@pytest.mark.parametrize("n", [1, 4, 5, 9, 10, 11, 24, 25, 101])
def test_fresh_network_has_n_over_k_swarms(n: int) -> None:
    nodes = [random.Random(n * 1000 + i).randbytes(32) for i in range(n)]
    assignment = assign_swarms(nodes, DEFAULT_TARGET_SIZE)
    assert len(set(assignment.values())) == max(1, n // DEFAULT_TARGET_SIZE)
    assert_bounds(assignment, DEFAULT_TARGET_SIZE)


@settings(max_examples=150)
@given(node_sets, targets, st.randoms(use_true_random=False))
def test_every_node_in_one_swarm_within_bounds_in_any_order(
    nodes: frozenset[bytes], k: int, rnd: random.Random
) -> None:
    assignment = assign_swarms(nodes, k)
    assert set(assignment) == nodes  # every node exactly once (a dict key)
    assert_bounds(assignment, k)
    check_assignment(assignment, k)
    shuffled = list(nodes)
    rnd.shuffle(shuffled)
    assert assign_swarms(shuffled, k) == assignment
    assert assign_swarms(shuffled + shuffled, k) == assignment  # a set: repeats are one node


@settings(max_examples=150)
@given(
    node_sets,
    targets,
    st.dictionaries(node_id, st.sampled_from([0, 7, 2**40, 2**63, TOP]), max_size=30),
    st.floats(min_value=0, max_value=1),
)
def test_bounds_hold_whatever_the_previous_assignment(
    nodes: frozenset[bytes], k: int, extra: dict[bytes, int], keep: float
) -> None:
    # A previous assignment that no run of this function would give: lopsided swarms,
    # departed nodes, a few swarm IDs shared by many nodes.
    node_list = sorted(nodes)
    previous = {n: [0, 7, 2**40, 2**63, TOP][i % 5] for i, n in enumerate(node_list)}
    previous = dict(list(previous.items())[: int(len(previous) * keep)])
    previous.update(extra)
    assignment = assign_swarms(nodes, k, previous)
    assert set(assignment) == nodes
    assert_bounds(assignment, k)
    assert assign_swarms(reversed(node_list), k, dict(reversed(previous.items()))) == assignment


@settings(max_examples=150)
@given(node_sets, targets, node_id, st.lists(positions, min_size=1, max_size=40))
def test_one_node_joining_moves_few_nodes_and_only_the_new_swarms_accounts(
    nodes: frozenset[bytes], k: int, newcomer: bytes, accounts: list[int]
) -> None:
    if newcomer in nodes:
        return
    before = assign_swarms(nodes, k)
    after = assign_swarms(nodes | {newcomer}, k, before)
    assert_bounds(after, k)
    old_ids, new_ids = set(before.values()), set(after.values())
    assert old_ids <= new_ids, "no swarm is dissolved by a join"
    created = new_ids - old_ids
    assert len(created) <= 1
    moved_nodes = [n for n in nodes if before[n] != after[n]]
    assert len(moved_nodes) <= k - 1
    if not created:
        assert not moved_nodes
        return
    (new_sid,) = created
    if not old_ids:
        return
    old_ring, new_ring = SwarmRing(old_ids), SwarmRing(new_ids)
    sides = neighbours(new_sid, sorted(old_ids))
    for pos in [*accounts, new_sid, (new_sid + 1) % RING_SIZE, (new_sid - 1) % RING_SIZE]:
        was, now = old_ring.swarm_for(pos), new_ring.swarm_for(pos)
        if was != now:
            assert now == new_sid
            assert was in sides  # taken from one of the two ring neighbours only


@settings(max_examples=150)
@given(node_sets, targets, st.data(), st.lists(positions, min_size=1, max_size=40))
def test_one_node_leaving_moves_few_nodes_and_only_the_dissolved_swarms_accounts(
    nodes: frozenset[bytes], k: int, data: st.DataObject, accounts: list[int]
) -> None:
    if not nodes:
        return
    leaver = data.draw(st.sampled_from(sorted(nodes)))
    before = assign_swarms(nodes, k)
    remaining = nodes - {leaver}
    after = assign_swarms(remaining, k, before)
    assert_bounds(after, k)
    old_ids, new_ids = set(before.values()), set(after.values())
    assert new_ids <= old_ids, "no swarm is created by a departure"
    removed = old_ids - new_ids
    assert len(removed) <= (1 if remaining else len(old_ids))
    moved_nodes = [n for n in remaining if before[n] != after[n]]
    if not removed:
        assert len(moved_nodes) <= 1  # at most one node stolen to repair a swarm
        return
    assert len(moved_nodes) <= min_swarm_size(k) - 1  # the dissolved swarm's members
    if not new_ids:
        return
    (gone,) = removed
    old_ring, new_ring = SwarmRing(old_ids), SwarmRing(new_ids)
    sides = neighbours(gone, sorted(new_ids))
    for pos in [*accounts, gone, (gone + 1) % RING_SIZE, (gone - 1) % RING_SIZE]:
        was, now = old_ring.swarm_for(pos), new_ring.swarm_for(pos)
        if was != now:
            assert was == gone
            assert now in sides  # handed to one of the two ring neighbours only


@settings(max_examples=60)
@given(
    targets,
    st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=10**6)), max_size=80),
)
def test_bounds_hold_through_a_history_of_joins_and_departures(
    k: int, steps: list[tuple[bool, int]]
) -> None:
    rnd = random.Random(k)
    nodes: set[bytes] = set()
    assignment: dict[bytes, int] = {}
    for join, pick in steps:
        if join or not nodes:
            nodes.add(rnd.randbytes(32))
        else:
            nodes.remove(sorted(nodes)[pick % len(nodes)])
        new = assign_swarms(nodes, k, assignment)
        assert set(new) == nodes
        assert_bounds(new, k)
        # One join or departure creates or dissolves at most one swarm.
        assert len(set(assignment.values()) ^ set(new.values())) <= 1
        assignment = new


def test_ten_thousand_nodes() -> None:
    rnd = random.Random(1)
    nodes = [rnd.randbytes(32) for _ in range(10_000)]
    first = assign_swarms(nodes)
    assert len(set(first.values())) == 2000
    newcomers = [rnd.randbytes(32) for _ in range(500)]
    second = assign_swarms(nodes[300:] + newcomers, 5, first)
    assert_bounds(second, 5)
    assert set(first.values()) <= set(second.values())
    # Newcomers outnumber the gaps that departures left, so they repair every swarm that
    # fell short and no node that stayed has to move.
    assert all(first[n] == second[n] for n in nodes[300:])


def test_check_assignment_refuses_what_assign_swarms_never_gives() -> None:
    ids = [bytes([i]) * 32 for i in range(12)]
    check_assignment({n: 0 for n in ids[:9]}, 5)  # one swarm of 2K - 1: fine
    with pytest.raises(ValueError, match="more than the maximum 9"):
        check_assignment({n: 0 for n in ids[:10]}, 5)
    with pytest.raises(ValueError, match="fewer than the minimum 3"):
        check_assignment({**{n: 0 for n in ids[:5]}, ids[5]: 1, ids[6]: 1}, 5)
    check_assignment({ids[0]: 0}, 5)  # a sole swarm may be small
    with pytest.raises(ValueError, match="swarm ID"):
        check_assignment({ids[0]: RING_SIZE}, 5)
