"""Open groups (issue 16): rooms anyone may read and post in, moderated by the owner and
the moderators it lists. Sans-IO: record formats (:mod:`.records`), proof of work, and
the room's state as a pure function of its records with the node's checks
(:mod:`.state`)."""

from __future__ import annotations

from .records import (
    DEFAULT_RATE,
    DEFAULT_SIZE,
    MAX_POW_BITS,
    MAX_RATE,
    MAX_RECORD_BYTES,
    MAX_TEXT_BYTES,
    META_DOMAIN,
    MOD_DOMAIN,
    POST_DOMAIN,
    RATE_WINDOW_MS,
    Moderation,
    RoomMeta,
    RoomPost,
    RoomRecord,
    check_pow,
    decode_room_record,
    leading_zero_bits,
    make_meta,
    make_moderation,
    make_room_post,
    solve_pow,
)
from .state import DEFAULT_SKEW_MS, RoomState, check_moderation, check_post

__all__ = [
    "DEFAULT_RATE",
    "DEFAULT_SIZE",
    "DEFAULT_SKEW_MS",
    "MAX_POW_BITS",
    "MAX_RATE",
    "MAX_RECORD_BYTES",
    "MAX_TEXT_BYTES",
    "META_DOMAIN",
    "MOD_DOMAIN",
    "POST_DOMAIN",
    "RATE_WINDOW_MS",
    "Moderation",
    "RoomMeta",
    "RoomPost",
    "RoomRecord",
    "RoomState",
    "check_moderation",
    "check_post",
    "check_pow",
    "decode_room_record",
    "leading_zero_bits",
    "make_meta",
    "make_moderation",
    "make_room_post",
    "solve_pow",
]
