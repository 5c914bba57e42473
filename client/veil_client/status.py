"""What ``veil status`` shows of a client: :meth:`VeilClient.status
<veil.client.veil_client.VeilClient.status>`'s work (JSON-able, no network)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from veil.client.veil_client.client import VeilClient

__all__ = ["client_status"]


def client_status(client: VeilClient) -> dict[str, Any]:
    """What ``veil status`` shows: the network, guards, paths and clock (JSON-able)."""
    consensus = client.consensus
    now = client.clock.now()
    swarm = consensus.swarm_of(client.account_id)
    guards = []
    for record in client.paths.guards:
        node = consensus.node(record.node_id)
        guards.append(
            {
                "node_id": record.node_id.hex(),
                "address": f"{node.host}:{node.port}" if node else None,
                "listed": node is not None,
                "failures": client.paths.failures(record.node_id),
                "chosen_at_ms": record.chosen_at_ms,
            }
        )
    return {
        "account_id": str(client.account_id),
        "delegated": None
        if client.delegated is None
        else {
            "did": client.delegated.did,
            "resources": list(client.delegated.authorizations),
            "expires_ms": client.delegated.expires_ms,
        },
        "network": {
            "authorities": [f"{a.host}:{a.port}" for a in client.network.authorities],
            "threshold": client.network.threshold,
            "epoch": consensus.epoch,
            "nodes": len(consensus.nodes),
            "swarms": len(consensus.swarms),
            "fresh": consensus.is_fresh(now),
            "valid_until_ms": consensus.valid_until_ms,
            "source": client.directory.last_source,
            "authority_fetches": client.directory.authority_fetches,
            "last_error": client.directory.last_error,
        },
        "clock_offset_ms": client.clock.offset_ms,
        "guards": guards,
        "paths": [
            {
                "relays": p.describe(),
                "failures": p.failures,
                "successes": p.successes,
            }
            for p in client.paths.paths
        ],
        "paths_rebuilt": client.paths.rebuilt,
        "swarm": {
            "id": f"{swarm.swarm_id:016x}",
            "members": [f"{n.node_id.hex()[:16]} {n.host}:{n.port}" for n in swarm.members],
        },
    }
