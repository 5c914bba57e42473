"""Encryption sessions at a real node (issue 13): the session's records and messages in
the swarm of its group ID, membership enforced, each hostile input refused.

One standalone ``veil-node`` process (127.0.0.1) shared by the module; every request is
an onion packet to it (tests/nodeutil.py). A member signs with its own account through
its membership chain (:meth:`veil.onion.capability.DelegatedSigner.for_member`); hostile
records are built by hand. The swarm scenarios (replication, a revoked member refused
by a member that was down) are in tests/test_group_swarm.py.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.capabilityutil import raw_link
from tests.nodeutil import NodeHandle, node_process, now_ms
from tests.swarmutil import call
from veil.node.app import STORE_FILE
from veil.onion import capability as cap
from veil.onion import cbor, rpc
from veil.onion.errors import ActionNotCovered
from veil.onion.group import (
    SessionState,
    add_members,
    create_session,
    end_session,
    resources_of_rights,
    revoke_members,
)
from veil.onion.group.records import make_member, make_revoke
from veil.onion.keys import Account, GroupId, owner_key

HOUR = 3_600_000
RECORD_TTL = rpc.MAX_TTL_PRIVATE_MS


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeHandle]:
    data = tmp_path_factory.mktemp("groups") / "node"
    with node_process(data) as running:
        yield running


async def send(node: NodeHandle, request: bytes) -> rpc.Reply:
    async with httpx.AsyncClient(trust_env=False) as client:
        return await call(client, node.hop(), request)


async def refused(node: NodeHandle, request: bytes) -> tuple[str, str]:
    reply = await send(node, request)
    assert reply.status != "ok", reply
    return reply.status, reply.error or ""


@dataclass
class Session:
    """A session stored at the node: its creator, state and members' signers."""

    creator: Account
    state: SessionState
    key: cap.SessionKey
    keys: dict[bytes, bytes]

    @property
    def group(self) -> GroupId:
        return self.state.session_id

    def signer(self, member: Account) -> cap.DelegatedSigner:
        chain = self.state.chain_for(member.id, "read", now_ms=now_ms())
        assert chain is not None
        return cap.DelegatedSigner.for_member(member, chain)

    def creator_signer(self) -> cap.DelegatedSigner:
        return self.signer(self.creator)


async def put_record(node: NodeHandle, signer: Any, data: bytes) -> rpc.Reply:
    return await send(node, rpc.make_store(signer, data, RECORD_TTL, namespace=1, now_ms=now_ms()))


async def stored(node: NodeHandle, s: Session, *records: Any) -> Session:
    for record in records:
        reply = await put_record(node, s.creator_signer(), record.encoded)
        reply.raise_for_status()
    s.state = s.state.add(*records)
    return s


async def new_session(
    node: NodeHandle, members: dict[Account, set[str]], policy: str = "rights"
) -> Session:
    creator = Account.generate()
    new = create_session(
        creator, {m.id: rights for m, rights in members.items()}, policy=policy, now_ms=now_ms()
    )
    s = Session(creator, SessionState(new.session_id), new.session_key, {})
    # The genesis first: the creator's own chain is in the records that follow it.
    s.state = new.state
    for record in new.records:
        reply = await put_record(node, s.creator_signer(), record.encoded)
        assert reply.status == "ok", (record, reply)
    s.keys = new.state.epoch_keys(creator)
    return s


async def messages(node: NodeHandle, reader: Any, namespace: int = 2) -> list[bytes]:
    reply = await send(node, rpc.make_retrieve(reader, namespace=namespace, now_ms=now_ms()))
    return [m.data for m in rpc.RetrieveResult.from_wire(reply.raise_for_status()).messages]


async def post(node: NodeHandle, signer: Any, data: bytes) -> rpc.Reply:
    return await send(node, rpc.make_store(signer, data, HOUR, namespace=2, now_ms=now_ms()))


def signed(signer: Any, method: str, params: dict[str, Any], chain: bytes | None) -> bytes:
    """A request signed by ``signer`` (an Account or a key) with ``chain``, by hand."""
    ts = now_ms()
    request = rpc.parse_request({"method": method, "params": dict(params)})
    assert not isinstance(request, rpc.InfoRequest | rpc.GetSwarmRequest | rpc.RevokeRequest)
    message = rpc.signing_message(
        method, request.account, request.namespace, ts, request.signed_extra(), chain
    )
    out = dict(params, pubkey_ed25519=signer.ed25519_public, timestamp=ts)
    out["signature"] = signer.sign(rpc.DOMAIN, message)
    if chain is not None:
        out["capability"] = chain
    return cbor.encode({"method": method, "params": out})


# --- members, strangers -----------------------------------------------------------------


async def test_members_post_and_read_and_strangers_are_refused(node: NodeHandle) -> None:
    reader, forwarder = Account.generate(), Account.generate()
    s = await new_session(node, {reader: {"read"}, forwarder: {"read", "forward"}})
    text = b"ciphertext " + os.urandom(8)
    (await post(node, s.signer(reader), text)).raise_for_status()
    assert text in await messages(node, s.signer(forwarder))
    assert text in await messages(node, s.signer(reader))
    assert len(await messages(node, s.signer(reader), namespace=1)) == 5  # the records
    # The request is addressed to the group.
    assert rpc.decode_request(rpc.make_retrieve(s.signer(reader), namespace=2, now_ms=now_ms())
                              ).account == s.group
    # A stranger: its own account without a chain, or a chain it issued itself.
    stranger = Account.generate()
    params = {"pubkey": str(s.group), "namespace": 2}
    status, _ = await refused(node, signed(stranger, "retrieve", params, None))
    assert status == "unauthorized"
    own = raw_link(stranger, b"\x05" + stranger.x25519_public,
                   resources_of_rights(s.group, {"read"}), iat=now_ms(), exp=now_ms() + HOUR)
    status, error = await refused(node, signed(stranger, "retrieve", params, cbor.encode([own])))
    assert status == "unauthorized" and "issue" in error
    # Another account presenting a member's chain.
    chain = s.signer(reader).chain.encoded
    status, error = await refused(node, signed(stranger, "retrieve", params, chain))
    assert status == "unauthorized", error
    # The session key itself acts for its group.
    own_params = {"pubkey": str(s.group), "namespace": 2}
    reply = await send(node, signed(s.key, "retrieve", own_params, None))
    assert reply.status == "ok"


async def test_group_requests_outside_namespaces_1_and_2_are_refused(node: NodeHandle) -> None:
    member = Account.generate()
    s = await new_session(node, {member: {"read"}})
    admin = s.creator_signer()
    group = str(s.group)
    # An unsigned inbox store to a group, a signed read of namespace 3 (by the session
    # key, which holds everything), a public namespace, a delete_all of every namespace.
    inbox = rpc.encode_request("store", {"pubkey": group, "namespace": 0, "data": b"x",
                                         "ttl": HOUR})
    assert (await refused(node, inbox))[0] == "bad_request"
    for ns in (3, 0, -1):
        req = signed(s.key, "retrieve", {"pubkey": group, "namespace": ns}, None)
        assert (await refused(node, req))[0] == "bad_request", ns
    req = signed(s.key, "delete_all", {"pubkey": group, "namespace": None}, None)
    assert (await refused(node, req))[0] == "bad_request"
    # Records are only added: no delete or expire in namespace 1, even by the admin.
    h = rpc.decode_request(rpc.make_store(admin, s.state.encoded()[0], RECORD_TTL, namespace=1,
                                          now_ms=now_ms())).hash  # type: ignore[union-attr]
    req = signed(s.key, "delete", {"pubkey": group, "namespace": 1, "hashes": [h]}, None)
    assert (await refused(node, req))[0] == "bad_request"
    # The revoke RPC is not a group's: its revocations are records.
    (chain,) = s.state.live_chains(member.id, now_ms=now_ms())
    record = cap.revoke(s.key, chain, now_ms=now_ms())
    status, _ = await refused(
        node, rpc.encode_request("revoke", {"pubkey": group, "record": record.encoded})
    )
    assert status == "bad_request"


async def test_a_member_without_forward_cannot_add(node: NodeHandle) -> None:
    reader, forwarder = Account.generate(), Account.generate()
    s = await new_session(node, {reader: {"read"}, forwarder: {"read", "forward"}})
    newcomer = Account.generate()
    # The reader's chain grants no store of records: refused before building, and by
    # the node when built by hand.
    with pytest.raises(ActionNotCovered):
        rpc.make_store(s.signer(reader), b"r", RECORD_TTL, namespace=1, now_ms=now_ms())
    params = {"pubkey": str(s.group), "namespace": 1, "data": b"r", "ttl": RECORD_TTL}
    chain = s.signer(reader).chain
    status, error = await refused(node, signed(reader, "store", params, chain.encoded))
    assert status == "unauthorized" and "store" in error
    # A member record the reader issued, stored by the forwarder (who may store
    # records): the record is refused (the reader holds no forward).
    link = raw_link(reader, b"\x05" + newcomer.x25519_public,
                    resources_of_rights(s.group, {"read"}), iat=now_ms(),
                    exp=chain.expires_ms, proof=chain.links[-1].digest)
    forged = make_member(reader, cap.Chain.from_links([*chain.links,
                                                       cap.Capability.decode(link)]),
                         now_ms=now_ms())
    status, error = await refused(node, (await _store_as(s, forwarder, forged.encoded)))
    assert status == "unauthorized" and "forward" in error
    # The forwarder adds the newcomer: accepted; the newcomer reads.
    (record,) = add_members(s.state, forwarder, [newcomer.id], keys=s.keys, now_ms=now_ms())
    (await put_record(node, s.signer(forwarder), record.encoded)).raise_for_status()
    s.state = s.state.add(record)
    assert await messages(node, s.signer(newcomer)) == []


async def _store_as(s: Session, member: Account, data: bytes) -> bytes:
    return rpc.make_store(s.signer(member), data, RECORD_TTL, namespace=1, now_ms=now_ms())


async def test_forged_records_are_refused(node: NodeHandle) -> None:
    forwarder, target = Account.generate(), Account.generate()
    s = await new_session(node, {forwarder: {"read", "forward"}, target: {"read"}})
    other = await new_session(node, {})
    admin = s.creator_signer()
    # A bad signature: a member record whose "sig" is not its adder's.
    (record,) = add_members(s.state, s.key, [Account.generate().id], keys=s.keys,
                            now_ms=now_ms())
    body = cbor.decode(record.encoded, max_size=1 << 20)
    body["sig"] = bytes(64)
    status, error = await refused(node, await _store_admin(admin, cbor.encode(body)))
    assert status == "unauthorized" and "signature" in error
    # Another session's record.
    (record,) = add_members(other.state, other.key, [Account.generate().id], keys=other.keys,
                            now_ms=now_ms())
    status, error = await refused(node, await _store_admin(admin, record.encoded))
    assert status == "bad_request" and "session" in error
    # Widened rights: the forwarder gives revoke, which it lacks.
    fchain = s.state.chain_for(forwarder.id, "forward", now_ms=now_ms())
    assert fchain is not None
    newcomer = Account.generate()
    link = raw_link(forwarder, b"\x05" + newcomer.x25519_public,
                    resources_of_rights(s.group, {"read", "forward", "revoke"}),
                    iat=now_ms(), exp=fchain.expires_ms, proof=fchain.links[-1].digest)
    widened = make_member(
        forwarder, cap.Chain.from_links([*fchain.links, cap.Capability.decode(link)]),
        now_ms=now_ms(),
    )
    status, error = await refused(node, await _store_as(s, forwarder, widened.encoded))
    assert status == "unauthorized" and "revoke" in error
    # Policy: under "rights", an adder revoking the member it added (no revoke right).
    (added,) = add_members(s.state, forwarder, [newcomer.id], keys=s.keys, now_ms=now_ms())
    (await put_record(node, s.signer(forwarder), added.encoded)).raise_for_status()
    s.state = s.state.add(added)
    (chain,) = s.state.live_chains(newcomer.id, now_ms=now_ms())
    by_adder = make_revoke(cap.revoke(forwarder, chain, now_ms=now_ms()))
    status, error = await refused(node, await _store_admin(admin, by_adder.encoded))
    assert status == "unauthorized" and "rights policy" in error
    # Nobody revokes the creator, not even the session key.
    (creator_chain,) = s.state.live_chains(s.creator.id, now_ms=now_ms())
    of_creator = make_revoke(cap.revoke(s.key, creator_chain, now_ms=now_ms()))
    status, error = await refused(node, await _store_admin(admin, of_creator.encoded))
    assert status == "unauthorized" and "creator" in error
    # A second genesis, garbage, and a record over the size limit (refused before it
    # is parsed: a CBOR prefix that would claim more than the limit).
    for data, want in (
        (other.state.genesis.encoded, "bad_request"),  # type: ignore[union-attr]
        (b"\xa1\x61k\x65hello", "bad_request"),
        (b"\xff" * 74_000, "too_large"),
    ):
        status, _ = await refused(node, await _store_admin(admin, data))
        assert status == want, (data[:8], status)


async def _store_admin(admin: cap.DelegatedSigner, data: bytes) -> bytes:
    return rpc.make_store(admin, data, RECORD_TTL, namespace=1, now_ms=now_ms())


async def test_the_first_record_must_be_the_genesis(node: NodeHandle) -> None:
    creator, member = Account.generate(), Account.generate()
    new = create_session(creator, [member.id], now_ms=now_ms())
    genesis, creator_record, *_ = new.records
    chain = new.state.chain_for(creator.id, "revoke", now_ms=now_ms())
    assert chain is not None
    admin = cap.DelegatedSigner.for_member(creator, chain)
    status, error = await refused(node, await _store_admin(admin, creator_record.encoded))
    assert status == "not_found" and "genesis" in error
    # A genesis signed by another key than the group's is no genesis of it.
    impostor = create_session(creator, [], now_ms=now_ms()).records[0]
    status, _ = await refused(node, await _store_admin(admin, impostor.encoded))
    assert status == "bad_request"
    (await put_record(node, admin, genesis.encoded)).raise_for_status()
    (await put_record(node, admin, creator_record.encoded)).raise_for_status()


# --- revocation, end --------------------------------------------------------------------


async def test_a_revoked_member_is_refused_the_state_and_the_messages(node: NodeHandle) -> None:
    member, other = Account.generate(), Account.generate()
    s = await new_session(node, {member: {"read", "forward"}, other: {"read"}})
    signer = s.signer(member)  # kept: the chain it held
    (await post(node, signer, b"before")).raise_for_status()
    revocations = revoke_members(s.state, s.creator, [member.id], now_ms=now_ms())
    await stored(node, s, *revocations)
    for ns in (1, 2):
        status, error = await refused(
            node, rpc.make_retrieve(signer, namespace=ns, now_ms=now_ms())
        )
        assert status == "unauthorized" and "revoked" in error, (ns, status, error)
    status, error = await refused(node, rpc.make_store(signer, b"after", HOUR, namespace=2,
                                                       now_ms=now_ms()))
    assert status == "unauthorized" and "revoked" in error
    # What it would add now is refused too (its membership is revoked).
    (chain,) = [c for c in [signer.chain]]
    late = make_member(member, cap.Chain.from_links([*chain.links, cap.Capability.decode(
        raw_link(member, b"\x05" + Account.generate().x25519_public,
                 resources_of_rights(s.group, {"read"}), iat=now_ms(), exp=chain.expires_ms,
                 proof=chain.links[-1].digest))]), now_ms=now_ms())
    status, _ = await refused(node, await _store_admin(s.creator_signer(), late.encoded))
    assert status == "unauthorized"
    # The others still read, the message before the revocation included.
    assert b"before" in await messages(node, s.signer(other))


def _count(node: NodeHandle, group: GroupId, namespace: int) -> int:
    db = sqlite3.connect(f"file:{node.data_dir / STORE_FILE}?mode=ro", uri=True)
    try:
        (n,) = db.execute(
            "SELECT COUNT(*) FROM messages WHERE account = ? AND namespace = ?",
            (owner_key(group), namespace),
        ).fetchone()
    finally:
        db.close()
    return int(n)


async def test_ending_the_session_deletes_its_messages_and_refuses_everything(
    node: NodeHandle,
) -> None:
    member = Account.generate()
    s = await new_session(node, {member: {"read"}})
    for i in range(3):
        (await post(node, s.signer(member), b"m%d" % i)).raise_for_status()
    assert _count(node, s.group, 2) == 3
    end = end_session(s.state, s.creator, now_ms=now_ms())
    await stored(node, s, end)
    assert _count(node, s.group, 2) == 0
    assert _count(node, s.group, 1) == len(s.state.records)  # the tombstone
    for reader in (s.signer(member), s.creator_signer()):
        for ns in (1, 2):
            status, _ = await refused(
                node, rpc.make_retrieve(reader, namespace=ns, now_ms=now_ms())
            )
            assert status == "gone", (ns, status)
    status, _ = await refused(node, await post_request(s.signer(member), b"after"))
    assert status == "gone"
    # Nor a record (a new member), by the admin.
    (record,) = add_members(
        SessionState(s.group, [r for r in s.state.records.values() if r is not end]),
        s.key, [Account.generate().id], keys=s.keys, now_ms=now_ms(),
    )
    status, _ = await refused(node, await _store_admin(s.creator_signer(), record.encoded))
    assert status == "gone"


async def post_request(signer: Any, data: bytes) -> bytes:
    return rpc.make_store(signer, data, HOUR, namespace=2, now_ms=now_ms())


async def test_a_member_without_revoke_cannot_end_rotate_or_revoke(node: NodeHandle) -> None:
    """The hostile versions of what a member with forward (and no revoke) may send:
    an end, a key epoch, a revocation, each signed by itself with its own chain."""
    from veil.onion.group.records import make_end, make_epoch

    forwarder, target = Account.generate(), Account.generate()
    s = await new_session(node, {forwarder: {"read", "forward"}, target: {"read"}})
    chain = s.state.chain_for(forwarder.id, "forward", now_ms=now_ms())
    assert chain is not None
    end = make_end(forwarder, s.state.session, authority=chain, now_ms=now_ms())
    epoch, _ = make_epoch(forwarder, s.state.session, [forwarder.id], authority=chain,
                          parents=[(h, s.keys.get(h)) for h in s.state.heads], now_ms=now_ms())
    for record in (end, epoch):
        status, error = await refused(node, await _store_as(s, forwarder, record.encoded))
        assert status == "unauthorized" and "revoke" in error, (record, error)
    # The session goes on: the target still reads.
    assert await messages(node, s.signer(target)) == []


async def test_a_revocation_or_an_end_is_kept_as_long_as_what_it_stops(
    node: NodeHandle,
) -> None:
    member = Account.generate()
    s = await new_session(node, {member: {"read"}})
    admin = s.creator_signer()
    (revocation,) = revoke_members(s.state, s.creator, [member.id], now_ms=now_ms())
    short = rpc.make_store(admin, revocation.encoded, HOUR, namespace=1, now_ms=now_ms())
    status, error = await refused(node, short)
    assert status == "bad_request" and "revoked link" in error
    end = end_session(s.state, s.creator, now_ms=now_ms())
    short = rpc.make_store(admin, end.encoded, RECORD_TTL - 1, namespace=1, now_ms=now_ms())
    status, error = await refused(node, short)
    assert status == "bad_request" and "longest TTL" in error
    assert await messages(node, s.signer(member)) == []  # neither counted


# --- a member reads with its own account key alone ----------------------------------------


async def test_a_member_reads_the_session_with_its_own_key_alone(node: NodeHandle) -> None:
    """No chain, no invitation: the node finds the member's live membership (with read)
    in the session's state it holds, for retrieves of namespaces 1 and 2 only."""
    reader, writer = Account.generate(), Account.generate()
    s = await new_session(node, {reader: {"read"}, writer: {"read", "forward"}})
    (await post(node, s.signer(writer), b"hello")).raise_for_status()
    for ns, expected in ((1, len(s.state.records)), (2, 1)):
        reply = await send(node, signed(reader, "retrieve", {"pubkey": str(s.group),
                                                             "namespace": ns}, None))
        assert reply.status == "ok", reply
        assert len(rpc.RetrieveResult.from_wire(reply.result).messages) == expected
    # Reading only: a store (of a message or a record) signed by the account alone is
    # refused, and so is any namespace but 1 and 2.
    for ns in (1, 2):
        params = {"pubkey": str(s.group), "namespace": ns, "data": b"x", "ttl": HOUR}
        status, _ = await refused(node, signed(reader, "store", params, None))
        assert status == "unauthorized"
    status, _ = await refused(node, signed(reader, "retrieve", {"pubkey": str(s.group),
                                                                "namespace": 3}, None))
    assert status in ("bad_request", "unauthorized")


async def test_a_non_member_signing_with_its_own_key_is_refused(node: NodeHandle) -> None:
    member = Account.generate()
    s = await new_session(node, {member: {"read"}})
    stranger = Account.generate()
    for ns in (1, 2):
        status, error = await refused(
            node, signed(stranger, "retrieve", {"pubkey": str(s.group), "namespace": ns}, None)
        )
        assert status == "unauthorized", error
    # A member of another session is a stranger to this one.
    other = await new_session(node, {stranger: {"read"}})
    assert await messages(node, other.signer(stranger)) == []
    status, _ = await refused(
        node, signed(stranger, "retrieve", {"pubkey": str(s.group), "namespace": 1}, None)
    )
    assert status == "unauthorized"


async def test_a_revoked_member_signing_with_its_own_key_is_refused(node: NodeHandle) -> None:
    member, other = Account.generate(), Account.generate()
    s = await new_session(node, {member: {"read", "forward"}, other: {"read"}})
    own = {"pubkey": str(s.group), "namespace": 1}
    assert (await send(node, signed(member, "retrieve", own, None))).status == "ok"
    await stored(node, s, *revoke_members(s.state, s.creator, [member.id], now_ms=now_ms()))
    for ns in (1, 2):
        status, error = await refused(
            node, signed(member, "retrieve", {"pubkey": str(s.group), "namespace": ns}, None)
        )
        assert status == "unauthorized", error
    # The others still read with their own keys.
    assert (await send(node, signed(other, "retrieve", own, None))).status == "ok"
    # After the session's end, no one reads with its own key (nor otherwise).
    await stored(node, s, end_session(s.state, s.key, now_ms=now_ms()))
    status, _ = await refused(node, signed(other, "retrieve", own, None))
    assert status in ("gone", "unauthorized")


async def test_a_member_whose_link_expired_is_refused(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A node that accepts 1 s of skew, so that a link expires within the test."""
    import trio

    from tests.nodeutil import running_node

    data = tmp_path_factory.mktemp("groups-expiry") / "node"
    async with running_node(data, config={"storage": {"clock_skew_ms": 1000}}) as short:
        member, lasting = Account.generate(), Account.generate()
        s = await new_session(short, {lasting: {"read"}})
        (record,) = add_members(s.state, s.key, [member.id], keys=s.keys, now_ms=now_ms(),
                                lifetime_ms=2500)
        await stored(short, s, record)
        own = {"pubkey": str(s.group), "namespace": 1}
        assert (await send(short, signed(member, "retrieve", own, None))).status == "ok"
        await trio.sleep(2.5 + 1.0 + 0.5)  # its link's lifetime, the skew, a margin
        for ns in (1, 2):
            status, error = await refused(
                short, signed(member, "retrieve", {"pubkey": str(s.group), "namespace": ns},
                              None)
            )
            assert status == "unauthorized", error
        assert (await send(short, signed(lasting, "retrieve", own, None))).status == "ok"


# --- rotation after a delegated revocation --------------------------------------------


async def test_an_adder_without_revoke_rotates_after_its_own_revocation_only(
    node: NodeHandle,
) -> None:
    """Under delegation, user2 (read, forward) revokes user3, whom it added, and stores
    the epoch that follows; an epoch naming someone else's revocation, or leaving a
    reader out, is refused."""
    from veil.onion.errors import UnknownEpoch
    from veil.onion.group import decrypt_message, encrypt_message, rotate

    u2, u3, u4 = Account.generate(), Account.generate(), Account.generate()
    s = await new_session(node, {u2: {"read", "forward"}, u4: {"read"}}, policy="delegation")
    (added,) = add_members(s.state, u2, [u3.id], keys=s.state.epoch_keys(u2), now_ms=now_ms())
    (await put_record(node, s.signer(u2), added.encoded)).raise_for_status()
    s.state = s.state.add(added)
    old_keys = s.state.epoch_keys(u3)
    revs = revoke_members(s.state, u2, [u3.id], now_ms=now_ms())
    for r in revs:
        (await put_record(node, s.signer(u2), r.encoded)).raise_for_status()
    state = s.state.add(*revs)
    keys = state.epoch_keys(u2)
    # Leaving user4 out: refused.
    from veil.onion.group.records import make_epoch

    narrow, _ = make_epoch(
        u2, state.session, [s.creator.id, u2.id], parents=[(h, keys[h]) for h in state.heads],
        authority=state.chain_for(u2.id, "read", now_ms=now_ms()),
        follows=[r.digest for r in revs], now_ms=now_ms(),
    )
    status, error = await refused(node, await _store_as_state(state, u2, narrow.encoded))
    assert status == "unauthorized" and "every member" in error, error
    # Its own: accepted; what user2 encrypts then is closed to user3.
    epoch, key = rotate(state, u2, keys=keys, now_ms=now_ms(), follows=revs)
    (await send(node, await _store_as_state(state, u2, epoch.encoded))).raise_for_status()
    state = state.add(epoch)
    message = encrypt_message(state.session_id, epoch.epoch_id, key, "after")
    with pytest.raises(UnknownEpoch):
        decrypt_message(message, state, {**old_keys, **state.epoch_keys(u3)}, now_ms=now_ms())
    assert set(await messages(node, s.signer(u4), namespace=1)) >= {epoch.encoded}


async def _store_as_state(state: SessionState, member: Account, data: bytes) -> bytes:
    chain = state.chain_for(member.id, "forward", now_ms=now_ms())
    assert chain is not None
    signer = cap.DelegatedSigner.for_member(member, chain)
    return rpc.make_store(signer, data, RECORD_TTL, namespace=1, now_ms=now_ms())
