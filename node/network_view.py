"""The node's view of the network: the latest consensus it accepted, and questions about it.

Design note
-----------
A node started with ``[network] file`` set is a member of a network: directory
authorities (pinned in ``network.json``) sign a consensus of the nodes and of their
swarms, and the node must know that consensus to decide which accounts it stores, which
nodes are its swarm peers, and which next hops it relays to. Without the file the node
is *standalone*: a one-node network that holds every account (as before this module).

:class:`NetworkView` is what the rest of the node reads: the latest consensus this node
accepted, and questions about it (my swarm, the swarm of an account, is this account
mine, is this a listed relay). It is a plain object updated from one task, read from
any task; every read sees one whole consensus, never a mix. Other tasks follow changes
with :meth:`NetworkView.subscribe` (every new consensus, in order).

It also keeps the exact signed bytes of the consensus it holds (:attr:`NetworkView.document`,
every authority signature the node received): the node serves them to clients as they
came (``GET /consensus``, :mod:`veil.node.consensus_route`), so that clients fetch the
consensus from their guards and not from the authorities, and verify it themselves.

The task that keeps it current (publishing this node's descriptor, fetching and saving
the consensus) is :class:`~veil.node.directory_client.DirectoryClient`; this module holds no
I/O of its own.
"""

from __future__ import annotations

import logging

import trio

from veil.onion.directory import Consensus, ConsensusNode, Swarm
from veil.onion.errors import NotFound
from veil.onion.keys import GroupId, OwnerId

from .logging import log_event
from .ratelimit import peer_ip

__all__ = ["SUBSCRIBER_BUFFER", "NetworkView"]

log = logging.getLogger("veil.node.network_view")

#: Buffered consensuses per subscriber; one that falls further behind skips some.
SUBSCRIBER_BUFFER = 16


def _normal_ip(address: str) -> str | None:
    ip = peer_ip(address)
    return None if ip is None else str(ip)


class NetworkView:
    """The network as this node knows it: the latest consensus it accepted.

    ``standalone`` (no ``[network] file``): every account is this node's, there is no
    consensus and no peer, every next hop is allowed. Otherwise, until the first
    consensus arrives (:attr:`ready` is False) the node knows no swarm: :meth:`is_mine`
    is False and :meth:`swarm_for` None, and a caller should answer ``unavailable``
    rather than ``wrong_swarm``.
    """

    def __init__(self, node_id: bytes, *, standalone: bool) -> None:
        self.node_id = node_id
        self.standalone = standalone
        self.consensus: Consensus | None = None
        #: The signed document of :attr:`consensus`, byte for byte as the node verified it
        #: (None before the first, or if it was adopted without its bytes).
        self.document: bytes | None = None
        self._relay_ips: frozenset[str] = frozenset()
        self._subscribers: list[trio.MemorySendChannel[Consensus]] = []

    # --- state ------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True if standalone, or once a consensus is held."""
        return self.standalone or self.consensus is not None

    @property
    def epoch(self) -> int | None:
        return None if self.consensus is None else self.consensus.epoch

    def update(self, consensus: Consensus, document: bytes | None = None) -> bool:
        """Adopt ``consensus`` if it is newer than the one held (a verified one: this
        does not check signatures); True if adopted. ``document`` is the signed bytes it
        was verified from (kept to serve; without it the node serves none until the
        next). Subscribers get it in order."""
        if self.standalone:
            raise RuntimeError("a standalone node has no consensus")
        if self.consensus is not None and consensus.epoch <= self.consensus.epoch:
            return False
        self.consensus = consensus
        self.document = document
        ips = {_normal_ip(node.host) for node in consensus.nodes}
        self._relay_ips = frozenset(ip for ip in ips if ip is not None)
        for channel in list(self._subscribers):
            try:
                channel.send_nowait(consensus)
            except trio.WouldBlock:
                log_event(log, logging.WARNING, "subscriber_lagging", epoch=consensus.epoch)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.remove(channel)
        return True

    # --- questions --------------------------------------------------------------------

    def me(self) -> ConsensusNode | None:
        """This node's entry in the consensus, or None (standalone, none yet, not listed)."""
        return None if self.consensus is None else self.consensus.node(self.node_id)

    def my_swarm(self) -> Swarm | None:
        """This node's swarm, or None (standalone, no consensus yet, or not listed)."""
        me = self.me()
        if me is None:
            return None
        assert self.consensus is not None
        return self.consensus.swarms[me.swarm_id]

    def swarm_for(self, account: OwnerId | str) -> Swarm | None:
        """The swarm that stores ``account`` (None if standalone, no consensus yet, or
        a consensus without nodes). :class:`~veil.onion.errors.InvalidId` for a bad ID text."""
        if self.consensus is None:
            return None
        try:
            # A group (an encryption session) sits on the ring by its Ed25519 key.
            return self.consensus.swarm_of(
                account.ring_position if isinstance(account, GroupId) else account
            )
        except NotFound:
            return None

    def is_mine(self, account: OwnerId | str) -> bool:
        """True if this node stores ``account``: always when standalone; otherwise when
        this node is listed and ``account`` maps to its swarm (False before the first
        consensus: check :attr:`ready` to tell "not yet" from "not mine")."""
        if self.standalone:
            return True
        me = self.me()
        if me is None:
            return False
        found = self.swarm_for(account)
        return found is not None and found.swarm_id == me.swarm_id

    def swarm_peers(self) -> list[ConsensusNode]:
        """The other members of this node's swarm (empty when it has none)."""
        found = self.my_swarm()
        if found is None:
            return []
        return [node for node in found.members if node.node_id != self.node_id]

    def node(self, node_id: bytes | str) -> ConsensusNode | None:
        """The listed node with this ID (bytes or hex), or None."""
        if self.consensus is None:
            return None
        return self.consensus.node(node_id)

    def next_hop_allowed(self, node_id: bytes, host: str, port: int) -> bool:
        """May a packet be relayed to this next hop? Standalone or before the first
        consensus: yes. Then only to a listed node at its listed address."""
        if self.consensus is None:
            return True
        node = self.consensus.node(node_id)
        if node is None or node.port != port:
            return False
        # Clients copy the listed host into their packets: the same string is the same
        # address, without parsing two addresses for every relayed packet.
        return node.host == host or _normal_ip(node.host) == _normal_ip(host)

    def is_relay_address(self, address: str) -> bool:
        """True if ``address`` (a connecting IP) is the host of a listed node: relays
        carry many clients' packets, so the per-address rate limit exempts them."""
        if not self._relay_ips:
            return False
        ip = _normal_ip(address)
        return ip is not None and ip in self._relay_ips

    # --- following changes ------------------------------------------------------------

    def subscribe(self) -> trio.MemoryReceiveChannel[Consensus]:
        """A channel that receives every consensus adopted from now on, in order.

        Buffered (:data:`SUBSCRIBER_BUFFER`); a subscriber that falls further behind
        misses the ones in between (logged) and can read :attr:`consensus` for the
        latest. Close the channel to unsubscribe.
        """
        send, receive = trio.open_memory_channel[Consensus](SUBSCRIBER_BUFFER)
        self._subscribers.append(send)
        return receive
