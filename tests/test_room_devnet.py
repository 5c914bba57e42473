"""Rooms (open groups, issue 16) on a real devnet, through the client's public API.

Two people talk in a room; the hostile posts (a forged signature, a banned author, over
the room's rate, without the required work) are refused by every node of the room's
swarm, each with its typed error, and none is held anywhere; a moderator deletes a post
and bans an author and it holds on every member of the swarm, one that was down at the
time included, and on every reader; a non-moderator's delete and ban are refused; a
reader resumes exactly once across a restart and is told of a deletion once; readers
name no one; a delegated key posts and moderates for its account.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import cbor2
import pytest
import trio

from tests.devnetutil import GROUP_NODE_CONFIG, devnet
from tests.swarmutil import eventually
from veil.client.devnet import Devnet
from veil.client.home import Home
from veil.client.rooms import (
    ROOM_NAMESPACE,
    AuthorIsBanned,
    NotModerator,
    PostDeleted,
    PostForged,
    RoomEvent,
    RoomPostTooLarge,
    RoomRateExceeded,
    RoomRules,
    WorkMissing,
    create_room,
    open_room,
)
from veil.client.veil_client import VeilClient, open_client
from veil.onion import rpc
from veil.onion.keys import Account, AccountId
from veil.onion.packet import Hop
from veil.onion.room import POST_DOMAIN, RoomPost, make_moderation, make_room_post

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    with devnet(
        tmp_path_factory.mktemp("rooms"), nodes=5, swarm_size=3, node_config=GROUP_NODE_CONFIG
    ) as running:
        yield running


def new_home(tmp_path: Path, name: str) -> tuple[Home, Account]:
    home = Home(tmp_path / name)
    account = Account.generate()
    home.save_identity(account)
    return home, account


@contextlib.asynccontextmanager
async def person(net: Devnet, tmp_path: Path, name: str) -> AsyncIterator[VeilClient]:
    home, _ = new_home(tmp_path, name)
    async with open_client(home, net.network_file) as client:
        yield client


async def collect(
    events: AsyncIterator[RoomEvent], done: Callable[[list[RoomEvent]], bool], timeout: float = 60
) -> list[RoomEvent]:
    """Events of ``events`` until ``done(events)`` holds (checked also when none come)."""
    got: list[RoomEvent] = []
    with trio.fail_after(timeout):
        async with trio.open_nursery() as nursery:

            async def consume() -> None:
                async for event in events:
                    got.append(event)

            nursery.start_soon(consume)
            while not done(got):
                await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
    return got


def texts(events: list[RoomEvent]) -> list[str]:
    return [e.text for e in events if isinstance(e, RoomPost)]


def members(client: VeilClient, room: AccountId) -> list[Hop]:
    return [m.as_hop() for m in client.consensus.swarm_of(room).members]


async def held_at(client: VeilClient, hop: Hop, room: AccountId) -> list[bytes]:
    """Every record ``hop`` holds in the room's namespace (unsigned reads, all pages)."""
    out: list[bytes] = []
    last: bytes | None = None
    while True:
        after = last

        def build(now_ms: int, after: bytes | None = after) -> bytes:
            return rpc.make_retrieve(room, now_ms=now_ms, namespace=ROOM_NAMESPACE, last_hash=after)

        reply = await client.call(build, destination=hop)
        assert reply.result is not None
        result = rpc.RetrieveResult.from_wire(reply.result)
        out += [m.data for m in result.messages]
        if not result.more or not result.messages:
            return out
        last = result.messages[-1].hash


async def on_every_member(
    client: VeilClient, room: AccountId, check: Callable[[list[bytes]], bool], what: str
) -> None:
    async def all_hold() -> bool:
        for hop in members(client, room):
            try:
                if not check(await held_at(client, hop, room)):
                    return False
            except Exception:  # a member still starting: asked again
                return False
        return True

    await eventually(all_hold, what=what, timeout=90)


def forged_by(mallory: Account, victim: Account, room: AccountId, now_ms: int) -> bytes:
    """A post naming ``victim`` as its author, signed by ``mallory`` (her key named)."""
    body = cbor2.loads(make_room_post(victim, room, "I owe mallory 100", now_ms=now_ms).encoded)
    del body["sig"]
    body["k"] = mallory.ed25519_public
    body["sig"] = mallory.sign(POST_DOMAIN, cbor2.dumps(body, canonical=True))
    return cbor2.dumps(body, canonical=True)


# --- talking -------------------------------------------------------------------------------


async def test_two_people_talk_in_a_room(net: Devnet, tmp_path: Path) -> None:
    async with person(net, tmp_path, "owner") as owner:
        room = await create_room(owner, "lobby", description="say hi")
        link = room.link
        info = await room.info()
        assert (info.name, info.description, info.rules) == ("lobby", "say hi", RoomRules())
    async with person(net, tmp_path, "alice") as alice, person(net, tmp_path, "bob") as bob:
        in_alice, in_bob = open_room(alice, link), open_room(bob, link)
        hello = await in_alice.post("hello, anyone?")
        got = await collect(in_bob.messages(), lambda g: len(texts(g)) == 1)
        (first,) = got
        assert isinstance(first, RoomPost)
        assert (first.text, first.author, first.post_id) == (
            "hello, anyone?",
            alice.account_id,
            hello.post_id,
        )
        answer = await in_bob.post("hi alice", reply_to=first)
        got = await collect(in_alice.messages(), lambda g: len(texts(g)) == 2)
        assert texts(got) == ["hello, anyone?", "hi alice"]
        reply = got[1]
        assert isinstance(reply, RoomPost)
        assert (reply.author, reply.reply_to, reply.post_id) == (
            bob.account_id,
            hello.post_id,
            answer.post_id,
        )


async def test_the_client_refuses_what_the_room_would_before_sending(
    net: Devnet, tmp_path: Path
) -> None:
    async with person(net, tmp_path, "owner") as owner:
        room = await create_room(owner, "small", rules=RoomRules(rate=2, size=10, pow_bits=6))
        # The home's own account posts like anyone (the room is another account).
        await room.ban(owner.account_id)
        async with person(net, tmp_path, "alice") as alice:
            mine = open_room(alice, room.id)
            with pytest.raises(RoomPostTooLarge) as large:
                await mine.post("more than ten bytes")
            assert large.value.local
            one = await mine.post("one")
            await mine.post("two")
            with pytest.raises(RoomRateExceeded) as fast:
                await mine.post("three")
            assert fast.value.local and 0 < (fast.value.retry_after_s or 0) <= 60
        with pytest.raises(AuthorIsBanned) as banned:
            await open_room(owner, room.id).post("me?")  # not the room's home: the account
        assert banned.value.local
    # The work was done (the room asks 6 bits), and the nodes took it.
    from veil.onion.room import check_pow

    check_pow(one.work_bytes, one.pow_nonce, 6)


# --- the swarm's verdicts ------------------------------------------------------------------


async def test_hostile_posts_are_refused_by_every_node_of_the_swarm(
    net: Devnet, tmp_path: Path
) -> None:
    async with person(net, tmp_path, "owner") as owner:
        room = await create_room(owner, "guarded", rules=RoomRules(rate=2, pow_bits=8))
        mallory, alice, carol = Account.generate(), Account.generate(), Account.generate()
        await room.ban(mallory.id)
        hops = members(owner, room.id)
        assert len(hops) >= 3
        now = owner.clock.now
        # Carol's two posts, at every member: the third is over the room's rate there.
        carols = [
            make_room_post(carol, room.id, f"carol {i}", now_ms=now(), pow_bits=8) for i in range(2)
        ]
        for hop in hops:
            for post in carols:
                await room.send_record(post.encoded, node=hop)
        hostile: list[tuple[str, Callable[[], bytes], type[Exception]]] = [
            ("forged", lambda: forged_by(mallory, alice, room.id, now()), PostForged),
            (
                "banned",
                lambda: (
                    make_room_post(mallory, room.id, "let me in", now_ms=now(), pow_bits=8).encoded
                ),
                AuthorIsBanned,
            ),
            (
                "over the rate",
                lambda: make_room_post(carol, room.id, "carol 2", now_ms=now(), pow_bits=8).encoded,
                RoomRateExceeded,
            ),
            (
                "no work",
                lambda: make_room_post(alice, room.id, "free", now_ms=now()).encoded,
                WorkMissing,
            ),
        ]
        refused: list[bytes] = []
        for what, make, kind in hostile:
            for hop in hops:
                record = make()
                with pytest.raises(kind) as caught:
                    await room.send_record(record, node=hop)
                assert not caught.value.local, what  # the node's verdict, not ours
                refused.append(record)
        # None of them is held by any member; carol's two are held by all.
        for hop in hops:
            held = await held_at(owner, hop, room.id)
            assert not set(refused) & set(held)
            assert {p.encoded for p in carols} <= set(held)


# --- moderation ----------------------------------------------------------------------------


async def test_a_moderator_deletes_and_bans_and_it_holds_everywhere(
    net: Devnet, tmp_path: Path
) -> None:
    async with person(net, tmp_path, "owner") as owner, person(net, tmp_path, "mod") as mod:
        room = await create_room(owner, "moderated")
        await room.add_moderator(mod.account_id)
        async with (
            person(net, tmp_path, "alice") as alice,
            person(net, tmp_path, "reader") as reader,
        ):
            posts = [await open_room(alice, room.id).post(f"spam {i}") for i in range(3)]
            keep = await open_room(mod, room.id).post("a good post")
            # A reader that shows every post now, and is later told of the removals.
            seen = await collect(
                open_room(reader, room.id).messages(), lambda g: len(texts(g)) == 4
            )
            assert sorted(texts(seen)) == sorted(["a good post", "spam 0", "spam 1", "spam 2"])

            # One member of the room's swarm is down while the moderator acts.
            down = members(owner, room.id)[0]
            name = net.node(down.node_id.hex()[:16]).name
            await trio.to_thread.run_sync(net.stop_node, name)
            try:
                as_mod = open_room(mod, room.id)
                await as_mod.delete(posts[0])
                await as_mod.ban(alice.account_id, delete_past=True)
            finally:
                await trio.to_thread.run_sync(net.start_node, name)

            gone = {p.encoded for p in posts}
            await on_every_member(
                owner,
                room.id,
                lambda held: not gone & set(held) and keep.encoded in held,
                "every member (the one that was down too) drops alice's posts",
            )
            # The banned author is refused by every member, the restarted one included.
            for hop in members(owner, room.id):
                late = make_room_post(
                    alice.require_seed("test"), room.id, "still here", now_ms=owner.clock.now()
                )
                with pytest.raises(AuthorIsBanned):
                    await room.send_record(late.encoded, node=hop)
            # The reader that showed them is told, once each; a new reader never sees them.
            told = await collect(
                open_room(reader, room.id).messages(),
                lambda g: len([e for e in g if isinstance(e, PostDeleted)]) == 3,
            )
            assert {e.post_id for e in told if isinstance(e, PostDeleted)} == {
                p.post_id for p in posts
            }
            assert not texts(told)
        async with person(net, tmp_path, "newcomer") as newcomer:
            fresh = await open_room(newcomer, room.id).read()
            assert texts(fresh) == ["a good post"]
            info = await open_room(newcomer, room.id).info()
            assert info.banned == (alice.account_id,) and info.moderators == (mod.account_id,)


async def test_a_non_moderators_delete_and_ban_are_refused(net: Devnet, tmp_path: Path) -> None:
    async with person(net, tmp_path, "owner") as owner, person(net, tmp_path, "mallory") as mallory:
        room = await create_room(owner, "open")
        async with person(net, tmp_path, "alice") as alice:
            post = await open_room(alice, room.id).post("mine")
        as_mallory = open_room(mallory, room.id)
        with pytest.raises(NotModerator) as local:
            await as_mallory.delete(post)
        assert local.value.local
        with pytest.raises(NotModerator):
            await as_mallory.ban(alice.account_id, delete_past=True)
        with pytest.raises(NotModerator):
            await as_mallory.add_moderator(mallory.account_id)  # not the room's home
        # Sent anyway, past the client's own check: every member refuses.
        key = mallory.require_seed("test")
        for hop in members(owner, room.id):
            for record in (
                make_moderation(
                    key, room.id, "delete", now_ms=owner.clock.now(), post_ids=[post.post_id]
                ),
                make_moderation(
                    key,
                    room.id,
                    "ban",
                    now_ms=owner.clock.now(),
                    who=alice.account_id,
                    delete_past=True,
                ),
            ):
                with pytest.raises(NotModerator) as caught:
                    await room.send_record(record.encoded, node=hop)
                assert not caught.value.local
        for hop in members(owner, room.id):
            assert post.encoded in await held_at(owner, hop, room.id)
        assert texts(await open_room(owner, room.id, as_owner=False).read()) == ["mine"]


# --- readers -------------------------------------------------------------------------------


async def test_a_reader_resumes_exactly_once_and_names_no_one(net: Devnet, tmp_path: Path) -> None:
    reader_home, reader_account = new_home(tmp_path, "reader")
    async with person(net, tmp_path, "owner") as owner:
        room = await create_room(owner, "quiet")
        first = [await room.post(f"before {i}") for i in range(2)]
        async with open_client(reader_home, net.network_file) as reader:
            got = await collect(open_room(reader, room.id).messages(), lambda g: len(texts(g)) == 2)
            assert texts(got) == ["before 0", "before 1"]
        later = await room.post("while the reader was away")
        await room.delete(first[0])
        async with open_client(reader_home, net.network_file) as reader:  # a restart
            got = await collect(
                open_room(reader, room.id).messages(),
                lambda g: len(g) == 2,
            )
            assert texts(got) == ["while the reader was away"]
            assert [e.post_id for e in got if isinstance(e, PostDeleted)] == [first[0].post_id]
            assert await open_room(reader, room.id).read() == []  # nothing again
        assert later.post_id != first[1].post_id
    # Nothing in any node's files names the reader (its key, as bytes or hex).
    key = reader_account.id.x25519_public
    for path in net.dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert key not in data and key.hex().encode() not in data, path


# --- delegated keys ------------------------------------------------------------------------


async def test_a_delegated_key_posts_and_moderates_for_its_account(
    net: Devnet, tmp_path: Path
) -> None:
    async with person(net, tmp_path, "owner") as owner, person(net, tmp_path, "mod") as mod:
        room = await create_room(owner, "delegated")
        await room.add_moderator(mod.account_id)
        session = await mod.authorize([f"self:{ROOM_NAMESPACE}:post"], expires_in=3600)
        worker_home = Home(tmp_path / "worker")
        async with open_client(
            worker_home, net.network_file, delegated=session.serialize()
        ) as worker:
            as_worker = open_room(worker, room.id)
            post = await as_worker.post("posted by the mod's worker")
            assert post.author == mod.account_id
            async with person(net, tmp_path, "alice") as alice:
                spam = await open_room(alice, room.id).post("spam")
            await as_worker.delete(spam)
        got = await open_room(owner, room.id, as_owner=False).read()
        assert texts(got) == ["posted by the mod's worker"]
