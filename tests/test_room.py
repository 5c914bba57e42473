"""veil.onion.room (issue 16, sans-IO core): metadata, posts, moderation, proof of work,
the room's state as a pure function of its records, the node's checks; known-answer
vectors in tests/vectors/room_v1.json.

Regenerate the vectors (only for a deliberate change of format):
``python -m tests.test_room``.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.capabilityutil import DAY, HOUR, account, counter_rng, seed_of
from veil.onion.capability import DelegatedSigner, SessionKey, delegate, parse_resources
from veil.onion.errors import (
    ActionNotCovered,
    AuthorBanned,
    BadRoomSignature,
    InsufficientWork,
    InvalidValue,
    MalformedRoomRecord,
    NotAModerator,
    RoomError,
    RoomPostOutOfTime,
    RoomPostRemoved,
    RoomRateLimited,
    RoomRecordTooLarge,
    StaleRoomMetadata,
    UnknownRoom,
    WrongRoom,
    wire_status,
)
from veil.onion.keys import Account
from veil.onion.room import (
    MAX_RECORD_BYTES,
    META_DOMAIN,
    MOD_DOMAIN,
    POST_DOMAIN,
    ROOM_NAMESPACE,
    Moderation,
    RoomPost,
    RoomState,
    check_copy,
    check_moderation,
    check_post,
    check_pow,
    decode_room_record,
    leading_zero_bits,
    make_meta,
    make_moderation,
    make_room_post,
    solve_pow,
)

VECTORS = Path(__file__).parent / "vectors" / "room_v1.json"
NOW = 1_767_225_600_000
OWNER = account("room owner")
MOD = account("room moderator")
ALICE = account("room alice")
BOB = account("room bob")
STRANGER = account("room stranger")
ROOM = OWNER.id


def meta(seq: int = 1, **kw: Any) -> bytes:
    kw.setdefault("moderators", (MOD.id,))
    return make_meta(OWNER, seq=seq, name="lobby", description="be nice", **kw).encoded


def post(author: Account = ALICE, text: str = "hi", *, at: int = NOW, **kw: Any) -> bytes:
    return make_room_post(author, ROOM, text, now_ms=at, **kw).encoded


def state(*records: bytes, seq: int = 1, **kw: Any) -> RoomState:
    return RoomState(ROOM, [meta(seq, **kw), *records])


POSTING_KEY = SessionKey(seed_of("room posting key"))
MOD_KEY = SessionKey(seed_of("room moderating key"))


def delegated(
    who: Account, key: SessionKey = POSTING_KEY, resources: str = "self:-2:post", **kw: Any
) -> DelegatedSigner:
    """``key`` with ``who``'s chain granting ``resources`` (issued an hour before NOW)."""
    kw.setdefault("now_ms", NOW - HOUR)
    chain = delegate(
        who,
        key.ed25519_public,
        parse_resources(resources, self_owner=who.id),
        rng=counter_rng(b"chain " + key.seed),
        **kw,
    )
    return DelegatedSigner(key, chain)


def delegated_post() -> RoomPost:
    return make_room_post(
        delegated(ALICE),
        ROOM,
        "by alice's posting key",
        now_ms=NOW,
        rng=counter_rng(b"room delegated post"),
    )


def delegated_ban() -> Moderation:
    return make_moderation(
        delegated(MOD, MOD_KEY),
        ROOM,
        "ban",
        now_ms=NOW,
        who=BOB.id,
        rng=counter_rng(b"room delegated ban"),
    )


def resigned(data: bytes, key: SessionKey | Account, domain: bytes, **changes: Any) -> bytes:
    """``data`` with ``changes`` made, signed again by ``key`` (a hostile record that a
    builder would not make)."""
    obj = {**cbor2.loads(data), **changes}
    obj = {k: v for k, v in obj.items() if v is not None}
    obj.pop("sig")
    obj["k"] = key.ed25519_public
    obj["sig"] = key.sign(domain, cbor2.dumps(obj, canonical=True))
    return cbor2.dumps(obj, canonical=True)


# --- posts ---------------------------------------------------------------------------------


def test_a_post_is_checked_and_shown() -> None:
    data = post(text="hello, room", reply_to=bytes(32))
    got = check_post(state(), data, NOW)
    assert (got.author, got.text, got.reply_to) == (ALICE.id, "hello, room", bytes(32))
    assert state(data).posts()[0].post_id == got.post_id


def test_a_forged_post_is_refused() -> None:
    obj = cbor2.loads(post())
    obj["a"] = BOB.id.x25519_public  # claims Bob, signed by Alice
    with pytest.raises(BadRoomSignature):
        check_post(state(), cbor2.dumps(obj, canonical=True), NOW)
    obj = cbor2.loads(post())
    obj["text"] = "tampered"
    with pytest.raises(BadRoomSignature) as info:
        check_post(state(), cbor2.dumps(obj, canonical=True), NOW)
    assert wire_status(info.value) == "unauthorized"
    # Alice's own signature, re-labelled with Bob's key.
    obj = cbor2.loads(post())
    obj["a"], obj["k"] = BOB.id.x25519_public, BOB.ed25519_public
    with pytest.raises(BadRoomSignature):
        decode_room_record(cbor2.dumps(obj, canonical=True))


def test_wrong_room_unknown_room_and_time() -> None:
    other = make_room_post(ALICE, BOB.id, "elsewhere", now_ms=NOW).encoded
    with pytest.raises(WrongRoom):
        check_post(state(), other, NOW)
    with pytest.raises(UnknownRoom) as info:
        check_post(RoomState(ROOM), post(), NOW)
    assert info.value.status == "not_found"
    with pytest.raises(RoomPostOutOfTime):
        check_post(state(), post(at=NOW + 200_000), NOW, skew_ms=120_000)
    with pytest.raises(RoomPostOutOfTime):
        check_post(state(), post(at=NOW - 200_000), NOW, skew_ms=120_000)
    with pytest.raises(MalformedRoomRecord):
        check_post(state(), meta(2), NOW)


def test_oversized_posts_are_refused() -> None:
    with pytest.raises(RoomRecordTooLarge) as info:
        check_post(state(size=10), post(text="x" * 11), NOW)
    assert info.value.status == "too_large"
    check_post(state(size=10), post(text="é" * 5), NOW)
    with pytest.raises(RoomRecordTooLarge):
        check_post(state(size=10), post(text="é" * 6), NOW)
    with pytest.raises(RoomRecordTooLarge):
        decode_room_record(b"\xa0" * (MAX_RECORD_BYTES + 1))
    with pytest.raises(InvalidValue):
        make_room_post(ALICE, ROOM, "x" * 4097, now_ms=NOW)


def test_rate_is_the_callers_count() -> None:
    s = state(rate=3)
    check_post(s, post(), NOW, recent_count=2)
    with pytest.raises(RoomRateLimited) as info:
        check_post(s, post(), NOW, recent_count=3)
    assert info.value.status == "rate_limited"


def test_proof_of_work() -> None:
    s = state(pow_bits=8)
    with pytest.raises(InsufficientWork):
        check_post(s, post(), NOW)
    good = make_room_post(ALICE, ROOM, "worked", now_ms=NOW, pow_bits=8)
    assert check_post(s, good.encoded, NOW).pow_nonce is not None
    # Work for fewer bits than the room asks (a nonce that reaches 1 bit but not 8).
    weak = None
    for counter in range(1 << 16):
        nonce = counter.to_bytes(8, "big")
        with contextlib.suppress(InsufficientWork):
            check_pow(good.work_bytes, nonce, 1)
            try:
                check_pow(good.work_bytes, nonce, 8)
            except InsufficientWork:
                weak = nonce
                break
    assert weak is not None
    with pytest.raises(InsufficientWork):
        check_pow(good.work_bytes, weak, 8)
    # The work is bound to the post: another post's nonce does not carry over (nor can
    # the nonce be swapped without the author's signature).
    obj = cbor2.loads(good.encoded)
    obj["pw"] = weak
    with pytest.raises(BadRoomSignature):
        check_post(s, cbor2.dumps(obj, canonical=True), NOW)
    # A room without work takes any post.
    check_post(state(), good.encoded, NOW)


def test_solve_and_check_pow_agree() -> None:
    fields = {
        "v": 2,
        "t": "post",
        "room": ROOM.x25519_public,
        "a": ALICE.id.x25519_public,
        "id": bytes(16),
        "ts": NOW,
        "text": "pow",
        "k": ALICE.ed25519_public,
    }
    work = cbor2.dumps(fields, canonical=True)  # the work's bytes, as the parser builds
    for bits in (0, 1, 5, 10):
        check_pow(work, solve_pow(fields, bits), bits)
    assert leading_zero_bits(b"\x00\x01") == 15
    assert leading_zero_bits(b"\x80") == 0
    with pytest.raises(InvalidValue):
        solve_pow(fields, 25)


# --- delegated keys ------------------------------------------------------------------------


def test_the_room_namespace() -> None:
    assert ROOM_NAMESPACE == -2


def test_a_delegated_key_posts_and_moderates_as_its_account() -> None:
    p = delegated_post()
    assert (p.author, p.key, p.cap is not None) == (ALICE.id, POSTING_KEY.ed25519_public, True)
    assert check_post(state(), p.encoded, NOW).post_id == p.post_id
    ban = delegated_ban()
    assert ban.signer == MOD.id and check_moderation(state(), ban.encoded, NOW) == ban
    assert state(ban.encoded).is_banned(BOB.id)
    # With work: the work covers the chain too.
    worked = make_room_post(delegated(ALICE), ROOM, "w", now_ms=NOW, pow_bits=6)
    check_post(state(pow_bits=6), worked.encoded, NOW)
    # Not tied to one room: the same key posts as Alice in Bob's room.
    elsewhere = make_room_post(delegated(ALICE), BOB.id, "hi bob", now_ms=NOW)
    check_post(RoomState(BOB.id, [make_meta(BOB, seq=1, name="b").encoded]), elsewhere.encoded, NOW)


def test_delegated_keys_that_may_not_act_are_refused() -> None:
    channel_only = delegated(ALICE, resources="self:-1:post")
    with pytest.raises(ActionNotCovered):
        make_room_post(channel_only, ROOM, "x", now_ms=NOW)
    good = delegated_post().encoded
    cases = {
        # a chain that grants the channel namespace only, put in by hand
        "channel chain": resigned(good, POSTING_KEY, POST_DOMAIN, cap=channel_only.chain.encoded),
        # Bob's chain for the key, in a post that says Alice wrote it
        "another author's chain": resigned(
            good, POSTING_KEY, POST_DOMAIN, cap=delegated(BOB).chain.encoded
        ),
        # dated after the chain expired (a week after it was issued, by default)
        "expired": resigned(good, POSTING_KEY, POST_DOMAIN, ts=NOW + 8 * DAY),
        # dated before the chain was issued
        "before issue": resigned(good, POSTING_KEY, POST_DOMAIN, ts=NOW - 2 * HOUR),
        # signed by another key than the chain's audience
        "not the audience": resigned(good, MOD_KEY, POST_DOMAIN),
        # the author's own key signs, with a chain it is not the audience of
        "owner key with a chain": resigned(good, ALICE, POST_DOMAIN),
    }
    for what, data in cases.items():
        with pytest.raises(BadRoomSignature) as info:
            decode_room_record(data)
        assert info.value.status == "unauthorized", what
    # A revoked link (the caller's lookup says so).
    with pytest.raises(BadRoomSignature):
        decode_room_record(good, is_revoked=lambda digest: True)
    decode_room_record(good, is_revoked=lambda digest: False)
    # A stranger's key acts for the stranger only: not a moderator.
    by_stranger = make_moderation(delegated(STRANGER), ROOM, "ban", now_ms=NOW, who=ALICE.id)
    assert by_stranger.signer == STRANGER.id
    with pytest.raises(NotAModerator):
        check_moderation(state(), by_stranger.encoded, NOW)


def test_version_1_records_are_refused() -> None:
    old = resigned(post(), ALICE, POST_DOMAIN, v=1)
    with pytest.raises(MalformedRoomRecord):
        decode_room_record(old)
    with pytest.raises(MalformedRoomRecord):
        decode_room_record(resigned(meta(), OWNER, META_DOMAIN, v=3))


# --- copies from peers -----------------------------------------------------------------------


def test_copies_are_judged_without_the_date_and_with_bans_at_their_date() -> None:
    s = state()
    old = post(at=NOW - 3 * DAY)  # a copy stored days ago: no "dated now" for copies
    assert check_copy(s, old).room == ROOM
    with pytest.raises(RoomPostOutOfTime):
        check_post(s, old, NOW)
    with pytest.raises(UnknownRoom):
        check_copy(RoomState(ROOM), post())
    with pytest.raises(WrongRoom):
        check_copy(s, make_room_post(ALICE, BOB.id, "elsewhere", now_ms=NOW).encoded)
    ban = make_moderation(MOD, ROOM, "ban", now_ms=NOW, who=ALICE.id).encoded
    banned = state(ban)
    check_copy(banned, post(at=NOW - 1))  # before the ban: kept
    with pytest.raises(AuthorBanned) as info:
        check_copy(banned, post(at=NOW))
    assert info.value.status == "forbidden"
    purge = make_moderation(MOD, ROOM, "ban", now_ms=NOW, who=ALICE.id, delete_past=True)
    with pytest.raises(RoomPostRemoved):
        check_copy(state(purge.encoded), post(at=NOW - 1))
    with pytest.raises(AuthorBanned):  # a client storing it: the author is banned
        check_post(state(purge.encoded), post(at=NOW - 1), NOW)
    p = make_room_post(BOB, ROOM, "to go", now_ms=NOW)
    gone = make_moderation(OWNER, ROOM, "delete", now_ms=NOW, post_ids=[p.post_id]).encoded
    with pytest.raises(RoomPostRemoved) as removed:
        check_copy(state(gone), p.encoded)
    assert removed.value.status == "gone"
    with pytest.raises(RoomPostRemoved):
        check_post(state(gone), p.encoded, NOW)  # nor stored again by a client
    with pytest.raises(InsufficientWork):
        check_copy(state(pow_bits=8), post())
    with pytest.raises(RoomRecordTooLarge):
        check_copy(state(size=3), post(text="four"))
    by_stranger = make_moderation(STRANGER, ROOM, "ban", now_ms=NOW, who=ALICE.id).encoded
    with pytest.raises(NotAModerator):
        check_copy(s, by_stranger)
    # Metadata: below the held seq is refused, the same seq kept (members converge).
    held = RoomState(ROOM, [meta(2)])
    with pytest.raises(StaleRoomMetadata):
        check_copy(held, meta(1))
    check_copy(held, meta(2, rate=3))
    check_copy(RoomState(ROOM), meta(1))


# --- moderation ------------------------------------------------------------------------------


def test_moderator_and_owner_delete_a_stranger_cannot() -> None:
    p1 = make_room_post(ALICE, ROOM, "a", now_ms=NOW)
    p2 = make_room_post(BOB, ROOM, "b", now_ms=NOW)
    by_stranger = make_moderation(STRANGER, ROOM, "delete", now_ms=NOW, post_ids=[p1.post_id])
    s = state(p1.encoded, p2.encoded, by_stranger.encoded)
    assert {p.text for p in s.posts()} == {"a", "b"}
    assert s.void == 1
    with pytest.raises(NotAModerator) as info:
        check_moderation(s, by_stranger.encoded, NOW)
    assert info.value.status == "forbidden"
    by_mod = make_moderation(MOD, ROOM, "delete", now_ms=NOW, post_ids=[p1.post_id])
    by_owner = make_moderation(OWNER, ROOM, "delete", now_ms=NOW, post_ids=[p2.post_id])
    check_moderation(s, by_mod.encoded, NOW)
    check_moderation(s, by_owner.encoded, NOW)
    assert [p.text for p in s.add(by_mod.encoded).posts()] == ["b"]
    assert s.add(by_mod.encoded, by_owner.encoded).posts() == []


def test_ban_unban_and_delete_past() -> None:
    old = post(ALICE, "before", at=NOW - 1000)
    ban = make_moderation(MOD, ROOM, "ban", now_ms=NOW, who=ALICE.id).encoded
    s = state(old, ban)
    assert s.is_banned(ALICE.id)
    assert [p.text for p in s.posts()] == ["before"]  # kept: no delete_past
    with pytest.raises(AuthorBanned) as info:
        check_post(s, post(ALICE, at=NOW + 1), NOW)
    assert info.value.status == "forbidden"
    check_post(s, post(BOB), NOW)
    stranger_ban = make_moderation(STRANGER, ROOM, "ban", now_ms=NOW, who=BOB.id).encoded
    with pytest.raises(NotAModerator):
        check_moderation(s, stranger_ban, NOW)
    assert not s.add(stranger_ban).is_banned(BOB.id)
    unban = make_moderation(OWNER, ROOM, "unban", now_ms=NOW + 10, who=ALICE.id).encoded
    assert not s.add(unban).is_banned(ALICE.id)
    check_post(s.add(unban), post(ALICE, at=NOW + 20), NOW)
    purge = make_moderation(OWNER, ROOM, "ban", now_ms=NOW, who=ALICE.id, delete_past=True)
    s2 = state(old, purge.encoded, unban)
    assert not s2.is_banned(ALICE.id) and s2.posts() == []  # deletes are for good
    assert purge.delete_past


def test_removing_a_moderator_voids_its_actions() -> None:
    ban = make_moderation(MOD, ROOM, "ban", now_ms=NOW, who=ALICE.id).encoded
    s = RoomState(ROOM, [meta(1), meta(2, moderators=()), ban])
    assert not s.is_banned(ALICE.id) and s.void == 1
    with pytest.raises(NotAModerator):
        check_moderation(s, ban, NOW)


def test_newer_metadata_supersedes() -> None:
    s = RoomState(ROOM, [meta(2, pow_bits=0, rate=5), meta(1, pow_bits=12)])
    assert s.meta is not None and (s.meta.seq, s.meta.rate, s.meta.pow_bits) == (2, 5, 0)
    with pytest.raises(StaleRoomMetadata) as info:
        check_moderation(s, meta(2, rate=7), NOW)
    assert info.value.status == "replayed"
    with pytest.raises(StaleRoomMetadata):
        check_moderation(s, meta(1), NOW)
    assert check_moderation(s, meta(3), NOW).seq == 3  # type: ignore[union-attr]
    forged = make_meta(STRANGER, seq=9, name="mine").encoded
    obj = cbor2.loads(forged)
    obj["room"] = ROOM.x25519_public
    with pytest.raises(BadRoomSignature):
        decode_room_record(cbor2.dumps(obj, canonical=True))
    assert RoomState(ROOM, [meta(1), cbor2.dumps(obj, canonical=True)]).rejected == 1
    tie = RoomState(ROOM, [meta(4, rate=1), meta(4, rate=2)])
    assert tie.conflict


def test_metadata_bounds() -> None:
    with pytest.raises(InvalidValue):
        make_meta(OWNER, seq=1, name="x", pow_bits=25)
    with pytest.raises(InvalidValue):
        make_meta(OWNER, seq=1, name="x", rate=0)
    with pytest.raises(InvalidValue):
        make_meta(OWNER, seq=1, name="")
    with pytest.raises(InvalidValue):
        make_moderation(OWNER, ROOM, "ban", now_ms=NOW)
    with pytest.raises(InvalidValue):
        make_moderation(OWNER, ROOM, "nuke", now_ms=NOW, who=ALICE.id)


# --- order does not matter ---------------------------------------------------------------------


def _pool() -> list[bytes]:
    rng = counter_rng(b"pool")
    p = [
        make_room_post(a, ROOM, t, now_ms=NOW + i, rng=rng)
        for i, (a, t) in enumerate([(ALICE, "a1"), (BOB, "b1"), (ALICE, "a2"), (STRANGER, "s")])
    ]
    mods = [
        make_moderation(MOD, ROOM, "delete", now_ms=NOW + 5, post_ids=[p[1].post_id], rng=rng),
        make_moderation(OWNER, ROOM, "ban", now_ms=NOW + 6, who=ALICE.id, rng=rng),
        make_moderation(MOD, ROOM, "unban", now_ms=NOW + 7, who=ALICE.id, rng=rng),
        make_moderation(STRANGER, ROOM, "ban", now_ms=NOW + 8, who=BOB.id, rng=rng),
        make_moderation(
            MOD, ROOM, "ban", now_ms=NOW + 9, who=STRANGER.id, delete_past=True, rng=rng
        ),
    ]
    return [meta(1), meta(2, moderators=()), meta(3), *(x.encoded for x in p + mods), b"garbage"]


POOL = _pool()


@settings(max_examples=60, deadline=None)
@given(st.permutations(POOL), st.integers(min_value=0, max_value=len(POOL)))
def test_state_is_a_function_of_the_set(order: list[bytes], cut: int) -> None:
    whole = RoomState(ROOM, POOL)
    assert RoomState(ROOM, order).summary() == whole.summary()
    left, right = RoomState(ROOM, order[:cut]), RoomState(ROOM, order[cut:])
    assert left.merge(right).summary() == right.merge(left).summary() == whole.summary()
    assert left.merge(right).encoded() == whole.encoded()


def test_the_pool_state() -> None:
    s = RoomState(ROOM, POOL)
    assert s.rejected == 1 and s.void == 1
    assert not s.is_banned(ALICE.id) and s.is_banned(STRANGER.id)
    assert [p.text for p in s.posts()] == ["a1", "a2"]


# --- parsers survive anything ----------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_give_typed_errors(data: bytes) -> None:
    with contextlib.suppress(RoomError):
        decode_room_record(data)
    with contextlib.suppress(RoomError):
        check_post(state(), data, NOW)
    with contextlib.suppress(RoomError):
        check_moderation(state(), data, NOW)


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=8),
    st.binary(max_size=40),
    st.lists(st.binary(min_size=32, max_size=32), max_size=3),
)
_KEYS = st.sampled_from(
    [
        "v",
        "t",
        "room",
        "a",
        "id",
        "ts",
        "text",
        "re",
        "pw",
        "k",
        "sig",
        "seq",
        "name",
        "desc",
        "rate",
        "size",
        "pow",
        "mods",
        "op",
        "posts",
        "who",
        "past",
        "cap",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_KEYS, _VALUES, max_size=14), st.sampled_from(["meta", "post", "mod"]))
def test_random_maps_give_typed_errors(obj: dict[str, Any], kind: str) -> None:
    base = cbor2.loads(
        {
            "meta": meta(),
            "post": post(),
            "mod": make_moderation(MOD, ROOM, "ban", now_ms=NOW, who=ALICE.id).encoded,
        }[kind]
    )
    for candidate in (obj, {**base, **obj}):
        data = cbor2.dumps(candidate, canonical=True)
        with contextlib.suppress(RoomError):
            decode_room_record(data)
        with contextlib.suppress(RoomError):
            check_post(state(), data, NOW)
        with contextlib.suppress(RoomError):
            check_copy(state(), data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["post", "mod"]))
def test_any_cap_field_gives_typed_errors(cap_bytes: bytes, kind: str) -> None:
    """A record whose ``cap`` is anything (garbage, a chain of another account, a
    truncated one) is refused with a RoomError, never another exception."""
    base = cbor2.loads(delegated_post().encoded if kind == "post" else delegated_ban().encoded)
    for candidate in (cap_bytes, base["cap"][: len(cap_bytes)], base["cap"] + cap_bytes):
        obj = {**base, "cap": candidate}
        with contextlib.suppress(RoomError):
            decode_room_record(cbor2.dumps(obj, canonical=True))


# --- known answers ---------------------------------------------------------------------------


def make_vectors() -> dict[str, Any]:
    p = make_room_post(
        ALICE, ROOM, "hello, room", now_ms=NOW, pow_bits=8, rng=counter_rng(b"room post")
    )
    reply = make_room_post(
        BOB, ROOM, "hi alice", now_ms=NOW + 1000, reply_to=p.post_id, rng=counter_rng(b"room reply")
    )
    return {
        "comment": "veil rooms, record version 2 (issue 16); regenerate: python -m tests.test_room",
        "meta_domain": META_DOMAIN.decode(),
        "post_domain": POST_DOMAIN.decode(),
        "mod_domain": MOD_DOMAIN.decode(),
        "owner_seed": OWNER.seed.hex(),
        "room_id": str(ROOM),
        "alice_seed": ALICE.seed.hex(),
        "moderator_seed": MOD.seed.hex(),
        "now_ms": NOW,
        "meta": make_meta(
            OWNER,
            seq=1,
            name="lobby",
            description="be nice",
            rate=5,
            size=500,
            pow_bits=8,
            moderators=(MOD.id,),
        ).encoded.hex(),
        "post": p.encoded.hex(),
        "post_id": p.post_id.hex(),
        "reply": reply.encoded.hex(),
        "delete": make_moderation(
            MOD,
            ROOM,
            "delete",
            now_ms=NOW + 2000,
            post_ids=[reply.post_id],
            rng=counter_rng(b"room delete"),
        ).encoded.hex(),
        "ban": make_moderation(
            OWNER,
            ROOM,
            "ban",
            now_ms=NOW + 3000,
            who=BOB.id,
            delete_past=True,
            rng=counter_rng(b"room ban"),
        ).encoded.hex(),
        "posting_key_seed": POSTING_KEY.seed.hex(),
        "moderating_key_seed": MOD_KEY.seed.hex(),
        "delegated_post": delegated_post().encoded.hex(),
        "delegated_ban": delegated_ban().encoded.hex(),
    }


def test_known_answers() -> None:
    import hashlib

    import nacl.bindings as sodium

    want = json.loads(VECTORS.read_text())
    assert make_vectors() == want
    s = RoomState(ROOM, [bytes.fromhex(want[k]) for k in ("meta", "post", "reply")])
    got = check_post(s, bytes.fromhex(want["post"]), NOW)
    assert got.post_id.hex() == want["post_id"]
    # The documented construction, with cbor2, hashlib and libsodium directly.
    for name, domain in (("meta", "meta_domain"), ("post", "post_domain"), ("ban", "mod_domain")):
        obj = cbor2.loads(bytes.fromhex(want[name]))
        sig = obj.pop("sig")
        signed = b"veil/" + want[domain].encode() + b"\x00" + cbor2.dumps(obj, canonical=True)
        sodium.crypto_sign_open(sig + signed, obj["k"])
    obj = cbor2.loads(bytes.fromhex(want["post"]))
    del obj["sig"]
    post_id = hashlib.blake2b(
        cbor2.dumps(obj, canonical=True), digest_size=32, person=b"veil/room-rec-id"
    ).digest()
    assert post_id.hex() == want["post_id"]
    pw = obj.pop("pw")
    work = sodium.crypto_generichash_blake2b_salt_personal(
        cbor2.dumps(obj, canonical=True) + pw,
        digest_size=32,
        person=b"veil/room-pow".ljust(16, b"\x00"),
    )
    assert leading_zero_bits(work) >= 8
    final = s.add(bytes.fromhex(want["delete"]), bytes.fromhex(want["ban"]))
    assert [p.text for p in final.posts()] == ["hello, room"] and final.is_banned(BOB.id)
    # A delegated key's records: signed by the session key, with the account's chain.
    for name, domain, key in (
        ("delegated_post", "post_domain", POSTING_KEY),
        ("delegated_ban", "mod_domain", MOD_KEY),
    ):
        obj = cbor2.loads(bytes.fromhex(want[name]))
        sig = obj.pop("sig")
        assert obj["v"] == 2 and obj["k"] == key.ed25519_public and "cap" in obj
        signed = b"veil/" + want[domain].encode() + b"\x00" + cbor2.dumps(obj, canonical=True)
        sodium.crypto_sign_open(sig + signed, obj["k"])
    got_post = decode_room_record(bytes.fromhex(want["delegated_post"]))
    got_ban = decode_room_record(bytes.fromhex(want["delegated_ban"]))
    assert isinstance(got_post, RoomPost) and got_post.author == ALICE.id
    assert isinstance(got_ban, Moderation) and got_ban.signer == MOD.id


if __name__ == "__main__":
    VECTORS.write_text(json.dumps(make_vectors(), indent=2) + "\n")
    print(f"wrote {VECTORS}")
