"""Rooms across a swarm of real nodes (issue 16): every member enforces the room's rules,
and moderation holds on every member, one that was down included.

A devnet of 3 nodes in one swarm (127.0.0.1), shared by the module; each test makes its
own room. The tests act as users (onion requests, as a client sends them) and, for the
hostile peer, as a listed node (a devnet node's keys read from its data directory, its
frames sealed as that node would):

* a forged post (another author's signature), a post by a banned author, one over the
  room's rate (counted with the copies from the other members), one without the work,
  a non-moderator's delete and ban, stale metadata: refused by every member with the
  same status;
* a moderator deletes a post and bans an author with his past while a member is down:
  once back, that member drops them, and neither a pull nor a push brings them back;
* a listed node pushes forged room records: no member stores them; it pushes a post
  before the metadata of its room: the member keeps it aside and stores it once the
  metadata comes.

No timed assertions: waits on the network are polls with generous deadlines.
"""

from __future__ import annotations

from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from typing import Any

import cbor2
import httpx
import pytest
import trio

from tests.devnetutil import devnet
from tests.nodeutil import now_ms
from tests.swarmutil import call, eventually, settled
from tests.test_replication_integrity import keys_of, post
from veil.client.devnet import Devnet
from veil.onion import replication_frames as wire
from veil.onion import rpc
from veil.onion.directory import ConsensusNode
from veil.onion.keys import Account, AccountId, owner_key
from veil.onion.replica import ReplicaMessage
from veil.onion.room import (
    POST_DOMAIN,
    ROOM_NAMESPACE,
    make_meta,
    make_moderation,
    make_room_post,
)

pytestmark = pytest.mark.slow

NODE_CONFIG = {"replication": {"sync_interval": 0.5, "ack_timeout": 10.0}}
TTL = rpc.max_ttl_ms(ROOM_NAMESPACE)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    with devnet(
        tmp_path_factory.mktemp("rooms"), nodes=3, swarm_size=3, node_config=NODE_CONFIG
    ) as running:
        yield running


async def members(net: Devnet) -> list[ConsensusNode]:
    consensus = await settled(net)
    (swarm,) = consensus.swarms.values()
    return list(swarm.members)


async def put(node: ConsensusNode, room: AccountId, data: bytes) -> str:
    """An unsigned store of one room record at ``node``; the reply's status."""
    request = rpc.make_store(room, data, TTL, now_ms=now_ms(), namespace=ROOM_NAMESPACE)
    async with httpx.AsyncClient(trust_env=False) as client:
        try:
            return (await call(client, node.as_hop(), request)).status
        except Exception as exc:  # a node still starting: not an answer yet
            return f"down: {exc!r}"


async def held(node: ConsensusNode, room: AccountId) -> list[bytes] | None:
    """Every record of the room at ``node``, read unsigned (None: no answer)."""
    found: list[bytes] = []
    last: bytes | None = None
    async with httpx.AsyncClient(trust_env=False) as client:
        while True:
            request = rpc.make_retrieve(
                room, now_ms=now_ms(), namespace=ROOM_NAMESPACE, last_hash=last
            )
            try:
                reply = await call(client, node.as_hop(), request)
            except Exception:
                return None
            if reply.status != "ok":
                return None
            page = rpc.RetrieveResult.from_wire(reply.raise_for_status())
            found.extend(m.data for m in page.messages)
            if not page.more:
                return found
            last = page.messages[-1].hash


async def everywhere(
    nodes: list[ConsensusNode],
    room: AccountId,
    want: AbstractSet[bytes],
    gone: AbstractSet[bytes] = frozenset(),
) -> None:
    """Wait until every node holds ``want`` and none of ``gone``."""
    for node in nodes:

        async def there(node: ConsensusNode = node) -> bool:
            records = await held(node, room)
            return records is not None and want <= set(records) and not gone & set(records)

        await eventually(there, what=f"the room's records at {node.node_id_hex[:8]}")


def resigned(data: bytes, key: Account, domain: bytes, **changes: Any) -> bytes:
    obj = {**cbor2.loads(data), **changes}
    obj.pop("sig")
    obj["k"] = key.ed25519_public
    obj["sig"] = key.sign(domain, cbor2.dumps(obj, canonical=True))
    return cbor2.dumps(obj, canonical=True)


def copy_of(room: AccountId, data: bytes) -> ReplicaMessage:
    t = now_ms()
    h = rpc.message_hash(room, ROOM_NAMESPACE, data)
    return ReplicaMessage(owner_key(room), ROOM_NAMESPACE, h, data, t, t + TTL, None)


async def test_every_member_refuses_what_the_rooms_rules_refuse(net: Devnet) -> None:
    nodes = await members(net)
    owner, mod, alice, bob = (Account.generate() for _ in range(4))
    room = owner.id
    meta = make_meta(owner, seq=2, name="lobby", rate=2, pow_bits=4, moderators=(mod.id,))
    ban = make_moderation(mod, room, "ban", now_ms=now_ms(), who=bob.id)
    assert await put(nodes[0], room, meta.encoded) == "ok"
    assert await put(nodes[0], room, ban.encoded) == "ok"
    # Alice's two posts of this minute, at the first node: the others count the copies.
    first = [make_room_post(alice, room, f"a{i}", now_ms=now_ms(), pow_bits=4) for i in range(2)]
    for p in first:
        assert await put(nodes[0], room, p.encoded) == "ok"
    await everywhere(nodes, room, {meta.encoded, ban.encoded, *(p.encoded for p in first)})
    for node in nodes:
        t = now_ms()
        good = make_room_post(alice, room, "hi", now_ms=t, pow_bits=4).encoded
        hostile = {
            "forged": resigned(good, alice, POST_DOMAIN, a=mod.id.x25519_public),
            "banned": make_room_post(bob, room, "let me in", now_ms=t, pow_bits=4).encoded,
            "over the rate": good,
            "no work": make_room_post(mod, room, "lazy", now_ms=t).encoded,
            "stranger's delete": make_moderation(
                alice, room, "delete", now_ms=t, post_ids=[first[0].post_id]
            ).encoded,
            "stranger's ban": make_moderation(alice, room, "ban", now_ms=t, who=mod.id).encoded,
            "stale metadata": make_meta(owner, seq=1, name="old").encoded,
        }
        got = {what: await put(node, room, data) for what, data in hostile.items()}
        assert got == {
            "forged": "unauthorized",
            "banned": "forbidden",
            "over the rate": "rate_limited",
            "no work": "bad_request",
            "stranger's delete": "forbidden",
            "stranger's ban": "forbidden",
            "stale metadata": "replayed",
        }, node.node_id_hex
    records = await held(nodes[2], room)
    assert records is not None and len(records) == 4


async def test_moderation_holds_on_a_member_that_was_down(net: Devnet) -> None:
    nodes = await members(net)
    a, b, c = nodes
    owner, mod, alice, bob = (Account.generate() for _ in range(4))
    room = owner.id
    meta = make_meta(owner, seq=1, name="lobby", moderators=(mod.id,)).encoded
    spam = make_room_post(alice, room, "spam", now_ms=now_ms())
    bobs = make_room_post(bob, room, "bob's", now_ms=now_ms() - 1000)
    keep = make_room_post(alice, room, "keep", now_ms=now_ms())
    for data in (meta, spam.encoded, bobs.encoded, keep.encoded):
        assert await put(a, room, data) == "ok"
    await everywhere(nodes, room, {meta, spam.encoded, bobs.encoded, keep.encoded})
    name_c = net.node(c.node_id.hex()).name
    await trio.to_thread.run_sync(net.stop_node, name_c)
    delete = make_moderation(mod, room, "delete", now_ms=now_ms(), post_ids=[spam.post_id])
    ban = make_moderation(mod, room, "ban", now_ms=now_ms(), who=bob.id, delete_past=True)
    assert await put(a, room, delete.encoded) == "ok"
    assert await put(b, room, ban.encoded) == "ok"
    gone = {spam.encoded, bobs.encoded}
    await everywhere([a, b], room, {delete.encoded, ban.encoded, keep.encoded}, gone)
    await trio.to_thread.run_sync(lambda: net.start_node(name_c, wait=False))
    await everywhere(nodes, room, {delete.encoded, ban.encoded, keep.encoded}, gone)
    # Neither a push of the deleted posts (a listed node's, b's keys) nor the pulls of
    # the next rounds bring them back, at c or anywhere.
    frame, _ = wire.seal_push(keys_of(net, b), c, [copy_of(room, d) for d in gone], now_ms=now_ms())
    assert (await post(c, "/replicate", frame)).status_code == 200
    await trio.sleep(2.0)  # four anti-entropy rounds
    await everywhere(nodes, room, {keep.encoded}, gone)
    assert await put(c, room, spam.encoded) == "gone"
    assert await put(c, room, make_room_post(bob, room, "hi", now_ms=now_ms()).encoded) == (
        "forbidden"
    )


async def test_a_listed_node_cannot_push_forged_records_and_early_ones_wait(
    net: Devnet,
) -> None:
    nodes = await members(net)
    a, b, c = nodes
    owner, alice, mallory = (Account.generate() for _ in range(3))
    room = owner.id
    meta = make_meta(owner, seq=1, name="lobby").encoded
    early = make_room_post(alice, room, "before the room", now_ms=now_ms()).encoded
    # b pushes to c a post of a room c knows nothing of yet: kept aside, not stored.
    frame, _ = wire.seal_push(keys_of(net, b), c, [copy_of(room, early)], now_ms=now_ms())
    assert (await post(c, "/replicate", frame)).status_code == 200
    assert await held(c, room) == []
    # The owner opens the room at a: c stores the metadata, then the post that waited.
    assert await put(a, room, meta) == "ok"
    await everywhere([c], room, {meta, early})
    # Forged records pushed by a listed node: mallory's metadata for the room, a post
    # claiming alice; no member stores them (pushed to each).
    forged_meta = resigned(
        make_meta(mallory, seq=9, name="mine").encoded,
        mallory,
        b"room-meta/v1",
        room=room.x25519_public,
    )
    claims_alice = resigned(
        make_room_post(mallory, room, "i am alice", now_ms=now_ms()).encoded,
        mallory,
        POST_DOMAIN,
        a=alice.id.x25519_public,
    )
    forged = [copy_of(room, forged_meta), copy_of(room, claims_alice)]
    for target in (a, c):
        frame, _ = wire.seal_push(keys_of(net, b), target, forged, now_ms=now_ms())
        assert (await post(target, "/replicate", frame)).status_code == 200
    await trio.sleep(2.0)  # anti-entropy rounds
    for node in nodes:
        records = await held(node, room)
        assert records is not None and set(records) <= {meta, early}
