"""What the devnet benchmarks share: a 10-node devnet at rest, percentiles, and the
error for a message that was not delivered in time.

``bench client``, ``bench bot`` and ``bench gateway`` each start the same network and
run one trio function on it; this module is that start, so a change to the network a
benchmark runs on (its size, its anti-entropy interval) is made once.
"""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

#: The network: 10 nodes in swarms of 5, a consensus every 2 s.
NODES = 10
SWARM_SIZE = 5
INTERVAL_MS = 2000


class DeliveryMissing(Exception):
    """A message sent was not delivered in time: no delivery figure can be given."""


def run_on_devnet(
    suite: str,
    measure: Callable[..., Awaitable[dict[str, float]]],
    *,
    node_url: bool = False,
) -> dict[str, float]:
    """Start the devnet in a temporary directory and ``trio.run(measure, tmp,
    network_file[, the first node's URL])``; its figures. A devnet that does not start,
    or a :class:`DeliveryMissing`, ends the benchmark with one line naming ``suite``.

    The network runs at rest, as a real one does: the node's own anti-entropy interval
    (10 s), not the devnet's 1 s, which is there so that tests catch up at once and
    keeps ten nodes pulling from each other 40 times a second (about a third of a core
    on a 2-core machine, taken from the hops being measured).
    """
    import trio

    from veil.client.devnet import Devnet, DevnetError

    with tempfile.TemporaryDirectory(prefix=f"veil-bench-{suite}-") as tmp:
        net = Devnet(Path(tmp) / "devnet", node_config={"replication": {"sync_interval": 10.0}})
        try:
            with net:
                net.up(nodes=NODES, swarm_size=SWARM_SIZE, interval_ms=INTERVAL_MS)
                args: list[Any] = [Path(tmp), net.network_file]
                if node_url:
                    args.append(net.nodes[0].url)
                return trio.run(measure, *args)
        except DevnetError as exc:
            raise SystemExit(f"bench {suite}: the devnet did not start:\n{exc}") from None
        except (DeliveryMissing, BaseExceptionGroup) as exc:
            leaf = _delivery_missing(exc)
            if leaf is not None:
                raise SystemExit(f"bench {suite}: {leaf}") from None
            raise


def _delivery_missing(exc: BaseException) -> DeliveryMissing | None:
    """The DeliveryMissing in ``exc`` (itself or inside nested exception groups)."""
    if isinstance(exc, DeliveryMissing):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _delivery_missing(inner)
            if found is not None:
                return found
    return None


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]
