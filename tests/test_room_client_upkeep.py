"""The room owner's upkeep (issue 16), on a real devnet: records live 30 days, so the
owner's home signs the metadata anew (the next seq) and re-issues the bans in force once
the copies the swarm holds are past half their TTL; and stores its metadata again if the
swarm lost it. Time is moved the only way a devnet allows: each member's copy is made
older (its expiry brought forward) or removed in its SQLite file while it is stopped."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.devnetutil import GROUP_NODE_CONFIG, devnet
from veil.client.devnet import Devnet
from veil.client.home import Home
from veil.client.rooms import ROOM_NAMESPACE, RoomNotFound, create_room, open_room
from veil.client.veil_client import VeilClient, open_client
from veil.onion import rpc
from veil.onion.keys import Account, AccountId
from veil.onion.room import Moderation, decode_room_record

pytestmark = pytest.mark.slow
DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    with devnet(
        tmp_path_factory.mktemp("room-upkeep"), nodes=5, swarm_size=3, node_config=GROUP_NODE_CONFIG
    ) as running:
        yield running


async def on_every_member(
    net: Devnet, client: VeilClient, room: AccountId, sql: str, params: tuple[object, ...]
) -> None:
    """Run ``sql`` on each member's store of ``room``'s swarm, the member stopped."""
    for member in client.consensus.swarm_of(room).members:
        node = net.node(member.node_id.hex()[:16])
        await trio.to_thread.run_sync(net.stop_node, node.name)
        db = sqlite3.connect(node.data_dir / "store.sqlite")
        try:
            db.execute(sql, params)
            db.commit()
        finally:
            db.close()
        await trio.to_thread.run_sync(net.start_node, node.name)


def row(room: AccountId, record: bytes) -> tuple[bytes, int, bytes]:
    return room.x25519_public, ROOM_NAMESPACE, rpc.message_hash(room, ROOM_NAMESPACE, record)


async def test_the_owner_renews_metadata_and_bans_past_half_their_ttl(
    net: Devnet, tmp_path: Path
) -> None:
    home = Home(tmp_path / "owner")
    home.save_identity(Account.generate())
    mallory = Account.generate()
    async with open_client(home, net.network_file) as owner:
        room = await create_room(owner, "long-lived", description="kept up")
        ban = await room.ban(mallory.id)
        meta = (await room.info()).seq
        assert meta == 1  # fresh: nothing renewed
        soon = owner.clock.now() + 2 * DAY_MS  # 28 of 30 days gone
        for record in ((await room.fetch_state()).meta.encoded, ban.encoded):  # type: ignore[union-attr]
            await on_every_member(
                net,
                owner,
                room.id,
                "UPDATE messages SET expiry = ? WHERE account = ? AND namespace = ? AND hash = ?",
                (soon, *row(room.id, record)),
            )
        info = await open_room(owner, room.id).info()  # the owner's home reads the room
        assert info.seq == 2 and info.name == "long-lived" and info.description == "kept up"
        assert info.banned == (mallory.id,)
    async with open_client(Home(tmp_path / "x"), net.network_file, account=Account.generate()) as c:
        state = await open_room(c, room.id).fetch_state()
        assert state.meta is not None and state.meta.seq == 2
        records = [decode_room_record(r) for r in state.encoded()]
        bans = [r for r in records if isinstance(r, Moderation) and r.op == "ban"]
        assert {b.who for b in bans} == {mallory.id} and len(bans) == 2  # issued again
        assert state.is_banned(mallory.id)


async def test_the_owner_stores_its_metadata_again_when_the_swarm_lost_it(
    net: Devnet, tmp_path: Path
) -> None:
    home = Home(tmp_path / "owner")
    home.save_identity(Account.generate())
    async with open_client(home, net.network_file) as owner:
        room = await create_room(owner, "forgotten")
        record = (await room.fetch_state()).meta.encoded  # type: ignore[union-attr]
        await on_every_member(
            net,
            owner,
            room.id,
            "DELETE FROM messages WHERE account = ? AND namespace = ? AND hash = ?",
            row(room.id, record),
        )
        async with open_client(
            Home(tmp_path / "y"), net.network_file, account=Account.generate()
        ) as stranger:
            with pytest.raises(RoomNotFound):
                await open_room(stranger, room.id).info()
            assert (await open_room(owner, room.id).info()).name == "forgotten"
            assert (await open_room(stranger, room.id).info()).name == "forgotten"
