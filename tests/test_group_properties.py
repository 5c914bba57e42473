"""Properties of encryption sessions (issue 13): a session's state is a function of its
set of records (any order, any split between replicas, merged), and every parser gives
only typed errors on random or mutated bytes, with its size limit checked first."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.capabilityutil import counter_rng, seed_of
from veil.onion.capability import revoke
from veil.onion.errors import GroupError, RawMessageHasNoSession, VeilError
from veil.onion.group import (
    ALL_RIGHTS,
    DELEGATION,
    MAX_MESSAGE_TEXT,
    MAX_RECORD_SIZE,
    RIGHTS_POLICY,
    FileDecryptor,
    SessionState,
    add_members,
    create_session,
    decode_record,
    decrypt_message,
    encrypt_message,
    end_session,
    message_session_id,
    parse_message,
    read_file_header,
    revoke_members,
    rotate,
)
from veil.onion.group.records import formats as records_module
from veil.onion.group.records import make_revoke
from veil.onion.keys import Account

NOW = 1_767_225_600_000
LATER = NOW + 3_600_000


def account(name: str) -> Account:
    return Account(seed_of("group-prop/" + name))


USERS = {name: account(name) for name in ("u1", "u2", "u3", "u4", "u5", "u6", "u7")}


def _scenario() -> tuple[SessionState, list[bytes], Any]:
    """A session with a bit of everything: forwarding chains, revocations of both kinds
    (one by an adder, refused under the rights policy), two administrators revoking
    each other, concurrent rotations and their merge, a void record of a revoked member."""
    u = USERS
    rng = counter_rng(b"scenario")
    new = create_session(
        u["u1"],
        {
            u["u2"].id: {"read", "forward"},
            u["u4"].id: ALL_RIGHTS,
            u["u6"].id: ALL_RIGHTS,
        },
        policy=RIGHTS_POLICY,
        now_ms=NOW,
        rng=rng,
    )
    key = new.session_key
    state = new.state
    out = list(new.records)

    def take(*records: Any) -> None:
        nonlocal state
        out.extend(records)
        state = state.add(*records)

    take(*add_members(state, u["u2"], [u["u3"].id], keys=state.epoch_keys(u["u2"]),
                      now_ms=NOW + 1, rng=rng))
    take(*add_members(state, u["u4"], {u["u5"].id: {"read"}},
                      keys=state.epoch_keys(u["u4"]), now_ms=NOW + 2, rng=rng))
    base = state
    e1, _ = rotate(base, key, keys=base.epoch_keys(u["u1"]), now_ms=NOW + 3, rng=rng)
    e4, _ = rotate(base, u["u4"], keys=base.epoch_keys(u["u4"]), now_ms=NOW + 3, rng=rng)
    take(e1, e4)
    # user2's revocation of user3, made by hand: refused under the rights policy.
    (chain3,) = state.live_chains(u["u3"].id, now_ms=NOW + 4)
    take(make_revoke(revoke(u["u2"], chain3, now_ms=NOW + 4)))
    # Two administrators revoke each other: the earlier wins.
    r46 = revoke_members(state, u["u4"], [u["u6"].id], now_ms=NOW + 5)
    r64 = revoke_members(state, u["u6"], [u["u4"].id], now_ms=NOW + 6)
    take(*r46, *r64)
    # user2 adds user7 after its revocation: void.
    late = add_members(state, u["u2"], [u["u7"].id], keys=state.epoch_keys(u["u2"]),
                       now_ms=NOW + 9, rng=rng)
    take(*revoke_members(state, key, [u["u2"].id], now_ms=NOW + 8))
    take(*late)
    e5, _ = rotate(state, key, keys=state.epoch_keys(u["u1"]), now_ms=NOW + 10, rng=rng)
    take(e5)
    return state, [r.encoded for r in out], new


STATE, RECORDS, NEW = _scenario()


def summary(state: SessionState) -> Any:
    members = state.members(now_ms=LATER)
    return (
        state.genesis.digest if state.genesis else None,
        state.conflict,
        sorted((k, sorted(m.rights), m.added_by) for k, m in members.items()),
        sorted(state.revoked_links.items()),
        state.heads,
        sorted(state.epochs),
        state.ended,
        sorted(state.rejected),
        sorted(state.void),
        state.revoked_members(now_ms=LATER),
        state.current_epoch(now_ms=LATER),
        [sorted(state.epoch_keys(user).items()) for user in USERS.values()],
    )


REFERENCE = summary(STATE)


def test_the_scenario_is_what_it_says() -> None:
    members = STATE.members(now_ms=LATER)
    u = USERS
    assert set(members) == {u["u1"].id, u["u4"].id,
                            u["u5"].id}
    assert len(STATE.rejected) == 1  # the adder's revocation, refused by the policy
    assert len(STATE.void) == 2  # user6's revocation after its own, user2's late addition
    assert len(STATE.heads) == 1 and len(STATE.epochs) == 4
    assert STATE.added_by(u["u7"].id) == ()
    assert not STATE.rights_of(u["u7"].id, now_ms=LATER, at_ms=NOW + 9)


_SETTINGS = settings(max_examples=40, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(st.permutations(RECORDS))
def test_any_order_gives_the_same_state(order: list[bytes]) -> None:
    assert summary(SessionState(STATE.session_id, order)) == REFERENCE


@_SETTINGS
@given(st.permutations(RECORDS))
def test_adding_one_by_one_in_any_order_gives_the_same_state(order: list[bytes]) -> None:
    state = SessionState(STATE.session_id)
    for record in order:
        state = state.add(record)
    assert summary(state) == REFERENCE


@_SETTINGS
@given(st.lists(st.sampled_from(["a", "b", "both"]), min_size=len(RECORDS),
                max_size=len(RECORDS)))
def test_two_replicas_merge_to_the_same_state(split: list[str]) -> None:
    a = [r for r, where in zip(RECORDS, split, strict=True) if where in ("a", "both")]
    b = [r for r, where in zip(RECORDS, split, strict=True) if where in ("b", "both")]
    left, right = SessionState(STATE.session_id, a), SessionState(STATE.session_id, b)
    assert summary(left.merge(right)) == REFERENCE
    assert summary(right.merge(left)) == REFERENCE


@_SETTINGS
@given(st.data())
def test_an_ended_session_merges_too(data: st.DataObject) -> None:
    end = end_session(STATE, NEW.session_key, now_ms=NOW + 20)
    records = data.draw(st.permutations([*RECORDS, end]))
    state = SessionState(STATE.session_id, records)
    assert state.ended and state.end == end


# --- hostile bytes: only typed errors ----------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_to_every_parser_give_only_typed_errors(data: bytes) -> None:
    for parse in (
        decode_record,
        lambda d: parse_message(d),
        lambda d: decrypt_message(d, STATE, {}, now_ms=NOW),
        read_file_header,
    ):
        with contextlib.suppress(GroupError):
            parse(data)
    dec = FileDecryptor(STATE.epoch_keys(USERS["u1"]))
    try:
        dec.update(data)
        dec.finish()
    except GroupError:
        pass
    state = STATE.add(data)
    assert summary(state)[:7] == REFERENCE[:7]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_random_text_to_the_message_parsers(text: str) -> None:
    for parse in (parse_message, message_session_id,
                  lambda t: decrypt_message(t, STATE, {}, now_ms=NOW)):
        with contextlib.suppress(GroupError, RawMessageHasNoSession):
            parse(text)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(RECORDS), st.data())
def test_mutated_records_are_refused_or_change_nothing(record: bytes, data: st.DataObject) -> None:
    where = data.draw(st.integers(0, len(record) - 1))
    flip = data.draw(st.integers(1, 255))
    mutated = bytearray(record)
    mutated[where] ^= flip
    with contextlib.suppress(GroupError):
        decode_record(bytes(mutated))
    state = SessionState(STATE.session_id, [*RECORDS, bytes(mutated)])
    assert summary(state)[:7] == REFERENCE[:7]


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_mutated_messages_give_only_typed_errors(data: st.DataObject) -> None:
    keys = STATE.epoch_keys(USERS["u1"])
    head = STATE.heads[0]
    text = encrypt_message(STATE.session_id, head, keys[head], "x", author=USERS["u1"],
                           timestamp_ms=NOW + 30, raw=True)
    where = data.draw(st.integers(0, len(text) - 1))
    char = data.draw(st.sampled_from("ABCDEFGabcdefg0123456789+/="))
    mutated = text[:where] + char + text[where + 1 :]
    try:
        out = decrypt_message(mutated, STATE, keys, now_ms=NOW + 31)
    except GroupError:
        return
    assert out.body == b"x"  # only a change base64 ignores, if any


# --- size limits before parsing -----------------------------------------------------------


def test_size_limits_come_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> object:
        raise AssertionError("parsed before the size check")

    monkeypatch.setattr(records_module, "decode", boom)
    with pytest.raises(GroupError) as info:
        decode_record(b"\xa1" + bytes(MAX_RECORD_SIZE))
    assert info.value.status == "too_large"
    import veil.onion.group.messages as messages_module

    monkeypatch.setattr(messages_module.json, "loads", boom)
    monkeypatch.setattr(messages_module.base64, "b64decode", boom)
    with pytest.raises(GroupError) as info:
        parse_message("{" + " " * MAX_MESSAGE_TEXT + "}")
    assert info.value.status == "too_large"
    with pytest.raises(GroupError) as info:
        parse_message("A" * (MAX_MESSAGE_TEXT - 10))
    assert info.value.status == "too_large"


# --- random concurrent histories --------------------------------------------------------



@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_concurrent_histories_merge_in_any_order(data: st.DataObject) -> None:
    """Operations built by writers that each see a random part of the records (two
    members writing at two nodes), then the whole set read in any order or in two
    replicas merged: one state."""
    users = list(USERS.values())
    rng = counter_rng(b"history")
    new = create_session(
        users[0],
        {users[1].id: ALL_RIGHTS, users[2].id: {"read", "forward"}},
        policy=data.draw(st.sampled_from([RIGHTS_POLICY, DELEGATION])),
        now_ms=NOW,
        rng=rng,
    )
    sid = new.session_id
    records: list[Any] = list(new.records)
    actors: list[Any] = [new.session_key, *users]
    now = NOW
    for _ in range(data.draw(st.integers(3, 9))):
        now += data.draw(st.integers(0, 2))  # equal dates happen
        extra = records[len(new.records) :]
        seen = data.draw(st.lists(st.booleans(), min_size=len(extra), max_size=len(extra)))
        view = SessionState(
            sid, [*new.records, *(r for r, keep in zip(extra, seen, strict=True) if keep)]
        )
        actor = data.draw(st.sampled_from(actors))
        reader = users[0] if actor is new.session_key else actor
        target = data.draw(st.sampled_from(users[1:5])).id
        op = data.draw(st.sampled_from(["add", "revoke", "rotate"]))
        try:
            if op == "add":
                rights = data.draw(st.sampled_from([{"read"}, {"read", "forward"}, ALL_RIGHTS]))
                made: list[Any] = add_members(
                    view, actor, {target: rights}, keys=view.epoch_keys(reader), now_ms=now,
                    rng=rng,
                )
            elif op == "revoke":
                made = revoke_members(view, actor, [target], now_ms=now)
            else:
                made = [rotate(view, actor, keys=view.epoch_keys(reader), now_ms=now, rng=rng)[0]]
        except VeilError:
            continue
        records.extend(made)
    encoded = [r.encoded for r in records]
    reference = summary(SessionState(sid, encoded))
    assert summary(SessionState(sid, data.draw(st.permutations(encoded)))) == reference
    split = data.draw(st.lists(st.sampled_from("ab"), min_size=len(encoded),
                               max_size=len(encoded)))
    left = SessionState(sid, [r for r, w in zip(encoded, split, strict=True) if w == "a"])
    right = SessionState(sid, [r for r, w in zip(encoded, split, strict=True) if w == "b"])
    assert summary(left.merge(right)) == reference
    # Whatever happened, the creator stays, with every right.
    state = SessionState(sid, encoded)
    assert state.rights_of(users[0].id, now_ms=LATER) == ALL_RIGHTS
    assert users[0].id in state.members(now_ms=LATER)
