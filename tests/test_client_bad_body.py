"""Whom the client blames when the destination says the packet's body did not authenticate.

A relay that flips body bits makes the destination answer ``bad_request``
(:class:`veil.onion.packet.BadBody`): the destination is not at fault and which relay
did it is unknown, so the path is blamed and no node is (the table in
``client/onion_client.py``'s note). The reply is made for real (packet built, tampered,
processed and answered with the sans-IO code); the client's rule is called directly
with stand-ins for the path selector, whose choices do not matter here.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from veil.client.network_clock import NetworkClock
from veil.client.onion_client import OnionClient, _Retry, _Try
from veil.onion.keys import NodeKeys
from veil.onion.packet import (
    BAD_BODY_STATUS,
    HEADER_LEN,
    BadBody,
    Hop,
    HopError,
    Relay,
    build_packet,
    process_packet,
)

NOW = 1_790_000_000_000
NODES = [NodeKeys.generate() for _ in range(4)]
HOPS = [Hop(k.identity_public, k.onion_public, "127.0.0.1", 7000 + i) for i, k in enumerate(NODES)]


class _Paths:
    """Records what the client counts; the selector's choices are not used here."""

    def __init__(self) -> None:
        self.rng = random.Random(1)
        self.failed_paths: list[Any] = []
        self.failed_nodes: list[bytes] = []

    async def path_failed(self, path: Any) -> None:
        self.failed_paths.append(path)

    async def node_failed(self, node_id: bytes) -> None:
        self.failed_nodes.append(node_id)


def tampered_reply_error() -> HopError:
    """The HopError a client gets when the guard flipped a byte of the body."""
    packet, opener = build_packet(HOPS, b"a request", now_ms=NOW)
    contexts = []
    for i, k in enumerate(NODES):
        result = process_packet(packet, k.onion_secret, k.onion_public)
        contexts.append(result.reply)
        if isinstance(result, Relay):
            forwarded = bytearray(result.packet)
            if i == 0:
                forwarded[HEADER_LEN + 7] ^= 4  # the guard's flip
            packet = bytes(forwarded)
    assert isinstance(result, BadBody)
    reply = result.answer()
    for ctx in reversed(contexts[:-1]):
        reply = ctx.wrap(reply)
    with pytest.raises(HopError) as err:
        opener.open(reply)
    return err.value


async def classify(error: HopError) -> tuple[_Paths, _Try]:
    paths = _Paths()
    client = OnionClient(None, paths, NetworkClock(lambda: NOW))  # type: ignore[arg-type]
    state = _Try(paths=[], destinations=set(), errors=[])
    with pytest.raises(_Retry):
        await client._hop_error(error, HOPS, "the path", HOPS[-1], NOW, NOW, state)  # type: ignore[arg-type]
    return paths, state


async def test_a_tampered_body_counts_against_the_path_not_a_node() -> None:
    error = tampered_reply_error()
    assert (error.hop, error.status) == (3, BAD_BODY_STATUS)
    paths, state = await classify(error)
    assert paths.failed_paths == ["the path"] and state.paths == ["the path"]
    assert paths.failed_nodes == []
    assert state.destinations == set() and state.avoid == set()
    assert state.backoff_s == 0  # not a rate limit: the next try goes on another path


async def test_the_destinations_own_failure_still_counts_against_it() -> None:
    # The rule above is for bad_request only: an internal error is the destination's.
    paths, state = await classify(HopError(3, "internal", "the storage service failed"))
    assert paths.failed_nodes == [HOPS[-1].node_id]
    assert state.destinations == {HOPS[-1].node_id}
