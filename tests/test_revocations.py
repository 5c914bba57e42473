"""Revocations of delegated keys across a swarm of real nodes (issue 12).

A devnet of 3 nodes in one swarm (127.0.0.1). A worker holds a session key of alice's
(retrieve her inbox, store and retrieve namespace 5) and no seed:

* its store at one member reaches the others with its chain (the owner proof of a
  delegated store, checked by each receiving member);
* alice revokes it at member a while member c is down (the authority is stopped first,
  so the consensus keeps c listed); a refuses the key at once, b too (the revoke is
  forwarded), and a copy of a message signed by the revoked key, dated before the
  revocation, pushed by a listed node, is refused;
* a and b stop; b starts again alone and still refuses (revocations are in SQLite and
  loaded at start: nobody else up holds it); then c, which was down when it was stored,
  starts and learns it from b by anti-entropy, and refuses the key too.

No timed assertions: waits on the network are polls with generous deadlines.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import trio

from tests.devnetutil import running_devnet
from tests.nodeutil import now_ms
from tests.swarmutil import DAY_MS, call, eventually
from tests.test_replication_integrity import keys_of, metric, post, settled
from veil.onion import capability as cap
from veil.onion import replication_frames as wire
from veil.onion import rpc
from veil.onion.directory import ConsensusNode
from veil.onion.keys import Account
from veil.onion.replica import ReplicaMessage
from veil.onion.rpc.requests import store_signed_extra

pytestmark = pytest.mark.slow

NODE_CONFIG = {"replication": {"sync_interval": 0.5, "ack_timeout": 10.0}}
HOUR = 3_600_000


async def ask(node: ConsensusNode, request: bytes) -> rpc.Reply:
    async with httpx.AsyncClient(trust_env=False) as client:
        return await call(client, node.as_hop(), request)


async def held(node: ConsensusNode, reader: Account, namespace: int) -> set[bytes]:
    reply = await ask(node, rpc.make_retrieve(reader, namespace=namespace, now_ms=now_ms()))
    return {m.hash for m in rpc.RetrieveResult.from_wire(reply.raise_for_status()).messages}


async def worker_status(node: ConsensusNode, worker: cap.DelegatedSigner) -> tuple[str, str]:
    try:
        reply = await ask(node, rpc.make_retrieve(worker, now_ms=now_ms()))
    except Exception as exc:  # a node still starting: not an answer yet
        return "down", repr(exc)
    return reply.status, reply.error or ""


def delegated_copy(
    worker: cap.DelegatedSigner, namespace: int, data: bytes, signed_ms: int
) -> ReplicaMessage:
    """A replica of a store by ``worker`` signed at ``signed_ms`` (its proof carries the
    chain), as a listed node would push it."""
    account = worker.account
    h = rpc.message_hash(account, namespace, data)
    chain = worker.chain.encoded
    message = rpc.signing_message(
        "store", account, namespace, signed_ms, store_signed_extra(DAY_MS, h), chain
    )
    proof = rpc.StoreProof(
        worker.ed25519_public, signed_ms, DAY_MS, worker.sign(rpc.DOMAIN, message), chain
    ).encode()
    return ReplicaMessage(
        account.x25519_public, namespace, h, data, signed_ms, signed_ms + DAY_MS, proof
    )


async def test_a_revocation_reaches_every_member_even_one_that_was_down(tmp_path: Path) -> None:
    async with running_devnet(tmp_path, nodes=3, swarm_size=3, node_config=NODE_CONFIG) as net:
        consensus = await settled(net)
        (swarm,) = consensus.swarms.values()
        a, b, c = swarm.members
        name = {m.node_id: net.node(m.node_id.hex()).name for m in (a, b, c)}
        alice = Account.generate()
        key = cap.SessionKey.generate()
        resources = cap.parse_resources("self:0:retrieve", self_owner=alice.id)
        resources += cap.parse_resources("self:5:store,retrieve", self_owner=alice.id)
        chain = cap.delegate(
            alice, key.ed25519_public, resources, now_ms=now_ms(), lifetime_ms=HOUR
        )
        worker = cap.DelegatedSigner(key, chain)

        # The worker's store at a reaches b and c with its chain (checked by each).
        reply = await ask(
            a, rpc.make_store(worker, b"by the worker", HOUR, namespace=5, now_ms=now_ms())
        )
        h = rpc.StoreResult.from_wire(reply.raise_for_status()).hash
        for member in (b, c):

            async def has_it(member: ConsensusNode = member) -> bool:
                return h in await held(member, alice, 5)

            await eventually(has_it, what="the delegated store reaches every member")
        for member in (a, b, c):
            assert await worker_status(member, worker) == ("ok", "")

        # c goes down; alice revokes the worker's key at a.
        await trio.to_thread.run_sync(net.stop_authority, 0)
        await trio.to_thread.run_sync(net.stop_node, name[c.node_id])
        revoked_at = now_ms()
        record = cap.revoke(alice, chain, now_ms=revoked_at)
        kept = await ask(a, rpc.make_revoke(record.encoded))
        assert rpc.RevokeResult.from_wire(kept.raise_for_status()).created
        for member in (a, b):  # b by the forward, before alice was answered
            status, error = await worker_status(member, worker)
            assert status == "unauthorized" and "revoked" in error, (member, status, error)

        # A copy signed by the revoked key, dated before the revocation, is refused.
        backdated = delegated_copy(worker, 5, b"backdated " + os.urandom(8), revoked_at - 5_000)
        frame, _ = wire.seal_push(keys_of(net, b), a, [backdated], now_ms=now_ms())
        pushed = await post(a, "/replicate", frame)
        assert pushed.status_code == 401, pushed.text
        assert backdated.hash not in await held(a, alice, 5)
        # What the key stored before the revocation stays.
        assert h in await held(a, alice, 5)

        # a and b stop; b comes back alone: it refuses from its own store (nobody up
        # holds the revocation). Then c comes back and learns it from b by anti-entropy.
        await trio.to_thread.run_sync(net.stop_node, name[a.node_id])
        await trio.to_thread.run_sync(net.stop_node, name[b.node_id])
        await trio.to_thread.run_sync(lambda: net.start_node(name[b.node_id], wait=False))
        await trio.to_thread.run_sync(net.start_authority, 0)

        async def answers(member: ConsensusNode) -> tuple[str, str]:
            found: list[tuple[str, str]] = []

            async def answered() -> bool:
                found.append(await worker_status(member, worker))
                return found[-1][0] != "down"

            await eventually(answered, what="the node answers")
            return found[-1]

        status, error = await answers(b)
        assert status == "unauthorized" and "revoked" in error, (status, error)
        await trio.to_thread.run_sync(lambda: net.start_node(name[c.node_id], wait=False))

        async def c_refuses() -> bool:
            status, error = await worker_status(c, worker)
            return status == "unauthorized" and "revoked" in error

        await eventually(c_refuses, what="c learns the revocation it missed")
        url = net.node(name[c.node_id]).url
        assert await metric(url, "veil_replication_revocations_pulled_total") >= 1
        # c still serves alice herself, and the message stored before the revocation.
        assert h in await held(c, alice, 5)


async def test_revocations_are_handed_over_with_their_accounts(tmp_path: Path) -> None:
    """Nodes join until the swarm splits: the revocations of the accounts that move go
    to their new swarm (a forwarded revoke per record), whose members then refuse the
    revoked keys."""
    async with running_devnet(tmp_path, nodes=3, swarm_size=3, node_config=NODE_CONFIG) as net:
        consensus = await settled(net)
        (swarm,) = consensus.swarms.values()
        original = {m.node_id for m in swarm.members}
        workers: list[cap.DelegatedSigner] = []
        records: list[bytes] = []
        for i in range(16):
            alice = Account.generate()
            key = cap.SessionKey.generate()
            chain = cap.delegate(
                alice,
                key.ed25519_public,
                cap.parse_resources("self:0:retrieve", self_owner=alice.id),
                now_ms=now_ms(),
                lifetime_ms=HOUR,
            )
            member = swarm.members[i % len(swarm.members)]
            kept = await ask(
                member, rpc.make_revoke(cap.revoke(alice, chain, now_ms=now_ms()).encoded)
            )
            kept.raise_for_status()
            workers.append(cap.DelegatedSigner(key, chain))
            records.append(cap.revoke(alice, chain, now_ms=now_ms()).encoded)
        for _ in range(3):
            await trio.to_thread.run_sync(net.add_node)
        split = await trio.to_thread.run_sync(
            lambda: net.wait_for_consensus(lambda c: len(c.swarms) == 2, what="two swarms")
        )
        moved = 0
        for worker in workers:
            home = split.swarm_of(worker.account)
            moved += not original <= {m.node_id for m in home.members}
            for member in home.members:

                async def refuses(
                    member: ConsensusNode = member, w: cap.DelegatedSigner = worker
                ) -> bool:
                    status, error = await worker_status(member, w)
                    return status == "unauthorized" and "revoked" in error

                await eventually(refuses, what="every member of the new swarm refuses the key")
        assert moved, f"no account changed swarms in {split}"
        # A node outside an account's swarm keeps none of its revocations: wrong_swarm.
        worker, record = workers[0], records[0]
        outsider = next(n for n in split.nodes if n not in split.swarm_of(worker.account).members)

        async def wrong_swarm() -> bool:
            return (await ask(outsider, rpc.make_revoke(record))).status == "wrong_swarm"

        await eventually(wrong_swarm, what="a revoke outside the account's swarm is refused")
        # The original members sent the moved accounts' revocations to their new swarm
        # (its new members may also pull them from an original one that is in it).
        handed = 0.0
        for node_id in original:
            url = net.node(node_id.hex()).url
            handed += await metric(url, "veil_replication_revocations_handed_over_total")
        assert handed >= 1
