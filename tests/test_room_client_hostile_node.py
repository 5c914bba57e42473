"""A room reader against hostile members of the room's swarm (issue 16), on a real
devnet: they serve records no honest node would hold (put straight into their SQLite
files while they were stopped, as compromised operators would): a forged post, a post
without the room's work, a post of a banned author dated after the ban, a post the
moderators deleted, another room's post, garbage. A reader shows the honest posts only,
counts what does not verify or break the rules as dropped, and never shows the deleted
or the banned author's post (it applies the moderation records itself)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest
import trio

from tests.devnetutil import GROUP_NODE_CONFIG, devnet
from tests.swarmutil import eventually
from veil.client.devnet import Devnet
from veil.client.home import Home
from veil.client.rooms import ROOM_NAMESPACE, RoomReader, RoomRules, create_room
from veil.client.veil_client import open_client
from veil.onion import rpc
from veil.onion.keys import Account, AccountId
from veil.onion.room import POST_DOMAIN, RoomPost, make_room_post

pytestmark = pytest.mark.slow
DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    with devnet(
        tmp_path_factory.mktemp("hostile-room"),
        nodes=5,
        swarm_size=3,
        node_config=GROUP_NODE_CONFIG,
    ) as running:
        yield running


def inject(store: Path, room: AccountId, records: list[bytes], now_ms: int) -> None:
    """Rows in a stopped node's store, as its operator could write them."""
    db = sqlite3.connect(store)
    try:
        for data in records:
            db.execute(
                "INSERT OR IGNORE INTO messages (account, namespace, hash, data, timestamp, expiry)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    room.x25519_public,
                    ROOM_NAMESPACE,
                    rpc.message_hash(room, ROOM_NAMESPACE, data),
                    data,
                    now_ms,
                    now_ms + DAY_MS,
                ),
            )
        db.commit()
    finally:
        db.close()


async def test_a_reader_shows_nothing_hostile_members_make_up(net: Devnet, tmp_path: Path) -> None:
    owner_home = Home(tmp_path / "owner")
    owner_home.save_identity(Account.generate())
    alice, mallory = Account.generate(), Account.generate()
    async with open_client(owner_home, net.network_file) as owner:
        room = await create_room(owner, "watched", rules=RoomRules(pow_bits=8))
        now = owner.clock.now
        honest = make_room_post(alice, room.id, "an honest post", now_ms=now(), pow_bits=8)
        doomed = make_room_post(alice, room.id, "deleted later", now_ms=now(), pow_bits=8)
        for post in (honest, doomed):
            await room.send_record(post.encoded)
        await room.ban(mallory.id)
        await room.delete(doomed)
        members = owner.consensus.swarm_of(room.id).members
        nodes = [net.node(m.node_id.hex()[:16]) for m in members]

        forged = cbor2.loads(make_room_post(alice, room.id, "alice owes me", now_ms=now()).encoded)
        del forged["sig"]
        forged["k"] = mallory.ed25519_public
        forged["sig"] = mallory.sign(POST_DOMAIN, cbor2.dumps(forged, canonical=True))
        elsewhere = make_room_post(
            alice, Account.generate().id, "wrong room", now_ms=now(), pow_bits=8
        )
        made_up = [
            cbor2.dumps(forged, canonical=True),
            make_room_post(alice, room.id, "no work done", now_ms=now()).encoded,
            make_room_post(
                mallory, room.id, "banned, posting anyway", now_ms=now(), pow_bits=8
            ).encoded,
            doomed.encoded,  # the node "missed" the delete
            elsewhere.encoded,
            b"\xa2\x61t\x64post\x61v\x02",  # not a record
        ]
        # Every member of the swarm serves them (the reader may read any one): each is
        # given the same rows while all are stopped, so none takes another's back.
        for node in nodes:
            await trio.to_thread.run_sync(net.stop_node, node.name)
        for node in nodes:
            inject(node.data_dir / "store.sqlite", room.id, made_up, now())
        for node in nodes:
            await trio.to_thread.run_sync(net.start_node, node.name)
    async with open_client(
        Home(tmp_path / "reader"), net.network_file, account=Account.generate()
    ) as client:
        reader = RoomReader(client, room.id, ROOM_NAMESPACE)
        shown: list[object] = []

        async def read() -> None:
            async for event in reader.events():
                shown.append(event)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)

            async def read_them_all() -> bool:
                return reader.dropped >= 4

            await eventually(read_them_all, what="the reader took every record", timeout=120)
            await trio.sleep(1)
            nursery.cancel_scope.cancel()
    texts = [e.text for e in shown if isinstance(e, RoomPost)]
    assert texts == ["an honest post"], texts
    assert reader.dropped == 4  # forged, no work, another room's, garbage
    state = reader.state
    assert doomed.post_id in state.deleted and state.is_banned(mallory.id)
