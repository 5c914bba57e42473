"""The room owner's upkeep (issue 16), on a real devnet: records live 30 days, so the
owner's home signs the metadata anew (the next seq) and re-issues the bans in force once
the copies the swarm holds are past half their TTL; and stores its metadata again if the
swarm lost it. Time is moved the only way a devnet allows: each member's copy is made
older (its expiry brought forward) or removed in its SQLite file while the members are
stopped."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.devnetutil import GROUP_NODE_CONFIG, devnet
from tests.swarmutil import eventually
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
        tmp_path_factory.mktemp("room-upkeep"), nodes=6, swarm_size=3, node_config=GROUP_NODE_CONFIG
    ) as running:
        yield running


async def on_every_member(
    net: Devnet, client: VeilClient, room: AccountId, sql: str, params: tuple[object, ...]
) -> None:
    """Run ``sql`` on each member's store of ``room``'s swarm, every member stopped at
    once (one started earlier would take the old copy back from one not yet changed)."""
    nodes = [net.node(m.node_id.hex()[:16]) for m in client.consensus.swarm_of(room).members]
    for node in nodes:
        await trio.to_thread.run_sync(net.stop_node, node.name)
    for node in nodes:
        db = sqlite3.connect(node.data_dir / "store.sqlite")
        try:
            db.execute(sql, params)
            db.commit()
        finally:
            db.close()
    for node in nodes:
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
        meta_record = (await room.fetch_state()).meta.encoded  # type: ignore[union-attr]
        account, namespace, meta_hash = row(room.id, meta_record)
        await on_every_member(
            net,
            owner,
            room.id,
            "UPDATE messages SET expiry = ? WHERE account = ? AND namespace = ? AND hash IN (?, ?)",
            (soon, account, namespace, meta_hash, row(room.id, ban.encoded)[2]),
        )
        info = await open_room(owner, room.id).info()  # the owner's home reads the room
        assert info.seq == 2 and info.name == "long-lived" and info.description == "kept up"
        assert info.banned == (mallory.id,)
    async with open_client(Home(tmp_path / "x"), net.network_file, account=Account.generate()) as c:

        async def renewed() -> bool:
            state = await open_room(c, room.id).fetch_state()
            records = [decode_room_record(r) for r in state.encoded()]
            bans = [r for r in records if isinstance(r, Moderation) and r.op == "ban"]
            return (
                state.meta is not None
                and state.meta.seq == 2
                and {b.who for b in bans} == {mallory.id}
                and len(bans) == 2  # the ban issued again, as a new record
                and state.is_banned(mallory.id)
            )

        await eventually(renewed, what="the renewed metadata and ban reach the swarm")


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

            async def found() -> bool:
                try:
                    return (await open_room(stranger, room.id).info()).name == "forgotten"
                except RoomNotFound:  # a member the copy has not reached yet
                    return False

            await eventually(found, what="the metadata stored again reaches the swarm")
