"""Encryption sessions across a swarm of real nodes (issue 13).

A devnet of 3 nodes in one swarm (127.0.0.1). A session is created at member a:

* its records and a member's message reach b and c (each member judges the records it
  receives against its own state; the messages carry the member's chain);
* c goes down; the creator revokes the member at a; a and b refuse the member its
  reads of the state and the messages; a copy of a message signed by the revoked member,
  dated before the revocation and pushed by a listed node, is not stored;
* a and b stop; b comes back alone and still refuses (its state is rebuilt from its
  store); then c, which was down when the revocation was stored, comes back, learns the
  revocation record by anti-entropy and refuses the member too;
* the creator ends the session at b: c deletes the messages and answers ``gone``.

No timed assertions: waits on the network are polls with generous deadlines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.devnetutil import running_devnet
from tests.nodeutil import now_ms
from tests.swarmutil import DAY_MS, call, eventually
from tests.test_replication_integrity import keys_of, post, settled
from veil.onion import capability as cap
from veil.onion import replication_frames as wire
from veil.onion import rpc
from veil.onion.directory import ConsensusNode
from veil.onion.group import create_session, end_session, revoke_members
from veil.onion.keys import Account, owner_key
from veil.onion.replica import ReplicaMessage
from veil.onion.rpc.requests import store_signed_extra

pytestmark = pytest.mark.slow

NODE_CONFIG = {"replication": {"sync_interval": 0.5, "ack_timeout": 10.0}}
HOUR = 3_600_000


async def ask(node: ConsensusNode, request: bytes) -> rpc.Reply:
    async with httpx.AsyncClient(trust_env=False) as client:
        return await call(client, node.as_hop(), request)


async def status_of(node: ConsensusNode, reader: cap.DelegatedSigner, ns: int) -> tuple[str, Any]:
    try:
        reply = await ask(node, rpc.make_retrieve(reader, namespace=ns, now_ms=now_ms()))
    except Exception as exc:  # a node still starting: not an answer yet
        return "down", repr(exc)
    if reply.status != "ok":
        return reply.status, reply.error
    return "ok", [m.data for m in rpc.RetrieveResult.from_wire(reply.raise_for_status()).messages]


def member_copy(signer: cap.DelegatedSigner, data: bytes, signed_ms: int) -> ReplicaMessage:
    """A copy of a message stored by ``signer`` (a member) in namespace 2, signed at
    ``signed_ms``, as a listed node would push it."""
    group = signer.owner
    h = rpc.message_hash(group, 2, data)
    chain = signer.chain.encoded
    message = rpc.signing_message(
        "store", group, 2, signed_ms, store_signed_extra(DAY_MS, h), chain
    )
    proof = rpc.StoreProof(
        signer.ed25519_public, signed_ms, DAY_MS, signer.sign(rpc.DOMAIN, message), chain
    ).encode()
    return ReplicaMessage(owner_key(group), 2, h, data, signed_ms, signed_ms + DAY_MS, proof)


async def test_a_session_across_the_swarm_revocation_and_end(tmp_path: Path) -> None:
    async with running_devnet(tmp_path, nodes=3, swarm_size=3, node_config=NODE_CONFIG) as net:
        consensus = await settled(net)
        (swarm,) = consensus.swarms.values()
        a, b, c = swarm.members
        name = {m.node_id: net.node(m.node_id.hex()).name for m in (a, b, c)}
        creator, member, other = Account.generate(), Account.generate(), Account.generate()
        new = create_session(
            creator, {member.id: {"read"}, other.id: {"read"}}, now_ms=now_ms()
        )
        state = new.state

        def signer(who: Account) -> cap.DelegatedSigner:
            chain = state.chain_for(who.id, "read", now_ms=now_ms())
            assert chain is not None
            return cap.DelegatedSigner.for_member(who, chain)

        admin = signer(creator)
        for record in new.records:
            reply = await ask(a, rpc.make_store(admin, record.encoded, rpc.MAX_TTL_PRIVATE_MS,
                                                namespace=1, now_ms=now_ms()))
            reply.raise_for_status()
        said = await ask(a, rpc.make_store(signer(member), b"hello", HOUR, namespace=2,
                                           now_ms=now_ms()))
        said.raise_for_status()
        held = signer(member)  # the chain the member keeps after its revocation

        for node in (b, c):

            async def has_it(node: ConsensusNode = node) -> bool:
                status, found = await status_of(node, signer(other), 2)
                return status == "ok" and b"hello" in found

            await eventually(has_it, what="the session and its message reach every member")

        # c goes down; the creator revokes the member at a.
        await trio.to_thread.run_sync(net.stop_authority, 0)
        await trio.to_thread.run_sync(net.stop_node, name[c.node_id])
        revoked_at = now_ms()
        revocations = revoke_members(state, creator, [member.id], now_ms=revoked_at)
        for record in revocations:
            reply = await ask(a, rpc.make_store(admin, record.encoded, rpc.MAX_TTL_PRIVATE_MS,
                                                namespace=1, now_ms=now_ms()))
            reply.raise_for_status()
        state = state.add(*revocations)
        for node in (a, b):

            async def refuses(node: ConsensusNode = node) -> bool:
                results = [await status_of(node, held, ns) for ns in (1, 2)]
                return all(s == "unauthorized" and "revoked" in e for s, e in results)

            await eventually(refuses, what="a and b refuse the revoked member")

        # A copy signed by the revoked member, dated before its revocation, pushed by a
        # listed node: not stored.
        backdated = member_copy(held, b"backdated", revoked_at - 5_000)
        frame, _ = wire.seal_push(keys_of(net, b), a, [backdated], now_ms=now_ms())
        await post(a, "/replicate", frame)
        status, found = await status_of(a, signer(other), 2)
        assert status == "ok" and b"backdated" not in found and b"hello" in found

        # a and b stop; b comes back alone and refuses from its own store; then c.
        await trio.to_thread.run_sync(net.stop_node, name[a.node_id])
        await trio.to_thread.run_sync(net.stop_node, name[b.node_id])
        await trio.to_thread.run_sync(lambda: net.start_node(name[b.node_id], wait=False))
        await trio.to_thread.run_sync(net.start_authority, 0)

        async def b_refuses() -> bool:
            found = await status_of(b, held, 2)
            return found[0] == "unauthorized" and "revoked" in found[1]

        await eventually(b_refuses, what="b refuses the revoked member after its restart")
        await trio.to_thread.run_sync(lambda: net.start_node(name[c.node_id], wait=False))

        async def c_refuses() -> bool:
            results = [await status_of(c, held, ns) for ns in (1, 2)]
            return all(s == "unauthorized" and "revoked" in str(e) for s, e in results)

        await eventually(c_refuses, what="c learns the revocation it missed")
        status, found = await status_of(c, signer(other), 2)
        assert status == "ok" and b"hello" in found

        # The end, stored at b, reaches c: the messages go, everything is refused.
        end = end_session(state, creator, now_ms=now_ms())
        reply = await ask(b, rpc.make_store(admin, end.encoded, rpc.MAX_TTL_PRIVATE_MS,
                                            namespace=1, now_ms=now_ms()))
        reply.raise_for_status()

        async def c_gone() -> bool:
            return (await status_of(c, signer(other), 2))[0] == "gone"

        await eventually(c_gone, what="the end reaches c")
        assert (await status_of(c, signer(other), 1))[0] == "gone"
