"""veil.onion.capability: did:key, resources, links, chains, revocations, sessions.

Every bad input of issue 12 has its test here, each refused with its typed error and
wire status; tests/test_capability_properties.py holds the property tests, and
tests/vectors/capability_v1.json pins the format byte for byte.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import base58
import cbor2
import nacl.bindings as sodium
import pytest

from veil.onion import cbor, crypto
from veil.onion import errors as E
from veil.onion.capability import (
    ACTIONS,
    DEFAULT_LIFETIME_MS,
    MAX_CHAIN_LINKS,
    MAX_CHAIN_SIZE,
    MAX_LIFETIME_MS,
    MAX_RESOURCES,
    MAX_SESSION_CHARS,
    MAX_STATEMENT,
    SESSION_PREFIX,
    Capability,
    Chain,
    Resource,
    Revocation,
    SessionKey,
    authorize,
    chain_digest,
    decode_session,
    delegate,
    did_key,
    encode_session,
    format_resource,
    grants,
    issue_link,
    missing_actions,
    parse_did_key,
    parse_resources,
    redelegate,
    required,
    revoke,
    verify_chain,
    verify_revocation,
)
from veil.onion.capability import limits as cap_limits
from veil.onion.keys import GroupId
from veil.onion.rpc import limits as rpc_limits

from .capabilityutil import (
    ALICE,
    BOB,
    DAY,
    HOUR,
    NOW,
    account,
    chain_bytes,
    counter_rng,
    digest_of,
    linear_chain,
    raw_link,
    res,
    seed_of,
    session_key,
)

VECTORS = Path(__file__).parent / "vectors" / "capability_v1.json"

K1 = session_key("k1")
K2 = session_key("k2")
K3 = session_key("k3")
MALLORY = session_key("mallory")


def _two_links(
    root: str = "self:*:*", child: str = "self:1..10:store,retrieve"
) -> tuple[Chain, Chain]:
    first = delegate(ALICE, K1.ed25519_public, res(root), now_ms=NOW, rng=counter_rng(b"1"))
    second = redelegate(first, K1, K2.ed25519_public, res(child), now_ms=NOW, rng=counter_rng(b"2"))
    return first, second


def _authorize(chain: bytes | Chain, signer: Any = K2, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "signer": signer.ed25519_public,
        "account": ALICE.id,
        "method": "store",
        "namespace": 3,
        "now_ms": NOW + HOUR,
    }
    args.update(kw)
    return authorize(chain, **args)


# --- did:key ---------------------------------------------------------------------------

# Published vectors: (did:key, the raw key in base58 as the publishing suite gives it).
# w3c-ccg did-key test data via openwallet-foundation/acapy (did/tests/test_dids.py) and
# decentralized-identity/decentralized-web-node (mock-client config).
DID_VECTORS = [
    (
        "did:key:z6MkmjY8GnV5i9YTDtPETC2uUAW6ejw3nk5mXF5yci5ab7th",
        "8HH5gYEeNc3z7PYXmd54d4x6qAfCNrqQqEB3nS7Zfu7K",
    ),
    (
        "did:key:z6MkwJSaEMnE4u6LiqrZV1BJHSkc9x8S4mTm3ArNL1m19BZR",
        "HrBXe7XnjMbscM1roSDTSMCcLNraetDQM9wSVjnzDxn3",
    ),
]
# The did:key spec's first Ed25519 example (its key, as this encoder reads it).
SPEC_EXAMPLE = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"
SPEC_EXAMPLE_KEY = "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29"

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _hand_base58(raw: bytes) -> str:
    """base58btc by hand: the big-endian number in base 58, a '1' per leading zero byte."""
    n = int.from_bytes(raw, "big")
    digits = ""
    while n:
        n, r = divmod(n, 58)
        digits = _B58[r] + digits
    return "1" * (len(raw) - len(raw.lstrip(b"\0"))) + digits


@pytest.mark.parametrize(("did", "key58"), DID_VECTORS)
def test_did_key_agrees_with_published_vectors(did: str, key58: str) -> None:
    key = base58.b58decode(key58)
    assert did_key(key) == did
    assert parse_did_key(did) == key
    assert did == "did:key:z" + _hand_base58(b"\xed\x01" + key)


def test_did_key_spec_example_and_hand_computation() -> None:
    key = bytes.fromhex(SPEC_EXAMPLE_KEY)
    assert parse_did_key(SPEC_EXAMPLE) == key
    assert did_key(key) == SPEC_EXAMPLE
    for name in ("alice", "bob", "carol"):
        pk = account(name).ed25519_public
        assert did_key(pk) == "did:key:z" + _hand_base58(bytes([0xED, 0x01]) + pk)
        assert did_key(pk).startswith("did:key:z6Mk")
    # RFC 8032 test 1's public key, a key with a leading zero byte, and the session key.
    rfc = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    assert parse_did_key(did_key(rfc)) == rfc
    assert K1.did == did_key(K1.ed25519_public)


@pytest.mark.parametrize(
    "did",
    [
        "",
        "did:key:",
        "did:web:z6MkmjY8GnV5i9YTDtPETC2uUAW6ejw3nk5mXF5yci5ab7th",
        "did:key:6MkmjY8GnV5i9YTDtPETC2uUAW6ejw3nk5mXF5yci5ab7th",  # no multibase 'z'
        "did:key:m6MkmjY8GnV5i9YTDtPETC2uUAW6ejw3nk5mXF5yci5ab7th",  # base64 multibase
        "did:key:z6MkmjY8GnV5i9YTDtPETC2uUAW6ejw3nk5mXF5yci5ab70h",  # '0' is not base58
        "did:key:z6MkmjY8GnV5i9YTDtPETC2uUAW6ejw3nk5mXF5yci5ab7tI",  # 'I' neither
        "did:key:z6MkmjY8GnV5i9YTDtPETC2uUAW6ejw3nk5mXF5yci5ab7thé",
        "did:key:z6LSfHfAMAopsuBxaBzvp51GXrPf38Az13j2fmwqadbwwrzJ",  # x25519-pub (0xec01)
        "did:key:zTjsVPtY",  # too short (did-key-test-suite)
        "did:key:z6MkA9MEcFWsoUVqj2zX6LACFaikLQ28i9WAsJnURDS3HLGKSkUbwUbiLH22ohgZ2BwgpQ6qC3VBTNV3pLhYDTVgR",
        "did:key:z" + "1" * 61,  # too long
        "did:key:z6MkmjY8GnV5i9YTDtPETC2uUAW6ejw3nk5mXF5yci5ab7th#z6Mk",
        "did:key:z" + _hand_base58(b"\0\xed\x01" + ALICE.ed25519_public),  # leading zero
        "did:key:z" + _hand_base58(b"\xed\x01" + bytes(32)),  # a point of small order
        "did:key:z" + _hand_base58(b"\xed\x01" + b"\xff" * 32),  # not canonical
    ],
)
def test_malformed_did_key_is_invalid_did(did: str) -> None:
    with pytest.raises(E.InvalidDid):
        parse_did_key(did)
    assert issubclass(E.InvalidDid, E.InvalidValue)
    assert issubclass(E.InvalidDid, ValueError)


def test_did_key_of_a_wrong_length_key_is_refused() -> None:
    with pytest.raises(E.InvalidDid):
        did_key(bytes(31))
    with pytest.raises(E.InvalidDid):
        parse_did_key(123)  # type: ignore[arg-type]


# --- constants shared with the storage RPC ---------------------------------------------


def test_limits_agree_with_the_storage_rpc() -> None:
    assert cap_limits.NAMESPACE_MIN == rpc_limits.NAMESPACE_MIN
    assert cap_limits.NAMESPACE_MAX == rpc_limits.NAMESPACE_MAX
    assert cap_limits.DEFAULT_SKEW_MS == rpc_limits.CLOCK_SKEW_MS
    assert cap_limits.MAX_TIME_MS == rpc_limits.MAX_TIME_MS
    assert cap_limits.MAX_LIFETIME_MS == rpc_limits.MAX_TTL_PRIVATE_MS
    assert DEFAULT_LIFETIME_MS == 7 * DAY
    assert {"store", "retrieve", "delete", "delete_all", "expire"} < rpc_limits.METHODS


# --- resources and the command line ----------------------------------------------------


def test_parse_resources_examples() -> None:
    (r,) = res("self:0:retrieve,delete")
    assert (r.owner, r.first, r.last, r.actions) == (ALICE.id, 0, 0, {"retrieve", "delete"})
    (r,) = parse_resources(f"{BOB.id}:-1:post")
    assert (r.owner, r.first, r.last, r.actions) == (BOB.id, -1, -1, {"post"})
    (r,) = res("self:*:retrieve")
    assert (r.first, r.last) == (-32768, 32767)
    rs = res(" self : 1..10, -5..-2 ,7 : store , post ")
    assert [(r.first, r.last) for r in rs] == [(1, 10), (-5, -2), (7, 7)]
    assert all(r.actions == {"store", "post"} for r in rs)
    (r,) = res("self:*:*")
    assert r.actions == ACTIONS
    group = GroupId(K1.ed25519_public)
    (r,) = parse_resources(f"{group}:5:retrieve")
    assert r.owner == group


def test_format_resource_reads_back() -> None:
    for text in ("self:0:delete,retrieve", "self:*:*", "self:1..10:store", "self:-5..-1:post"):
        (r,) = res(text)
        assert format_resource(r, self_owner=ALICE.id) == text
        assert parse_resources(format_resource(r)) == (r,)
    assert str(res("self:3:store")[0]) == f"{ALICE.id}:3:store"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("self:0", "OWNER:NAMESPACES:ACTIONS"),
        ("self:0:retrieve:x", "OWNER:NAMESPACES:ACTIONS"),
        ("me:0:retrieve", "not 'self'"),
        ("05zz:0:retrieve", "owner"),
        ("05" + "00" * 32 + ":0:retrieve", "owner"),
        ("self:0:launch", "unknown action launch"),
        ("self:0:retrieve,,store", "unknown action"),
        ("self:0:", "unknown action"),
        ("self:10..1:store", "empty"),
        ("self:40000:store", "outside"),
        ("self:1...3:store", "namespace"),
        ("self::store", "namespace"),
        ("self:0x1:store", "namespace"),
        ("self:" + "1," * 600 + ":store", "at most"),
    ],
)
def test_parse_resources_refuses_with_a_reason(text: str, says: str) -> None:
    with pytest.raises(E.InvalidResource, match=says):
        res(text)


def test_self_needs_the_issuing_account() -> None:
    with pytest.raises(E.InvalidResource, match="self"):
        parse_resources("self:0:retrieve")


def test_resource_objects_check_their_fields() -> None:
    with pytest.raises(E.InvalidResource):
        Resource(ALICE.id, 0, 0, frozenset({"fly"}))
    with pytest.raises(E.InvalidResource):
        Resource(ALICE.id, 5, 4, frozenset({"store"}))
    with pytest.raises(E.InvalidResource):
        Resource(ALICE.id, 0, 40_000, frozenset({"store"}))
    with pytest.raises(E.InvalidResource):
        Resource(ALICE.id, 0, 0, frozenset())
    with pytest.raises(E.InvalidResource):
        Resource("alice", 0, 0, frozenset({"store"}))  # type: ignore[arg-type]


def test_required_action_of_each_method() -> None:
    assert required("retrieve", 0) == ("retrieve", 0, 0)
    assert required("retrieve", -3) == ("retrieve", -3, -3)
    assert required("store", 5) == ("store", 5, 5)
    assert required("store", 0) == ("store", 0, 0)
    assert required("store", -1) == ("post", -1, -1)  # public-read: post, not store
    assert required("delete", 2) == ("delete", 2, 2)
    assert required("delete_all", 2) == ("delete", 2, 2)
    assert required("delete_all", None) == ("delete", -32768, 32767)
    assert required("expire", 1) == ("expire", 1, 1)
    for method, ns in (("info", 0), ("get_swarm", 0), ("launch", 0), ("store", None)):
        with pytest.raises(E.InvalidResource):
            required(method, ns)


def test_coverage_is_by_union_of_ranges_per_action() -> None:
    granted = res("self:1..5,6..10:store") + res("self:20:store,delete")
    assert grants(granted, ALICE.id, "store", 1, 10)
    assert grants(granted, ALICE.id, "store", 20, 20)
    assert not grants(granted, ALICE.id, "store", 1, 11)
    assert not grants(granted, ALICE.id, "store", 0, 3)
    assert not grants(granted, ALICE.id, "delete", 1, 1)
    assert not grants(granted, BOB.id, "store", 1, 1)  # another owner
    (wanted,) = res("self:2..8:store,delete")
    assert missing_actions(granted, wanted) == {"delete"}
    assert missing_actions(granted, res("self:3:store")[0]) == frozenset()


# --- links -----------------------------------------------------------------------------


def test_a_link_round_trips_and_names_its_fields() -> None:
    first, _ = _two_links()
    link = first.links[0]
    assert Capability.decode(link.encoded) == link
    assert link.issuer == ALICE.ed25519_public
    assert link.audience == K1.ed25519_public
    assert link.audience_did == K1.did
    assert link.issuer_did == did_key(ALICE.ed25519_public)
    assert (link.issued_ms, link.not_before_ms) == (NOW, NOW)
    assert link.expires_ms == NOW + DEFAULT_LIFETIME_MS
    assert link.proof is None
    assert link.owner == ALICE.id
    assert link.digest == crypto.hash32(link.encoded, b"veil/cap-link")
    link.verify_signature()
    assert "Capability(" in repr(link)


def test_issue_link_refuses_local_misuse() -> None:
    good = res("self:1:store")
    kw: dict[str, Any] = {"now_ms": NOW, "expires_ms": NOW + DAY}
    with pytest.raises(E.InvalidKey):
        issue_link(ALICE, bytes(32), good, **kw)  # not a valid point
    with pytest.raises(E.InvalidResource):
        issue_link(ALICE, K1.ed25519_public, (), **kw)
    with pytest.raises(E.InvalidResource):
        issue_link(ALICE, K1.ed25519_public, res("self:*:store") * (MAX_RESOURCES + 1), **kw)
    with pytest.raises(E.InvalidResource):
        issue_link(ALICE, K1.ed25519_public, good + res("self:1:store", BOB), **kw)
    with pytest.raises(E.InvalidValue):
        issue_link(ALICE, K1.ed25519_public, good, now_ms=NOW, expires_ms=NOW)
    with pytest.raises(E.InvalidValue):
        issue_link(ALICE, K1.ed25519_public, good, now_ms=NOW, expires_ms=NOW + 31 * DAY)
    with pytest.raises(E.InvalidValue):
        issue_link(ALICE, K1.ed25519_public, good, statement="x" * (MAX_STATEMENT + 1), **kw)
    link = issue_link(ALICE, K1.ed25519_public, good, statement="é" * MAX_STATEMENT, **kw)
    assert link.statement == "é" * MAX_STATEMENT


def _link_map(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "v": 1,
        "iss": ALICE.ed25519_public,
        "aud": K1.ed25519_public,
        "iat": NOW,
        "nbf": NOW,
        "exp": NOW + DAY,
        "nonce": bytes(16),
        "res": [r.to_wire() for r in res("self:1:store")],
        "sig": bytes(64),
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def _owner(prefix: int, key: bytes) -> bytes:
    return bytes([prefix]) + key


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"v": 2}, E.MalformedCapability),
        ({"v": None}, E.MalformedCapability),
        ({"iss": bytes(31)}, E.MalformedCapability),
        ({"nonce": bytes(15)}, E.MalformedCapability),
        ({"sig": bytes(63)}, E.MalformedCapability),
        ({"exp": NOW}, E.MalformedCapability),  # nbf < exp
        ({"nbf": NOW - 1}, E.MalformedCapability),  # iat <= nbf
        ({"exp": NOW + MAX_LIFETIME_MS + 1}, E.MalformedCapability),
        ({"iat": -1}, E.MalformedCapability),
        ({"stmt": "x" * (MAX_STATEMENT + 1)}, E.MalformedCapability),
        ({"res": []}, E.MalformedCapability),
        ({"res": [res("self:1:store")[0].to_wire()] * (MAX_RESOURCES + 1)}, E.MalformedCapability),
        (
            {"res": [{"with": _owner(5, ALICE.x25519_public), "ns": [1, 1], "can": ["launch"]}]},
            E.UnknownAction,
        ),
        (
            {"res": [{"with": _owner(5, ALICE.x25519_public), "ns": [1, 1], "can": ["*"]}]},
            E.UnknownAction,
        ),
        (
            {
                "res": [
                    {
                        "with": _owner(5, ALICE.x25519_public),
                        "ns": [1, 1],
                        "can": ["store", "retrieve"],
                    }
                ]
            },
            E.MalformedCapability,
        ),  # unsorted
        (
            {
                "res": [
                    {
                        "with": _owner(5, ALICE.x25519_public),
                        "ns": [1, 1],
                        "can": ["store", "store"],
                    }
                ]
            },
            E.MalformedCapability,
        ),
        (
            {"res": [{"with": _owner(5, ALICE.x25519_public), "ns": [2, 1], "can": ["store"]}]},
            E.MalformedCapability,
        ),
        (
            {"res": [{"with": _owner(5, ALICE.x25519_public), "ns": [1, 40000], "can": ["store"]}]},
            E.MalformedCapability,
        ),
        (
            {"res": [{"with": _owner(7, ALICE.x25519_public), "ns": [1, 1], "can": ["store"]}]},
            E.MalformedCapability,
        ),
        (
            {
                "res": [
                    {"with": _owner(5, ALICE.x25519_public), "ns": [1, 1], "can": ["store"], "x": 1}
                ]
            },
            E.MalformedCapability,
        ),
        (
            {"res": [r.to_wire() for r in res("self:1:store") + res("self:1:store", BOB)]},
            E.MalformedCapability,
        ),
        ({"extra": 1}, E.MalformedCapability),
    ],
)
def test_malformed_links_are_refused_with_their_error(
    changes: dict[str, Any], error: type[E.CapabilityError]
) -> None:
    with pytest.raises(error) as info:
        Capability.decode(cbor.encode(_link_map(**changes)))
    assert info.value.status == "bad_request"


def test_an_owner_that_is_not_a_valid_key_never_verifies() -> None:
    """Owners are not point-checked when decoded (a hostile chain would make a node pay a
    scalar multiplication for each); the first link's issuer check refuses them."""
    for bad in (bytes(32), b"\xff" * 32, ALICE.ed25519_public):
        wire = {"with": _owner(5, bad), "ns": [1, 1], "can": ["store"]}
        link = raw_link(ALICE, K1.ed25519_public, [wire])
        Capability.decode(link)
        with pytest.raises(E.WrongIssuer):
            verify_chain(chain_bytes(link), now_ms=NOW)
        group_link = raw_link(ALICE, K1.ed25519_public, [{**wire, "with": _owner(3, bad)}])
        if bad != ALICE.ed25519_public:
            with pytest.raises(E.WrongIssuer):
                verify_chain(chain_bytes(group_link), now_ms=NOW)


def test_a_first_link_issued_by_a_key_of_small_order_is_refused() -> None:
    class SmallOrder:
        ed25519_public = bytes([1]) + bytes(31)  # the identity point
        ed25519_secret = ALICE.ed25519_secret

    link = raw_link(SmallOrder(), K1.ed25519_public, res("self:*:*"))
    with pytest.raises(E.WrongIssuer, match="not a valid Ed25519 key"):
        verify_chain(chain_bytes(link), now_ms=NOW)


def test_a_group_key_of_mixed_order_is_refused_after_its_signature() -> None:
    """libsodium verifies about 1 in 8 signatures under a valid key plus a point of order
    8; such a key is no group ID, and verify_chain says so (authorize needs the request's
    parsed ID, which it cannot equal)."""
    order8 = bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05")

    class Mixed:
        ed25519_public = sodium.crypto_core_ed25519_add(K3.ed25519_public, order8)
        ed25519_secret = K3.ed25519_secret[:32] + ed25519_public

    wire = {"with": b"\x03" + Mixed.ed25519_public, "ns": [1, 1], "can": ["store"]}
    for i in range(256):
        link = raw_link(Mixed(), K1.ed25519_public, [wire], nonce=i.to_bytes(16, "big"))
        try:
            Capability.decode(link).verify_signature()
        except E.BadCapabilitySignature:
            continue
        break
    else:
        pytest.fail("no signature verified under the mixed-order key")
    with pytest.raises(E.WrongIssuer, match="not a valid"):
        verify_chain(chain_bytes(link), now_ms=NOW)
    with pytest.raises(E.InvalidId):
        GroupId(Mixed.ed25519_public)


def test_non_canonical_or_oversized_link_is_refused() -> None:
    good = cbor.encode(_link_map())
    Capability.decode(good)
    # Same map, with a longer head for "v" (0x18 0x01 instead of 0x01).
    body = _link_map()
    assert good[1:4] == b"\x61v\x01"
    longer = good[:3] + b"\x18\x01" + good[4:]
    assert cbor.decode(longer, max_size=9999) == body
    with pytest.raises(E.MalformedCapability, match="non-canonical"):
        Capability.decode(longer)
    with pytest.raises(E.CapabilityTooLarge) as info:
        Capability.decode(cbor.encode(_link_map(stmt="x" * 5000)))
    assert info.value.status == "too_large"
    with pytest.raises(E.MalformedCapability):
        Capability.decode(bytearray(good))  # type: ignore[arg-type]


# --- chains: what they grant -----------------------------------------------------------


def test_a_two_link_chain_authorizes_what_it_grants() -> None:
    _, chain = _two_links()
    proven = _authorize(chain.encoded)
    assert proven.owner == ALICE.id
    assert proven.audience == K2.ed25519_public
    assert proven.chain_digest == chain_digest(chain.encoded) == chain.digest
    assert proven.link_digests == tuple(link.digest for link in chain.links)
    assert proven.expires_ms == NOW + DEFAULT_LIFETIME_MS
    assert proven.not_before_ms == NOW
    assert proven.resources == res("self:1..10:retrieve,store")
    assert _authorize(chain, method="retrieve", namespace=10) == proven
    assert verify_chain(chain.encoded, now_ms=NOW) == proven
    assert Chain.decode(chain.encoded) == chain
    assert len(chain) == 2 and "Chain(2 links" in repr(chain)


def test_action_not_covered_names_the_action() -> None:
    _, chain = _two_links()
    for method, ns, action in (
        ("delete", 3, "delete"),
        ("expire", 3, "expire"),
        ("store", 11, "store"),
        ("store", -1, "post"),
        ("delete_all", None, "delete"),
    ):
        with pytest.raises(E.ActionNotCovered) as info:
            _authorize(chain, method=method, namespace=ns)
        assert info.value.action == action
        assert info.value.namespace == ns
        assert info.value.status == "unauthorized"
        assert not chain.allows(method, ns)


def test_store_does_not_cover_public_namespaces_and_post_covers_only_them() -> None:
    store_all = delegate(ALICE, K1.ed25519_public, res("self:*:store"), now_ms=NOW)
    _authorize(store_all, signer=K1, namespace=0)
    _authorize(store_all, signer=K1, namespace=32767)
    with pytest.raises(E.ActionNotCovered, match="post"):
        _authorize(store_all, signer=K1, namespace=-1)
    post_all = delegate(ALICE, K1.ed25519_public, res("self:*:post"), now_ms=NOW)
    _authorize(post_all, signer=K1, namespace=-32768)
    with pytest.raises(E.ActionNotCovered, match="store"):
        _authorize(post_all, signer=K1, namespace=0)


def test_delete_all_needs_delete_in_every_namespace() -> None:
    some = delegate(ALICE, K1.ed25519_public, res("self:0..32767:delete"), now_ms=NOW)
    _authorize(some, signer=K1, method="delete_all", namespace=4)
    with pytest.raises(E.ActionNotCovered):
        _authorize(some, signer=K1, method="delete_all", namespace=None)
    every = delegate(ALICE, K1.ed25519_public, res("self:*:delete"), now_ms=NOW)
    _authorize(every, signer=K1, method="delete_all", namespace=None)
    halves = delegate(ALICE, K1.ed25519_public, res("self:-32768..-1,0..32767:delete"), now_ms=NOW)
    _authorize(halves, signer=K1, method="delete_all", namespace=None)
    assert halves.allows("delete_all", None)


def test_is_authorized_helper() -> None:
    _, chain = _two_links()
    assert chain.missing(res("self:2..9:store")[0]) == frozenset()
    assert chain.missing(res("self:2..9:store,delete,post")[0]) == {"delete", "post"}
    assert chain.missing(res("self:0..9:store")[0]) == {"store"}


# --- chains: every bad input -----------------------------------------------------------


def test_expired_and_not_yet_valid_with_the_clock_skew() -> None:
    chain = delegate(
        ALICE,
        K1.ed25519_public,
        res("self:*:*"),
        now_ms=NOW,
        not_before_ms=NOW + HOUR,
        lifetime_ms=DAY,
    )
    exp = NOW + DAY
    skew = 60_000
    _authorize(chain, signer=K1, now_ms=NOW + HOUR - skew)  # within the skew
    with pytest.raises(E.CapabilityNotYetValid) as early:
        _authorize(chain, signer=K1, now_ms=NOW + HOUR - skew - 1)
    assert early.value.status == "clock_skew"
    _authorize(chain, signer=K1, now_ms=exp + skew - 1)
    with pytest.raises(E.CapabilityExpired) as late:
        _authorize(chain, signer=K1, now_ms=exp + skew)
    assert late.value.status == "unauthorized"
    with pytest.raises(E.CapabilityExpired):
        _authorize(chain, signer=K1, now_ms=exp, skew_ms=0)


def test_an_expired_upstream_link_expires_the_chain() -> None:
    root = raw_link(ALICE, K1.ed25519_public, res("self:*:*"), exp=NOW + HOUR)
    leaf = raw_link(
        K1, K2.ed25519_public, res("self:1:store"), exp=NOW + HOUR, proof=digest_of(root)
    )
    _authorize(chain_bytes(root, leaf), now_ms=NOW, namespace=1)
    with pytest.raises(E.CapabilityExpired, match="link 0"):
        _authorize(chain_bytes(root, leaf), now_ms=NOW + 2 * HOUR, namespace=1)


def test_revoked_links_stop_everything_below() -> None:
    _, chain = _two_links()
    root, leaf = (link.digest for link in chain.links)
    for revoked in (root, leaf):
        with pytest.raises(E.CapabilityRevoked) as info:
            _authorize(chain, is_revoked=lambda d, r=revoked: d == r)
        assert info.value.status == "unauthorized"
    _authorize(chain, is_revoked=lambda d: False)


def test_resources_widened_down_the_chain_are_refused() -> None:
    def child_of(parent_res: str, child_res: str) -> bytes:
        root = raw_link(ALICE, K1.ed25519_public, res(parent_res))
        leaf = raw_link(K1, K2.ed25519_public, res(child_res), proof=digest_of(root))
        return chain_bytes(root, leaf)

    _authorize(child_of("self:1..10:store,delegate", "self:3:store"))
    for parent, child in (
        ("self:1..10:store,delegate", "self:1..11:store"),  # wider range
        ("self:1..10:store,delegate", "self:3:store,delete"),  # another action
        ("self:1..10:store,delegate", "self:3:post"),
        ("self:1..10:store", "self:3:store"),  # the parent may not delegate
        ("self:1..10:store,delegate", "self:*:store"),
    ):
        with pytest.raises(E.ResourcesWidened) as info:
            _authorize(child_of(parent, child), method="retrieve", namespace=3)
        assert isinstance(info.value, E.AttenuationError)
        assert info.value.status == "unauthorized"
    # Another account's resources, in a link below Alice's.
    root = raw_link(ALICE, K1.ed25519_public, res("self:*:*"))
    leaf = raw_link(K1, K2.ed25519_public, res("self:1:store", BOB), proof=digest_of(root))
    with pytest.raises(E.ResourcesWidened):
        verify_chain(chain_bytes(root, leaf), now_ms=NOW)
    # The builder refuses the same before signing.
    with pytest.raises(E.ResourcesWidened):
        redelegate(
            delegate(ALICE, K1.ed25519_public, res("self:1:store,delegate"), now_ms=NOW),
            K1,
            K2.ed25519_public,
            res("self:1:store,retrieve"),
            now_ms=NOW,
        )


def test_expiry_extended_down_the_chain_is_refused() -> None:
    root = raw_link(ALICE, K1.ed25519_public, res("self:*:*"), exp=NOW + DAY)
    leaf = raw_link(
        K1, K2.ed25519_public, res("self:1:store"), exp=NOW + DAY + 1, proof=digest_of(root)
    )
    with pytest.raises(E.ExpiryExtended) as info:
        _authorize(chain_bytes(root, leaf))
    assert info.value.status == "unauthorized"
    first, _ = _two_links()
    with pytest.raises(E.ExpiryExtended):
        redelegate(
            first,
            K1,
            K2.ed25519_public,
            res("self:1:store"),
            now_ms=NOW,
            expires_ms=first.expires_ms + 1,
        )


def test_chain_of_eight_links_verifies_and_nine_is_refused_before_parsing() -> None:
    data, keys = linear_chain(MAX_CHAIN_LINKS)
    chain = Chain.decode(data)
    proven = _authorize(data, signer=keys[-1])
    assert len(proven.link_digests) == 8
    with pytest.raises(E.InvalidValue):
        redelegate(chain, keys[-1], K1.ed25519_public, res("self:1:store"), now_ms=NOW)
    long_chain, keys = linear_chain(MAX_CHAIN_LINKS + 1)
    with pytest.raises(E.ChainTooLong) as info:
        _authorize(long_chain, signer=keys[-1])
    assert info.value.status == "too_large"
    assert isinstance(info.value, E.TooLarge)


def test_link_signed_by_the_wrong_key() -> None:
    # A child issued by a stranger, not by its parent's audience.
    root = raw_link(ALICE, K1.ed25519_public, res("self:*:*"))
    leaf = raw_link(MALLORY, K2.ed25519_public, res("self:1:store"), proof=digest_of(root))
    with pytest.raises(E.WrongIssuer):
        _authorize(chain_bytes(root, leaf))
    # A child that names another proof than its parent.
    leaf = raw_link(K1, K2.ed25519_public, res("self:1:store"), proof=bytes(32))
    with pytest.raises(E.WrongIssuer, match="proof"):
        _authorize(chain_bytes(root, leaf))
    leaf = raw_link(K1, K2.ed25519_public, res("self:1:store"))
    with pytest.raises(E.WrongIssuer, match="proof"):
        _authorize(chain_bytes(root, leaf))
    # A first link that names a proof.
    with pytest.raises(E.WrongIssuer):
        _authorize(
            chain_bytes(raw_link(ALICE, K2.ed25519_public, res("self:*:*"), proof=bytes(32)))
        )
    # A first link for Alice issued by Bob.
    with pytest.raises(E.WrongIssuer) as info:
        _authorize(chain_bytes(raw_link(BOB, K2.ed25519_public, res("self:*:*"))))
    assert info.value.status == "unauthorized"
    # The right issuer named, another key signing: the signature fails.
    forged = raw_link(ALICE, K2.ed25519_public, res("self:*:*"), sign_as=MALLORY)
    with pytest.raises(E.BadCapabilitySignature) as sig:
        _authorize(chain_bytes(forged))
    assert sig.value.status == "unauthorized"


def test_tampered_link_fails_its_signature() -> None:
    _, chain = _two_links()
    leaf = cbor.decode(chain.links[1].encoded, max_size=9999)
    leaf["res"][0]["ns"] = [1, 20]
    tampered_leaf = cbor.encode(leaf)
    with pytest.raises(E.BadCapabilitySignature):
        _authorize(chain_bytes(chain.links[0].encoded, tampered_leaf))


def test_capability_for_another_account_and_for_another_key() -> None:
    _, chain = _two_links()
    with pytest.raises(E.WrongAccount) as info:
        _authorize(chain, account=BOB.id)
    assert info.value.status == "unauthorized"
    with pytest.raises(E.WrongAudience):
        _authorize(chain, signer=K1)  # an upstream key, not the chain's audience
    with pytest.raises(E.WrongAudience):
        _authorize(chain, signer=ALICE)
    with pytest.raises(E.InvalidResource):
        delegate(ALICE, K1.ed25519_public, res("self:*:*", BOB), now_ms=NOW)
    with pytest.raises(E.InvalidKey):
        redelegate(chain, K1, K3.ed25519_public, res("self:1:store"), now_ms=NOW)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", E.MalformedCapability),
        (b"\x80", E.MalformedCapability),  # no links
        (b"\xa0", E.MalformedCapability),  # a map
        (b"\x81\x01", E.MalformedCapability),  # a link that is not bytes
        (b"\x81\x81\x40", E.MalformedCapability),  # nested
        (b"\x81\x40", E.MalformedCapability),  # an empty link
        (b"\x9f\xff", E.MalformedCapability),  # indefinite
        (b"\x89" + b"\x40" * 9, E.ChainTooLong),
        (b"\x98\x20" + b"\x40" * 32, E.ChainTooLong),
        (b"\x81\x59\x10\x01" + bytes(4097), E.CapabilityTooLarge),  # one link too large
        (b"\x81" + bytes(MAX_CHAIN_SIZE), E.CapabilityTooLarge),
    ],
)
def test_malformed_chains_are_refused(data: bytes, error: type[E.CapabilityError]) -> None:
    with pytest.raises(error):
        Chain.decode(data)
    with pytest.raises(error):
        _authorize(data)


def test_hostile_chains_cost_no_signature_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Oversized, too long, malformed, widened, extended, expired, misaddressed: all
    refused before a single signature is checked."""
    calls: list[int] = []
    real_verify = crypto.verify

    def counting_verify(*args: Any) -> None:
        calls.append(1)
        real_verify(*args)

    monkeypatch.setattr(crypto, "verify", counting_verify)
    root = raw_link(ALICE, K1.ed25519_public, res("self:1..10:store,delegate"))
    widened = raw_link(K1, K2.ed25519_public, res("self:1..11:store"), proof=digest_of(root))
    extended = raw_link(
        K1, K2.ed25519_public, res("self:1:store"), exp=NOW + DAY + 1, proof=digest_of(root)
    )
    long_chain, long_keys = linear_chain(9)
    hostile: list[tuple[bytes, dict[str, Any]]] = [
        (b"\x81" + bytes(MAX_CHAIN_SIZE), {}),
        (long_chain, {"signer": long_keys[-1]}),
        (chain_bytes(root, widened), {}),
        (chain_bytes(root, extended), {}),
        (
            chain_bytes(
                root, raw_link(K1, K2.ed25519_public, res("self:1:store"), proof=digest_of(root))
            ),
            {"now_ms": NOW + 2 * DAY},
        ),
        (
            chain_bytes(
                root, raw_link(K1, K2.ed25519_public, res("self:1:store"), proof=digest_of(root))
            ),
            {"account": BOB.id},
        ),
        (
            chain_bytes(
                root, raw_link(K1, K2.ed25519_public, res("self:1:store"), proof=digest_of(root))
            ),
            {"namespace": 2},
        ),
        (
            chain_bytes(
                root, raw_link(K1, K2.ed25519_public, res("self:1:store"), proof=digest_of(root))
            ),
            {"signer": MALLORY},
        ),
    ]
    for data, kw in hostile:
        with pytest.raises(E.CapabilityError):
            _authorize(data, **{"namespace": 1, **kw})
    assert calls == []
    _authorize(
        chain_bytes(
            root, raw_link(K1, K2.ed25519_public, res("self:1:store"), proof=digest_of(root))
        ),
        namespace=1,
    )
    assert len(calls) == 2


def test_every_capability_error_has_its_wire_status() -> None:
    expected = {
        E.CapabilityError: "unauthorized",
        E.MalformedCapability: "bad_request",
        E.UnknownAction: "bad_request",
        E.CapabilityTooLarge: "too_large",
        E.ChainTooLong: "too_large",
        E.CapabilityExpired: "unauthorized",
        E.CapabilityNotYetValid: "clock_skew",
        E.CapabilityRevoked: "unauthorized",
        E.AttenuationError: "unauthorized",
        E.ResourcesWidened: "unauthorized",
        E.ExpiryExtended: "unauthorized",
        E.WrongIssuer: "unauthorized",
        E.BadCapabilitySignature: "unauthorized",
        E.WrongAccount: "unauthorized",
        E.WrongAudience: "unauthorized",
        E.ActionNotCovered: "unauthorized",
        E.NotEntitledToRevoke: "unauthorized",
    }
    for cls, status in expected.items():
        error = cls("x")
        assert error.status == status, cls
        assert isinstance(error, E.ProtocolError)
        assert E.wire_status(error) == status
    for cls in (E.InvalidDid, E.InvalidResource, E.InvalidSession):
        assert issubclass(cls, E.InvalidValue)
        assert E.wire_status(cls("x")) == "bad_request"


def test_cached_proof_rechecks_time_request_and_revocations() -> None:
    _, chain = _two_links()
    proven = _authorize(chain)
    kw: dict[str, Any] = {
        "signer": K2.ed25519_public,
        "account": ALICE.id,
        "method": "store",
        "namespace": 3,
        "now_ms": NOW + HOUR,
    }
    proven.check(**kw)
    assert proven.allows("store", 3) and not proven.allows("store", 11)
    with pytest.raises(E.CapabilityRevoked):
        proven.check(**kw, is_revoked=lambda d: d == proven.link_digests[0])
    with pytest.raises(E.CapabilityExpired):
        proven.check(**{**kw, "now_ms": proven.expires_ms + 60_000})
    with pytest.raises(E.CapabilityNotYetValid):
        proven.check(**{**kw, "now_ms": NOW - 2 * 60_000})
    with pytest.raises(E.WrongAudience):
        proven.check(**{**kw, "signer": K1.ed25519_public})
    with pytest.raises(E.WrongAccount):
        proven.check(**{**kw, "account": BOB.id})
    with pytest.raises(E.ActionNotCovered):
        proven.check(**{**kw, "method": "delete"})


def test_group_owned_resources_chain_from_the_group_key() -> None:
    group_key = session_key("group")
    group = GroupId(group_key.ed25519_public)
    resources = parse_resources(f"{group}:*:retrieve,delegate")
    chain = delegate(group_key, K1.ed25519_public, resources, now_ms=NOW)
    proven = _authorize(chain, signer=K1, account=group, method="retrieve", namespace=1)
    assert proven.owner == group
    forged = raw_link(ALICE, K1.ed25519_public, resources)
    with pytest.raises(E.WrongIssuer, match="group"):
        _authorize(chain_bytes(forged), signer=K1, account=group, method="retrieve")


# --- revocations -----------------------------------------------------------------------


def _three_links() -> Chain:
    _, two = _two_links("self:*:*", "self:1..10:store,retrieve,delegate")
    return redelegate(
        two, K2, K3.ed25519_public, res("self:2:store"), now_ms=NOW, rng=counter_rng(b"3")
    )


def test_revocation_by_the_account_and_by_upstream_issuers() -> None:
    chain = _three_links()
    leaf = chain.links[-1]
    for revoker in (ALICE, K1, K2):  # the account, an issuer upstream, the link's issuer
        record = revoke(revoker, chain, now_ms=NOW + HOUR)
        verified = verify_revocation(record.encoded, now_ms=NOW + HOUR)
        assert verified.link == leaf.digest
        assert verified.expires_ms == leaf.expires_ms
        assert verified.owner == ALICE.id
        assert verified.revoker == revoker.ed25519_public
        assert Revocation.decode(record.encoded) == record
        assert record.digest == crypto.hash32(record.encoded, b"veil/cap-revoke")
    # The middle link, by the account: the chain stops below it.
    middle = chain.links[1].digest
    record = revoke(ALICE, chain, middle, now_ms=NOW)
    assert verify_revocation(record, now_ms=NOW).link == middle
    revoked = {record.link}
    with pytest.raises(E.CapabilityRevoked):
        _authorize(chain, signer=K3, namespace=2, is_revoked=revoked.__contains__)


def test_revocation_by_a_stranger_or_a_downstream_key_is_refused() -> None:
    chain = _three_links()
    with pytest.raises(E.NotEntitledToRevoke) as info:
        revoke(MALLORY, chain, now_ms=NOW)
    assert info.value.status == "unauthorized"
    with pytest.raises(E.NotEntitledToRevoke):
        revoke(K3, chain, now_ms=NOW)  # the audience of the link itself
    with pytest.raises(E.NotEntitledToRevoke):
        revoke(K2, chain, chain.links[0].digest, now_ms=NOW)  # a link above it
    # Built by hand, signed by the stranger: a node refuses it the same.
    body = _revocation_body(chain, MALLORY)
    with pytest.raises(E.NotEntitledToRevoke):
        verify_revocation(cbor.encode(body), now_ms=NOW)


def _revocation_body(chain: Chain, revoker: Any, **changes: Any) -> dict[str, Any]:
    leaf = chain.links[-1]
    body: dict[str, Any] = {
        "v": 1,
        "with": b"\x05" + ALICE.x25519_public,
        "link": leaf.digest,
        "exp": leaf.expires_ms,
        "iss": revoker.ed25519_public,
        "iat": NOW,
        "prf": chain.encoded,
    }
    body.update(changes)
    body = {k: v for k, v in body.items() if v is not None}
    body["sig"] = crypto.sign(revoker.ed25519_secret, b"cap-revoke/v1", cbor.encode(body))
    return body


def test_revocation_with_revoke_authority() -> None:
    chain = _three_links()
    admin = delegate(ALICE, MALLORY.ed25519_public, res("self:*:revoke"), now_ms=NOW)
    record = revoke(MALLORY, chain, now_ms=NOW, authority=admin)
    assert verify_revocation(record.encoded, now_ms=NOW).authority == admin
    with pytest.raises(E.CapabilityRevoked):  # a revoked administrator revokes nothing
        verify_revocation(record.encoded, now_ms=NOW, is_revoked=lambda d: d != record.link)
    narrow = delegate(ALICE, MALLORY.ed25519_public, res("self:5..9:revoke"), now_ms=NOW)
    with pytest.raises(E.NotEntitledToRevoke, match="revoke"):
        revoke(MALLORY, chain, now_ms=NOW, authority=narrow)
    wrong_action = delegate(ALICE, MALLORY.ed25519_public, res("self:*:delete"), now_ms=NOW)
    with pytest.raises(E.NotEntitledToRevoke):
        revoke(MALLORY, chain, now_ms=NOW, authority=wrong_action)
    bobs = delegate(BOB, MALLORY.ed25519_public, res("self:*:revoke", BOB), now_ms=NOW)
    with pytest.raises(E.NotEntitledToRevoke, match="another account"):
        revoke(MALLORY, chain, now_ms=NOW, authority=bobs)
    others = delegate(ALICE, K1.ed25519_public, res("self:*:revoke"), now_ms=NOW)
    with pytest.raises(E.NotEntitledToRevoke, match="not the revoker"):
        revoke(MALLORY, chain, now_ms=NOW, authority=others)


def test_revocation_bad_inputs() -> None:
    chain = _three_links()
    leaf = chain.links[-1]
    good = _revocation_body(chain, ALICE)
    verify_revocation(cbor.encode(good), now_ms=NOW)
    # Nothing left to revoke once the link has expired; from the future: not yet.
    with pytest.raises(E.CapabilityExpired):
        verify_revocation(cbor.encode(good), now_ms=leaf.expires_ms + 60_000)
    with pytest.raises(E.CapabilityNotYetValid):
        verify_revocation(cbor.encode(good), now_ms=NOW - 2 * 60_000)
    for changes in (
        {"link": bytes(32)},
        {"exp": leaf.expires_ms + 1},
        {"with": b"\x05" + BOB.x25519_public},
        {"v": 2},
        {"prf": b"\x80"},
        {"sig": None, "extra": 1},
    ):
        with pytest.raises(E.MalformedCapability):
            verify_revocation(cbor.encode({**good, **changes}), now_ms=NOW)
    tampered = {**good, "sig": bytes(64)}
    with pytest.raises(E.BadCapabilitySignature):
        verify_revocation(cbor.encode(tampered), now_ms=NOW)
    with pytest.raises(E.CapabilityTooLarge):
        verify_revocation(bytes(cap_limits.MAX_REVOCATION_SIZE + 1), now_ms=NOW)
    with pytest.raises(E.InvalidValue):
        revoke(ALICE, chain, bytes(32), now_ms=NOW)


# --- serialized sessions ---------------------------------------------------------------


def test_session_string_round_trips() -> None:
    _, chain = _two_links()
    text = encode_session(K2, chain)
    assert text.startswith(SESSION_PREFIX)
    key, decoded = decode_session(text)
    assert key.seed == K2.seed and decoded == chain
    with pytest.raises(E.InvalidSession):
        encode_session(K1, chain)
    assert "seed" not in repr(K2) and K2.seed.hex() not in repr(K2)


def _session_text(obj: dict[str, Any]) -> str:
    raw = cbor.encode(obj)
    return SESSION_PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_tampered_or_malformed_session_strings_are_refused() -> None:
    _, chain = _two_links()
    good = {"v": 1, "seed": K2.seed, "chain": chain.encoded}
    assert decode_session(_session_text(good))[1] == chain
    leaf = cbor.decode(chain.links[1].encoded, max_size=9999)
    leaf["exp"] -= 1
    tampered_chain = chain_bytes(chain.links[0].encoded, cbor.encode(leaf))
    text = encode_session(K2, chain)
    cases = [
        _session_text({**good, "seed": K1.seed}),  # another key
        _session_text({**good, "chain": tampered_chain}),  # a link altered
        _session_text({**good, "chain": b"\x80"}),
        _session_text({**good, "v": 2}),
        _session_text({**good, "x": 1}),
        _session_text({"v": 1, "seed": K2.seed}),
        "veil-session-v2:" + text[len(SESSION_PREFIX) :],
        text[:-1],  # truncated
        text + "A",
        text + "=",
        text[:-3] + "+/_",
        SESSION_PREFIX,
        SESSION_PREFIX + "A" * (MAX_SESSION_CHARS + 1),
        text.replace(SESSION_PREFIX, SESSION_PREFIX.upper()),
    ]
    # Non-canonical base64: the unused low bits of the last character set.
    body = text[len(SESSION_PREFIX) :]
    if len(body) % 4:
        last = _B64.index(body[-1])
        cases.append(SESSION_PREFIX + body[:-1] + _B64[last | 1 if last % 2 == 0 else last - 1])
    for case in cases:
        with pytest.raises(E.InvalidSession):
            decode_session(case)
    with pytest.raises(E.InvalidSession):
        decode_session(b"bytes")  # type: ignore[arg-type]


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def test_session_key_generation() -> None:
    key = SessionKey.generate(counter_rng(b"k"))
    assert key.did.startswith("did:key:z6Mk")
    assert len(key.seed) == 32
    assert key.sign(b"x", b"m") == crypto.sign(key.ed25519_secret, b"x", b"m")


# --- known-answer vectors --------------------------------------------------------------

VECTOR_TIME = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def make_vectors() -> dict[str, Any]:
    """The contents of tests/vectors/capability_v1.json (run this module as a script)."""
    alice = account("vector/alice")
    k1 = SessionKey(seed_of("vector/k1"))
    k2 = SessionKey(seed_of("vector/k2"))
    root_res = parse_resources("self:*:retrieve,store,delegate", self_owner=alice.id)
    leaf_res = parse_resources("self:0..9:retrieve", self_owner=alice.id)
    first = delegate(
        alice,
        k1.ed25519_public,
        root_res,
        now_ms=VECTOR_TIME,
        statement="veil vector",
        rng=counter_rng(b"nonce-1"),
    )
    chain = redelegate(
        first,
        k1,
        k2.ed25519_public,
        leaf_res,
        now_ms=VECTOR_TIME + 1000,
        expires_ms=VECTOR_TIME + DAY,
        rng=counter_rng(b"nonce-2"),
    )
    revocation = revoke(alice, chain, now_ms=VECTOR_TIME + 2000)
    # An account audience (issue #13): a group's key grants a member's account.
    group = SessionKey(seed_of("vector/group"))
    member = account("vector/member")
    group_id = GroupId(group.ed25519_public)
    member_chain = delegate(
        group,
        member.id,
        parse_resources(f"{group_id}:1..2:retrieve,store"),
        now_ms=VECTOR_TIME,
        rng=counter_rng(b"nonce-3"),
    )
    return {
        "description": (
            "veil capability v1 (onion/capability). Seeds are Ed25519 seeds; nonces come "
            "from the rng BLAKE2b-512(key=rng_seed, data=u64be(0)) || ..., 16 bytes a "
            "link. Links are canonical CBOR maps signed under 'veil/capability/v1' NUL, "
            "revocations under 'veil/cap-revoke/v1' NUL; digests are BLAKE2b-256 with "
            "person 'veil/cap-link', 'veil/cap-chain', 'veil/cap-revoke'."
        ),
        "account_seed": alice.seed.hex(),
        "account_id": str(alice.id),
        "account_did": did_key(alice.ed25519_public),
        "k1_seed": k1.seed.hex(),
        "k1_did": k1.did,
        "k2_seed": k2.seed.hex(),
        "k2_did": k2.did,
        "root": {
            "resources": "self:*:retrieve,store,delegate",
            "now_ms": VECTOR_TIME,
            "expires_ms": VECTOR_TIME + DEFAULT_LIFETIME_MS,
            "statement": "veil vector",
            "rng_seed": b"nonce-1".hex(),
            "encoded": first.links[0].encoded.hex(),
            "digest": first.links[0].digest.hex(),
        },
        "leaf": {
            "resources": "self:0..9:retrieve",
            "now_ms": VECTOR_TIME + 1000,
            "expires_ms": VECTOR_TIME + DAY,
            "rng_seed": b"nonce-2".hex(),
            "encoded": chain.links[1].encoded.hex(),
            "digest": chain.links[1].digest.hex(),
        },
        "chain": chain.encoded.hex(),
        "chain_digest": chain.digest.hex(),
        "revocation": {
            "now_ms": VECTOR_TIME + 2000,
            "encoded": revocation.encoded.hex(),
            "digest": revocation.digest.hex(),
        },
        "session": encode_session(k2, chain),
        "account_audience": {
            "group_seed": group.seed.hex(),
            "member_seed": member.seed.hex(),
            "member_id": str(member.id),
            "resources": f"{group_id}:1..2:retrieve,store",
            "now_ms": VECTOR_TIME,
            "rng_seed": b"nonce-3".hex(),
            "audience": (b"\x05" + member.x25519_public).hex(),
            "encoded": member_chain.links[0].encoded.hex(),
            "digest": member_chain.links[0].digest.hex(),
        },
    }


def _vectors() -> dict[str, Any]:
    return json.loads(VECTORS.read_text())


def test_known_answer_vectors_byte_for_byte() -> None:
    # A change of wire format must show up here, not pass silently.
    assert make_vectors() == _vectors()


def test_vectors_follow_the_documented_construction() -> None:
    """The links rebuilt by hand from the documented fields, with another CBOR encoder
    (cbor2, canonical) and libsodium's signature directly, are the vector's bytes."""
    v = _vectors()
    alice = account("vector/alice")
    k1 = SessionKey(bytes.fromhex(v["k1_seed"]))
    k2 = SessionKey(bytes.fromhex(v["k2_seed"]))
    assert str(alice.id) == v["account_id"]
    for name, issuer, audience, proof in (
        ("root", alice, k1, None),
        ("leaf", k1, k2, bytes.fromhex(v["root"]["digest"])),
    ):
        spec = v[name]
        nonce = counter_rng(bytes.fromhex(spec["rng_seed"]))(16)
        (resource,) = parse_resources(spec["resources"], self_owner=alice.id)
        body: dict[str, Any] = {
            "v": 1,
            "iss": issuer.ed25519_public,
            "aud": audience.ed25519_public,
            "iat": spec["now_ms"],
            "nbf": spec["now_ms"],
            "exp": spec["expires_ms"],
            "nonce": nonce,
            "res": [
                {
                    "with": b"\x05" + alice.x25519_public,
                    "ns": [resource.first, resource.last],
                    "can": sorted(resource.actions),
                }
            ],
        }
        if "statement" in spec:
            body["stmt"] = spec["statement"]
        if proof is not None:
            body["prf"] = proof
        unsigned = cbor2.dumps(body, canonical=True)
        sig = sodium.crypto_sign(b"veil/capability/v1\x00" + unsigned, issuer.ed25519_secret)[:64]
        encoded = cbor2.dumps({**body, "sig": sig}, canonical=True)
        assert encoded.hex() == spec["encoded"]
        assert (
            bytes.fromhex(spec["digest"])
            == hashlib.blake2b(encoded, digest_size=32, person=b"veil/cap-link").digest()
        )
    chain = bytes.fromhex(v["chain"])
    assert chain == cbor2.dumps(
        [bytes.fromhex(v["root"]["encoded"]), bytes.fromhex(v["leaf"]["encoded"])]
    )
    proven = authorize(
        chain,
        signer=k2.ed25519_public,
        account=alice.id,
        method="retrieve",
        namespace=9,
        now_ms=v["leaf"]["now_ms"],
    )
    assert proven.chain_digest.hex() == v["chain_digest"]
    record = verify_revocation(
        bytes.fromhex(v["revocation"]["encoded"]), now_ms=v["revocation"]["now_ms"]
    )
    assert record.link.hex() == v["leaf"]["digest"]
    key, decoded = decode_session(v["session"])
    assert key.seed == k2.seed and decoded.encoded == chain
    assert parse_did_key(v["k1_did"]) == k1.ed25519_public
    # The account audience: "aud" is 0x05 + the member's X25519 key, and the member's
    # own Ed25519 key signs as it.
    acc = v["account_audience"]
    member = account("vector/member")
    group = SessionKey(bytes.fromhex(acc["group_seed"]))
    link = Capability.decode(bytes.fromhex(acc["encoded"]))
    assert link.audience.hex() == acc["audience"] == "05" + member.x25519_public.hex()
    assert str(member.id) == acc["member_id"]
    assert link.issuer == group.ed25519_public
    authorize(
        bytes.fromhex(cbor2.dumps([bytes.fromhex(acc["encoded"])]).hex()),
        signer=member.ed25519_public,
        account=GroupId(group.ed25519_public),
        method="store",
        namespace=2,
        now_ms=acc["now_ms"],
    )


if __name__ == "__main__":
    VECTORS.parent.mkdir(exist_ok=True)
    VECTORS.write_text(json.dumps(make_vectors(), indent=2) + "\n")
    print(f"wrote {VECTORS}")
