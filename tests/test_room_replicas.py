"""Copies of room records from peers (issue 16), at the storage service in process over a
real SQLite store: what a listed node may push or a pull may bring is judged by the
room's records, and a copy that cannot be judged yet is kept, not lost.

* a post before its room's metadata, and a moderator's record before the metadata that
  names the moderator, wait (in SQLite: across a restart) and are stored, with their
  effect, when that metadata comes;
* a post of an author banned at its date waits for an unban; one a delete or a ban's
  ``past`` removed is refused for good;
* forged records are refused; the copies kept are bounded per peer, per room and in all,
  and given up after their time.

Real nodes and a swarm are in tests/test_room_swarm.py.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import cbor2
import pytest

from veil.node.rooms import RoomPolicy
from veil.node.service import StorageService, open_storage_service
from veil.onion import rpc
from veil.onion.keys import Account, AccountId, owner_key
from veil.onion.replica import ReplicaMessage
from veil.onion.room import (
    POST_DOMAIN,
    ROOM_NAMESPACE,
    make_meta,
    make_moderation,
    make_room_post,
)

TTL = rpc.max_ttl_ms(ROOM_NAMESPACE)
PEER_A, PEER_B = b"a" * 32, b"b" * 32


def now_ms() -> int:
    return int(time.time() * 1000)


class Clock:
    def __init__(self) -> None:
        self.offset = 0

    def __call__(self) -> int:
        return now_ms() + self.offset


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[StorageService]:
    async with open_storage_service(tmp_path / "node.db") as svc:
        yield svc


def copy(room: AccountId, data: bytes, *, at: int | None = None) -> ReplicaMessage:
    """A copy of a room record as a listed node sends it (no proof: it signs itself)."""
    t = now_ms() if at is None else at
    h = rpc.message_hash(room, ROOM_NAMESPACE, data)
    return ReplicaMessage(owner_key(room), ROOM_NAMESPACE, h, data, t, t + TTL, None)


async def held(service: StorageService, room: AccountId) -> list[bytes]:
    found = await service.store.retrieve(room, ROOM_NAMESPACE, limit=1000, max_bytes=1 << 22)
    return [m.data for m in found.messages]


async def test_a_post_before_its_metadata_waits_and_is_stored_when_it_comes(
    tmp_path: Path,
) -> None:
    owner, alice = Account.generate(), Account.generate()
    room = owner.id
    post = make_room_post(alice, room, "early", now_ms=now_ms()).encoded
    meta = make_meta(owner, seq=1, name="lobby").encoded
    db = tmp_path / "node.db"
    async with open_storage_service(db) as service:
        assert await service.store_replicas([copy(room, post)], PEER_A) == []
        assert await held(service, room) == []
        assert service.rooms.counters.copies_deferred == 1
    # The node restarts: the copy kept aside is still there (SQLite).
    async with open_storage_service(db) as service:
        assert await service.store_replicas([copy(room, meta)], PEER_B) == [True]
        assert await held(service, room) == [meta, post]
        assert service.rooms.counters.copies_recovered == 1
        assert await service.store.deferred_of(owner_key(room), limit=10) == []


async def test_a_page_in_any_order_ends_in_the_same_room(service: StorageService) -> None:
    owner, mod, alice = Account.generate(), Account.generate(), Account.generate()
    room = owner.id
    t = now_ms()
    p1 = make_room_post(alice, room, "one", now_ms=t)
    p2 = make_room_post(alice, room, "two", now_ms=t + 1)
    meta1 = make_meta(owner, seq=1, name="lobby").encoded
    meta2 = make_meta(owner, seq=2, name="lobby", moderators=(mod.id,)).encoded
    delete = make_moderation(mod, room, "delete", now_ms=t + 2, post_ids=[p1.post_id]).encoded
    # A page that brings, in this order: the moderator's delete, a post, the metadata
    # naming the moderator, the other post, and the first metadata.
    page = [copy(room, d) for d in (delete, p1.encoded, meta2, p2.encoded, meta1)]
    await service.store_replicas(page, PEER_A)
    records = await held(service, room)
    assert set(records) == {meta1, meta2, delete, p2.encoded}  # p1 deleted, for good
    assert await service.store_replicas([copy(room, p1.encoded)], PEER_B) == []
    assert p1.encoded not in await held(service, room)
    assert await service.store.deferred_of(owner_key(room), limit=10) == []


async def test_bans_at_a_posts_date_and_removed_posts(service: StorageService) -> None:
    owner, alice = Account.generate(), Account.generate()
    room = owner.id
    t = now_ms()
    meta = make_meta(owner, seq=1, name="lobby").encoded
    ban = make_moderation(owner, room, "ban", now_ms=t, who=alice.id).encoded
    before = make_room_post(alice, room, "before", now_ms=t - 1000).encoded
    after = make_room_post(alice, room, "after", now_ms=t + 1000).encoded
    await service.store_replicas([copy(room, meta), copy(room, ban)], PEER_A)
    # Before the ban: kept; after it: waits (an unban may come).
    assert await service.store_replicas([copy(room, before), copy(room, after)], PEER_A) == [True]
    assert after not in await held(service, room)
    unban = make_moderation(owner, room, "unban", now_ms=t + 2000, who=alice.id).encoded
    await service.store_replicas([copy(room, unban)], PEER_A)
    assert after in await held(service, room)
    # A ban with past removes the posts dated up to it; their copies stay out for good.
    purge = make_moderation(owner, room, "ban", now_ms=t + 3000, who=alice.id, delete_past=True)
    await service.store_replicas([copy(room, purge.encoded)], PEER_A)
    records = await held(service, room)
    assert before not in records and after not in records
    assert await service.store_replicas([copy(room, before), copy(room, after)], PEER_B) == []
    assert await service.store.deferred_of(owner_key(room), limit=10) == []
    assert service.rooms.counters.posts_removed == 2


async def test_forged_copies_are_refused(service: StorageService) -> None:
    owner, alice, bob = Account.generate(), Account.generate(), Account.generate()
    room = owner.id
    await service.store_replicas([copy(room, make_meta(owner, seq=1, name="x").encoded)], PEER_A)
    good = make_room_post(alice, room, "mine", now_ms=now_ms()).encoded
    obj = cbor2.loads(good)
    obj["a"] = bob.id.x25519_public  # signed by Alice, claims Bob
    claims_bob = cbor2.dumps(obj, canonical=True)
    obj = cbor2.loads(good)
    obj.pop("sig")
    obj["k"] = bob.ed25519_public  # Bob's key over Alice's post
    obj["sig"] = bob.sign(POST_DOMAIN, cbor2.dumps(obj, canonical=True))
    bobs_key = cbor2.dumps(obj, canonical=True)
    stranger_meta = make_meta(bob, seq=9, name="mine").encoded  # another room's
    not_a_mod = make_moderation(bob, room, "ban", now_ms=now_ms(), who=alice.id).encoded
    forged = [claims_bob, bobs_key, stranger_meta, b"junk"]
    assert await service.store_replicas([copy(room, d) for d in forged], PEER_A) == []
    assert len(await held(service, room)) == 1
    assert service.rooms.counters.copies_refused == len(forged)
    # A non-moderator's record waits (a newer metadata may name it), and goes in time.
    assert await service.store_replicas([copy(room, not_a_mod)], PEER_A) == []
    assert len(await service.store.deferred_of(owner_key(room), limit=10)) == 1


async def test_copies_kept_aside_are_bounded_and_given_up(tmp_path: Path) -> None:
    policy = RoomPolicy(max_deferred=6, max_deferred_per_source=4, max_deferred_per_room=3)
    clock = Clock()
    async with open_storage_service(
        tmp_path / "node.db", clock=clock, room_policy=policy
    ) as service:
        rooms = [Account.generate() for _ in range(3)]
        alice = Account.generate()

        def early(room: Account, n: int) -> list[ReplicaMessage]:
            t = now_ms()
            return [
                copy(room.id, make_room_post(alice, room.id, f"p{i}", now_ms=t).encoded)
                for i in range(n)
            ]

        # Peer A: room 0 takes 3 of 5 (the room's share), room 1 then 1 of 5 (A's share
        # of 4 is used up); peer B: room 1 2 more (its share of 3), room 2 none (all 6).
        await service.store_replicas(early(rooms[0], 5), PEER_A)
        await service.store_replicas(early(rooms[1], 5), PEER_A)
        await service.store_replicas(early(rooms[1], 2) + early(rooms[2], 3), PEER_B)
        counts = [len(await service.store.deferred_of(owner_key(r.id), limit=10)) for r in rooms]
        assert counts == [3, 3, 0] and sum(counts) == policy.max_deferred
        assert service.rooms.counters.copies_not_kept == 15 - 6
        # Given up after their time: swept, and the metadata finds nothing to take.
        clock.offset = policy.defer_ms + 1000
        await service.store.sweep()
        meta = make_meta(rooms[0], seq=1, name="late").encoded
        await service.store_replicas([copy(rooms[0].id, meta, at=clock())], PEER_A)
        assert await held(service, rooms[0].id) == [meta]
