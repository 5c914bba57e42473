"""Guards, onion paths and failure counts: which nodes a client's packets go through.

Design note
-----------
DESIGN.md ("Onion packets"): a path is 3 relays, a guard and two others, followed by the
destination node; a client keeps 2 guards, uses at most one node per /24, and rebuilds a
path after 3 failures. This module is that policy, and nothing else: no I/O but the
state file (through ``trio.to_thread``), no packets.

* **Guards** are the first hop of every path, so only they see the client's address.
  Two are kept in the state file, so a restarted client uses the same ones (a client
  that picked new guards at every start would sooner or later pick a hostile one, the
  reason Tor has guards). A guard is replaced when it leaves the consensus or after
  :attr:`PathPolicy.node_failure_limit` consecutive failures, unless every guard is
  failing (then the client's own network is the likely culprit, and the guards are
  kept); until then, a request that failed through one guard is retried through the
  other.
* **Paths** are built ahead of use and shared by concurrent requests: one per guard.
  The destination is added per request (a node of the swarm that holds the account),
  so a path is ``relays + [destination]``. A path's failures are counted; at
  :attr:`PathPolicy.path_failure_limit` it is dropped and a new one built (same guard,
  new middle relays).
* **The destination is never on the path, and no node is on it twice.** A node that
  is both a relay and the destination of one packet learns more than either role
  should: as the guard, the client's address *and* the account it asks about; as a
  middle relay, that it is one hop from the end. So a request's path and destination
  are chosen together, by :meth:`PathSelector.choose_route`, the one way to get them;
  :class:`Route` refuses to exist otherwise. A destination the caller prefers (a
  receiver keeps polling the member whose order its position follows) that is on the
  chosen path means another path: through the other guard if it is the guard (the
  stored path for that guard is rebuilt without it if it is a middle relay; it stays
  so, as the receiver keeps preferring it); another destination only when no path of
  ours can leave it out (it is our only guard, or every other guard has failed in
  this request). Without a preference, a member off the stored path is picked; if the
  whole swarm is on it (a swarm no larger than a path), a member is picked and this
  request goes on a one-off path without it. A network of one node has no route:
  :class:`~veil.client.errors.NoConsensus`, never a request that breaks the rule.
* **Failure counts per node** are consecutive failures (a success resets them),
  mirrored in memory and written to the state file only when they change from zero or
  grow, so the hot path (a success through healthy nodes) never writes. A node at the
  limit is left out of new paths and destinations; counts older than
  :attr:`PathPolicy.forget_after_ms` are forgotten, so a node that came back gets
  another chance.
* **One node per /24 where addresses allow** (:mod:`veil.client.path_rules`): a
  preference that degrades, never a reason to fail.
* **Tries in flight follow the consensus** (:meth:`PathSelector.in_flight`). A node
  lost silently (its cable pulled, its host frozen: no reset, no answer) holds every
  request whose packet or reply is on its way through it until the client's limit
  for a try, 45 s for a long-poll; the network learns of the loss when the authorities
  drop the node from the consensus. So a request waits inside
  :meth:`PathSelector.in_flight`, and :meth:`set_consensus` cancels the wait of every
  request whose route (relays and destination) holds a node that the new consensus
  no longer lists, or lists at another address or key (it restarted elsewhere), which
  the previous consensus listed as the request had it. The caller (the onion client)
  then retries on another path: see :mod:`veil.client.onion_client`. A node that the
  consensus never listed (a swarm named by a node's ``wrong_swarm`` answer, from a
  consensus newer than ours) is not judged by ours.

Randomness is an injected :class:`random.Random` (tests can seed it); the default is
:class:`random.SystemRandom`, as path choice is a privacy decision.

Concurrency: every method is called from the trio thread. The ``async`` ones await
state writes in a worker thread; :meth:`PathSelector.ensure_guards` is serialized by a
lock so two requests never pick two different replacements at once. On cancel, a state
write already started still completes (:mod:`veil.client.state`), and the in-memory view is
updated before the write, so it stays consistent.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Iterable, Sequence
from types import TracebackType

import trio

from veil.client.errors import InvalidArgument, NoConsensus
from veil.client.path_rules import OnionPath, PathPolicy, Route, pick_spread, subnet_of
from veil.client.state import ClientState, GuardRecord
from veil.onion.directory import Consensus, ConsensusNode
from veil.onion.packet import Hop
from veil.onion.wallclock import wall_clock_ms

__all__ = ["InFlight", "OnionPath", "PathPolicy", "PathSelector", "Route", "subnet_of"]


class InFlight:
    """A request waiting for its answer through ``hops``, as a ``with`` block (made by
    :meth:`PathSelector.in_flight`): ``gone`` are the IDs of the nodes of ``hops`` that a
    newer consensus dropped, which cancelled the wait (empty while none did).

    A class rather than a generator-based context manager: there is one per onion
    request, and the generator's form cost about twice the cancel scope's own (about
    10 us on this project's loaded 2-core machines; a loopback round trip is 2-4 ms)."""

    __slots__ = ("_waiting", "gone", "hops", "scope")

    def __init__(self, hops: Sequence[Hop], waiting: set[InFlight]) -> None:
        self.hops = tuple(hops)
        self.scope = trio.CancelScope()
        self.gone: frozenset[bytes] = frozenset()
        self._waiting = waiting

    def __enter__(self) -> InFlight:
        self._waiting.add(self)
        self.scope.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._waiting.discard(self)
        return self.scope.__exit__(exc_type, exc, tb)


class PathSelector:
    """Guards, paths and failure counts for one client (see the module note)."""

    def __init__(
        self,
        state: ClientState,
        *,
        policy: PathPolicy | None = None,
        rng: random.Random | None = None,
        now_ms: Callable[[], float] | None = None,
    ) -> None:
        self.state = state
        self.policy = policy or PathPolicy()
        self.rng = rng or random.SystemRandom()
        #: The local wall clock in ms (stamps of guards; forgetting failures); _now
        #: truncates it to whole ms, so a float clock (NetworkClock.local) is fine.
        self._now_ms = now_ms or wall_clock_ms
        self._consensus: Consensus | None = None
        self._guards: list[GuardRecord] = []
        self._paths: dict[bytes, OnionPath] = {}  # guard node ID -> its path
        # Consecutive failures by node, mirrored from the state file.
        self._failures: dict[bytes, int] = {}
        # When each counted node last failed (ms); see forget_failures.
        self._failed_at: dict[bytes, int] = {}
        self._guard_lock = trio.Lock()
        #: Requests waiting for their answers (see in_flight).
        self._in_flight: set[InFlight] = set()
        self.rebuilt = 0  # paths dropped after too many failures (for status and tests)
        self.guards_replaced = 0

    # --- loading and consensus -------------------------------------------------------------

    async def load(self) -> None:
        """Read guards and failure counts from the state file; forget old failures."""
        now = self._now()
        cutoff = max(0, now - self.policy.forget_after_ms)
        await trio.to_thread.run_sync(self.state.forget_failures, cutoff)
        self._guards = self.state.get_guards()
        self._failures = self.state.node_failures()
        self._failed_at = dict.fromkeys(self._failures, now)

    async def forget_failures(self) -> None:
        """Forget the counts of nodes whose last failure is older than
        :attr:`PathPolicy.forget_after_ms` (called now and then by the client)."""
        cutoff = max(0, self._now() - self.policy.forget_after_ms)
        stale = [n for n, at in self._failed_at.items() if at < cutoff]
        if not stale:
            return
        for node_id in stale:
            self._failures.pop(node_id, None)
            self._failed_at.pop(node_id, None)
        await trio.to_thread.run_sync(self.state.forget_failures, cutoff)

    def set_consensus(self, consensus: Consensus) -> None:
        """Use ``consensus`` from now on: paths through nodes it no longer lists, or
        lists with another address or key, are dropped (guards that left it are
        replaced by the next :meth:`ensure_guards`), and requests in flight through
        such a node are cancelled (:meth:`in_flight`)."""
        previous, self._consensus = self._consensus, consensus
        for guard_id, path in list(self._paths.items()):
            # Gone, or listed with another address or onion key (restarted elsewhere).
            if any(consensus.node(n.node_id) != n for n in path.relays):
                del self._paths[guard_id]
        if previous is None or not self._in_flight:
            return
        for flight in list(self._in_flight):
            gone = frozenset(h.node_id for h in flight.hops if _left(h, previous, consensus))
            if gone:
                flight.gone = gone
                flight.scope.cancel()

    @property
    def routes_in_flight(self) -> list[tuple[Hop, ...]]:
        """The routes (relays, then destination) of the requests waiting for answers
        now (for status and tests)."""
        return [flight.hops for flight in self._in_flight]

    def in_flight(self, hops: Sequence[Hop]) -> InFlight:
        """``with paths.in_flight(hops) as flight:`` wait for a request's answer through
        ``hops`` inside the block: a consensus that drops one of them (module note)
        cancels the wait, and the block ends at once with ``flight.gone`` set (nothing
        is raised)."""
        return InFlight(hops, self._in_flight)

    @property
    def consensus(self) -> Consensus:
        if self._consensus is None:
            raise NoConsensus("no consensus yet")
        return self._consensus

    def _now(self) -> int:
        return int(self._now_ms())

    # --- failure counts --------------------------------------------------------------------

    def failures(self, node_id: bytes) -> int:
        return self._failures.get(node_id, 0)

    def usable(self, node_id: bytes) -> bool:
        """False for a node at the failure limit (avoided until its count is forgotten)."""
        return self._failures.get(node_id, 0) < self.policy.node_failure_limit

    async def node_failed(self, node_id: bytes) -> int:
        """Count a failure of ``node_id`` (memory first, then the state file); its count."""
        count = self._failures.get(node_id, 0) + 1
        self._failures[node_id] = count
        self._failed_at[node_id] = self._now()
        await trio.to_thread.run_sync(self.state.record_failure, node_id)
        return count

    async def node_succeeded(self, node_id: bytes) -> None:
        """``node_id`` answered: its count goes back to 0 (written only if it was not 0)."""
        self._failed_at.pop(node_id, None)
        if self._failures.pop(node_id, 0):
            await trio.to_thread.run_sync(self.state.record_success, node_id)

    async def path_failed(self, path: OnionPath) -> None:
        """Count a failure of ``path``; at the limit the path is dropped (rebuilt later)."""
        path.failures += 1
        if path.failures >= self.policy.path_failure_limit:
            self._drop(path)

    def path_succeeded(self, path: OnionPath) -> None:
        # Failures of a path count while it is in use; a success does not clear them, so
        # a path that fails one request in three is still rebuilt eventually. That is
        # Session's rule (a path is dropped after 3 failures, however spread out).
        path.successes += 1

    def _drop(self, path: OnionPath) -> None:
        if self._paths.get(path.guard.node_id) is path:
            del self._paths[path.guard.node_id]
            self.rebuilt += 1

    # --- guards ----------------------------------------------------------------------------

    @property
    def guards(self) -> list[GuardRecord]:
        return list(self._guards)

    async def ensure_guards(self) -> list[ConsensusNode]:
        """The guards (as consensus nodes), after replacing any that left the consensus
        or reached the failure limit, and filling up to :attr:`PathPolicy.guards`.
        Persists a change before returning. Serialized (see the module note).

        When nothing is to change and no change is being persisted (every request but a
        few), it returns without taking the lock or yielding: a yield before the packet
        is sent lets every other ready task run first, on the request's critical path.
        A new guard is never used before it is persisted.
        """
        if not self._guard_lock.locked() and self._kept_guards() is None:
            return self._guard_nodes()
        async with self._guard_lock:
            consensus = self.consensus
            kept = self._kept_guards()
            if kept is not None:
                wanted = min(self.policy.guards, len(consensus.nodes))
                chosen = [consensus.node(g.node_id) for g in kept]
                nodes = [n for n in chosen if n is not None]
                candidates = [n for n in consensus.nodes if self.usable(n.node_id)]
                if len(candidates) < wanted:
                    # Every node is failing: do not shrink to nothing; retry them all.
                    candidates = list(consensus.nodes)
                replaced = len(self._guards) - len(kept)
                while len(nodes) < wanted:
                    pick = pick_spread(candidates, nodes, self.rng)
                    if pick is None:
                        break
                    nodes.append(pick)
                    kept.append(GuardRecord(pick.node_id, self._now()))
                self.guards_replaced += max(0, replaced)
                old = {g.node_id for g in self._guards}
                self._guards = kept
                for guard_id in old - {g.node_id for g in kept}:
                    self._paths.pop(guard_id, None)
                await trio.to_thread.run_sync(self.state.set_guards, kept)
        return self._guard_nodes()

    def _kept_guards(self) -> list[GuardRecord] | None:
        """The guards to keep if the set must change (some left the consensus or are at
        the failure limit, or there are too few); None if it stays as it is."""
        consensus = self.consensus
        listed = [g for g in self._guards if consensus.node(g.node_id) is not None]
        kept = [g for g in listed if self.usable(g.node_id)]
        if listed and not kept:
            # Every guard is failing: more likely our own network is down than all
            # of them at once. Replacing them now would churn guards through an
            # outage (what guards exist to prevent); keep them, they are retried.
            kept = listed
        wanted = min(self.policy.guards, len(consensus.nodes))
        if len(kept) != len(self._guards) or len(kept) < wanted:
            return kept
        return None

    def _guard_nodes(self) -> list[ConsensusNode]:
        consensus = self.consensus
        result = []
        for g in self._guards:
            node = consensus.node(g.node_id)
            if node is not None:
                result.append(node)
        return result

    # --- paths -----------------------------------------------------------------------------

    @property
    def paths(self) -> list[OnionPath]:
        return list(self._paths.values())

    async def choose_path(
        self, exclude: Iterable[OnionPath] = (), avoid: Collection[bytes] = ()
    ) -> OnionPath:
        """Relays for a request, without its destination (a request gets both from
        :meth:`choose_route`): through a usable guard, avoiding the paths in ``exclude``
        (tried already by this request) when another is possible.

        A stored path through a node now at the failure limit is rebuilt. ``avoid``
        (nodes this request has seen fail) gives a one-off path around them when the
        stored one goes through one: the stored path keeps counting its own failures
        and is rebuilt by the usual rule, but this request does not walk into the same
        dead relay twice.
        """
        guards = await self.ensure_guards()
        if not guards:
            raise NoConsensus("the consensus lists no nodes")
        avoid = set(avoid)
        return self._path_for(self._guard_order(guards, exclude, avoid)[0], avoid)

    async def choose_route(
        self,
        members: Sequence[Hop],
        *,
        exclude_paths: Iterable[OnionPath] = (),
        avoid: Collection[bytes] = (),
        exclude: Iterable[bytes] = (),
        prefer: bytes | None = None,
    ) -> Route:
        """A path and a node of ``members`` (the destination swarm, or the one node a
        request is for) for one request; the destination is never on the path (module
        note). ``exclude_paths`` and ``avoid`` are as for :meth:`choose_path`;
        ``exclude`` are members that failed this request (taken again only if every
        member did); ``prefer`` is the member wanted if it is usable and not excluded.
        Among the others, a member off the path and in no subnet of its relays is
        preferred. Raises :class:`~veil.client.errors.NoConsensus` when no path of ours
        can leave out every member (a network of one node).
        """
        if not members:
            raise InvalidArgument("an empty swarm")
        guards = await self.ensure_guards()
        if not guards:
            raise NoConsensus("the consensus lists no nodes")
        avoid = set(avoid)
        order = self._guard_order(guards, exclude_paths, avoid)
        excluded = set(exclude)
        candidates = [m for m in members if m.node_id not in excluded] or list(members)
        healthy = [m for m in candidates if self.usable(m.node_id)] or candidates
        if prefer is not None:
            wanted = next((m for m in healthy if m.node_id == prefer), None)
            # Through a guard that is not the preferred node and has not failed this
            # request; its path without the preferred node. If there is none, the
            # preference gives way (another destination), never the rule.
            through = [g for g in order if g.node_id != prefer and g.node_id not in avoid]
            if wanted is not None and through:
                return Route(self._path_for(through[0], avoid, forbid=prefer), wanted)
        # Wider pools only when a narrower one holds nothing but our guards' own nodes.
        for pool in (healthy, candidates, list(members)):
            for guard in order:
                path = self._path_for(guard, avoid)
                off_path = [m for m in pool if m.node_id not in path.node_ids]
                if off_path:
                    nets = {subnet_of(n.host) for n in path.relays}
                    spread = [m for m in off_path if subnet_of(m.host) not in nets]
                    return Route(path, self.rng.choice(spread or off_path))
                # The whole pool is on the path (a swarm no larger than a path): a
                # member that is not this guard, on a one-off path without it.
                others = [m for m in pool if m.node_id != guard.node_id]
                if others:
                    target = self.rng.choice(others)
                    return Route(self._build(guard, avoid, forbid=target.node_id), target)
        raise NoConsensus(
            "no path leaves out the destination: the network is too small for an onion"
            " request (the only node that holds the account is our only guard)"
        )

    def _guard_order(
        self,
        guards: Sequence[ConsensusNode],
        exclude: Iterable[OnionPath],
        avoid: Collection[bytes],
    ) -> list[ConsensusNode]:
        """``guards``, best first: usable and not failed in this request, then not tried
        by this request (``exclude``); random among equals."""
        excluded = {p.guard.node_id for p in exclude}
        order = list(guards)
        self.rng.shuffle(order)
        order.sort(
            key=lambda g: (
                not self.usable(g.node_id) or g.node_id in avoid,
                g.node_id in excluded,
            )
        )
        return order

    def _path_for(
        self, guard: ConsensusNode, avoid: Collection[bytes], forbid: bytes | None = None
    ) -> OnionPath:
        """The stored path of ``guard`` (built or rebuilt as needed), or a one-off path
        around ``avoid``; never through ``forbid`` (a preferred destination: the stored
        path is rebuilt without it, and stays so, as the same node is preferred again)."""
        path = self._paths.get(guard.node_id)
        if path is not None and not all(self.usable(n) for n in path.node_ids[1:]):
            self._drop(path)
            path = None
        if path is not None and forbid is not None and forbid in path.node_ids:
            path = None  # replaced below; not a failure, so not counted as rebuilt
        if path is None:
            path = self._paths[guard.node_id] = self._build(guard, forbid=forbid)
        if avoid and not set(avoid).isdisjoint(path.node_ids[1:]):
            return self._build(guard, avoid, forbid=forbid)
        return path

    def _build(
        self, guard: ConsensusNode, avoid: Collection[bytes] = (), forbid: bytes | None = None
    ) -> OnionPath:
        """Relays after ``guard``. ``avoid`` and our other guards are left out while
        enough other nodes remain; ``forbid`` (the request's destination) always."""
        consensus = self.consensus
        guard_ids = {g.node_id for g in self._guards}
        # Middle relays: not a guard of ours (a guard seeing our packets again further
        # on would learn more than a guard should), usable if possible.
        middle = [
            n
            for n in consensus.nodes
            if n.node_id not in guard_ids
            and n.node_id not in avoid
            and n.node_id != forbid
            and self.usable(n.node_id)
        ]
        if len(middle) < self.policy.relays - 1:
            middle = [n for n in consensus.nodes if n.node_id not in (guard.node_id, forbid)]
        relays = [guard]
        while len(relays) < self.policy.relays:
            pick = pick_spread(middle, relays, self.rng)
            if pick is None:
                break  # a network smaller than a path: a shorter path, not a failure
            relays.append(pick)
        return OnionPath(tuple(relays))


def _left(hop: Hop, previous: Consensus, consensus: Consensus) -> bool:
    """Whether ``hop``, listed as it is in ``previous``, is not in ``consensus`` so (gone,
    or listed with another address or onion key)."""
    before = previous.node(hop.node_id)
    if before is None or before.as_hop() != hop:
        return False  # not ours to judge: not the node the previous consensus listed
    now = consensus.node(hop.node_id)
    return now is None or now.as_hop() != hop
