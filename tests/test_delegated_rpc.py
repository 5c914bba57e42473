"""Delegated keys in the storage RPC, sans-IO (issue 12): DelegatedSigner, the builders
that sign with it, verify_request's chain path and its cache, owner proofs that carry a
chain, revoke requests, and the replication frames of revocations. The same checks
against real nodes are in tests/test_delegated_node.py and tests/test_revocations.py."""

from __future__ import annotations

from typing import Any

import pytest

from tests.capabilityutil import ALICE, BOB, DAY, HOUR, NOW, res, session_key
from veil.onion import capability as cap
from veil.onion import cbor, packet, rpc
from veil.onion import replication_frames as wire
from veil.onion.errors import (
    ActionNotCovered,
    CapabilityExpired,
    CapabilityNotYetValid,
    CapabilityRevoked,
    CapabilityTooLarge,
    InvalidSession,
    SchemaError,
    Unauthorized,
    VeilError,
    WrongAccount,
    WrongAudience,
)
from veil.onion.keys import GroupId, NodeKeys
from veil.onion.replica import ReplicaPage

KEY = session_key("worker")


def signer(
    resources: str = "self:0:retrieve,delete", *, lifetime_ms: int = HOUR
) -> cap.DelegatedSigner:
    chain = cap.delegate(
        ALICE, KEY.ed25519_public, res(resources), now_ms=NOW, lifetime_ms=lifetime_ms
    )
    return cap.DelegatedSigner(KEY, chain)


def params_of(request: bytes) -> dict[str, Any]:
    return cbor.decode(request, max_size=rpc.MAX_REQUEST_SIZE)["params"]  # type: ignore[no-any-return]


# --- DelegatedSigner and the builders ------------------------------------------------------


def test_a_delegated_signer_is_a_key_and_the_chain_that_names_it() -> None:
    s = signer()
    assert s.account == ALICE.id
    assert s.ed25519_public == KEY.ed25519_public != ALICE.ed25519_public
    assert s.did == KEY.did and s.did.startswith("did:key:z6Mk")
    assert s.expires_ms == NOW + HOUR
    assert s.missing("retrieve", 0) == frozenset()
    assert s.missing("delete_all", None) == {"delete"}
    assert s.missing("store", -1) == {"post"}
    with pytest.raises(InvalidSession):
        cap.DelegatedSigner(session_key("another"), s.chain)
    group_key = session_key("group")
    group = GroupId(group_key.ed25519_public)
    group_chain = cap.delegate(
        group_key,
        KEY.ed25519_public,
        [cap.Resource.single(group, 0, {"retrieve"})],
        now_ms=NOW,
    )
    with pytest.raises(InvalidSession):
        _ = cap.DelegatedSigner(KEY, group_chain).account


def test_builders_sign_with_the_session_key_and_carry_the_chain() -> None:
    s = signer("self:0..9:retrieve,delete,expire,store")
    h = bytes(32)
    built = {
        "retrieve": rpc.make_retrieve(s, now_ms=NOW),
        "store": rpc.make_store(s, b"x", HOUR, namespace=9, now_ms=NOW),
        "delete": rpc.make_delete(s, [h], now_ms=NOW),
        "delete_all": rpc.make_delete_all(s, namespace=3, now_ms=NOW),
        "expire": rpc.make_expire(s, [h], NOW + HOUR, now_ms=NOW),
    }
    for method, request in built.items():
        params = params_of(request)
        assert params["pubkey"] == str(ALICE.id)
        assert params["pubkey_ed25519"] == KEY.ed25519_public
        assert params["capability"] == s.chain.encoded
        decoded = rpc.decode_request(request)
        proven = rpc.verify_request(decoded, NOW)
        assert proven is not None and proven.audience == KEY.ed25519_public, method


@pytest.mark.parametrize(
    ("build", "action", "namespace"),
    [
        (lambda s: rpc.make_delete_all(s, namespace=None, now_ms=NOW), "delete", None),
        (lambda s: rpc.make_store(s, b"x", HOUR, namespace=-1, now_ms=NOW), "post", -1),
        (lambda s: rpc.make_store(s, b"x", HOUR, now_ms=NOW), "store", 0),
        (lambda s: rpc.make_retrieve(s, namespace=1, now_ms=NOW), "retrieve", 1),
        (lambda s: rpc.make_expire(s, [bytes(32)], NOW, now_ms=NOW), "expire", 0),
    ],
)
def test_builders_refuse_what_the_chain_does_not_grant_before_building(
    build: Any, action: str, namespace: int | None
) -> None:
    with pytest.raises(ActionNotCovered) as caught:
        build(signer())
    assert (caught.value.action, caught.value.namespace) == (action, namespace)
    params: dict[str, Any] = {"pubkey": str(ALICE.id), "namespace": 1}
    with pytest.raises(ActionNotCovered):
        rpc.sign_params(params, signer(), "retrieve", NOW)
    assert "signature" not in params


def test_the_signature_binds_the_chain() -> None:
    s = signer()
    other = cap.delegate(ALICE, KEY.ed25519_public, res("self:0:retrieve"), now_ms=NOW)
    params = params_of(rpc.make_retrieve(s, now_ms=NOW))
    params["capability"] = other.encoded  # valid for the same key, but not what was signed
    moved = rpc.parse_request({"method": "retrieve", "params": params})
    with pytest.raises(Unauthorized, match="signature"):
        rpc.verify_request(moved, NOW)


def test_a_capability_goes_with_a_signature_and_is_never_ignored() -> None:
    params: dict[str, Any] = {"pubkey": str(ALICE.id), "namespace": 0}
    with pytest.raises(SchemaError, match="capability"):
        rpc.parse_request(
            {"method": "retrieve", "params": {**params, "capability": signer().chain.encoded}}
        )
    # The owner's own signature with a chain that names another key is judged by the
    # chain (and refused), not accepted as the owner's.
    owner_signed = params_of(rpc.make_retrieve(ALICE, now_ms=NOW))
    owner_signed["capability"] = signer().chain.encoded
    with pytest.raises(WrongAudience):
        rpc.verify_request(rpc.parse_request({"method": "retrieve", "params": owner_signed}), NOW)
    # A chain over the size limit is too large as a chain.
    big = params_of(rpc.make_retrieve(signer(), now_ms=NOW))
    big["capability"] = bytes(cap.MAX_CHAIN_SIZE + 1)
    with pytest.raises(CapabilityTooLarge):
        rpc.verify_request(rpc.parse_request({"method": "retrieve", "params": big}), NOW)


def test_a_request_with_the_largest_body_and_chain_fits_the_largest_packet() -> None:
    assert rpc.MAX_REQUEST_SIZE <= packet.MAX_PAYLOAD
    params = {
        "pubkey": str(ALICE.id),
        "namespace": 5,
        "data": bytes(rpc.MAX_BODY),
        "ttl": DAY,
        "pubkey_ed25519": bytes(32),
        "timestamp": 2**63 - 1,
        "signature": bytes(64),
        "capability": bytes(cap.MAX_CHAIN_SIZE),
    }
    assert len(cbor.encode({"method": "store", "params": params})) <= rpc.MAX_REQUEST_SIZE
    record = {"pubkey": str(ALICE.id), "record": bytes(cap.MAX_REVOCATION_SIZE)}
    assert len(cbor.encode({"method": "revoke", "params": record})) <= rpc.MAX_REQUEST_SIZE


# --- the cache of verified chains ------------------------------------------------------------


def test_the_cache_repeats_the_time_request_and_revocation_checks_on_a_hit() -> None:
    s = signer()
    cache = cap.ChainCache(max_entries=2)
    request = rpc.decode_request(rpc.make_retrieve(s, now_ms=NOW))
    assert rpc.verify_request(request, NOW, chains=cache) is not None
    assert rpc.verify_request(request, NOW, chains=cache) is not None
    assert (cache.hits, cache.misses, len(cache)) == (1, 1, 1)
    later = NOW + HOUR + rpc.CLOCK_SKEW_MS
    late = rpc.decode_request(rpc.make_retrieve(s, now_ms=later))
    with pytest.raises(CapabilityExpired):
        rpc.verify_request(late, later, chains=cache)
    revoked = {s.chain.links[0].digest}
    with pytest.raises(CapabilityRevoked):
        rpc.verify_request(request, NOW, chains=cache, is_revoked=revoked.__contains__)
    delete = rpc.decode_request(rpc.make_delete(s, [bytes(32)], now_ms=NOW))
    assert rpc.verify_request(delete, NOW, chains=cache) is not None
    other = params_of(rpc.make_delete(s, [bytes(32)], now_ms=NOW))
    other["namespace"] = 1  # not granted: refused from the cache, with its action
    other_request = rpc.parse_request({"method": "delete", "params": other})
    with pytest.raises(ActionNotCovered):
        rpc.verify_request(other_request, NOW, chains=cache)
    # Bounded: the least recently used chain goes.
    for name in ("a", "b"):
        key = session_key(name)
        chain = cap.delegate(ALICE, key.ed25519_public, res("self:0:retrieve"), now_ms=NOW)
        r = rpc.make_retrieve(cap.DelegatedSigner(key, chain), now_ms=NOW)
        rpc.verify_request(rpc.decode_request(r), NOW, chains=cache)
    assert len(cache) == 2


def test_the_cache_keeps_no_chain_that_fails_a_check() -> None:
    cache = cap.ChainCache()
    s = signer()
    params = params_of(rpc.make_retrieve(s, now_ms=NOW))
    for chain in (
        b"\x81\x41\x00",  # not a link
        cap.delegate(BOB, KEY.ed25519_public, res("self:0:retrieve", BOB), now_ms=NOW).encoded,
    ):
        bad = rpc.parse_request({"method": "retrieve", "params": {**params, "capability": chain}})
        with pytest.raises(VeilError):
            rpc.verify_request(bad, NOW, chains=cache)
    assert len(cache) == 0 and cache.misses == 0


# --- owner proofs of delegated stores ---------------------------------------------------------


def _delegated_proof(
    s: cap.DelegatedSigner, namespace: int, data: bytes, at: int
) -> tuple[bytes, bytes]:
    request = rpc.decode_request(rpc.make_store(s, data, DAY, namespace=namespace, now_ms=at))
    assert isinstance(request, rpc.StoreRequest)
    proof = rpc.proof_of_request(request)
    assert proof is not None
    return request.hash, proof


def test_a_delegated_proof_is_checked_with_its_chain_at_its_signed_time() -> None:
    s = signer("self:5:store")
    h, proof = _delegated_proof(s, 5, b"by the worker", NOW)
    decoded = rpc.decode_proof(proof)
    assert decoded.signer == KEY.ed25519_public and decoded.capability == s.chain.encoded
    # A week later the chain has expired; the copy is still the owner's.
    assert rpc.verify_store_proof(ALICE.id, 5, h, NOW + DAY, proof) == decoded
    # But not once the chain is revoked (a revoked key could backdate a store).
    revoked = {s.chain.links[0].digest}
    with pytest.raises(CapabilityRevoked):
        rpc.verify_store_proof(ALICE.id, 5, h, NOW + DAY, proof, is_revoked=revoked.__contains__)
    # Nor in a namespace, or for an account, the chain does not cover.
    with pytest.raises(ActionNotCovered):
        rpc.verify_store_proof(
            ALICE.id, 6, rpc.message_hash(ALICE.id, 6, b"by the worker"), NOW + DAY, proof
        )
    with pytest.raises(WrongAccount):
        rpc.verify_store_proof(
            BOB.id, 5, rpc.message_hash(BOB.id, 5, b"by the worker"), NOW + DAY, proof
        )
    # A session key's signature without its chain is no owner's proof.
    bare = rpc.StoreProof(
        decoded.signer, decoded.timestamp_ms, decoded.ttl_ms, decoded.signature
    ).encode()
    with pytest.raises(Unauthorized):
        rpc.verify_store_proof(ALICE.id, 5, h, NOW + DAY, bare)
    # A message dated outside the chain's life (beyond the skew) is refused.
    _, early = _delegated_proof(s, 5, b"by the worker", NOW)
    late_proof = rpc.StoreProof(
        decoded.signer, NOW + HOUR + rpc.CLOCK_SKEW_MS, DAY, decoded.signature, decoded.capability
    ).encode()
    with pytest.raises(CapabilityExpired):
        rpc.verify_store_proof(ALICE.id, 5, h, NOW + 2 * DAY, late_proof)
    assert early


# --- revoke requests --------------------------------------------------------------------------


def test_revoke_requests_name_the_owner_and_are_verified() -> None:
    s = signer()
    record = cap.revoke(ALICE, s.chain, now_ms=NOW)
    request = rpc.decode_request(rpc.make_revoke(record.encoded))
    assert isinstance(request, rpc.RevokeRequest)
    assert request.account == ALICE.id and request.revocation.link == s.chain.links[0].digest
    assert rpc.verify_request(request, NOW) is None
    with pytest.raises(CapabilityExpired):
        rpc.verify_request(request, NOW + HOUR + rpc.CLOCK_SKEW_MS)
    with pytest.raises(CapabilityNotYetValid):  # dated ahead of the node's clock
        rpc.verify_request(request, NOW - 2 * rpc.CLOCK_SKEW_MS)
    as_bob = rpc.parse_request(
        {"method": "revoke", "params": {"pubkey": str(BOB.id), "record": record.encoded}}
    )
    with pytest.raises(WrongAccount):
        rpc.verify_request(as_bob, NOW)
    result = rpc.RevokeResult(True, NOW)
    assert rpc.parse_result("revoke", result.to_wire()) == result


# --- replication frames (version 4 and later) ---------------------------------------------

A = NodeKeys(bytes([1]) * 32, bytes([2]) * 32)
B = NodeKeys(bytes([3]) * 32, bytes([4]) * 32)
A_PEER = wire.Peer(A.identity_public, A.onion_public)
B_PEER = wire.Peer(B.identity_public, B.onion_public)


def test_pulls_and_pages_of_revocations_round_trip() -> None:
    assert wire.FORMAT_VERSION >= 4  # revocations travel in frames since version 4
    frame, digest = wire.seal_pull(A, B_PEER, 7, bytes(24), now_ms=NOW, revocations=True)
    pull = wire.open_pull(frame, B, {A.identity_public: A_PEER}.get, now_ms=NOW)
    assert pull.revocations and not pull.deletions and pull.after == 7
    records = (cap.revoke(ALICE, signer().chain, now_ms=NOW).encoded,)
    page = ReplicaPage([], 9, False, revocations=records)
    answer = wire.seal_page(B, A_PEER, digest, page, now_ms=NOW)
    opened = wire.open_page(answer, A, B_PEER, digest, now_ms=NOW)
    assert opened.revocations == records and opened.deletes == () and opened.next_seq == 9
    with pytest.raises(ValueError):
        wire.seal_pull(A, B_PEER, 7, bytes(24), now_ms=NOW, revocations=True, deletions=True)
