"""Rooms on the client, without a network (issue 16): the room link's strict parser, the
rules' bounds, and the typed errors a node's refusal becomes, each refusal made by the
real checks of veil.onion.room and carried through the real reply encoding.

(Rooms on real nodes: tests/test_room_devnet.py; the CLI: tests/test_cli_room.py; a bot
in a room: tests/test_bot_room.py.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.capabilityutil import account
from veil.client.errors import ClientError, InvalidArgument, OnionRequestFailed
from veil.client.rooms import (
    AuthorIsBanned,
    NotModerator,
    PostForged,
    PostRemoved,
    RoomClockSkew,
    RoomMetadataStale,
    RoomNotFound,
    RoomPostTooLarge,
    RoomRateExceeded,
    RoomRecordRefused,
    RoomRefused,
    RoomRules,
    WorkMissing,
    format_room_link,
    parse_room_link,
    room_error,
    room_id_of,
)
from veil.onion import rpc
from veil.onion.errors import (
    AuthorBanned,
    BadRoomSignature,
    HopTimeout,
    InsufficientWork,
    InvalidLink,
    NotAModerator,
    RoomError,
    RoomPostRemoved,
    RoomRateLimited,
    VeilError,
)
from veil.onion.room import (
    RoomState,
    check_moderation,
    check_post,
    make_meta,
    make_moderation,
    make_room_post,
)

NOW = 1_767_225_600_000
OWNER = account("room owner")
MOD = account("room moderator")
ALICE = account("room alice")
MALLORY = account("room mallory")
ROOM = OWNER.id


# --- links -----------------------------------------------------------------------------


def test_a_room_link_names_the_room_and_nothing_else() -> None:
    link = format_room_link(ROOM)
    assert link == f"veil://room/{ROOM}"
    assert parse_room_link(link) == ROOM
    assert room_id_of(link) == room_id_of(str(ROOM)) == room_id_of(ROOM) == ROOM
    for bad in (
        link + "?x=1",
        link + "#key",
        link + "/",
        link.upper(),
        "veil://channel/" + str(ROOM),
        "veil://room/" + str(ROOM)[:-1],
        "veil://room/03" + str(ROOM)[2:],
        "veil://room:80/" + str(ROOM),
        "x" * 300,
    ):
        with pytest.raises(InvalidLink):
            parse_room_link(bad)
    with pytest.raises(InvalidArgument):
        room_id_of("05nothex")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.text().map(lambda t: "veil://room/" + t)))
def test_any_text_is_a_room_or_a_typed_refusal(text: str) -> None:
    try:
        room = parse_room_link(text)
    except InvalidLink:
        return
    assert format_room_link(room) == text


# --- rules -----------------------------------------------------------------------------


def test_rules_out_of_bounds_are_refused_before_anything() -> None:
    assert RoomRules() == RoomRules(rate=10, size=2048, pow_bits=0)
    for bad in (
        {"rate": 0},
        {"rate": 61},
        {"size": 0},
        {"size": 4097},
        {"pow_bits": -1},
        {"pow_bits": 25},
        {"rate": True},
        {"size": 1.5},
    ):
        with pytest.raises(InvalidArgument):
            RoomRules(**bad)


# --- a node's refusal, as the client raises it -------------------------------------------


def refused_by_node(check: Callable[[], Any]) -> VeilError:
    """What the client gets when a node refuses: the node's typed error, encoded as its
    reply (rpc.error_reply), decoded and raised as the client decodes every reply."""
    with pytest.raises(RoomError) as caught:
        check()
    reply = rpc.decode_reply(rpc.error_reply(NOW, caught.value))
    with pytest.raises(VeilError) as raised:
        reply.raise_for_status()
    return raised.value


def state(*records: bytes, **rules: Any) -> RoomState:
    meta = make_meta(OWNER, seq=1, name="lobby", moderators=(MOD.id,), **rules)
    return RoomState(ROOM, [meta.encoded, *records])


def post(author: Any = ALICE, text: str = "hi", **kw: Any) -> bytes:
    return make_room_post(author, ROOM, text, now_ms=NOW, **kw).encoded


def forged() -> bytes:
    """Alice's post with Mallory's signature over it (Mallory's key named as signer)."""
    import cbor2

    from veil.onion.room import POST_DOMAIN

    body = cbor2.loads(post())
    del body["sig"]
    body["k"] = MALLORY.ed25519_public
    body["sig"] = MALLORY.sign(POST_DOMAIN, cbor2.dumps(body, canonical=True))
    return cbor2.dumps(body, canonical=True)


_ALICE_POST = make_room_post(ALICE, ROOM, "hi", now_ms=NOW, rng=lambda n: b"\x01" * n)


def delete(_: bytes) -> bytes:
    """A delete of Alice's fixed post (the post() below, made with a fixed nonce)."""
    return make_moderation(
        OWNER, ROOM, "delete", now_ms=NOW - 1000, post_ids=[_ALICE_POST.post_id]
    ).encoded


def ban(who: Any = MALLORY) -> bytes:
    return make_moderation(OWNER, ROOM, "ban", now_ms=NOW - 1000, who=who.id).encoded


@pytest.mark.parametrize(
    ("make", "kind", "onion_kind"),
    [
        (lambda: check_post(state(), forged(), NOW), PostForged, BadRoomSignature),
        (lambda: check_post(state(ban()), post(MALLORY), NOW), AuthorIsBanned, AuthorBanned),
        (
            lambda: check_moderation(
                state(),
                make_moderation(MALLORY, ROOM, "ban", now_ms=NOW, who=ALICE.id).encoded,
                NOW,
            ),
            NotModerator,
            NotAModerator,
        ),
        (
            lambda: check_post(state(rate=1), post(), NOW, recent_count=1),
            RoomRateExceeded,
            RoomRateLimited,
        ),
        (lambda: check_post(state(pow_bits=8), post(), NOW), WorkMissing, InsufficientWork),
        (lambda: check_post(state(size=3), post(text="long"), NOW), RoomPostTooLarge, None),
        (lambda: check_post(RoomState(ROOM), post(), NOW), RoomNotFound, None),
        (lambda: check_post(state(), post(), NOW + 10 * 60_000), RoomClockSkew, None),
        (
            lambda: check_moderation(state(), make_meta(OWNER, seq=1, name="x").encoded, NOW),
            RoomMetadataStale,
            None,
        ),
        (lambda: check_post(state(), b"\xa1\x61t\x64junk", NOW), RoomRecordRefused, None),
        (
            lambda: check_post(state(delete(b"")), _ALICE_POST.encoded, NOW),
            PostRemoved,
            RoomPostRemoved,
        ),
    ],
)
def test_each_refusal_comes_back_as_its_own_typed_error(
    make: Callable[[], Any], kind: type[RoomRefused], onion_kind: type[RoomError] | None
) -> None:
    error = room_error(refused_by_node(make))
    assert type(error) is kind
    assert isinstance(error, RoomRefused) and isinstance(error, ClientError)
    assert isinstance(error, RoomError)  # the protocol's tree catches it too
    if onion_kind is not None:
        assert isinstance(error, onion_kind)
    assert not error.local
    assert "refused" in str(error)


def test_a_rate_refusal_after_every_try_failed_is_still_the_rate() -> None:
    """The onion client retries rate_limited elsewhere, then gives up with
    OnionRequestFailed holding each try's error: the room's reason is found in it."""
    limited = refused_by_node(lambda: check_post(state(rate=1), post(), NOW, recent_count=1))
    failed = OnionRequestFailed("no answer", [HopTimeout("slow"), limited, HopTimeout("x")])
    error = room_error(failed)
    assert isinstance(error, RoomRateExceeded) and error.status == "rate_limited"


def test_a_network_failure_stays_what_it_was() -> None:
    failed = OnionRequestFailed("no answer", [HopTimeout("slow"), HopTimeout("slower")])
    assert room_error(failed) is failed
    assert room_error(HopTimeout("x")).__class__ is HopTimeout
