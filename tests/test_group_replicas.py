"""Copies of a session's records and messages from peers (issue 13), at the storage
service in process: what a listed node may push is judged by the session's state.

* records arrive in any order: a member record before its genesis is kept (the state
  sets it aside until the genesis comes, then judges it);
* a record that the state rejects (a member widening its rights) is not stored, even
  with a valid store proof by a member allowed to store records;
* a message signed by a revoked member is not stored, whatever its date;
* after the end, messages are not stored, and the end itself is (so it reaches all).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.capabilityutil import raw_link
from veil.node.service import StorageService, open_storage_service
from veil.onion import capability as cap
from veil.onion import rpc
from veil.onion.errors import TooLarge
from veil.onion.group import (
    create_session,
    end_session,
    resources_of_rights,
    revoke_members,
)
from veil.onion.group.records import make_member
from veil.onion.keys import Account, owner_key
from veil.onion.replica import ReplicaMessage
from veil.onion.rpc.requests import store_signed_extra

TTL = rpc.MAX_TTL_PRIVATE_MS


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[StorageService]:
    async with open_storage_service(tmp_path / "node.db") as svc:
        yield svc


def copy(
    signer: cap.DelegatedSigner, namespace: int, data: bytes, signed_ms: int
) -> ReplicaMessage:
    """A copy of ``signer``'s store, as a listed node pushes it (its proof)."""
    group = signer.owner
    h = rpc.message_hash(group, namespace, data)
    chain = signer.chain.encoded
    message = rpc.signing_message(
        "store", group, namespace, signed_ms, store_signed_extra(TTL, h), chain
    )
    proof = rpc.StoreProof(
        signer.ed25519_public, signed_ms, TTL, signer.sign(rpc.DOMAIN, message), chain
    ).encode()
    return ReplicaMessage(owner_key(group), namespace, h, data, signed_ms, signed_ms + TTL, proof)


async def held(service: StorageService, signer: cap.DelegatedSigner, ns: int) -> list[bytes]:
    found = await service.store.retrieve(signer.owner, ns, limit=1000, max_bytes=1 << 22)
    return [m.data for m in found.messages]


async def test_replicated_records_are_judged_by_the_state(service: StorageService) -> None:
    creator, forwarder, reader = Account.generate(), Account.generate(), Account.generate()
    new = create_session(
        creator, {forwarder.id: {"read", "forward"}, reader.id: {"read"}}, now_ms=now_ms()
    )
    state = new.state

    def signer(who: Account) -> cap.DelegatedSigner:
        chain = state.chain_for(who.id, "read", now_ms=now_ms())
        assert chain is not None
        return cap.DelegatedSigner.for_member(who, chain)

    admin = signer(creator)
    genesis, *rest = new.records
    # Out of order: the member records and the epoch before the genesis.
    t = now_ms()
    created = await service.store_replicas([copy(admin, 1, r.encoded, t) for r in rest])
    assert all(created) and len(created) == len(rest)
    assert await service.store_replicas([copy(admin, 1, genesis.encoded, t)]) == [True]
    groups = service.groups.states
    loaded = await groups.get(state.session_id)
    assert loaded.genesis == genesis and not loaded.rejected
    assert set(loaded.members(now_ms=now_ms())) == {creator.id, forwarder.id, reader.id}

    # A record the state rejects: the forwarder gives revoke, which it lacks.
    fchain = signer(forwarder).chain
    link = raw_link(
        forwarder,
        b"\x05" + Account.generate().x25519_public,
        resources_of_rights(state.session_id, {"read", "forward", "revoke"}),
        iat=now_ms(),
        exp=fchain.expires_ms,
        proof=fchain.links[-1].digest,
    )
    widened = make_member(
        forwarder,
        cap.Chain.from_links([*fchain.links, cap.Capability.decode(link)]),
        now_ms=now_ms(),
    )
    before = service.counters.group_replicas_refused
    assert (
        await service.store_replicas([copy(signer(forwarder), 1, widened.encoded, now_ms())]) == []
    )
    assert service.counters.group_replicas_refused == before + 1
    assert widened.encoded not in await held(service, admin, 1)

    # A revoked member's message, dated before its revocation: not stored.
    kept = signer(reader)
    revocations = revoke_members(state, creator, [reader.id], now_ms=now_ms())
    assert await service.store_replicas([copy(admin, 1, r.encoded, now_ms()) for r in revocations])
    state = state.add(*revocations)
    backdated = copy(kept, 2, b"backdated", now_ms() - 10_000)
    assert await service.store_replicas([backdated]) == []
    fine = copy(signer(forwarder), 2, b"fine", now_ms())
    assert await service.store_replicas([fine]) == [True]

    # The end: stored, the messages deleted, no message after it.
    end = end_session(state, creator, now_ms=now_ms())
    assert await service.store_replicas([copy(admin, 1, end.encoded, now_ms())]) == [True]
    assert await held(service, admin, 2) == []
    assert await service.store_replicas([copy(signer(forwarder), 2, b"late", now_ms())]) == []
    assert (await groups.get(state.session_id)).ended


async def test_a_record_of_another_session_or_garbage_is_not_stored(
    service: StorageService,
) -> None:
    creator = Account.generate()
    new = create_session(creator, [], now_ms=now_ms())
    other = create_session(creator, [], now_ms=now_ms())
    chain = new.state.chain_for(creator.id, "read", now_ms=now_ms())
    assert chain is not None
    admin = cap.DelegatedSigner.for_member(creator, chain)
    t = now_ms()
    assert await service.store_replicas([copy(admin, 1, r.encoded, t) for r in new.records])
    for data in (other.records[0].encoded, b"\xa0", b"not cbor"):
        assert await service.store_replicas([copy(admin, 1, data, t)]) == []


async def test_states_are_kept_least_recently_used_within_their_bounds(
    service: StorageService,
) -> None:
    from veil.node.groups import GroupStates

    states = GroupStates(service.store, max_groups=2, max_total_bytes=1 << 20)
    creator = Account.generate()
    sessions = [create_session(creator, [], now_ms=now_ms()) for _ in range(3)]
    for new in sessions:
        chain = new.state.chain_for(creator.id, "read", now_ms=now_ms())
        assert chain is not None
        admin = cap.DelegatedSigner.for_member(creator, chain)
        t = now_ms()
        await service.store_replicas([copy(admin, 1, r.encoded, t) for r in new.records])
    for new in sessions:
        assert (await states.get(new.session_id)).genesis == new.records[0]
    assert states.loads == 3 and len(states._states) == 2
    await states.get(sessions[2].session_id)  # kept: no load
    assert states.loads == 3
    await states.get(sessions[0].session_id)  # dropped: loaded again
    assert states.loads == 4
    assert 0 < states.total_bytes <= 1 << 20
    tiny = GroupStates(service.store, max_total_bytes=1)
    for new in sessions:
        await tiny.get(new.session_id)
    assert len(tiny._states) == 1  # over the bytes: only the last one kept
    # Over its record limit, a session takes no more records.
    few = GroupStates(service.store, max_records=3)
    state = await few.get(sessions[0].session_id)  # genesis, creator, epoch
    with pytest.raises(TooLarge, match="as many records"):
        few.room_for(state, b"x")
    # A session with more records than a node keeps (its limits lowered since) is
    # refused, not loaded in part (a part could leave a revocation out).
    fewer = GroupStates(service.store, max_records=2)
    with pytest.raises(TooLarge, match="more records"):
        await fewer.get(sessions[0].session_id)
