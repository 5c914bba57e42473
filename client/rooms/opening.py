"""Making and opening rooms: :func:`create_room`, :func:`open_room`, :func:`list_rooms`.

Design note
-----------
Creating makes a fresh account (the room) whose seed this home keeps sealed under a key
of the home account's seed (``HOME/rooms.sqlite``, as channels keep theirs), with the
metadata it signed, *then* stores the metadata: a room whose first store failed is not
lost, and the owner's home stores it again when it next reads the room
(:mod:`veil.client.rooms.owner`). Opening needs no network: a room this home created
comes with its key, any other by its ID or link.
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING, Final

import trio

from veil.client.channels.keys import open_account_seed, seal_account_seed
from veil.client.channels.store import transaction
from veil.client.errors import InvalidArgument
from veil.client.rooms.links import room_id_of
from veil.client.rooms.model import KnownRoom, RoomRules
from veil.client.rooms.reader import USER_READER
from veil.client.rooms.room import Room
from veil.client.rooms.store import open_rooms_db
from veil.onion.errors import InvalidValue
from veil.onion.keys import Account, AccountId
from veil.onion.room import RoomState, make_meta

if TYPE_CHECKING:
    from veil.client.home import Home
    from veil.client.veil_client import VeilClient

__all__ = ["create_room", "list_rooms", "open_room"]

_SEED_PURPOSE: Final = b"veil/room-seed"
_SEED_WHY: Final = "a room's seed (kept sealed under the home account's key)"


async def create_room(
    client: VeilClient,
    name: str,
    *,
    description: str = "",
    rules: RoomRules | None = None,
) -> Room:
    """A new room (a fresh account kept in this home) named ``name``, with its
    ``description`` and ``rules``; its metadata stored in its swarm."""
    rules = rules or RoomRules()
    home_account = client.require_seed(_SEED_WHY)
    account = Account.generate()
    try:
        meta = make_meta(
            account,
            seq=1,
            name=name,
            description=description,
            rate=rules.rate,
            size=rules.size,
            pow_bits=rules.pow_bits,
        )
    except InvalidValue as exc:
        raise InvalidArgument(str(exc)) from None
    db = open_rooms_db(client)
    try:
        with transaction(db):
            db.execute(
                "INSERT INTO owned (room, name, seed, created_ms, meta, meta_seq) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    str(account.id),
                    name,
                    seal_account_seed(home_account, _SEED_PURPOSE, account),
                    int(time.time() * 1000),
                    meta.encoded,
                    meta.seq,
                ),
            )
    except sqlite3.IntegrityError:
        raise InvalidArgument(f"this home has a room named {name!r} already") from None
    finally:
        db.close()
    room = Room(client, account.id, owner=account, name=name)
    await room.send_record(meta.encoded)
    room._state, room._state_at = RoomState(account.id, [meta]), trio.current_time()
    return room


def open_room(client: VeilClient, room: AccountId | str, *, as_owner: bool = True) -> Room:
    """A room by the name this home gave it, or by its ID or link (no network). A room
    this home created comes with its key (for metadata changes and the owner's upkeep)
    when ``as_owner`` and the client holds the home account's seed."""
    db = open_rooms_db(client)
    try:
        row = db.execute(
            "SELECT name, room, seed FROM owned WHERE name = ? OR room = ?",
            (str(room), str(room)),
        ).fetchone()
    finally:
        db.close()
    if row is None:
        return Room(client, room_id_of(room))
    name, ident, sealed = row[0], AccountId.parse(row[1]), row[2]
    if client.account is None or not as_owner:  # e.g. a delegated client: a member
        return Room(client, ident, name=name)
    owner = open_account_seed(
        client.require_seed(_SEED_WHY), _SEED_PURPOSE, ident, sealed, f"room {name!r}"
    )
    return Room(client, ident, owner=owner, name=name)


def list_rooms(where: VeilClient | Home) -> list[KnownRoom]:
    """The rooms this home created, then the others it reads (no network)."""
    db = open_rooms_db(where)
    try:
        owned = db.execute("SELECT room, name FROM owned ORDER BY created_ms").fetchall()
        read = db.execute(
            "SELECT r.room, "
            "(SELECT COUNT(*) FROM shown s WHERE s.room = r.room AND s.reader = r.reader "
            " AND s.state != 'skipped'), "
            "(SELECT COUNT(*) FROM records d WHERE d.room = r.room AND d.data IS NULL) "
            "FROM readers r WHERE r.reader = ? ORDER BY r.room",
            (USER_READER,),
        ).fetchall()
    finally:
        db.close()
    counts = {room: (taken, dropped) for room, taken, dropped in read}
    out = [KnownRoom(AccountId.parse(r), n, True, *counts.pop(r, (0, 0))) for r, n in owned]
    out += [KnownRoom(AccountId.parse(r), None, False, t, d) for r, (t, d) in counts.items()]
    return out
