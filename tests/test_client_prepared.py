"""client.prepared_keys.PreparedKeys: hop key exchanges prepared in a worker thread."""

from __future__ import annotations

import trio

from veil.client.prepared_keys import PreparedKeys
from veil.onion.keys import NodeKeys
from veil.onion.packet import Deliver, Hop, Relay, build_packet, process_packet

NOW = 1_700_000_000_000


def _nodes(n: int) -> list[NodeKeys]:
    return [NodeKeys.generate() for _ in range(n)]


def _hops(nodes: list[NodeKeys]) -> list[Hop]:
    return [
        Hop(k.identity_public, k.onion_public, "127.0.0.1", 7000 + i) for i, k in enumerate(nodes)
    ]


async def _settle(keys: PreparedKeys, hops: list[Hop]) -> None:
    """Wait until the background task has prepared keys for every hop."""
    with trio.fail_after(10):
        while not all(keys._ready.get(h.onion_key) for h in hops):
            await trio.sleep(0.01)


async def test_taken_hops_are_prepared_in_the_background_and_used_once() -> None:
    nodes = _nodes(4)
    hops = _hops(nodes)
    keys = PreparedKeys(per_key=2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(keys.run)
        assert keys.take(hops) == [None] * 4  # nothing yet: asks for these hops
        await _settle(keys, hops)
        seen_alphas = set()
        for _ in range(2):
            prepared = keys.take(hops)
            assert all(p is not None for p in prepared)
            packet, _ = build_packet(hops, b"hi", now_ms=NOW, prepared=prepared)
            seen_alphas.add(packet[1:33])
            # The packet is good at every hop.
            for i, k in enumerate(nodes):
                result = process_packet(packet, k.onion_secret, k.onion_public)
                if i < 3:
                    assert isinstance(result, Relay)
                    packet = result.packet
                else:
                    assert isinstance(result, Deliver) and result.payload == b"hi"
        assert len(seen_alphas) == 2  # never the same ephemeral key twice
        nursery.cancel_scope.cancel()


async def test_without_the_background_task_nothing_is_prepared() -> None:
    hops = _hops(_nodes(2))
    keys = PreparedKeys()
    assert keys.take(hops) == [None, None]
    assert keys.take(hops) == [None, None]


async def test_at_most_max_keys_nodes_are_kept() -> None:
    keys = PreparedKeys(per_key=1, max_keys=3)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(keys.run)
        for node in _nodes(6):
            hop = _hops([node])
            keys.take(hop)
            await _settle(keys, hop)
        assert len(keys._ready) == 3
        nursery.cancel_scope.cancel()
