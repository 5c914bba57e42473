"""A client's consensus refresh is not held back by a guard that never answers.

A guard lost silently (its host frozen, its cable pulled) keeps its sockets and answers
nothing: a consensus request to it waits for the fetch's timeout
(:attr:`veil.client.consensus.DirectoryPolicy.timeout_s`, 10 s). Asked one after
another, such a guard listed first delayed by those 10 s every consensus the client
learnt, the one that drops the lost node included (which is what ends the requests in
flight through it, client/onion_client.py). The client now races its sources with a
stagger (client/staggered_race.py): the second guard is asked a stagger later.

Real ``veil-node`` processes on a loopback devnet: the client's first guard is frozen
with SIGSTOP, and every epoch the authority serves from then on must reach the client
within :data:`ADOPT_WITHIN_S`, over a window longer than the fetch timeout (so that a
refresh that waited for the frozen guard would show).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import trio

from tests.devnetutil import running_devnet
from veil.client.consensus import DirectoryPolicy
from veil.client.veil_client import open_client
from veil.onion.keys import Account

#: The default timeout of one fetch (asserted below): what the frozen guard costs a
#: client that waits for it.
FETCH_TIMEOUT_S = 10.0
#: How soon after the authority serves an epoch the client must hold it (s): its
#: refresh delay (a quarter interval), a stagger (1 s), a back-off when the live guard
#: has not fetched it yet, and room for a loaded machine; well under FETCH_TIMEOUT_S.
ADOPT_WITHIN_S = 4.0


@pytest.mark.slow
async def test_a_frozen_first_guard_does_not_delay_the_clients_consensus(
    tmp_path: Path,
) -> None:
    assert DirectoryPolicy().timeout_s == FETCH_TIMEOUT_S
    async with (
        running_devnet(tmp_path, nodes=4, swarm_size=4) as net,
        open_client(tmp_path / "client", net.network_file, account=Account.generate()) as client,
    ):
        guards = await client.paths.ensure_guards()
        assert len(guards) == 2
        # A refresh from a guard first, so that the client is in its steady state.
        epoch = client.consensus.epoch
        with trio.fail_after(30):
            while not (client.consensus.epoch > epoch and client.directory.last_source == "guard"):
                await trio.sleep(0.05)
        first = (await client.paths.ensure_guards())[0]  # the guard the client asks first
        member = next(m for m in net.nodes if m.id == first.node_id.hex())
        assert member.pid is not None
        os.kill(member.pid, signal.SIGSTOP)
        try:
            served_at: dict[int, float] = {}  # epoch -> when the authority first served it
            adopted_at: dict[int, float] = {}  # epoch -> when the client first held it
            frozen_first: list[int] = []  # epochs adopted while the frozen guard came first
            until = time.monotonic() + FETCH_TIMEOUT_S * 1.5
            while time.monotonic() < until:
                served = await trio.to_thread.run_sync(net.fetch_consensus)
                now = time.monotonic()
                if served is not None:
                    served_at.setdefault(served.epoch, now)
                held = client.consensus.epoch
                if held not in adopted_at:
                    adopted_at[held] = now
                    if [g.node_id for g in client.paths.guards][:1] == [first.node_id]:
                        frozen_first.append(held)
                await trio.sleep(0.02)
        finally:
            os.kill(member.pid, signal.SIGCONT)
        # Every epoch served in the window (but the last second's) reached the client
        # soon; an epoch it skipped counts from when it served it till a later one came.
        late = {}
        for e, at in served_at.items():
            if at > until - 1.0:
                continue
            got = min((t for h, t in adopted_at.items() if h >= e), default=until)
            late[e] = round(got - at, 2)
        assert late, "the authority served no epoch in the window"
        assert max(late.values()) < ADOPT_WITHIN_S, late
        # The race was tested: the client adopted epochs while the frozen guard was
        # still the first it asks (before a consensus dropped it).
        assert frozen_first, (served_at, adopted_at)
