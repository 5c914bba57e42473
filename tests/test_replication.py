"""Swarm replication on a real devnet: authorities and nodes as processes on 127.0.0.1.

Every store and read is an onion request built with onion/packet/ and onion/rpc/
(tests/swarmutil.py). What is checked is what DESIGN.md and node/replication/ promise:

* the ack rule: once a store is acknowledged, every member of the account's swarm
  already holds the message (read at once, without waiting);
* no acknowledged message is lost when all but one member of a swarm fail: the survivor
  serves them, and after the consensus dissolves that swarm they reach every member of
  the accounts' new swarm;
* a member that was down catches up by pulling (anti-entropy), and nodes that come back
  with old data, or that join until a swarm splits, leave every message on every
  member of its account's swarm (handover), and the old holders stop serving accounts
  that moved away.

Waits on the network (a consensus, a pull) are polls with generous deadlines, never
timed assertions.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import httpx
import pytest
import trio

from tests.devnetutil import running_devnet
from tests.swarmutil import eventually, read_following, read_hashes, store
from veil.client.devnet import Devnet
from veil.onion import rpc
from veil.onion.directory import Consensus
from veil.onion.keys import Account
from veil.onion.packet import Hop

pytestmark = pytest.mark.slow

NODE_CONFIG = {
    "replication": {
        "sync_interval": 0.5,
        "handover_interval": 2.0,
        # Generous: the ack-rule check reads at once, and CI machines are slow.
        "ack_timeout": 10.0,
    }
}

Stored = dict[Account, set[bytes]]


def accounts_per_swarm(consensus: Consensus, per_swarm: int) -> list[Account]:
    """Fresh accounts, ``per_swarm`` of them in each swarm of ``consensus``."""
    wanted = {sid: per_swarm for sid in consensus.swarms}
    found: list[Account] = []
    while any(wanted.values()):
        account = Account.generate()
        sid = consensus.swarm_of(account.id).swarm_id
        if wanted[sid]:
            wanted[sid] -= 1
            found.append(account)
    return found


async def current(net: Devnet) -> Consensus:
    return await trio.to_thread.run_sync(net.consensus)


async def adopted(client: httpx.AsyncClient, net: Devnet, epoch: int) -> bool:
    """Every running node holds a consensus of ``epoch`` or later (GET /info)."""
    for member in net.nodes:
        if not member.is_running():
            continue
        try:
            info = (await client.get(f"{member.url}/info", timeout=5)).json()
        except (httpx.HTTPError, ValueError):
            return False
        if info.get("epoch", -1) < epoch:
            return False
    return True


async def store_all(
    client: httpx.AsyncClient, consensus: Consensus, accounts: Iterable[Account], per: int
) -> Stored:
    """``per`` messages to each account, each stored at a different member of its swarm."""
    stored: Stored = {}
    for i, account in enumerate(accounts):
        members = consensus.swarm_of(account.id).members
        stored[account] = set()
        for j in range(per):
            member = members[(i + j) % len(members)]
            data = f"{i}/{j} ".encode() + os.urandom(8)
            result = await store(client, member.as_hop(), account.id, data)
            assert result.created
            stored[account].add(result.hash)
    return stored


async def every_member_holds(client: httpx.AsyncClient, net: Devnet, stored: Stored) -> bool:
    """True if, in the current consensus, every member of each account's swarm serves
    exactly that account's stored messages (False while anything is still moving)."""
    consensus = await current(net)
    if not consensus.nodes:  # e.g. an authority that has just restarted
        return False
    for account, hashes in stored.items():
        for member in consensus.swarm_of(account.id).members:
            try:
                held = await read_hashes(client, member.as_hop(), account)
            except Exception:  # wrong_swarm or unavailable while nodes adopt, a dead node
                return False
            if held != hashes:
                return False
    return True


async def test_members_hold_acked_messages_and_survivors_keep_them(tmp_path: Path) -> None:
    async with (
        running_devnet(tmp_path, nodes=6, swarm_size=3, node_config=NODE_CONFIG) as net,
        httpx.AsyncClient(trust_env=False) as client,
    ):
        consensus = await current(net)
        assert len(consensus.swarms) == 2
        await eventually(lambda: adopted(client, net, consensus.epoch), what="nodes adopt")
        accounts = accounts_per_swarm(consensus, 3)
        stored = await store_all(client, consensus, accounts, per=3)

        # The ack rule: every member already holds every acknowledged message.
        for account, hashes in stored.items():
            for member in consensus.swarm_of(account.id).members:
                assert await read_hashes(client, member.as_hop(), account) == hashes

        # All but one member of a swarm crash. The authority is stopped first, so that
        # the consensus cannot move meanwhile: the survivor must serve everything alone.
        swarm = next(iter(consensus.swarms.values()))
        survivor, victims = swarm.members[0], swarm.members[1:]
        await trio.to_thread.run_sync(net.stop_authority, 0)
        for victim in victims:
            await trio.to_thread.run_sync(net.kill_node, victim.node_id.hex())
        for account, hashes in stored.items():
            if consensus.swarm_of(account.id).swarm_id == swarm.swarm_id:
                assert await read_hashes(client, survivor.as_hop(), account) == hashes

        # The authority comes back and drops the dead nodes: that swarm is too small and
        # dissolves; its accounts go to the other swarm, whose members get the messages.
        await trio.to_thread.run_sync(net.start_authority, 0)
        names = [net.node(v.node_id.hex()).name for v in victims]
        alive = [m.name for m in net.nodes if m.name not in names]
        await trio.to_thread.run_sync(lambda: net.wait_for_nodes(present=alive, absent=names))
        await eventually(
            lambda: every_member_holds(client, net, stored), what="messages after dissolution"
        )

        # The crashed nodes come back with their old data; a new swarm forms and the
        # messages end up on every member of each account's swarm again.
        for name in names:
            await trio.to_thread.run_sync(lambda n=name: net.start_node(n))
        await eventually(
            lambda: every_member_holds(client, net, stored), what="messages after the rejoin"
        )
        # A client that starts at a node outside an account's swarm is sent to it.
        final = await current(net)
        assert len(final.nodes) == 6 and len(final.swarms) == 2
        for account, hashes in stored.items():
            home = final.swarm_of(account.id)
            elsewhere = next(n for n in final.nodes if n not in home.members)
            held, served_by = await read_following(client, elsewhere.as_hop(), account)
            assert held == hashes and served_by.node_id in home.node_ids


async def test_catch_up_after_restart_and_handover_on_split(tmp_path: Path) -> None:
    async with (
        running_devnet(tmp_path, nodes=3, swarm_size=3, node_config=NODE_CONFIG) as net,
        httpx.AsyncClient(trust_env=False) as client,
    ):
        consensus = await current(net)
        assert len(consensus.swarms) == 1
        await eventually(lambda: adopted(client, net, consensus.epoch), what="nodes adopt")
        accounts = [Account.generate() for _ in range(12)]
        stored = await store_all(client, consensus, accounts, per=2)

        # A member stops; messages stored meanwhile reach it by pulling once it is back.
        await trio.to_thread.run_sync(net.stop_node, "node-2")
        await trio.to_thread.run_sync(
            lambda: net.wait_for_nodes(present=["node-0", "node-1"], absent=["node-2"])
        )
        reduced = await current(net)
        await eventually(lambda: adopted(client, net, reduced.epoch), what="nodes adopt")
        later = await store_all(client, reduced, accounts, per=1)
        for account in accounts:
            stored[account] |= later[account]
        await trio.to_thread.run_sync(lambda: net.start_node("node-2"))
        back = net.node("node-2").hop()

        async def caught_up(node: Hop) -> bool:
            for account, hashes in stored.items():
                try:
                    if await read_hashes(client, node, account) != hashes:
                        return False
                except Exception:  # not listed again yet: wrong_swarm
                    return False
            return True

        await eventually(lambda: caught_up(back), what="node-2 pulls what it missed")

        # A member that is down but still listed (the authority is stopped, so the
        # consensus cannot drop it): stores are still acknowledged, its pushes fail,
        # and once it is back it gets everything.
        current_view = await current(net)
        await trio.to_thread.run_sync(net.stop_authority, 0)
        await trio.to_thread.run_sync(net.stop_node, "node-1")
        node_1 = bytes.fromhex(net.node("node-1").id)
        up = [n for n in current_view.nodes if n.node_id != node_1]
        for i, account in enumerate(accounts):
            data = b"while node-1 is down " + os.urandom(8)
            result = await store(client, up[i % len(up)].as_hop(), account.id, data)
            stored[account].add(result.hash)
        await trio.to_thread.run_sync(lambda: net.start_node("node-1", wait=False))
        await trio.to_thread.run_sync(net.start_authority, 0)
        await eventually(
            lambda: caught_up(net.node("node-1").hop()), what="node-1 gets what it missed"
        )
        failures = 0.0
        for member in (net.node("node-0"), net.node("node-2")):
            text = (await client.get(f"{member.url}/metrics")).text
            failures += sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("veil_replication_push_failures_total")
            )
        assert failures > 0  # the pushes to node-1 did fail meanwhile

        # Nodes join until the swarm splits: the accounts of the new swarm are handed
        # over to it, and their old holders no longer serve them.
        before = {node.node_id for node in (await current(net)).nodes}
        for _ in range(3):
            await trio.to_thread.run_sync(net.add_node)
        split = await trio.to_thread.run_sync(
            lambda: net.wait_for_consensus(lambda c: len(c.swarms) == 2, what="two swarms")
        )
        await eventually(lambda: every_member_holds(client, net, stored), what="handover")
        final = await current(net)
        moved = [
            (account, node)
            for account in accounts
            for node in final.nodes
            if node.node_id in before and node not in final.swarm_of(account.id).members
        ]
        assert moved, f"no account left an original node's swarm in {split}"
        for account, node in moved:
            with pytest.raises(rpc.SwarmMoved) as refused:
                await read_hashes(client, node.as_hop(), account)
            assert refused.value.swarm.swarm_id == final.swarm_of(account.id).swarm_id
