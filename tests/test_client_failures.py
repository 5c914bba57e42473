"""The client when the network misbehaves: dead relays, a dead guard, moved swarms.

Real ``veil-node`` processes on a devnet; nodes are killed with SIGKILL (a crash, not a
shutdown), so the client finds out the hard way, from refused connections.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.devnetutil import devnet
from veil.client.consensus import DirectoryPolicy
from veil.client.devnet import Devnet
from veil.client.home import Home
from veil.client.state import ClientState
from veil.client.veil_client import ClientConfig, VeilClient, open_client
from veil.onion import rpc
from veil.onion.envelope import seal
from veil.onion.keys import Account

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    # Eight nodes: room for two guards and middle relays after two nodes die.
    with devnet(tmp_path_factory.mktemp("fail"), nodes=8, swarm_size=4) as running:
        yield running


def new_home(tmp_path: Path, name: str) -> tuple[Home, Account]:
    home = Home(tmp_path / name)
    account = Account.generate()
    home.save_identity(account)
    return home, account


def member_named(net: Devnet, node_id: bytes) -> str:
    for member in net.nodes:
        if member.id == node_id.hex():
            return member.name
    raise AssertionError("not a node of the devnet")


async def receive(client: VeilClient, count: int, timeout: float = 90) -> list[str]:
    got: list[str] = []
    with trio.fail_after(timeout):
        async for message in client.messages():
            got.append(message.text)
            if len(got) == count:
                break
    return got


async def test_killed_middle_relay_path_is_rebuilt(net: Devnet, tmp_path: Path) -> None:
    home_a, _ = new_home(tmp_path, "a")
    home_b, b = new_home(tmp_path, "b")
    total = 30
    async with (
        open_client(home_a, net.network_file) as a,
        open_client(home_b, net.network_file) as receiver,
    ):
        await a.ping()
        guards = {g.node_id for g in a.paths.guards}
        path = a.paths.paths[0]
        middle = path.relays[1]
        assert middle.node_id not in guards
        # The recipient's swarm must survive the kill for this test to be about paths.
        victim = member_named(net, middle.node_id)

        async def sender() -> None:
            for n in range(total):
                if n == 5:
                    await trio.to_thread.run_sync(net.kill_node, victim)
                await a.send(b.id, str(n), ttl_s=600)  # raises if a send fails for good

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender)
                got = await receive(receiver, total)
        finally:
            # The devnet is shared by this module's tests: leave it whole, or a later
            # test's client may pick the dead node (still listed for a while) as a guard.
            if not net.node(victim).is_running():
                await trio.to_thread.run_sync(net.start_node, victim)

        assert got == [str(n) for n in range(total)]
        # No path goes through the dead node any more.
        assert all(middle.node_id not in p.node_ids for p in a.paths.paths)
        # The dead relay was blamed (or already dropped from the consensus), and the
        # path through it was replaced.
        assert a.paths.failures(middle.node_id) >= 1 or a.consensus.node(middle.node_id) is None
        assert path not in a.paths.paths


async def test_killed_guard_other_guard_then_a_replacement(net: Devnet, tmp_path: Path) -> None:
    home_a, _ = new_home(tmp_path, "a")
    home_b, b = new_home(tmp_path, "b")
    async with (
        open_client(home_a, net.network_file) as a,
        open_client(home_b, net.network_file) as receiver,
    ):
        await a.ping()
        dead, survivor = (g.node_id for g in a.paths.guards)
        await trio.to_thread.run_sync(net.kill_node, member_named(net, dead))

        # Every send works at once, through the other guard when the dead one is tried.
        sent = 0
        with trio.fail_after(60):
            while dead in {g.node_id for g in a.paths.guards} or sent < 10:
                await a.send(b.id, str(sent), ttl_s=600)
                sent += 1
        assert await receive(receiver, sent) == [str(n) for n in range(sent)]

        guards = {g.node_id for g in a.paths.guards}
        assert dead not in guards
        assert survivor in guards  # a working guard is kept
        assert len(guards) == 2  # and a replacement was picked
    # The choice is persisted.
    with ClientState.open(home_a.state_path) as state:
        assert {g.node_id for g in state.get_guards()} == guards


async def test_wrong_swarm_answer_is_followed(tmp_path: Path) -> None:
    home_s, _ = new_home(tmp_path, "s")
    home_r, recipient = new_home(tmp_path, "r")
    # Three nodes, one swarm; the sender's client never refreshes on its own (a long
    # minimum wait), so it keeps that view after the network grows to two swarms.
    stale = ClientConfig(directory=DirectoryPolicy(min_wait_s=3600))
    with devnet(tmp_path, nodes=3, swarm_size=3, name="grow") as grow:
        async with open_client(home_s, grow.network_file, config=stale) as sender:
            old_ids = {n.node_id for n in sender.consensus.nodes}
            await sender.ping()
            for _ in range(3):
                await trio.to_thread.run_sync(grow.add_node)
            current = await trio.to_thread.run_sync(grow.consensus)
            assert len(current.swarms) == 2
            assert sender.consensus.epoch < current.epoch
            # An account whose swarm now leaves out one of the old nodes: the sender's
            # consensus still says that node holds it.
            assert old_ids
            for _ in range(10_000):  # bounded: a CPU loop cannot be cancelled by trio
                if not old_ids <= set(current.swarm_of(recipient.id).node_ids):
                    break
                recipient = Account.generate()
            else:
                raise AssertionError("no account maps to a swarm without an old node")
            home_r.save_identity(recipient, overwrite=True)
            swarm = set(current.swarm_of(recipient.id).node_ids)
            outsider = sorted(old_ids - swarm)[0]

            # Wait until the old nodes hold the new consensus (they refresh every second).
            async with open_client(home_r, grow.network_file) as helper:
                node = helper.consensus.node(outsider)
                assert node is not None
                with trio.fail_after(30):
                    while True:
                        reply = await helper.call(
                            lambda _now: rpc.make_get_swarm(recipient.id),
                            destination=node.as_hop(),
                        )
                        result = rpc.GetSwarmResult.from_wire(reply.result or {})
                        if result.epoch >= current.epoch:
                            break
                        await trio.sleep(0.2)

            # Store at the outsider first: it answers wrong_swarm naming the swarm, and
            # the client stores there instead, then refreshes its consensus.
            envelope = seal(sender.account, recipient.id, b"found you", timestamp_ms=1)
            answer = await sender.onion.call(
                lambda now: rpc.make_store(recipient.id, envelope, 600_000, now_ms=now),
                account=recipient.id,
                prefer=outsider,
            )
            assert answer.node.node_id in swarm
            with trio.fail_after(30):
                while sender.consensus.epoch < current.epoch:
                    await trio.sleep(0.1)
            # Later requests use the new consensus directly.
            assert set(h.node_id for h in sender.onion.swarm_members(recipient.id)) == swarm

        async with open_client(home_r, grow.network_file) as receiver:
            (message,) = await receive_all(receiver, 1)
            assert message.text == "found you"
            assert message.sender == sender.account.id


async def receive_all(client: VeilClient, count: int) -> list:  # type: ignore[type-arg]
    got = []
    with trio.fail_after(60):
        async for message in client.messages():
            got.append(message)
            if len(got) == count:
                return got
    return got
