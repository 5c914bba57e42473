"""Rooms at a real node (issue 16): every record a user can send into an account's room
namespace (-2), and its hostile versions, judged by one ``veil-node`` process.

The node is standalone (it holds every account) and shared by the module; each test
makes its own room (fresh accounts). Every request is an onion packet to it
(tests/swarmutil.py's ``call``), built with the library's builders, or for a hostile
record by hand (signed again after a change a builder would not make). Each refusal is
checked by its wire status, the one a client turns into its typed error. The swarm
(every member refuses; moderation reaches a member that was down) is in
tests/test_room_swarm.py; copies from peers in tests/test_room_replicas.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import cbor2
import httpx
import pytest
import trio

from tests.nodeutil import NodeHandle, node_process, now_ms
from tests.swarmutil import call
from veil.onion import capability as cap
from veil.onion import rpc
from veil.onion.keys import Account, AccountId
from veil.onion.room import (
    MAX_RECORD_BYTES,
    POST_DOMAIN,
    ROOM_NAMESPACE,
    decode_room_record,
    make_meta,
    make_moderation,
    make_room_post,
)

ROOM_TTL = rpc.max_ttl_ms(ROOM_NAMESPACE)
HOUR = 3_600_000


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeHandle]:
    with node_process(tmp_path_factory.mktemp("rooms") / "node") as running:
        yield running


async def ask(node: NodeHandle, request: bytes) -> rpc.Reply:
    async with httpx.AsyncClient(trust_env=False) as client:
        return await call(client, node.hop(), request)


async def put(node: NodeHandle, room: AccountId, data: bytes) -> rpc.Reply:
    """An unsigned store of one room record into ``room``'s namespace -2."""
    request = rpc.make_store(room, data, ROOM_TTL, now_ms=now_ms(), namespace=ROOM_NAMESPACE)
    return await ask(node, request)


async def status(node: NodeHandle, room: AccountId, data: bytes) -> str:
    return (await put(node, room, data)).status


async def held(node: NodeHandle, room: AccountId) -> list[bytes]:
    """Every record of the room, read as a reader does: unsigned."""
    found: list[bytes] = []
    last: bytes | None = None
    while True:
        reply = await ask(
            node,
            rpc.make_retrieve(room, now_ms=now_ms(), namespace=ROOM_NAMESPACE, last_hash=last),
        )
        page = rpc.RetrieveResult.from_wire(reply.raise_for_status())
        found.extend(m.data for m in page.messages)
        if not page.more:
            return found
        last = page.messages[-1].hash


def resigned(data: bytes, key: Account | cap.SessionKey, domain: bytes, **changes: Any) -> bytes:
    """``data`` with ``changes``, signed again by ``key`` (what no builder makes)."""
    obj = {**cbor2.loads(data), **changes}
    obj.pop("sig")
    obj["k"] = key.ed25519_public
    obj["sig"] = key.sign(domain, cbor2.dumps(obj, canonical=True))
    return cbor2.dumps(obj, canonical=True)


def post_of(author: Account | cap.DelegatedSigner, room: Account, text: str, **kw: Any) -> bytes:
    return make_room_post(
        author, room.id, text, now_ms=kw.pop("at", None) or now_ms(), **kw
    ).encoded


async def open_room(node: NodeHandle, owner: Account, **kw: Any) -> bytes:
    meta = make_meta(owner, seq=kw.pop("seq", 1), name="lobby", **kw).encoded
    (await put(node, owner.id, meta)).raise_for_status()
    return meta


async def test_the_first_record_is_metadata_and_metadata_is_the_owners(node: NodeHandle) -> None:
    owner, alice, stranger = Account.generate(), Account.generate(), Account.generate()
    room = owner.id
    assert await status(node, room, post_of(alice, owner, "too early")) == "not_found"
    early_ban = make_moderation(owner, room, "ban", now_ms=now_ms(), who=alice.id).encoded
    assert await status(node, room, early_ban) == "not_found"
    # Metadata naming the room but signed by a stranger, and the stranger's own
    # metadata stored under the room.
    mine = make_meta(stranger, seq=5, name="mine").encoded
    forged = resigned(mine, stranger, b"room-meta/v1", room=room.x25519_public)
    assert await status(node, room, forged) == "unauthorized"
    assert await status(node, room, mine) == "bad_request"
    meta = await open_room(node, owner)
    # The same bytes again (a client's retry): answered as a store, nothing new.
    again = await put(node, room, meta)
    assert not rpc.StoreResult.from_wire(again.raise_for_status()).created
    # Another record with the same or a lower seq: stale.
    assert await status(node, room, make_meta(owner, seq=1, name="other").encoded) == "replayed"
    assert await status(node, room, make_meta(owner, seq=2, name="newer").encoded) == "ok"
    assert await status(node, room, make_meta(owner, seq=1, name="older").encoded) == "replayed"
    assert await status(node, room, post_of(alice, owner, "now it opens")) == "ok"
    assert len(await held(node, room)) == 3
    # Not a room record at all, and a record over the bound (under the body limit).
    assert await status(node, room, b"\x00not cbor") == "bad_request"
    assert await status(node, room, b"\xa0" * (MAX_RECORD_BYTES + 1)) == "too_large"


async def test_posts_keep_the_rooms_rules(node: NodeHandle) -> None:
    owner, alice, bob = Account.generate(), Account.generate(), Account.generate()
    room = owner.id
    await open_room(node, owner, rate=3, size=40, pow_bits=6)
    assert await status(node, room, post_of(alice, owner, "no work")) == "bad_request"
    assert await status(node, room, post_of(alice, owner, "x" * 41, pow_bits=6)) == "too_large"
    good = post_of(alice, owner, "hello", pow_bits=6)
    # Alice's post claiming Bob wrote it; Bob's key signing Alice's post.
    forged = resigned(good, alice, POST_DOMAIN, a=bob.id.x25519_public)
    assert await status(node, room, forged) == "unauthorized"
    stolen = resigned(good, bob, POST_DOMAIN)
    assert await status(node, room, stolen) == "unauthorized"
    elsewhere = make_room_post(alice, bob.id, "wrong room", now_ms=now_ms(), pow_bits=6)
    assert await status(node, room, elsewhere.encoded) == "bad_request"
    stale = post_of(alice, owner, "old", at=now_ms() - 10 * 60_000, pow_bits=6)
    assert await status(node, room, stale) == "clock_skew"
    # The rate: 3 a minute from one author, counted by the node.
    posts = [good, *(post_of(alice, owner, f"p{i}", pow_bits=6) for i in range(3))]
    assert [await status(node, room, p) for p in posts] == ["ok", "ok", "ok", "rate_limited"]
    assert await status(node, room, good) == "ok"  # a retry of a stored post: not counted
    assert await status(node, room, post_of(bob, owner, "bob's own", pow_bits=6)) == "ok"
    records = (await held(node, room))[1:]
    texts = {getattr(decode_room_record(d), "text", None) for d in records}
    assert texts == {"hello", "p0", "p1", "bob's own"}


async def test_moderators_delete_and_ban_others_cannot(node: NodeHandle) -> None:
    owner, mod, alice, bob = (Account.generate() for _ in range(4))
    room = owner.id
    await open_room(node, owner, moderators=(mod.id,))
    p1 = make_room_post(alice, room, "spam", now_ms=now_ms())
    old_bob = make_room_post(bob, room, "bob before", now_ms=now_ms() - 1000)
    for p in (p1, old_bob):
        (await put(node, room, p.encoded)).raise_for_status()
    t = now_ms()
    # A non-moderator's delete and ban; a moderator's record with Alice's key in it.
    by_alice = make_moderation(alice, room, "delete", now_ms=t, post_ids=[old_bob.post_id])
    assert await status(node, room, by_alice.encoded) == "forbidden"
    alice_ban = make_moderation(alice, room, "ban", now_ms=t, who=bob.id, delete_past=True)
    assert await status(node, room, alice_ban.encoded) == "forbidden"
    mods_map = make_moderation(mod, room, "ban", now_ms=t, who=bob.id).encoded
    wrong_key = cbor2.loads(mods_map)
    wrong_key["k"] = alice.ed25519_public  # mod's signature, Alice's key: forged
    assert await status(node, room, cbor2.dumps(wrong_key, canonical=True)) == "unauthorized"
    assert old_bob.encoded in await held(node, room)
    # The moderator deletes Alice's post: gone, and not stored again.
    delete = make_moderation(mod, room, "delete", now_ms=t, post_ids=[p1.post_id])
    assert await status(node, room, delete.encoded) == "ok"
    assert await status(node, room, delete.encoded) == "ok"  # replayed: the same record
    records = await held(node, room)
    assert p1.encoded not in records and delete.encoded in records
    assert await status(node, room, p1.encoded) == "gone"
    # The owner bans Bob with his past: his posts go, his new ones are refused.
    ban = make_moderation(owner, room, "ban", now_ms=now_ms(), who=bob.id, delete_past=True)
    assert await status(node, room, ban.encoded) == "ok"
    assert old_bob.encoded not in await held(node, room)
    assert await status(node, room, post_of(bob, owner, "let me in")) == "forbidden"
    unban = make_moderation(mod, room, "unban", now_ms=now_ms() + 1, who=bob.id)
    assert await status(node, room, unban.encoded) == "ok"
    assert await status(node, room, post_of(bob, owner, "back")) == "ok"
    # The owner removes the moderator: its records are refused from then on.
    await open_room(node, owner, seq=2)
    late = make_moderation(mod, room, "ban", now_ms=now_ms(), who=alice.id)
    assert await status(node, room, late.encoded) == "forbidden"
    assert await status(node, room, post_of(alice, owner, "still here")) == "ok"


async def test_a_rooms_records_are_not_deleted_by_request(node: NodeHandle) -> None:
    owner, alice = Account.generate(), Account.generate()
    room = owner.id
    meta = await open_room(node, owner)
    post = post_of(alice, owner, "stays")
    (await put(node, room, post)).raise_for_status()
    h = rpc.message_hash(room, ROOM_NAMESPACE, post)
    t = now_ms()
    for request in (
        rpc.make_delete(owner, [h], now_ms=t, namespace=ROOM_NAMESPACE),
        rpc.make_expire(owner, [h], t + HOUR, now_ms=t, namespace=ROOM_NAMESPACE),
        rpc.make_delete_all(owner, namespace=ROOM_NAMESPACE, now_ms=t),
    ):
        reply = await ask(node, request)
        assert reply.status == "bad_request" and "moderators" in (reply.error or "")
    # The owner's delete_all of every namespace empties the others, not the room.
    (
        await ask(node, rpc.make_store(owner, b"private", HOUR, now_ms=t, namespace=5))
    ).raise_for_status()
    reply = await ask(node, rpc.make_delete_all(owner, namespace=None, now_ms=now_ms()))
    assert reply.status == "ok"
    assert await held(node, room) == [meta, post]


async def test_delegated_keys_post_and_moderate_until_revoked(node: NodeHandle) -> None:
    owner, mod, alice = Account.generate(), Account.generate(), Account.generate()
    room = owner.id
    await open_room(node, owner, moderators=(mod.id,))

    def key_of(who: Account, resources: str) -> cap.DelegatedSigner:
        chain = cap.delegate(
            who,
            (k := cap.SessionKey.generate()).ed25519_public,
            cap.parse_resources(resources, self_owner=who.id),
            now_ms=now_ms(),
        )
        return cap.DelegatedSigner(k, chain)

    posting = key_of(alice, "self:-2:post")
    assert await status(node, room, post_of(posting, owner, "by my key")) == "ok"
    # A key allowed the channel namespace only, its record made by hand.
    channel = key_of(alice, "self:-1:post")
    by_channel_key = resigned(
        post_of(posting, owner, "wrong grant"),
        channel.key,
        POST_DOMAIN,
        cap=channel.chain.encoded,
    )
    assert await status(node, room, by_channel_key) == "unauthorized"
    moderating = key_of(mod, "self:-2:post")
    ban = make_moderation(moderating, room, "ban", now_ms=now_ms(), who=alice.id)
    assert await status(node, room, ban.encoded) == "ok"
    unban = make_moderation(moderating, room, "unban", now_ms=now_ms() + 1, who=alice.id)
    assert await status(node, room, unban.encoded) == "ok"
    # Alice revokes her key at the node (a standalone node holds her account too).
    revocation = cap.revoke(alice, posting.chain, now_ms=now_ms())
    (await ask(node, rpc.make_revoke(revocation.encoded))).raise_for_status()
    assert await status(node, room, post_of(posting, owner, "after")) == "unauthorized"
    assert await status(node, room, post_of(alice, owner, "her own key")) == "ok"


async def test_readers_name_no_one_and_a_waiting_reader_is_woken(node: NodeHandle) -> None:
    owner, alice = Account.generate(), Account.generate()
    room = owner.id
    meta = await open_room(node, owner)
    request = rpc.make_retrieve(room, now_ms=now_ms(), namespace=ROOM_NAMESPACE, wait_s=20)
    # What a reader sends: the room, the namespace and the wait; no key, no signature.
    params = cbor2.loads(request)["params"]
    assert set(params) == {"pubkey", "namespace", "wait"}
    assert rpc.decode_request(request).auth is None
    last = rpc.message_hash(room, ROOM_NAMESPACE, meta)
    poll = rpc.make_retrieve(
        room, now_ms=now_ms(), namespace=ROOM_NAMESPACE, last_hash=last, wait_s=25
    )
    got: list[bytes] = []

    async def wait_for_post() -> None:
        reply = await ask(node, poll)
        got.extend(m.data for m in rpc.RetrieveResult.from_wire(reply.raise_for_status()).messages)

    post = post_of(alice, owner, "wake up")
    with trio.fail_after(20):  # the long-poll waits up to 25 s unless woken
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_for_post)
            await trio.sleep(1.0)
            (await put(node, room, post)).raise_for_status()
    assert got == [post]
