"""What an onion path is, and the rules every one keeps: the path policy's numbers, a
path and a route, one node per subnet.

Design note
-----------
Values and pure functions, no I/O and no choice of nodes: :class:`PathPolicy`
(DESIGN.md's numbers: 3 relays, 2 guards, a path rebuilt and a node avoided after 3
failures), an :class:`OnionPath` (relays, guard first; its failures counted while it is
in use), a :class:`Route` (one request's path and destination, which refuses to exist
with the destination on the path or a node twice), and the spread of hops over
subnets. :class:`~veil.client.paths.PathSelector` chooses and keeps them.

**One node per /24 where addresses allow** (:func:`pick_spread`, :func:`subnet_of`). Hops
are picked preferring nodes whose /24 (IPv4) or /48 (IPv6) no chosen hop shares; if no
such node is left (a small network, or a loopback devnet where every node is 127.0.0.1),
any other node will do, and a network of fewer nodes than hops gives a shorter path
(never a node twice). The rule is a preference that degrades, never a reason to fail.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from veil.client.errors import InvalidArgument
from veil.client.state import MAX_GUARDS
from veil.onion.directory import ConsensusNode
from veil.onion.packet import Hop

__all__ = ["OnionPath", "PathPolicy", "Route", "pick_spread", "subnet_of"]


@dataclass(frozen=True, slots=True)
class PathPolicy:
    """The numbers of the path policy (DESIGN.md's, by default)."""

    #: Relays before the destination (a guard and two others). 1 to 5.
    relays: int = 3
    #: Guards kept.
    guards: int = MAX_GUARDS
    #: A path is rebuilt after this many failures.
    path_failure_limit: int = 3
    #: A node with this many consecutive failures is avoided (a guard is replaced).
    node_failure_limit: int = 3
    #: Failure counts older than this are forgotten (ms).
    forget_after_ms: int = 10 * 60 * 1000

    def __post_init__(self) -> None:
        if not 1 <= self.relays <= 5:
            raise InvalidArgument("a path has 1 to 5 relays")
        if not 1 <= self.guards <= MAX_GUARDS:
            raise InvalidArgument(f"1 to {MAX_GUARDS} guards")
        if self.path_failure_limit < 1 or self.node_failure_limit < 1:
            raise InvalidArgument("failure limits are at least 1")


_path_ids = itertools.count(1)


@dataclass(eq=False, slots=True)
class OnionPath:
    """Relays of a path, guard first; the destination is added per request."""

    relays: tuple[ConsensusNode, ...]
    id: int = field(default_factory=lambda: next(_path_ids))
    failures: int = 0
    successes: int = 0

    @property
    def guard(self) -> ConsensusNode:
        return self.relays[0]

    @property
    def node_ids(self) -> tuple[bytes, ...]:
        return tuple(n.node_id for n in self.relays)

    def hops(self, destination: Hop) -> list[Hop]:
        """The whole path for a packet: the relays, then ``destination``."""
        return [*(n.as_hop() for n in self.relays), destination]

    def describe(self) -> list[str]:
        return [f"{n.node_id.hex()[:16]} {n.host}:{n.port}" for n in self.relays]


@dataclass(frozen=True, slots=True)
class Route:
    """One request's path and destination: the destination is not on the path, and no
    node is on the path twice (checked here, so no packet can be built otherwise)."""

    path: OnionPath
    destination: Hop

    def __post_init__(self) -> None:
        ids = self.path.node_ids
        if len(set(ids)) != len(ids):
            raise InvalidArgument("a path holds a node twice")
        if self.destination.node_id in ids:
            raise InvalidArgument("the destination is on the path")

    def hops(self) -> list[Hop]:
        """The whole path for a packet: the relays, then the destination."""
        return self.path.hops(self.destination)


@functools.lru_cache(maxsize=4096)
def subnet_of(host: str) -> str:
    """The network a host counts in for the one-node-per-subnet rule: its /24 (IPv4)
    or /48 (IPv6). A host that is not an IP literal counts alone. Cached: parsing costs
    about 5 us, and every request's destination choice asks for several (the hosts are
    the consensus's, so the cache holds a network's worth)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def pick_spread(
    candidates: Sequence[ConsensusNode],
    chosen: Iterable[ConsensusNode | Hop],
    rng: random.Random,
) -> ConsensusNode | None:
    """A random candidate not already chosen, preferring one whose subnet no chosen hop
    shares ("at most one node per /24 where addresses allow"); None if none is left."""
    chosen = list(chosen)
    taken_ids = {c.node_id for c in chosen}
    taken_nets = {subnet_of(c.host) for c in chosen}
    fresh = [c for c in candidates if c.node_id not in taken_ids]
    spread = [c for c in fresh if subnet_of(c.host) not in taken_nets]
    pool = spread or fresh
    return rng.choice(pool) if pool else None
