"""Does a node answer as its descriptor says? The directory authority's liveness check.

Design note
-----------
A node is worth listing only if a client's packets will work there, so the check is a
*real* request, not a TCP connect:

1. ``GET /info``: the node must report the descriptor's ``node_id`` and ``onion_key``
   (this catches a node restarted with other keys, or another node at the address);
2. a one-hop onion packet, built to the descriptor's onion key, carrying a storage
   ``info`` request: the node must answer it with an ``ok`` reply that opens with the
   packet's reply keys. Only a node that holds the onion secret can do that, so a
   server that copies a node's ``/info`` answer is caught.

The whole check is bounded by ``timeout``; the packet goes through the authority's own
:class:`~node.peers.PeerPool` (bounded responses). The packet's replay tag lands in the
node's replay cache like any client's: a check is one packet a period, no more.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import trio

from veil.onion import rpc
from veil.onion.directory import NodeDescriptor
from veil.onion.errors import NetworkError, RateLimited, VeilError
from veil.onion.packet import Hop, build_packet

from .peers import PeerPool

__all__ = ["probe_node"]


async def probe_node(
    pool: PeerPool, descriptor: NodeDescriptor, *, clock: Callable[[], int], timeout: float
) -> tuple[bool, str]:
    """Check the node of ``descriptor``: ``(True, "ok")`` or ``(False, why)``.

    Never raises for what the node does (unreachable, slow, wrong keys, garbage);
    cancellation propagates.
    """
    host, port = descriptor.host, descriptor.port
    with trio.move_on_after(timeout):
        try:
            status, body = await pool.get(host, port, "/info", timeout=timeout)
            if status != 200:
                return False, f"GET /info answered HTTP {status}"
            try:
                doc = json.loads(body)
            except (ValueError, RecursionError):  # bad UTF-8 or JSON, absurd nesting
                return False, "GET /info did not answer JSON"
            if not isinstance(doc, dict):
                return False, "GET /info did not answer a JSON object"
            if doc.get("node_id") != descriptor.node_id_hex:
                return False, "GET /info reports another node ID than the descriptor"
            if doc.get("onion_key") != descriptor.onion_key.hex():
                return False, "GET /info reports another onion key than the descriptor"
            hop = Hop(descriptor.node_id, descriptor.onion_key, host, port)
            packet, opener = build_packet([hop], rpc.make_info(), now_ms=clock())
            status, body = await pool.post(host, port, "/onion", packet, timeout=timeout)
            if status != 200:
                return False, f"onion info request answered HTTP {status}"
            reply = rpc.decode_reply(opener.open(body))
            if not reply.ok:
                return False, f"onion info request answered {reply.status}: {reply.error}"
            return True, "ok"
        except (NetworkError, RateLimited) as exc:
            return False, f"unreachable: {exc}"
        except VeilError as exc:  # a reply that does not open, a bad RPC reply, ...
            return False, f"bad onion reply: {type(exc).__name__}: {exc}"
    return False, f"no answer within {timeout:g} s"
