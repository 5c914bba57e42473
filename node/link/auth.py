"""Who may open a link: the server's check of the opener's proof, and the opener's lookup.

Design note
-----------
Links carry relayed packets, and relays are listed nodes: clients POST /onion and never
use a link. Before this check anyone could upgrade, and a link is held for
``[link] accept_idle_timeout`` (300 s): 1,019 links from one address took every
connection of a node, which answered GET /info 503 for over 36 s. So a node in a network
lets a link open only with a proof (veil.onion.link, sans-IO: the header, its signature)
from a node listed in the consensus it holds, checked in :meth:`LinkGate.check` before
the 101 is sent, once per link (never per packet: the relay's hot path is unchanged).

A *standalone* node (no ``[network] file``) has no consensus and so no list to check
against: it accepts links from anyone, as it accepts ``POST /onion`` from anyone and a
link carries nothing a POST could not; the HTTP server's per-address connection cap
(``[http] max_connections_per_address``) bounds what one address holds there. A node in
a network that holds no consensus yet cannot tell a listed node: it answers 503 (the
opener's packet fails; its next one tries again), never 101.

Replays: the server remembers each accepted proof's ``opener ID | nonce`` for the
proof's time window (onion/replay.py's cache: refuses stale proofs and proofs stamped
before this node started, and when full of live entries refuses rather than forgets).
Only proofs whose signature verified, from listed nodes, are remembered, so its size is
bounded by what the listed nodes send.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from veil.onion.errors import RateLimited, ReplayedPacket, StalePacket
from veil.onion.link import (
    PROOF_HEADER,
    PROOF_WINDOW_MS,
    LinkProofError,
    parse_link_proof,
    verify_link_proof,
)
from veil.onion.replay import ReplayCache

from ..network_view import NetworkView
from ..ratelimit import peer_ip

__all__ = ["LinkGate", "listed_node_id"]

#: Accepted proofs remembered at most (each 48 bytes of tag): ten links a second from
#: each of 100 listed nodes for the 2-minute window is 12,000.
_MAX_PROOFS = 65_536


class LinkGate:
    """The server's check of link upgrades; see the module note.

    ``clock()`` is the node's clock in ms (the one its peers' proofs are stamped by).
    """

    def __init__(
        self,
        view: NetworkView,
        clock: Callable[[], int],
        *,
        window_ms: int = PROOF_WINDOW_MS,
        max_proofs: int = _MAX_PROOFS,
    ) -> None:
        self.view = view
        self.clock = clock
        self.window_ms = window_ms
        # Proofs made before this node started could have been seen by it already.
        self._seen = ReplayCache(window_ms, max_proofs, clock())

    def check(self, headers: Sequence[tuple[bytes, bytes]]) -> tuple[int, str] | None:
        """None to upgrade, or the refusal's ``(status, text)``: 403 for an opener that
        is not a listed node with a fresh, valid, unseen proof; 503 when this node cannot
        tell (no consensus yet, or its memory of proofs is full)."""
        view = self.view
        if view.standalone:
            return None
        consensus = view.consensus
        if consensus is None:
            return 503, "unavailable: no consensus yet, cannot check who opens a link"
        value = None
        for name, v in headers:
            if name == PROOF_HEADER:
                if value is not None:
                    return 403, "forbidden: more than one link proof"
                value = v
        try:
            proof = parse_link_proof(value)
            opener = consensus.node(proof.opener_id)
            if opener is None:
                return 403, "forbidden: only nodes in the consensus may open a link"
            now = self.clock()
            verify_link_proof(proof, view.node_id, opener.node_id, now, self.window_ms)
            self._seen.check(proof.replay_tag, proof.time_ms, now)
        except LinkProofError as exc:
            return 403, f"forbidden: {exc}"
        except ReplayedPacket:
            return 403, "forbidden: link proof already used"
        except StalePacket as exc:
            return 403, f"forbidden: stale link proof ({exc})"
        except RateLimited:
            return 503, "unavailable: too many links opened, try again later"
        return None


def listed_node_id(view: NetworkView, host: str, port: int) -> bytes | None:
    """The ID of the node listed at ``host:port`` in ``view``'s consensus (the server a
    link proof is made for), or None (standalone, no consensus, nobody listed there).
    A scan of the consensus, once per link opened."""
    consensus = view.consensus
    if consensus is None:
        return None
    ip = peer_ip(host)
    for node in consensus.nodes:
        if node.port == port and (
            node.host == host or (ip is not None and peer_ip(node.host) == ip)
        ):
            return node.node_id
    return None
