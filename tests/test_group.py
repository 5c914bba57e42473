"""Encryption sessions (issue 13), the sans-IO core in veil.onion.group: Seald's chains
under both revocation policies, forwarding rules, revocation and rotation, concurrent
rotations, messages (JSON and raw), whole-session revocation, every typed error with its
wire status. Files: tests/test_group_files.py; properties: tests/test_group_properties.py;
vectors: tests/test_group_vectors.py."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.capabilityutil import counter_rng, seed_of
from veil.onion import cbor, errors, padding
from veil.onion.capability import Chain, authorize, issue_link, revoke
from veil.onion.errors import (
    BadAuthor,
    CapabilityRevoked,
    InvalidRights,
    MalformedMessage,
    MessageTampered,
    NotAMember,
    RawMessageHasNoSession,
    RecordFromFuture,
    RecordTooLarge,
    RevocationNotAllowed,
    RightMissing,
    SessionRevoked,
    UnknownEpoch,
    UnknownSession,
    WrongSession,
)
from veil.onion.group import (
    ALL_RIGHTS,
    DELEGATION,
    MAX_RECORD_SIZE,
    MESSAGES_NAMESPACE,
    RIGHTS_POLICY,
    STATE_NAMESPACE,
    NewSession,
    SessionState,
    add_members,
    check_record,
    create_session,
    decode_record,
    decrypt_message,
    encrypt_message,
    end_session,
    message_session_id,
    resources_of_rights,
    revoke_members,
    rotate,
)
from veil.onion.group.records import make_member, make_revoke
from veil.onion.keys import Account, GroupId

NOW = 1_767_225_600_000
MINUTE = 60_000


def account(name: str) -> Account:
    return Account(seed_of("group/" + name))


U1, U2, U3, U4, U5 = (account(f"user{i}") for i in range(1, 6))


class Seald:
    """user1 creates (holds every right), adds user2 (read, forward), user2 adds user3
    (read, forward); user1 also adds user4 with every right (an administrator who is not
    the creator)."""

    def __init__(self, policy: str, *, rng_seed: bytes = b"seald") -> None:
        self.rng = counter_rng(rng_seed)
        self.new: NewSession = create_session(
            U1,
            {U2.id: {"read", "forward"}, U4.id: ALL_RIGHTS},
            metadata="a Seald chain",
            policy=policy,
            now_ms=NOW,
            rng=self.rng,
        )
        self.key = self.new.session_key
        state = self.new.state
        added = add_members(
            state, U2, [U3.id], keys=state.epoch_keys(U2), now_ms=NOW + 1,
            rng=self.rng,
        )
        self.state = state.add(*added)
        assert not self.state.rejected

    def members(self, state: SessionState | None = None, at: int = NOW + MINUTE) -> set[bytes]:
        return set((state or self.state).members(now_ms=at))


def can_revoke(s: Seald, revoker: Any, target: Account) -> bool:
    try:
        records = revoke_members(s.state, revoker, [target.id], now_ms=NOW + 10)
    except RevocationNotAllowed:
        return False
    assert records
    return True


# --- the Seald chains under both policies --------------------------------------------


def test_the_seald_chain_records_who_added_whom_and_rights() -> None:
    s = Seald(RIGHTS_POLICY)
    members = s.state.members(now_ms=NOW + MINUTE)
    assert set(members) == {U1.id, U2.id, U3.id,
                            U4.id}
    assert members[U1.id].rights == ALL_RIGHTS
    assert members[U2.id].rights == {"read", "forward"}
    assert members[U3.id].rights == {"read", "forward"}
    # The session key added user2 and user4: shown as added by the creator.
    assert members[U2.id].added_by == (U1.id,)
    assert members[U3.id].added_by == (U2.id,)
    assert members[U3.id].account == U3.id
    assert s.state.creator == U1.id
    assert s.state.metadata == "a Seald chain"
    assert s.state.policy == RIGHTS_POLICY
    assert s.new.session_id == s.state.session_id
    assert str(s.state.session_id).startswith("03")


def test_under_rights_user1_revokes_anyone_user2_and_user3_no_one() -> None:
    s = Seald(RIGHTS_POLICY)
    assert can_revoke(s, s.key, U2) and can_revoke(s, s.key, U3)
    assert can_revoke(s, U1, U2) and can_revoke(s, U1, U3)  # the creator's own key
    assert can_revoke(s, U4, U2) and can_revoke(s, U4, U3)  # a holder of revoke
    for revoker in (U2, U3):
        for target in (U1, U2, U3, U4):
            if target is not revoker:
                assert not can_revoke(s, revoker, target), (revoker, target)


def test_under_delegation_user2_revokes_user3_user3_no_one_and_no_one_the_creator() -> None:
    s = Seald(DELEGATION)
    assert can_revoke(s, U2, U3)
    assert not can_revoke(s, U3, U2)
    assert not can_revoke(s, U2, U4)
    for revoker in (U2, U3, U4):
        assert not can_revoke(s, revoker, U1)
    assert can_revoke(s, s.key, U2) and can_revoke(s, U1, U3) and can_revoke(s, U4, U2)


@pytest.mark.parametrize("policy", [RIGHTS_POLICY, DELEGATION])
def test_no_one_can_revoke_the_creator_even_by_a_record_made_by_hand(policy: str) -> None:
    s = Seald(policy)
    (creator_chain,) = s.state.live_chains(U1.id, now_ms=NOW)
    authority = s.state.chain_for(U4.id, "revoke", now_ms=NOW)
    for revoker, auth in ((s.key, None), (U4, authority)):
        record = make_revoke(revoke(revoker, creator_chain, now_ms=NOW + 5, authority=auth))
        with pytest.raises(RevocationNotAllowed):
            check_record(s.state, record, now_ms=NOW + 5)
        state = s.state.add(record)
        assert U1.id in state.members(now_ms=NOW + 6)
        assert isinstance(state.rejected[record.digest], RevocationNotAllowed)


def test_under_rights_a_node_refuses_an_adders_revocation_made_by_hand() -> None:
    """The capability layer lets an upstream issuer revoke; the rights policy does not,
    and check_record (the node) enforces the policy."""
    s = Seald(RIGHTS_POLICY)
    (chain,) = s.state.live_chains(U3.id, now_ms=NOW)
    record = make_revoke(revoke(U2, chain, now_ms=NOW + 5))
    with pytest.raises(RevocationNotAllowed) as info:
        check_record(s.state, record, now_ms=NOW + 5)
    assert info.value.status == "unauthorized"
    assert U3.id in s.members(s.state.add(record))
    # The same record under the delegation policy is accepted.
    d = Seald(DELEGATION)
    (chain,) = d.state.live_chains(U3.id, now_ms=NOW)
    record = make_revoke(revoke(U2, chain, now_ms=NOW + 5))
    check_record(d.state, record, now_ms=NOW + 5)
    assert U3.id not in d.members(d.state.add(record))


def test_members_added_by_a_revoked_member_lose_access_unless_added_again() -> None:
    s = Seald(RIGHTS_POLICY)
    revoked = s.state.add(*revoke_members(s.state, s.key, [U2.id], now_ms=NOW + 10))
    assert s.members(revoked) == {U1.id, U4.id}
    assert set(revoked.revoked_members(now_ms=NOW + MINUTE)) == {
        U2.id,
        U3.id,
    }
    # user3 also added by user4 (a chain that does not pass through user2) stays.
    again = add_members(
        s.state, U4, [U3.id], keys=s.state.epoch_keys(U4), now_ms=NOW + 5
    )
    kept = s.state.add(*again)
    kept = kept.add(*revoke_members(kept, s.key, [U2.id], now_ms=NOW + 10))
    assert s.members(kept) == {U1.id, U3.id, U4.id}
    assert kept.members(now_ms=NOW + MINUTE)[U3.id].added_by == tuple(
        sorted((U2.id, U4.id))
    )


# --- forwarding ------------------------------------------------------------------------


def test_a_member_without_forward_cannot_add() -> None:
    s = Seald(RIGHTS_POLICY)
    state = s.state
    new = add_members(
        state, s.key, {U5.id: {"read"}}, keys=state.epoch_keys(U1), now_ms=NOW + 2
    )
    state = state.add(*new)
    with pytest.raises(RightMissing) as info:
        add_members(state, U5, [account("x").id], keys=state.epoch_keys(U5),
                    now_ms=NOW + 3)
    assert info.value.right == "forward"
    # A link made by hand (the capability layer refuses it too, as widened).
    (chain,) = state.live_chains(U5.id, now_ms=NOW + 3)
    target = account("x")
    link = issue_link(
        U5,
        target.id,
        resources_of_rights(state.session_id, {"read"}),
        now_ms=NOW + 3,
        expires_ms=chain.expires_ms,
        proof=chain.links[-1].digest,
    )
    record = make_member(U5, Chain.from_links((*chain.links, link)), now_ms=NOW + 3)
    with pytest.raises(RightMissing) as info:
        check_record(state, record, now_ms=NOW + 3)
    assert info.value.right == "forward" and info.value.status == "unauthorized"
    assert target.id not in state.add(record).members(now_ms=NOW + 4)


def test_a_member_gives_no_right_it_lacks() -> None:
    s = Seald(RIGHTS_POLICY)
    with pytest.raises(RightMissing) as info:
        add_members(s.state, U2, {U5.id: ALL_RIGHTS},
                    keys=s.state.epoch_keys(U2), now_ms=NOW + 3)
    assert info.value.right == "revoke"
    (chain,) = s.state.live_chains(U2.id, now_ms=NOW + 3)
    link = issue_link(
        U2,
        U5.id,
        resources_of_rights(s.state.session_id, ALL_RIGHTS),
        now_ms=NOW + 3,
        expires_ms=chain.expires_ms,
        proof=chain.links[-1].digest,
    )
    record = make_member(U2, Chain.from_links((*chain.links, link)), now_ms=NOW + 3)
    with pytest.raises(RightMissing) as info:
        check_record(s.state, record, now_ms=NOW + 3)
    assert info.value.right == "revoke"


def test_rights_are_checked() -> None:
    s = Seald(RIGHTS_POLICY)
    for bad in ({"write"}, {"forward"}, "read"):
        with pytest.raises(InvalidRights):
            add_members(s.state, s.key, {U5.id: bad}, keys={}, now_ms=NOW)
    with pytest.raises(InvalidRights):
        create_session(U1, policy="anyone", now_ms=NOW)


def test_membership_resources_are_the_documented_mapping() -> None:
    group = GroupId(account("g").ed25519_public)
    read, full = (
        {(r.first, frozenset(r.actions)) for r in resources_of_rights(group, rights)}
        for rights in ({"read"}, ALL_RIGHTS)
    )
    assert read == {
        (STATE_NAMESPACE, frozenset({"retrieve"})),
        (MESSAGES_NAMESPACE, frozenset({"retrieve", "store"})),
    }
    assert full == {
        (STATE_NAMESPACE, frozenset({"retrieve", "store", "delegate", "revoke"})),
        (MESSAGES_NAMESPACE, frozenset({"retrieve", "store", "delegate", "revoke"})),
    }


# --- revocation, rotation, nodes --------------------------------------------------------


def _revoke_and_rotate(s: Seald, target: Account, at: int) -> tuple[SessionState, bytes, bytes]:
    state = s.state.add(*revoke_members(s.state, s.key, [target.id], now_ms=at))
    assert state.needs_rotation(now_ms=at)
    epoch, key = rotate(state, s.key, keys=state.epoch_keys(U1), now_ms=at + 1, rng=s.rng)
    state = state.add(epoch)
    assert not state.needs_rotation(now_ms=at + 2)
    assert state.current_epoch(now_ms=at + 2) == epoch.epoch_id
    return state, epoch.epoch_id, key


def test_a_revoked_member_holding_every_old_key_cannot_read_the_new_epoch() -> None:
    s = Seald(RIGHTS_POLICY)
    old_keys = s.state.epoch_keys(U2)
    old_message = encrypt_message(
        s.state.session_id, s.new.epoch, s.new.epoch_key, "before", rng=s.rng
    )
    state, epoch, key = _revoke_and_rotate(s, U2, NOW + 10)
    new_message = encrypt_message(state.session_id, epoch, key, "after", rng=s.rng)
    # Everything user2 can get from every record it ever saw, plus what it kept.
    stolen = {**old_keys, **state.epoch_keys(U2)}
    assert epoch not in stolen
    assert decrypt_message(old_message, state, stolen, now_ms=NOW + 20).body == b"before"
    with pytest.raises(UnknownEpoch):
        decrypt_message(new_message, state, stolen, now_ms=NOW + 20)
    # Any old key under the new epoch's ID opens nothing.
    for old in stolen.values():
        with pytest.raises(MessageTampered):
            decrypt_message(new_message, state, {epoch: old}, now_ms=NOW + 20)
    # user3 (added by user2) went with it; the others read the new epoch, and the old.
    assert epoch not in state.epoch_keys(U3)
    for reader in (U1, U4):
        keys = state.epoch_keys(reader)
        assert decrypt_message(new_message, state, keys, now_ms=NOW + 20).body == b"after"
        assert decrypt_message(old_message, state, keys, now_ms=NOW + 20).body == b"before"


def test_nodes_refuse_a_revoked_member_its_records_and_requests() -> None:
    s = Seald(RIGHTS_POLICY)
    (chain,) = s.state.live_chains(U2.id, now_ms=NOW)
    keys = s.state.epoch_keys(U2)
    record = add_members(s.state, U2, [U5.id], keys=keys, now_ms=NOW + 20)[0]
    state = s.state.add(*revoke_members(s.state, s.key, [U2.id], now_ms=NOW + 10))
    with pytest.raises(NotAMember):
        check_record(state, record, now_ms=NOW + 20)
    assert U5.id not in state.add(record).members(now_ms=NOW + 30)
    # The capability check of the storage RPC, with the session's revocations.
    revoked = set(state.revoked_links)
    for namespace in (STATE_NAMESPACE, MESSAGES_NAMESPACE):
        authorize(chain, signer=U2.ed25519_public, account=s.state.session_id,
                  method="retrieve", namespace=namespace, now_ms=NOW + 20)
        with pytest.raises(CapabilityRevoked):
            authorize(chain, signer=U2.ed25519_public, account=s.state.session_id,
                      method="retrieve", namespace=namespace, now_ms=NOW + 20,
                      is_revoked=revoked.__contains__)


def test_a_revoked_members_records_after_its_revocation_are_void() -> None:
    s = Seald(DELEGATION)
    keys = s.state.epoch_keys(U2)
    late = add_members(s.state, U2, [U5.id], keys=keys, now_ms=NOW + 20)
    early = add_members(s.state, U2, [account("early").id], keys=keys,
                        now_ms=NOW + 5)
    revocations = revoke_members(s.state, s.key, [U2.id], now_ms=NOW + 10)
    state = s.state.add(*late, *early, *revocations)
    # Both are gone from the membership now (below a revoked link), but only the late one
    # is void: the early one was a member between its addition and user2's revocation.
    members = state.members(now_ms=NOW + 30)
    assert U5.id not in members
    early_key = account("early").id
    assert early_key not in members
    assert state.rights_of(early_key, now_ms=NOW + 30, at_ms=NOW + 6) == {"read", "forward"}
    assert state.rights_of(U5.id, now_ms=NOW + 30, at_ms=NOW + 21) == frozenset()


def test_concurrent_rotations_give_two_heads_both_accepted_and_the_next_merges() -> None:
    s = Seald(RIGHTS_POLICY)
    base = s.state
    e1, k1 = rotate(base, s.key, keys=base.epoch_keys(U1), now_ms=NOW + 10, rng=s.rng)
    e4, k4 = rotate(base, U4, keys=base.epoch_keys(U4), now_ms=NOW + 11, rng=s.rng)
    a, b = base.add(e1), base.add(e4)
    merged = a.merge(b)
    assert merged.heads == (e1.epoch_id, e4.epoch_id)
    assert merged.records.keys() == b.merge(a).records.keys()
    m1 = encrypt_message(merged.session_id, e1.epoch_id, k1, "one", rng=s.rng)
    m4 = encrypt_message(merged.session_id, e4.epoch_id, k4, "four", rng=s.rng)
    for reader in (U1, U2, U3, U4):
        keys = merged.epoch_keys(reader)
        assert decrypt_message(m1, merged, keys, now_ms=NOW + 20).body == b"one"
        assert decrypt_message(m4, merged, keys, now_ms=NOW + 20).body == b"four"
    assert merged.current_epoch(now_ms=NOW + 20) == e4.epoch_id  # the later head
    e5, _ = rotate(merged, U4, keys=merged.epoch_keys(U4), now_ms=NOW + 30, rng=s.rng)
    assert e5.parents == tuple(sorted((e1.epoch_id, e4.epoch_id)))
    final = merged.add(e5)
    assert final.heads == (e5.epoch_id,)
    # A member added after the merge reads every epoch through the chain back.
    late = add_members(final, U4, [U5.id], keys=final.epoch_keys(U4),
                       now_ms=NOW + 40, rng=s.rng)
    final = final.add(*late)
    keys = final.epoch_keys(U5)
    assert set(keys) == set(final.epochs)
    assert decrypt_message(m1, final, keys, now_ms=NOW + 50).body == b"one"


def test_a_rotation_concurrent_with_a_revocation_leaves_an_unclean_head() -> None:
    s = Seald(RIGHTS_POLICY)
    base = s.state
    epoch, _ = rotate(base, U4, keys=base.epoch_keys(U4), now_ms=NOW + 10, rng=s.rng)
    revocations = revoke_members(base, s.key, [U3.id], now_ms=NOW + 10)
    state = base.add(epoch, *revocations)
    assert state.heads == (epoch.epoch_id,)
    assert state.needs_rotation(now_ms=NOW + 20)
    assert state.current_epoch(now_ms=NOW + 20) is None
    fixed, _ = rotate(state, s.key, keys=state.epoch_keys(U1), now_ms=NOW + 21, rng=s.rng)
    state = state.add(fixed)
    assert state.current_epoch(now_ms=NOW + 22) == fixed.epoch_id
    assert U3.id not in state.holders(fixed.epoch_id)


def test_only_revokers_rotate() -> None:
    s = Seald(DELEGATION)
    with pytest.raises(RightMissing) as info:
        rotate(s.state, U2, keys=s.state.epoch_keys(U2), now_ms=NOW + 10)
    assert info.value.right == "revoke"
    with pytest.raises(NotAMember):
        rotate(s.state, U5, keys={}, now_ms=NOW + 10)


# --- the whole session ------------------------------------------------------------------


def test_revoking_the_whole_session() -> None:
    s = Seald(RIGHTS_POLICY)
    with pytest.raises(RightMissing):
        end_session(s.state, U2, now_ms=NOW + 10)
    end = end_session(s.state, U4, now_ms=NOW + 10)
    state = s.state.add(end)
    assert state.ended and not s.state.ended
    more = add_members(s.state, s.key, [U5.id], keys=s.state.epoch_keys(U1),
                       now_ms=NOW + 11)
    with pytest.raises(SessionRevoked) as info:
        check_record(state, more[0], now_ms=NOW + 12)
    assert info.value.status == "gone" and info.value.http_status == 410
    # Storing the very same end record again is harmless.
    assert check_record(state, end.encoded, now_ms=NOW + 12) == end


# --- records a node refuses ------------------------------------------------------------


def test_check_record_refusals() -> None:
    s = Seald(RIGHTS_POLICY)
    other = Seald(RIGHTS_POLICY, rng_seed=b"other")
    with pytest.raises(WrongSession):
        check_record(s.state, other.new.records[1], now_ms=NOW)
    empty = SessionState(s.state.session_id)
    with pytest.raises(UnknownSession):
        check_record(empty, s.new.records[1], now_ms=NOW)
    assert check_record(empty, s.new.records[0], now_ms=NOW) == s.new.records[0]
    with pytest.raises(UnknownSession):
        check_record(s.state, _regenesis(s), now_ms=NOW)
    future = add_members(s.state, s.key, [U5.id], keys=s.state.epoch_keys(U1),
                         now_ms=NOW)
    future_record = make_member(s.key, future[0].chain, now_ms=NOW + 5 * MINUTE)
    with pytest.raises(RecordFromFuture) as info:
        check_record(s.state, future_record, now_ms=NOW)
    assert info.value.status == "clock_skew"
    with pytest.raises(RecordTooLarge):
        check_record(s.state, bytes(MAX_RECORD_SIZE + 1), now_ms=NOW)


def _regenesis(s: Seald) -> Any:
    from veil.onion.group.records import make_genesis

    return make_genesis(s.key, U2.id, policy=DELEGATION, metadata=None, now_ms=NOW)


def test_two_geneses_resolve_by_digest_and_flag_the_conflict() -> None:
    s = Seald(RIGHTS_POLICY)
    second = _regenesis(s)
    state = s.state.add(second)
    assert state.conflict
    assert state.genesis is not None
    assert state.genesis.digest == min(second.digest, s.new.records[0].digest)


def test_a_state_keeps_aside_what_is_not_valid() -> None:
    s = Seald(RIGHTS_POLICY)
    other = Seald(RIGHTS_POLICY, rng_seed=b"other")
    state = s.state.add(b"\xff not a record", other.new.records[1])
    assert len(state.rejected) == 2
    assert state.members(now_ms=NOW) == s.state.members(now_ms=NOW)


def test_records_decode_as_they_were_made() -> None:
    s = Seald(RIGHTS_POLICY)
    for record in s.state.records.values():
        assert decode_record(record.encoded) == record
        assert record.session_id == s.state.session_id


# --- messages -----------------------------------------------------------------------


def test_messages_json_and_raw() -> None:
    s = Seald(RIGHTS_POLICY)
    state, epoch, key = s.state, s.new.epoch, s.new.epoch_key
    keys = state.epoch_keys(U3)
    text = encrypt_message(state.session_id, epoch, key, "hello", rng=s.rng)
    obj = json.loads(text)
    assert set(obj) == {"sessionId", "data"} and obj["sessionId"] == str(state.session_id)
    assert message_session_id(text) == state.session_id
    out = decrypt_message(text, state, keys, now_ms=NOW)
    assert (out.text, out.author, out.session_id, out.epoch) == (
        "hello", None, state.session_id, epoch)
    raw = encrypt_message(state.session_id, epoch, key, b"raw", raw=True, rng=s.rng)
    assert not raw.startswith("{")
    with pytest.raises(RawMessageHasNoSession):
        message_session_id(raw)
    assert isinstance(RawMessageHasNoSession(), ValueError)
    assert decrypt_message(raw, state, keys, now_ms=NOW).body == b"raw"
    data = base64.b64decode(raw)
    assert len(data) >= 256 and padding.padme_length(len(data)) == len(data)


def test_messages_of_another_session_or_tampered() -> None:
    s = Seald(RIGHTS_POLICY)
    other = Seald(RIGHTS_POLICY, rng_seed=b"other")
    keys = s.state.epoch_keys(U1)
    theirs = encrypt_message(other.state.session_id, other.new.epoch, other.new.epoch_key, "x")
    with pytest.raises(WrongSession):
        decrypt_message(theirs, s.state, keys, now_ms=NOW)
    # Raw, its epoch is unknown here; with their key under our session it does not open.
    raw = json.loads(theirs)["data"]
    with pytest.raises(UnknownEpoch):
        decrypt_message(raw, s.state, keys, now_ms=NOW)
    with pytest.raises(MessageTampered):
        decrypt_message(raw, s.state, {other.new.epoch: other.new.epoch_key}, now_ms=NOW)
    mine = encrypt_message(s.state.session_id, s.new.epoch, s.new.epoch_key, "x", raw=True)
    data = bytearray(base64.b64decode(mine))
    data[-1] ^= 1
    with pytest.raises(MessageTampered):
        decrypt_message(base64.b64encode(data).decode(), s.state, keys, now_ms=NOW)
    for bad in ("{", '{"sessionId": 1, "data": ""}', "!!!", "AAAA", '["x"]'):
        with pytest.raises(MalformedMessage):
            decrypt_message(bad, s.state, keys, now_ms=NOW)


def test_group_messages_are_signed_and_checked_against_membership_at_their_date() -> None:
    s = Seald(RIGHTS_POLICY)
    state, epoch, key = s.state, s.new.epoch, s.new.epoch_key
    keys = state.epoch_keys(U1)
    text = encrypt_message(state.session_id, epoch, key, "hi", author=U3, timestamp_ms=NOW + 5)
    out = decrypt_message(text, state, keys, now_ms=NOW + 6)
    assert out.author == U3.ed25519_public and out.author_id == U3.id
    assert out.timestamp_ms == NOW + 5
    # user3 was added at NOW + 1: a message it dates before that is refused.
    early = encrypt_message(state.session_id, epoch, key, "hi", author=U3,
                            timestamp_ms=NOW - 5 * MINUTE)
    with pytest.raises(BadAuthor):
        decrypt_message(early, state, keys, now_ms=NOW + 6)
    # A stranger holding the key is no author.
    stranger = encrypt_message(state.session_id, epoch, key, "hi", author=U5,
                               timestamp_ms=NOW + 5)
    with pytest.raises(BadAuthor):
        decrypt_message(stranger, state, keys, now_ms=NOW + 6)
    # Revoked at NOW + 10: its message of NOW + 5 stays readable, one of NOW + 11 not.
    revoked = state.add(*revoke_members(state, s.key, [U3.id], now_ms=NOW + 10))
    assert decrypt_message(text, revoked, keys, now_ms=NOW + 20).author == U3.ed25519_public
    late = encrypt_message(state.session_id, epoch, key, "hi", author=U3, timestamp_ms=NOW + 11)
    with pytest.raises(BadAuthor):
        decrypt_message(late, revoked, keys, now_ms=NOW + 20)


def test_a_forged_author_signature_is_refused() -> None:
    s = Seald(RIGHTS_POLICY)
    from veil.onion import crypto
    from veil.onion.group.messages import _OVERHEAD, message_key

    sid, epoch, key = s.state.session, s.new.epoch, s.new.epoch_key
    inner = cbor.encode({"body": b"x", "from": U2.ed25519_public, "ts": NOW, "sig": bytes(64)})
    nonce = bytes(24)
    head = b"\x01" + epoch + nonce
    sealed = head + crypto.aead_seal(
        message_key(key, sid, epoch), nonce, padding.pad(inner, overhead=_OVERHEAD),
        b"veil/group-msg/v1\x00" + sid + head[:33],
    )
    with pytest.raises(BadAuthor):
        decrypt_message(base64.b64encode(sealed).decode(), s.state, {epoch: key}, now_ms=NOW)


# --- the error family -----------------------------------------------------------------


def test_every_group_error_is_typed_with_its_status() -> None:
    expected = {
        "GroupError": "bad_request",
        "MalformedRecord": "bad_request",
        "RecordTooLarge": "too_large",
        "BadRecordSignature": "unauthorized",
        "WrongSession": "bad_request",
        "UnknownSession": "not_found",
        "SessionRevoked": "gone",
        "NotAMember": "unauthorized",
        "RightMissing": "unauthorized",
        "RevocationNotAllowed": "unauthorized",
        "RecordFromFuture": "clock_skew",
        "UnknownEpoch": "not_found",
        "MalformedMessage": "bad_request",
        "MessageTampered": "bad_request",
        "BadAuthor": "unauthorized",
        "FileError": "bad_request",
        "FileTampered": "bad_request",
        "FileTruncated": "bad_request",
        "FileExtended": "bad_request",
    }
    for name, status in expected.items():
        cls = getattr(errors, name)
        assert issubclass(cls, errors.GroupError) and issubclass(cls, errors.ProtocolError)
        assert cls("x").status == status, name
        assert errors.wire_status(cls("x")) == status
    assert issubclass(errors.RecordTooLarge, errors.TooLarge)
    for name in ("InvalidRights", "RawMessageHasNoSession"):
        assert issubclass(getattr(errors, name), errors.InvalidValue)


def test_an_adder_gives_only_what_one_of_its_chains_holds() -> None:
    """Rights held through two chains (forward by one, revoke by another) do not add up:
    a link is issued under one parent, which must hold every right it gives."""
    s = Seald(RIGHTS_POLICY)
    keys = s.state.epoch_keys(U1)
    state = s.state.add(
        *add_members(s.state, s.key, {U5.id: {"read", "forward"}}, keys=keys,
                     now_ms=NOW + 2),
    )
    state = state.add(
        *add_members(state, s.key, {U5.id: {"read", "revoke"}}, keys=keys,
                     now_ms=NOW + 3),
    )
    assert state.rights_of(U5.id, now_ms=NOW + 4) == ALL_RIGHTS
    with pytest.raises(RightMissing) as info:
        add_members(state, U5, {account("y").id: ALL_RIGHTS},
                    keys=state.epoch_keys(U5), now_ms=NOW + 4)
    assert info.value.right == "revoke"
    add_members(state, U5, {account("y").id: {"read", "forward"}},
                keys=state.epoch_keys(U5), now_ms=NOW + 4)


def test_membership_links_expire() -> None:
    day = 86_400_000
    new = create_session(U1, {U2.id: {"read"}}, now_ms=NOW, lifetime_ms=day,
                         rng=counter_rng(b"expiring"))
    state = new.state
    assert U2.id in state.members(now_ms=NOW + day - 2 * MINUTE)
    assert U2.id not in state.members(now_ms=NOW + day + 2 * MINUTE)
    # A record whose link already expired is refused by a node.
    (record,) = [r for r in new.records if getattr(r, "member", None) == U2.id]
    fresh = SessionState(state.session_id, [new.records[0]])
    with pytest.raises(NotAMember):
        check_record(fresh, record, now_ms=NOW + day + 2 * MINUTE)


def test_check_access_after_the_end() -> None:
    from veil.onion.group import check_access

    s = Seald(RIGHTS_POLICY)
    for method in ("store", "retrieve", "delete"):
        check_access(s.state, method=method, namespace=MESSAGES_NAMESPACE)
    ended = s.state.add(end_session(s.state, s.key, now_ms=NOW + 5))
    for method in ("store", "retrieve"):
        with pytest.raises(SessionRevoked):
            check_access(ended, method=method, namespace=STATE_NAMESPACE)
    check_access(ended, method="delete_all", namespace=None)


def test_an_epoch_for_the_most_members_fits_a_record() -> None:
    from veil.onion.errors import InvalidValue
    from veil.onion.group import MAX_WRAPS
    from veil.onion.group.records import make_epoch

    s = Seald(RIGHTS_POLICY)
    members = [account(f"many/{i}").id for i in range(MAX_WRAPS)]
    authority = s.state.chain_for(U4.id, "revoke", now_ms=NOW)
    epoch, _ = make_epoch(U4, s.state.session, members, authority=authority, now_ms=NOW + 1,
                          parents=s.state.epoch_keys(U4).items())
    assert len(epoch.encoded) <= MAX_RECORD_SIZE
    assert check_record(s.state, epoch.encoded, now_ms=NOW + 1) == epoch
    with pytest.raises(InvalidValue):
        make_epoch(s.key, s.state.session, [*members, U1.id], now_ms=NOW)


def test_a_session_created_for_others_only() -> None:
    """encrypt_for_self=False: the creator's key is wrapped for no epoch, yet it stays
    the administrator (session key): it revokes, rotates without the history, ends."""
    rng = counter_rng(b"for-others")
    new = create_session(U1, {U2.id: {"read"}, U3.id: {"read"}},
                         encrypt_for_self=False, now_ms=NOW, rng=rng)
    state = new.state
    assert set(state.members(now_ms=NOW)) == {U2.id, U3.id}
    assert state.epoch_keys(U1) == {}
    assert U1.id not in state.holders(new.epoch)
    assert not state.needs_rotation(now_ms=NOW)
    state = state.add(*revoke_members(state, new.session_key, [U3.id],
                                      now_ms=NOW + 1))
    with pytest.raises(UnknownEpoch):
        rotate(state, new.session_key, keys={}, now_ms=NOW + 2)
    epoch, key = rotate(state, new.session_key, keys={}, now_ms=NOW + 2, carry_history=False,
                        rng=rng)
    assert epoch.back == b"" and epoch.parents == (new.epoch,)
    state = state.add(epoch)
    assert state.heads == (epoch.epoch_id,) and not state.rejected
    assert set(state.epoch_keys(U2)) == {new.epoch, epoch.epoch_id}
    assert epoch.epoch_id not in state.epoch_keys(U3)
    message = encrypt_message(state.session_id, epoch.epoch_id, key, "x", rng=rng)
    assert decrypt_message(message, state, state.epoch_keys(U2), now_ms=NOW + 3).body == b"x"


def test_a_revoked_member_cannot_decrypt_a_file_of_the_new_epoch() -> None:
    from veil.onion.group import FileDecryptor, FileEncryptor

    s = Seald(RIGHTS_POLICY)
    stolen = s.state.epoch_keys(U2)
    state, epoch, key = _revoke_and_rotate(s, U2, NOW + 10)
    enc = FileEncryptor(state.session_id, epoch, key, "after.txt", rng=s.rng)
    blob = enc.update(b"secret") + enc.finish()
    with pytest.raises(UnknownEpoch):
        FileDecryptor({**stolen, **state.epoch_keys(U2)}).update(blob)
    dec = FileDecryptor(state.epoch_keys(U4), session=state.session_id)
    assert dec.update(blob) + dec.finish() == b"secret"


def test_members_are_accounts_and_a_key_audience_is_no_membership_link() -> None:
    """Members are named by their account (contract A of issue 13): the membership link's
    audience is the account, exercised by its own Ed25519 key; a member record whose
    link names an Ed25519 key is malformed."""
    s = Seald(RIGHTS_POLICY)
    (chain,) = s.state.live_chains(U2.id, now_ms=NOW)
    assert chain.links[-1].audience == b"\x05" + U2.x25519_public
    authorize(chain, signer=U2.ed25519_public, account=s.state.session_id,
              method="retrieve", namespace=2, now_ms=NOW)
    resources = chain.links[-1].resources
    link = issue_link(s.key, U5.ed25519_public, resources, now_ms=NOW,
                      expires_ms=NOW + 1000)
    with pytest.raises(errors.MalformedRecord, match="account"):
        make_member(s.key, Chain.from_links([link]), now_ms=NOW)
    assert s.state.creator == U1.id
    with pytest.raises(errors.InvalidValue):
        create_session(U1, [U2.ed25519_public], now_ms=NOW)  # type: ignore[list-item]


# --- rotation after a delegated revocation --------------------------------------------


def _unreadable_to_u3(state: SessionState, message: str, old_keys: dict[bytes, bytes]) -> None:
    stolen = {**old_keys, **state.epoch_keys(U3)}
    with pytest.raises(UnknownEpoch):
        decrypt_message(message, state, stolen, now_ms=NOW + 30)


@pytest.mark.parametrize("policy", [RIGHTS_POLICY, DELEGATION])
def test_the_revoker_of_user3_rotates_in_the_same_step(policy: str) -> None:
    """user1 adds user2, user2 adds user3. Under delegation user2 (no revoke right)
    revokes user3 and writes the next epoch itself, naming its revocation; under rights
    only user1 may, and does. Either way a message user1 or user2 encrypts afterwards is
    unreadable to user3 with every key it ever held."""
    s = Seald(policy)
    old_keys = s.state.epoch_keys(U3)
    revoker = U2 if policy == DELEGATION else U1
    if policy == RIGHTS_POLICY:
        assert not can_revoke(s, U2, U3)
    revs = revoke_members(s.state, revoker, [U3.id], now_ms=NOW + 10)
    state = s.state.add(*revs)
    assert state.needs_rotation(now_ms=NOW + 11)
    epoch, _key = rotate(
        state, revoker, keys=state.epoch_keys(revoker), now_ms=NOW + 11, follows=revs,
        rng=s.rng,
    )
    # Only an entitled rotator without revoke names its revocations.
    assert epoch.follows == (tuple(sorted(r.digest for r in revs)) if revoker == U2 else ())
    assert check_record(state, epoch, now_ms=NOW + 12) == epoch  # what a node asks
    state = state.add(epoch)
    assert not state.rejected and not state.needs_rotation(now_ms=NOW + 12)
    assert state.current_epoch(now_ms=NOW + 12) == epoch.epoch_id
    for writer in (U1, U2):
        keys = state.epoch_keys(writer)
        message = encrypt_message(
            state.session_id, epoch.epoch_id, keys[epoch.epoch_id], "after", rng=s.rng
        )
        _unreadable_to_u3(state, message, old_keys)
        assert decrypt_message(message, state, state.epoch_keys(U4), now_ms=NOW + 30).body == (
            b"after"
        )


def test_an_epoch_follows_only_its_signers_own_revocations_within_their_window() -> None:
    from veil.onion.group.limits import FOLLOW_WINDOW_MS
    from veil.onion.group.records import make_epoch

    s = Seald(DELEGATION)
    by_u1 = revoke_members(s.state, U1, [U3.id], now_ms=NOW + 10)
    state = s.state.add(*by_u1)
    keys = state.epoch_keys(U2)
    chain = state.chain_for(U2.id, "read", now_ms=NOW + 11)
    readers = [m for m, info in state.members(now_ms=NOW + 11).items() if "read" in info.rights]

    def epoch_by_u2(follows: list[bytes], at: int, members: list[Any] = readers) -> Any:
        return make_epoch(
            U2, state.session, members, parents=[(h, keys[h]) for h in state.heads],
            authority=chain, follows=follows, now_ms=at, rng=s.rng,
        )[0]

    # user2 names user1's revocation: not its own, refused by nodes and by the state.
    forged = epoch_by_u2([r.digest for r in by_u1], NOW + 11)
    with pytest.raises(RightMissing):
        check_record(state, forged, now_ms=NOW + 12)
    assert isinstance(state.add(forged).rejected[forged.digest], RightMissing)
    assert forged.epoch_id not in state.add(forged).epochs
    # Without naming any revocation, user2 (no revoke) writes no epoch (as before).
    with pytest.raises(RightMissing):
        rotate(state, U2, keys=keys, now_ms=NOW + 11)
    # Its own revocation of user3, but the epoch dated after the window: refused.
    own = revoke_members(s.state, U2, [U3.id], now_ms=NOW + 10)
    state = s.state.add(*own)
    late = epoch_by_u2([r.digest for r in own], NOW + 10 + FOLLOW_WINDOW_MS + 1)
    assert isinstance(state.add(late).rejected[late.digest], RightMissing)
    with pytest.raises(RightMissing):
        check_record(state, late, now_ms=late.issued_ms)
    # A revocation not yet here: the epoch waits aside (neither counted nor rejected),
    # and a node refuses to store it before the revocation.
    early = epoch_by_u2([r.digest for r in own], NOW + 11)
    waiting = s.state.add(early)
    assert early.digest not in waiting.rejected and early.epoch_id not in waiting.epochs
    with pytest.raises(RightMissing):
        check_record(s.state, early, now_ms=NOW + 12)
    assert early.epoch_id in waiting.add(*own).epochs  # it counts once it arrives
    # Backdated into the window but stored later: a node refuses it.
    with pytest.raises(RightMissing):
        check_record(state, early, now_ms=NOW + 12 + 2 * MINUTE)
    # Leaving a member with read out (user4): a node refuses it.
    without_u4 = epoch_by_u2([r.digest for r in own], NOW + 11,
                             members=[m for m in readers if m != U4.id])
    with pytest.raises(RightMissing):
        check_record(state, without_u4, now_ms=NOW + 12)
    # The revoked user3 cannot use the rule (its revocation of no one does not exist,
    # and its membership is revoked): rotate refuses it.
    with pytest.raises((NotAMember, RevocationNotAllowed)):
        revoke_members(state, U3, [U2.id], now_ms=NOW + 12)
