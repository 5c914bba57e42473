"""The storage RPC for encryption sessions (issue 13, contract B): a member signs with its
own account through its membership chain, and the request is addressed to the group ID."""

from __future__ import annotations

import time

import pytest

from veil.onion import errors as E
from veil.onion import rpc
from veil.onion.capability import DelegatedSigner
from veil.onion.group import create_session
from veil.onion.keys import Account, GroupId, owner_key, owner_of_key, parse_owner

from .capabilityutil import account

U1, U2, U3 = account("grp-rpc/1"), account("grp-rpc/2"), account("grp-rpc/3")


def _now() -> int:
    return int(time.time() * 1000)


def _session() -> tuple[object, DelegatedSigner]:
    new = create_session(U1, {U2.id: {"read"}}, now_ms=_now())
    (chain,) = new.state.live_chains(U2.id, now_ms=_now())
    return new, DelegatedSigner.for_member(U2, chain)


def test_member_requests_go_to_the_group_and_verify() -> None:
    new, signer = _session()
    group = new.session_id  # type: ignore[attr-defined]
    now = _now()
    data = rpc.make_store(signer, b"ciphertext", 3_600_000, now_ms=now, namespace=2)
    request = rpc.decode_request(data)
    assert request.account == group
    assert str(request.account).startswith("03")
    proven = rpc.verify_request(request, now)
    assert proven is not None and proven.owner == group
    read = rpc.decode_request(rpc.make_retrieve(signer, now_ms=now, namespace=1))
    assert rpc.verify_request(read, now) is not None
    # The chain gives read: no store of records, no delete.
    with pytest.raises(E.ActionNotCovered):
        rpc.make_store(signer, b"r", 3_600_000, now_ms=now, namespace=1)
    with pytest.raises(E.ActionNotCovered):
        rpc.make_delete(signer, [bytes(32)], now_ms=now, namespace=2)
    with pytest.raises(E.ActionNotCovered):
        rpc.make_delete_all(signer, namespace=None, now_ms=now)
    assert rpc.decode_request(rpc.make_get_swarm(group)).account == group


def test_another_account_cannot_use_the_members_chain() -> None:
    _, signer = _session()
    now = _now()
    forged = DelegatedSigner(U2, signer.chain)
    object.__setattr__(forged, "key", U3)  # U3 signs with U2's chain
    request = rpc.decode_request(rpc.make_retrieve(forged, now_ms=now, namespace=2))
    with pytest.raises(E.WrongAudience):
        rpc.verify_request(request, now)


def test_the_session_key_signs_for_its_group_and_nobody_else_does_without_a_chain() -> None:
    new, _ = _session()
    key = new.session_key  # type: ignore[attr-defined]
    group = new.session_id  # type: ignore[attr-defined]
    now = _now()
    params = {"pubkey": str(group), "namespace": 1}
    rpc.sign_params(params, key, "retrieve", now)  # type: ignore[arg-type]
    request = rpc.parse_request({"method": "retrieve", "params": params})
    assert rpc.verify_request(request, now) is None
    params = {"pubkey": str(group), "namespace": 1}
    rpc.sign_params(params, U1, "retrieve", now)  # the creator's own key, no chain
    request = rpc.parse_request({"method": "retrieve", "params": params})
    with pytest.raises(E.Unauthorized):
        rpc.verify_request(request, now)


def test_owner_keys_are_domain_separated() -> None:
    group = GroupId(U1.ed25519_public)
    assert owner_key(U1.id) == U1.x25519_public
    assert owner_key(group) == b"\x03" + U1.ed25519_public
    assert owner_of_key(owner_key(group)) == group
    assert owner_of_key(owner_key(U1.id)) == U1.id
    assert parse_owner(str(group)) == group and parse_owner(str(U1.id)) == U1.id
    with pytest.raises(E.InvalidId):
        owner_of_key(b"\x05" + U1.x25519_public)
    # The same 32 bytes as an account and as a group hash to different messages.
    fake = Account(bytes(32))
    assert rpc.message_hash(fake.id, 1, b"x") != rpc.message_hash(
        GroupId(fake.ed25519_public), 1, b"x"
    )
