"""What a home knows of rooms: ``HOME/rooms.sqlite`` (mode 0600, WAL).

Tables:

* ``owned``: the rooms this home created (name, the room account's seed sealed under a
  key of the home account's seed, as channels keep theirs:
  :func:`veil.client.channels.keys.seal_account_seed`, and the latest metadata it
  signed, so that metadata the network lost can be stored again);
* ``records``: every room record a reader took (its message hash; the bytes, or NULL
  for one that did not verify or break the room's rules, counted as dropped; the post
  ID of a post; the message's expiry), shared by the readers of the home;
* ``readers``: per room and reader (``""`` the user's, ``"bot"`` a bot's), the poll's
  position;
* ``shown``: per room and reader, each post handed to the reader's caller (``shown``),
  passed over as older than ``since`` (``skipped``), or whose deletion was handed over
  after it had been shown (``deleted``);
* ``sent``: when this home's authors posted in a room (the local rate check).
"""

from __future__ import annotations

from pathlib import Path
from sqlite3 import Connection
from typing import TYPE_CHECKING, Final

from veil.client.channels.store import home_of, open_sqlite
from veil.client.home import Home

if TYPE_CHECKING:
    from veil.client.veil_client import VeilClient

__all__ = ["open_rooms_db"]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS owned (
    room TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, seed BLOB NOT NULL,
    created_ms INTEGER NOT NULL, meta BLOB, meta_seq INTEGER
);
CREATE TABLE IF NOT EXISTS records (
    room TEXT NOT NULL, hash BLOB NOT NULL, data BLOB, post_id BLOB, expiry_ms INTEGER,
    PRIMARY KEY (room, hash)
);
CREATE TABLE IF NOT EXISTS readers (
    room TEXT NOT NULL, reader TEXT NOT NULL, last_hash BLOB, PRIMARY KEY (room, reader)
);
CREATE TABLE IF NOT EXISTS shown (
    room TEXT NOT NULL, reader TEXT NOT NULL, post_id BLOB NOT NULL, state TEXT NOT NULL,
    PRIMARY KEY (room, reader, post_id)
);
CREATE TABLE IF NOT EXISTS sent (
    post_id BLOB PRIMARY KEY, room TEXT NOT NULL, author TEXT NOT NULL, ts_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sent_by ON sent (room, author, ts_ms);
"""


def open_rooms_db(where: VeilClient | Home) -> Connection:
    """The home's room database (``where``: a client or a :class:`Home`)."""
    return open_sqlite(Path(home_of(where).path) / "rooms.sqlite", _SCHEMA)
