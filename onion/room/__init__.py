"""Open groups (issue 16): rooms anyone may read and post in, moderated by the owner and
the moderators it lists. Sans-IO, one module per job, each importing only those above:

* :mod:`.pow`: the proof of work a room may ask per post;
* :mod:`.records`: the record formats (metadata, post, moderation; version 2, with
  delegated keys' chains) and :func:`decode_room_record`;
* :mod:`.making`: the builders (:func:`make_meta`, :func:`make_room_post`,
  :func:`make_moderation`), which take an account or a delegated key;
* :mod:`.state`: the room's state as a pure function of its records, and the node's
  checks of a store (:func:`check_post`, :func:`check_moderation`) and of a replicated
  copy (:func:`check_copy`).

A room's records live in its owner's :data:`ROOM_NAMESPACE` (-2): anyone stores there
unsigned and reads unsigned; the node judges each record (see
:mod:`veil.onion.rpc.namespaces`)."""

from __future__ import annotations

from .making import make_meta, make_moderation, make_room_post
from .pow import MAX_POW_BITS, check_pow, leading_zero_bits
from .records import (
    DEFAULT_RATE,
    DEFAULT_SIZE,
    MAX_RATE,
    MAX_RECORD_BYTES,
    MAX_TEXT_BYTES,
    META_DOMAIN,
    MOD_DOMAIN,
    POST_DOMAIN,
    RATE_WINDOW_MS,
    RECORD_VERSION,
    ROOM_NAMESPACE,
    Moderation,
    RoomMeta,
    RoomPost,
    RoomRecord,
    decode_room_record,
    solve_pow,
)
from .state import DEFAULT_SKEW_MS, RoomState, check_copy, check_moderation, check_post

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
    "RECORD_VERSION",
    "ROOM_NAMESPACE",
    "Moderation",
    "RoomMeta",
    "RoomPost",
    "RoomRecord",
    "RoomState",
    "check_copy",
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
