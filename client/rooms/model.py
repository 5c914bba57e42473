"""What the room API hands out and takes: the rules, a room's info, the rooms a home
knows; constants and small helpers the room modules share."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from veil.client.errors import InvalidArgument
from veil.client.rooms.errors import RoomNotFound
from veil.client.rooms.links import format_room_link
from veil.onion import rpc
from veil.onion.errors import InvalidId, RoomError
from veil.onion.keys import AccountId
from veil.onion.room import (
    DEFAULT_RATE,
    DEFAULT_SIZE,
    MAX_POW_BITS,
    MAX_RATE,
    MAX_TEXT_BYTES,
    ROOM_NAMESPACE,
    Moderation,
    RoomMeta,
    RoomPost,
    RoomRecord,
    RoomState,
    decode_room_record,
)

__all__ = [
    "RECORD_TTL_MS",
    "STATE_MAX_AGE_S",
    "KnownRoom",
    "RoomInfo",
    "RoomRules",
    "account_of",
    "decoded_records",
    "meta_of",
    "moderations_of",
    "post_id_of",
]

#: Every room record is stored for the namespace's longest TTL.
RECORD_TTL_MS: Final = rpc.max_ttl_ms(ROOM_NAMESPACE)
#: How long the room's rules and moderators read for a post or a moderation are used.
STATE_MAX_AGE_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class RoomRules:
    """What a room asks of a post: at most ``rate`` posts per author a minute, texts of
    at most ``size`` UTF-8 bytes, ``pow_bits`` bits of proof of work (0: none; each bit
    doubles an honest poster's CPU: see the README for this machine's figures)."""

    rate: int = DEFAULT_RATE
    size: int = DEFAULT_SIZE
    pow_bits: int = 0

    def __post_init__(self) -> None:
        for value, low, high, what in (
            (self.rate, 1, MAX_RATE, "rate (posts a minute)"),
            (self.size, 1, MAX_TEXT_BYTES, "size (bytes)"),
            (self.pow_bits, 0, MAX_POW_BITS, "pow_bits"),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InvalidArgument(f"a room's {what} is {low} to {high}")

    @classmethod
    def of(cls, meta: RoomMeta) -> RoomRules:
        return cls(meta.rate, meta.size, meta.pow_bits)


@dataclass(frozen=True, slots=True)
class RoomInfo:
    """A room as its records say now (:meth:`Room.info`)."""

    id: AccountId
    name: str
    description: str
    rules: RoomRules
    moderators: tuple[AccountId, ...]
    seq: int
    banned: tuple[AccountId, ...]
    posts: int
    owned: bool
    conflict: bool = False
    link: str = field(default="")

    def to_json(self) -> dict[str, object]:
        return {
            "id": str(self.id),
            "link": self.link or format_room_link(self.id),
            "name": self.name,
            "description": self.description,
            "rules": {
                "rate": self.rules.rate,
                "size": self.rules.size,
                "pow_bits": self.rules.pow_bits,
            },
            "moderators": [str(m) for m in self.moderators],
            "seq": self.seq,
            "banned": [str(b) for b in self.banned],
            "posts": self.posts,
            "owned": self.owned,
            "conflict": self.conflict,
        }


def post_id_of(post: bytes | str | RoomPost) -> bytes:
    if isinstance(post, RoomPost):
        return post.post_id
    if isinstance(post, str):
        try:
            post = bytes.fromhex(post)
        except ValueError:
            raise InvalidArgument("a post ID is 64 hex digits") from None
    if not isinstance(post, bytes) or len(post) != 32:
        raise InvalidArgument("a post ID is 32 bytes (64 hex digits)")
    return post


def account_of(who: AccountId | str) -> AccountId:
    if isinstance(who, AccountId):
        return who
    try:
        return AccountId.parse(who)
    except InvalidId as exc:
        raise InvalidArgument(f"not an account ID: {exc}") from None


def meta_of(state: RoomState, room: AccountId) -> RoomMeta:
    if state.meta is None:
        raise RoomNotFound(
            f"room {room} has no metadata: not created, expired, or not a room", local=True
        )
    return state.meta


def decoded_records(data: Iterable[bytes]) -> list[RoomRecord]:
    """The records that parse and verify (RoomState counts the others as rejected)."""
    out: list[RoomRecord] = []
    for each in data:
        with contextlib.suppress(RoomError):
            out.append(decode_room_record(each))
    return out


def moderations_of(state: RoomState) -> list[Moderation]:
    """The moderation records a state holds (decoded again: a few, beside the posts)."""
    kinds = (b"\x61t\x63mod",)  # the canonical encoding of "t": "mod"
    return [
        r
        for r in decoded_records(e for e in state.encoded() if any(k in e for k in kinds))
        if isinstance(r, Moderation)
    ]


@dataclass(frozen=True, slots=True)
class KnownRoom:
    """A room this home created or reads (no network): name (its own rooms'), posts
    its user's reader has taken, records dropped."""

    id: AccountId
    name: str | None
    owned: bool
    taken: int = 0
    dropped: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "id": str(self.id),
            "link": format_room_link(self.id),
            "name": self.name,
            "owned": self.owned,
            "taken": self.taken,
            "dropped": self.dropped,
        }
