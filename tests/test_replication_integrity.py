"""Replication integrity (issue 11, items 5 and 6) against real node processes.

A devnet of 4 nodes in two swarms of 2 (127.0.0.1), shared by the module. The test acts
as a listed node (it reads a devnet node's keys from its data directory and seals frames
as that node, exactly as the node would) and tries the attacks of the issue:

* a replication frame copied off the wire and sent again (push, forward) is refused
  ``replayed`` (409), so a replayed forwarded ``delete_all`` deletes nothing stored
  after it;

No timed assertions: waits on the network are polls with generous deadlines.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest
import trio

from tests.devnetutil import devnet
from tests.nodeutil import now_ms
from tests.swarmutil import DAY_MS, call, eventually, read_hashes, store
from veil.client.devnet import Devnet
from veil.node.keystore import load_or_create_keys
from veil.onion import replication_frames as wire
from veil.onion import rpc
from veil.onion.directory import Consensus, ConsensusNode
from veil.onion.keys import Account, NodeKeys

pytestmark = pytest.mark.slow

NODE_CONFIG = {"replication": {"sync_interval": 0.5, "ack_timeout": 10.0}}


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    with devnet(
        tmp_path_factory.mktemp("integrity"), nodes=4, swarm_size=2, node_config=NODE_CONFIG
    ) as running:
        running.wait_for_consensus(lambda c: len(c.swarms) == 2, what="two swarms")
        yield running


async def settled(net: Devnet) -> Consensus:
    """The current consensus, once every node holds it (or a later one)."""
    consensus = await trio.to_thread.run_sync(net.consensus)

    async def adopted() -> bool:
        async with httpx.AsyncClient(trust_env=False) as client:
            for member in net.nodes:
                info = (await client.get(f"{member.url}/info", timeout=5)).json()
                if info.get("epoch", -1) < consensus.epoch:
                    return False
        return True

    await eventually(adopted, what="every node adopts the consensus")
    return consensus


def account_in(consensus: Consensus, swarm_id: int) -> Account:
    while True:
        account = Account.generate()
        if consensus.swarm_of(account.id).swarm_id == swarm_id:
            return account


def keys_of(net: Devnet, node: ConsensusNode) -> NodeKeys:
    """A devnet node's keys, read from its data dir (to seal frames as that node)."""
    keys, created = load_or_create_keys(net.node(node.node_id.hex()).data_dir)
    assert not created
    return keys


async def post(node: ConsensusNode, path: str, frame: bytes) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False) as client:
        return await client.post(f"http://{node.host}:{node.port}{path}", content=frame, timeout=10)


def refusal(r: httpx.Response) -> tuple[int, str]:
    return r.status_code, r.text.split(":")[0]


# --- item 5: replayed frames -----------------------------------------------------------------


async def test_a_replayed_forward_delete_all_deletes_nothing_stored_after_it(net: Devnet) -> None:
    consensus = await settled(net)
    swarm_id = next(iter(consensus.swarms))
    receiver, peer = consensus.swarms[swarm_id].members
    alice = account_in(consensus, swarm_id)
    peer_keys = keys_of(net, peer)
    async with httpx.AsyncClient(trust_env=False) as client:
        first = await store(client, receiver.as_hop(), alice.id, b"before " + os.urandom(8))
        # A member forwards alice's delete_all (as the peer does after executing it); a
        # watcher of the link keeps a copy of the frame.
        request = rpc.make_delete_all(alice, namespace=None, now_ms=now_ms())
        frame, _ = wire.seal_forward(peer_keys, receiver, request, now_ms=now_ms())
        assert (await post(receiver, "/replicate/forward", frame)).status_code == 200
        assert first.hash not in await read_hashes(client, receiver.as_hop(), alice)
        # Alice stores a new message; the copy of the forward is sent again.
        later = await store(client, receiver.as_hop(), alice.id, b"after " + os.urandom(8))
        replayed = await post(receiver, "/replicate/forward", frame)
        assert refusal(replayed) == (409, "replayed")
        assert later.hash in await read_hashes(client, receiver.as_hop(), alice)
        assert later.hash in await read_hashes(client, peer.as_hop(), alice)


async def test_a_replayed_push_is_refused(net: Devnet) -> None:
    consensus = await settled(net)
    swarm_id = next(iter(consensus.swarms))
    receiver, peer = consensus.swarms[swarm_id].members
    alice = account_in(consensus, swarm_id)
    t = now_ms()
    data = b"pushed " + os.urandom(8)
    h = rpc.message_hash(alice.id, rpc.INBOX, data)
    m = wire.ReplicaMessage(alice.id.x25519_public, rpc.INBOX, h, data, t, t + DAY_MS)
    frame, _ = wire.seal_push(keys_of(net, peer), receiver, [m], now_ms=t)
    assert (await post(receiver, "/replicate", frame)).status_code == 200
    assert refusal(await post(receiver, "/replicate", frame)) == (409, "replayed")
    # The owner deletes it; the copy of the push, sent again, does not bring it back.
    async with httpx.AsyncClient(trust_env=False) as client:
        reply = await call(client, receiver.as_hop(), rpc.make_delete(alice, [h], now_ms=now_ms()))
        reply.raise_for_status()
        assert refusal(await post(receiver, "/replicate", frame)) == (409, "replayed")
        assert h not in await read_hashes(client, receiver.as_hop(), alice)
