"""Which accounts this node serves: the storage RPC's swarm check and ``get_swarm``.

Design note
-----------
A node in a network stores only the accounts of its own swarm (DESIGN.md, "Network"):
the account maps to the swarm whose ID is nearest its ring position in the current
consensus. :class:`SwarmGuard` answers the two questions the storage service asks
(node/service.py), from the :class:`~veil.node.network_view.NetworkView`:

* :meth:`SwarmGuard.check`, before a store, retrieve, delete, delete_all or expire is
  authenticated or executed: nothing when the account is this node's (or the node is
  standalone); :class:`~veil.onion.errors.Unavailable` ("no consensus yet") before the node
  holds a consensus, so that a client tries again or elsewhere rather than following a
  guess; :class:`~veil.onion.rpc.SwarmMoved` (``wrong_swarm``) otherwise, carrying the
  account's swarm so that the client can send the request to one of its members at
  once. A node that the consensus does not list (it has just joined, or was dropped)
  serves no account.
* :meth:`SwarmGuard.get_swarm`: the account's swarm and the consensus epoch, from any
  node; ``unavailable`` before the first consensus; ``not_found`` for a standalone node
  (it has no swarms) or a consensus without nodes.

The check runs before the signature check on purpose: it is cheaper, and a client whose
request went to the wrong swarm learns where to go even if its clock is off.
"""

from __future__ import annotations

from veil.onion import rpc
from veil.onion.errors import NotFound, Unavailable
from veil.onion.keys import OwnerId

from .network_view import NetworkView

__all__ = ["SwarmGuard"]


class SwarmGuard:
    """The storage service's view of which accounts are this node's."""

    def __init__(self, view: NetworkView) -> None:
        self.view = view

    def check(self, account: OwnerId) -> None:
        """Return if this node serves ``account``; else raise Unavailable or SwarmMoved."""
        view = self.view
        if view.standalone or view.is_mine(account):
            return
        if view.consensus is None:
            raise Unavailable("this node holds no consensus yet; try again shortly")
        swarm = view.swarm_for(account)
        if swarm is None:
            raise Unavailable("the consensus lists no nodes")
        raise rpc.SwarmMoved(
            f"account is stored by swarm {swarm.swarm_id}, not this node's", rpc.SwarmInfo.of(swarm)
        )

    def get_swarm(self, account: OwnerId) -> rpc.GetSwarmResult:
        """``account``'s swarm (see the module note for the errors)."""
        view = self.view
        if view.standalone:
            raise NotFound("a standalone node has no swarms: it stores every account")
        consensus = view.consensus
        if consensus is None:
            raise Unavailable("this node holds no consensus yet; try again shortly")
        swarm = view.swarm_for(account)
        if swarm is None:
            raise NotFound("the consensus lists no nodes, so no swarm")
        return rpc.GetSwarmResult(rpc.SwarmInfo.of(swarm), consensus.epoch)
