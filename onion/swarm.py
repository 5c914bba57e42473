"""Swarms: which nodes store which accounts (Session's rule, made deterministic).

Design note
-----------
Accounts live on a 64-bit ring. An account's position is Session's
``pubkey_to_swarm_space``: the XOR of the four big-endian 8-byte words of its X25519
key (:attr:`veil.onion.keys.AccountId.ring_position`). Every swarm has a 64-bit ID, which is
also a point on the ring, and an account belongs to the swarm whose ID is nearest its
position, measured both ways round the ring (so 2**64 - 1 and 0 are neighbours). A
position exactly half-way between two swarms goes to the one counter-clockwise of it
(the lower side), as in Session's storage server. :func:`swarm_for` and
:class:`SwarmRing` answer that question; the answer depends only on the set of swarm
IDs, never on the nodes in them.

Which nodes form which swarm is :func:`assign_swarms`. The choice here is the *sticky*
scheme of Session (oxen's ``calc_swarm_changes``), not a stateless function of the
node set: the new assignment is a function of the previous one and of the current set
of nodes. Why:

* Accounts move only when the set of swarm IDs changes, and a sticky scheme changes it
  rarely and by one ID at a time. A stateless scheme (swarms cut from the sorted node
  list, say) reshuffles many swarms when one node joins, because every cut point after
  it moves; local-boundary schemes avoid that but give swarm sizes with no useful upper
  or lower bound.
* Nodes move only when they must: a node stays in its swarm for as long as the swarm
  lives, so the data a node holds stays useful and replication traffic stays small.
* Agreement is still easy. The function is deterministic (no randomness, every tie
  broken by the smallest ID), and its inputs are public: the previous consensus, which
  every authority and client holds, and the set of nodes the authorities accept. Two
  authorities that agree on those two inputs produce identical assignments, and so
  identical consensus bodies. Because a reader cannot recompute a sticky assignment
  from one document alone, the consensus carries each node's swarm ID and readers check
  the invariants below (:func:`check_assignment`) rather than the exact assignment; an
  authority can recompute it exactly from the previous consensus.

The rule, for a target size ``K`` (default 5), a minimum ``m = ceil(K / 2)`` and a
maximum ``2K - 1``; "smallest" and "largest" swarm break ties by the lower swarm ID,
and nodes are taken in order of their ID:

1. Every node that is still present keeps its previous swarm. Nodes that were not
   assigned before (new, or returning) form the *pool*.
2. Repair: while some swarm has fewer than ``m`` nodes (the smallest such first), give
   it a node from the pool; failing that, steal one from the largest swarm that has more
   than ``K``; failing that, dissolve it (unless it is the only swarm): its nodes join
   the pool and its ID leaves the ring.
3. Fill: each pool node joins the smallest swarm that has fewer than ``K`` nodes.
4. Create: while the nodes left over plus the *excess* (nodes above ``K`` in all swarms)
   reach ``K``, form a new swarm of ``K`` nodes, leftover nodes first, then nodes stolen
   from the largest swarms. Its ID is the midpoint of the largest gap between existing
   swarm IDs (the first swarm of a network gets ID 0), as oxen's ``get_new_swarm_id``
   does, which keeps the accounts evenly spread over swarms.
5. Nodes still left over join the smallest swarms, one at a time.

Guarantees (tested as properties in ``tests/test_swarm.py``):

* every node is in exactly one swarm, every account in exactly one swarm;
* with two swarms or more, every swarm has between ``m`` and ``2K - 1`` nodes; a network
  of fewer than ``2K`` nodes may be one swarm of them all (of any size if fewer than
  ``m``). This holds whatever the previous assignment was;
* one node joining a network assigned by this function creates at most one swarm ID and
  removes none, so the only accounts that move are those that go to the new swarm, and
  they come from its two ring neighbours (at most half of the largest gap: about two
  swarms' share); at most ``K - 1`` existing nodes change swarm;
* one node leaving removes at most one swarm ID and creates none, so the only accounts
  that move are those of the dissolved swarm, which go to its two ring neighbours; at
  most ``m - 1`` remaining nodes change swarm.

Limitation: Session orders joining nodes with a seed from the block hash, so that an
operator cannot choose where a node lands. veil has no shared randomness yet; a node
still cannot pick its swarm by choosing its key (a lone joiner goes to the smallest
swarm whatever its ID), but an adversary who times its joins can aim at the swarm that
is smallest at that moment.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

__all__ = [
    "DEFAULT_TARGET_SIZE",
    "RING_SIZE",
    "SwarmRing",
    "assign_swarms",
    "check_assignment",
    "max_swarm_size",
    "min_swarm_size",
    "new_swarm_id",
    "ring_distance",
    "swarm_for",
]

#: Positions and swarm IDs are integers in ``[0, RING_SIZE)``.
RING_SIZE: Final = 2**64
#: Nodes per swarm that the network aims for (DESIGN: 5).
DEFAULT_TARGET_SIZE: Final = 5
#: The first swarm of a network (oxen's choice too).
FIRST_SWARM_ID: Final = 0


def min_swarm_size(target_size: int) -> int:
    """Below this many nodes a swarm is repaired or dissolved: ``ceil(target_size / 2)``."""
    _check_target(target_size)
    return (target_size + 1) // 2


def max_swarm_size(target_size: int) -> int:
    """No swarm assigned by :func:`assign_swarms` has more nodes: ``2 * target_size - 1``."""
    _check_target(target_size)
    return 2 * target_size - 1


def ring_distance(a: int, b: int) -> int:
    """The shorter way round the ring between two positions."""
    d = (a - b) % RING_SIZE
    return min(d, RING_SIZE - d)


# --- accounts to swarms ----------------------------------------------------------------


class SwarmRing:
    """The sorted swarm IDs of one assignment, for repeated lookups in O(log n)."""

    __slots__ = ("_ids",)

    def __init__(self, swarm_ids: Iterable[int]) -> None:
        ids = sorted(set(swarm_ids))
        for sid in ids[:1] + ids[-1:]:
            _check_position(sid, "swarm ID")
        self._ids: tuple[int, ...] = tuple(ids)

    @property
    def ids(self) -> tuple[int, ...]:
        return self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def swarm_for(self, position: int) -> int:
        """The ID of the swarm nearest ``position``; :class:`ValueError` if there is none."""
        _check_position(position, "ring position")
        ids = self._ids
        n = len(ids)
        if n == 0:
            raise ValueError("no swarms: the network has no nodes")
        if n == 1:
            return ids[0]
        i = bisect_left(ids, position)
        right = ids[i] if i < n else ids[0]  # first ID at or after the position, wrapping
        left = ids[i - 1]  # the one before it (ids[-1] when i == 0: wrapping the other way)
        d_right = (right - position) % RING_SIZE
        d_left = (position - left) % RING_SIZE
        # Strictly nearer on the right wins; a tie goes left, as in Session.
        return right if d_right < d_left else left


def swarm_for(position: int, swarm_ids: Iterable[int]) -> int:
    """The ID of the swarm nearest ``position`` on the ring (see the module note).

    Sorts ``swarm_ids`` on every call; use :class:`SwarmRing` for many lookups.
    """
    return SwarmRing(swarm_ids).swarm_for(position)


# --- nodes to swarms -------------------------------------------------------------------


def new_swarm_id(existing: Iterable[int]) -> int:
    """The ID a new swarm gets: the midpoint of the largest gap between ``existing`` IDs.

    0 when there are none; ties between equal gaps go to the gap that starts lowest.
    """
    gaps = _Gaps(sorted(set(existing)))
    return gaps.take_midpoint()


def assign_swarms(
    node_ids: Iterable[bytes],
    target_size: int = DEFAULT_TARGET_SIZE,
    previous: Mapping[bytes, int] | None = None,
) -> dict[bytes, int]:
    """Assign every node to a swarm: ``{node_id: swarm_id}`` (see the module note).

    ``previous`` is the assignment of the last consensus (nodes in it that are no longer
    in ``node_ids`` are ignored). The result depends only on the *set* of ``node_ids``
    and on ``previous``, never on the order they come in. Raises :class:`ValueError` for
    a ``target_size`` below 1 or a previous swarm ID outside ``[0, 2**64)``.
    """
    _check_target(target_size)
    k = target_size
    m = min_swarm_size(k)
    nodes = set(node_ids)
    for node in nodes:
        if not isinstance(node, bytes):
            raise TypeError("node IDs are bytes")

    members: dict[int, set[bytes]] = {}
    pool: list[bytes] = []  # a heap: the smallest node ID is taken first
    for node in nodes:
        sid = previous.get(node) if previous is not None else None
        if sid is None:
            pool.append(node)
        else:
            _check_position(sid, "swarm ID")
            members.setdefault(sid, set()).add(node)
    heapq.heapify(pool)

    _repair(members, pool, k, m)
    rest = _fill(members, pool, k)
    _create(members, rest, k)
    _place_leftovers(members, rest)

    return {node: sid for sid, group in members.items() for node in group}


def check_assignment(assignment: Mapping[bytes, int], target_size: int) -> None:
    """Raise :class:`ValueError` unless ``assignment`` keeps :func:`assign_swarms`'s bounds.

    What a reader of a consensus can check without the previous one: swarm IDs are on
    the ring, no swarm has more than ``2K - 1`` nodes, and when there are two swarms or
    more, none has fewer than ``ceil(K / 2)``.
    """
    low, high = min_swarm_size(target_size), max_swarm_size(target_size)
    sizes: dict[int, int] = {}
    for sid in assignment.values():
        _check_position(sid, "swarm ID")
        sizes[sid] = sizes.get(sid, 0) + 1
    for sid, size in sorted(sizes.items()):
        if size > high:
            raise ValueError(f"swarm {sid} has {size} nodes, more than the maximum {high}")
        if size < low and len(sizes) > 1:
            raise ValueError(f"swarm {sid} has {size} nodes, fewer than the minimum {low}")


# --- the steps of assign_swarms ----------------------------------------------------------


def _repair(members: dict[int, set[bytes]], pool: list[bytes], k: int, m: int) -> None:
    """Step 2: bring every swarm up to ``m`` nodes, or dissolve it (never the last one)."""
    starving = [(len(g), sid) for sid, g in members.items() if len(g) < m]
    heapq.heapify(starving)
    donors = _Donors(members, k)
    while starving:
        size, sid = starving[0]
        group = members.get(sid)
        if group is None or len(group) != size:  # a stale heap entry
            heapq.heappop(starving)
            if group is not None and len(group) < m:
                heapq.heappush(starving, (len(group), sid))
            continue
        if pool:
            node = heapq.heappop(pool)
        else:
            stolen = donors.steal()
            if stolen is None:
                if len(members) == 1:
                    return  # the only swarm stays, however small: there is nowhere to go
                heapq.heappop(starving)
                for orphan in members.pop(sid):
                    heapq.heappush(pool, orphan)
                continue
            node = stolen
        group.add(node)
        if len(group) < m:
            heapq.heapreplace(starving, (len(group), sid))
        else:
            heapq.heappop(starving)


def _fill(members: dict[int, set[bytes]], pool: list[bytes], k: int) -> list[bytes]:
    """Step 3: pool nodes fill the smallest swarms up to ``k``; return those left over."""
    under = [(len(g), sid) for sid, g in members.items() if len(g) < k]
    heapq.heapify(under)
    rest: list[bytes] = []
    while pool:
        node = heapq.heappop(pool)
        if under:
            size, sid = under[0]
            members[sid].add(node)
            if size + 1 < k:
                heapq.heapreplace(under, (size + 1, sid))
            else:
                heapq.heappop(under)
        else:
            rest.append(node)  # in increasing order: the pool is a heap
    return rest


def _create(members: dict[int, set[bytes]], rest: list[bytes], k: int) -> None:
    """Step 4: new swarms of ``k`` from leftover nodes and the excess of large swarms."""
    donors = _Donors(members, k)
    gaps = _Gaps(sorted(members))
    while len(rest) + donors.excess >= k:
        take = min(k, len(rest))
        group = set(rest[:take])
        del rest[:take]
        while len(group) < k:
            stolen = donors.steal()
            if stolen is None:  # impossible: the loop condition counted the excess
                raise AssertionError("excess miscounted")
            group.add(stolen)
        members[gaps.take_midpoint()] = group


def _place_leftovers(members: dict[int, set[bytes]], rest: list[bytes]) -> None:
    """Step 5: fewer than ``k`` nodes left: one by one into the smallest swarm."""
    if not rest:
        return
    if not members:  # a network smaller than one swarm: it is one swarm
        members[FIRST_SWARM_ID] = set(rest)
        return
    sizes = [(len(g), sid) for sid, g in members.items()]
    heapq.heapify(sizes)
    for node in rest:
        size, sid = sizes[0]
        members[sid].add(node)
        heapq.heapreplace(sizes, (size + 1, sid))


class _Donors:
    """The swarms with more than ``k`` nodes, largest first, and their total excess.

    Only :meth:`steal` shrinks a donor, so the heap stays exact; swarms that are
    created or repaired meanwhile never exceed ``k`` and are not donors.
    """

    __slots__ = ("_heap", "_k", "_members", "excess")

    def __init__(self, members: dict[int, set[bytes]], k: int) -> None:
        self._members = members
        self._k = k
        self._heap = [(-len(g), sid) for sid, g in members.items() if len(g) > k]
        heapq.heapify(self._heap)
        self.excess = sum(len(members[sid]) - k for _, sid in self._heap)

    def steal(self) -> bytes | None:
        """Take the greatest node ID from the largest donor; None if there is no donor."""
        if not self._heap:
            return None
        _, sid = self._heap[0]
        group = self._members[sid]
        node = max(group)
        group.remove(node)
        self.excess -= 1
        if len(group) > self._k:
            heapq.heapreplace(self._heap, (-len(group), sid))
        else:
            heapq.heappop(self._heap)
        return node


class _Gaps:
    """The gaps between consecutive swarm IDs round the ring, largest first.

    A gap is ``(-length, start)``: the heap's order is "longest, then lowest start".
    Taking a midpoint splits that gap in two, so a run of creations costs O(log n) each.
    """

    __slots__ = ("_heap",)

    def __init__(self, sorted_ids: Sequence[int]) -> None:
        n = len(sorted_ids)
        if n == 0:
            self._heap: list[tuple[int, int]] = []
        else:
            self._heap = [
                (-((sorted_ids[(i + 1) % n] - sorted_ids[i]) % RING_SIZE or RING_SIZE), sid)
                for i, sid in enumerate(sorted_ids)
            ]
            heapq.heapify(self._heap)

    def take_midpoint(self) -> int:
        if not self._heap:
            self._heap.append((-RING_SIZE, FIRST_SWARM_ID))
            return FIRST_SWARM_ID
        neg_length, start = self._heap[0]
        length = -neg_length
        if length < 2:
            raise ValueError("the ring is full")  # 2**64 swarms: not in this universe
        half = length // 2
        mid = (start + half) % RING_SIZE
        heapq.heapreplace(self._heap, (-half, start))
        heapq.heappush(self._heap, (-(length - half), mid))
        return mid


def _check_target(target_size: int) -> None:
    if not isinstance(target_size, int) or isinstance(target_size, bool) or target_size < 1:
        raise ValueError(f"a swarm's target size is a positive integer, not {target_size!r}")


def _check_position(value: int, what: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < RING_SIZE:
        raise ValueError(f"a {what} is an integer in [0, 2**64), not {value!r}")
