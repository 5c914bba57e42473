"""The storage RPC wire format (veil.onion.rpc): schemas, signatures, replies, limits."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veil.onion import crypto, rpc
from veil.onion.cbor import decode, encode
from veil.onion.errors import (
    BadTtl,
    ClockSkew,
    DecodeError,
    InvalidTtl,
    ProtocolError,
    RateLimited,
    SchemaError,
    TooLarge,
    Unauthorized,
    UnsignedRequest,
    VeilError,
)
from veil.onion.keys import Account

NOW = 1_700_000_000_000
DAY = rpc.DAY_MS
ALICE = Account(bytes([1]) * 32)
BOB = Account(bytes([2]) * 32)


def params_of(request: bytes) -> dict[str, Any]:
    return decode(request, max_size=rpc.MAX_REQUEST_SIZE)["params"]  # type: ignore[no-any-return]


def raw(method: str, params: dict[str, Any]) -> bytes:
    """A request encoded without the builders' checks, as an attacker would send it."""
    return encode({"method": method, "params": params})


# --- good requests -------------------------------------------------------------------------


def test_builders_make_requests_that_decode_typed_and_verify() -> None:
    store = rpc.decode_request(rpc.make_store(BOB.id, b"hi", 60_000, now_ms=NOW))
    assert isinstance(store, rpc.StoreRequest)
    assert (store.account, store.namespace, store.data, store.ttl_ms, store.auth) == (
        BOB.id,
        0,
        b"hi",
        60_000,
        None,  # an inbox store does not name its sender
    )
    assert store.hash == rpc.message_hash(BOB.id, 0, b"hi")

    own = rpc.decode_request(rpc.make_store(ALICE, b"note", 30 * DAY, namespace=7, now_ms=NOW))
    assert isinstance(own, rpc.StoreRequest) and own.auth is not None
    assert own.auth.timestamp_ms == NOW and own.auth.pubkey_ed25519 == ALICE.ed25519_public

    retrieve = rpc.decode_request(
        rpc.make_retrieve(ALICE, now_ms=NOW, last_hash=bytes(32), limit=10, wait_s=30)
    )
    assert isinstance(retrieve, rpc.RetrieveRequest)
    assert (retrieve.last_hash, retrieve.limit, retrieve.wait_s) == (bytes(32), 10, 30)
    defaults = rpc.decode_request(rpc.make_retrieve(ALICE, now_ms=NOW))
    assert isinstance(defaults, rpc.RetrieveRequest)
    assert (defaults.last_hash, defaults.limit, defaults.wait_s) == (None, 256, 0)

    public = rpc.decode_request(rpc.make_retrieve(str(ALICE.id), namespace=-1, now_ms=NOW))
    assert isinstance(public, rpc.RetrieveRequest) and public.auth is None

    delete = rpc.decode_request(rpc.make_delete(ALICE, [b"a" * 32, b"b" * 32], now_ms=NOW))
    assert isinstance(delete, rpc.DeleteRequest) and delete.hashes == (b"a" * 32, b"b" * 32)
    wipe = rpc.decode_request(rpc.make_delete_all(ALICE, namespace=None, now_ms=NOW))
    assert isinstance(wipe, rpc.DeleteAllRequest) and wipe.namespace is None
    expire = rpc.decode_request(rpc.make_expire(ALICE, [b"a" * 32], NOW + 5000, now_ms=NOW))
    assert isinstance(expire, rpc.ExpireRequest) and expire.expiry_ms == NOW + 5000
    assert isinstance(rpc.decode_request(rpc.make_info()), rpc.InfoRequest)
    swarm = rpc.decode_request(rpc.make_get_swarm(ALICE.id))
    assert isinstance(swarm, rpc.GetSwarmRequest) and swarm.account == ALICE.id

    for req in (store, own, retrieve, public, delete, wipe, expire):
        rpc.verify_request(req, NOW)


def test_limits_at_their_edges_are_accepted() -> None:
    rpc.make_store(BOB.id, b"x" * rpc.MAX_BODY, rpc.MIN_TTL_MS, now_ms=NOW)
    rpc.make_store(BOB.id, b"x", rpc.MAX_TTL_MS, now_ms=NOW)
    rpc.make_store(ALICE, b"x", rpc.MAX_TTL_PRIVATE_MS, namespace=32767, now_ms=NOW)
    rpc.make_store(ALICE, b"x", rpc.MAX_TTL_PRIVATE_MS, namespace=-32768, now_ms=NOW)
    rpc.make_delete(ALICE, [bytes([i]) * 32 for i in range(rpc.MAX_HASHES)], now_ms=NOW)
    rpc.make_retrieve(ALICE, now_ms=NOW, limit=1)
    rpc.make_retrieve(ALICE, now_ms=NOW, limit=rpc.RETRIEVE_MAX_LIMIT)
    biggest = rpc.make_store(ALICE, b"x" * rpc.MAX_BODY, rpc.MIN_TTL_MS, namespace=9, now_ms=NOW)
    assert len(biggest) <= rpc.MAX_REQUEST_SIZE


# --- bad requests: each refused with a SchemaError naming the field ----------------------------

_GOOD_STORE = params_of(rpc.make_store(ALICE, b"data", 60_000, namespace=3, now_ms=NOW))
_GOOD_RETRIEVE = params_of(rpc.make_retrieve(ALICE, now_ms=NOW))
_GOOD_DELETE = params_of(rpc.make_delete(ALICE, [bytes(32)], now_ms=NOW))
_GOOD_EXPIRE = params_of(rpc.make_expire(ALICE, [bytes(32)], NOW, now_ms=NOW))
_DROP = object()

BAD_FIELDS = [
    # (method, good params, field, bad value, path named in the error)
    ("store", _GOOD_STORE, "data", b"x" * (rpc.MAX_BODY + 1), "store.params.data"),
    ("store", _GOOD_STORE, "data", b"", "store.params.data"),
    ("store", _GOOD_STORE, "data", "text", "store.params.data"),
    ("store", _GOOD_STORE, "ttl", rpc.MIN_TTL_MS - 1, "store.params.ttl"),
    ("store", _GOOD_STORE, "ttl", rpc.MAX_TTL_PRIVATE_MS + 1, "store.params.ttl"),
    ("store", _GOOD_STORE, "ttl", _DROP, "store.params.ttl"),
    ("store", _GOOD_STORE, "namespace", 32768, "store.params.namespace"),
    ("store", _GOOD_STORE, "namespace", -32769, "store.params.namespace"),
    ("store", _GOOD_STORE, "namespace", True, "store.params.namespace"),
    ("store", _GOOD_STORE, "namespace", None, "store.params.namespace"),
    ("store", _GOOD_STORE, "pubkey", "03" + str(ALICE.id)[2:], "store.params.pubkey"),
    ("store", _GOOD_STORE, "pubkey", str(ALICE.id)[:-1], "store.params.pubkey"),
    ("store", _GOOD_STORE, "pubkey", "05" + "zz" * 32, "store.params.pubkey"),
    ("store", _GOOD_STORE, "pubkey", "05" + "00" * 32, "store.params.pubkey"),  # low order
    ("store", _GOOD_STORE, "pubkey", ALICE.id.x25519_public, "store.params.pubkey"),
    ("store", _GOOD_STORE, "signature", b"s" * 63, "store.params.signature"),
    ("store", _GOOD_STORE, "pubkey_ed25519", _DROP, "store.params.pubkey_ed25519"),
    ("store", _GOOD_STORE, "timestamp", -1, "store.params.timestamp"),
    ("store", _GOOD_STORE, "sender", "someone", "store.params"),  # unknown field
    ("retrieve", _GOOD_RETRIEVE, "limit", 0, "retrieve.params.limit"),
    ("retrieve", _GOOD_RETRIEVE, "limit", rpc.RETRIEVE_MAX_LIMIT + 1, "retrieve.params.limit"),
    ("retrieve", _GOOD_RETRIEVE, "wait", rpc.MAX_WAIT_S + 1, "retrieve.params.wait"),
    ("retrieve", _GOOD_RETRIEVE, "wait", -1, "retrieve.params.wait"),
    ("retrieve", _GOOD_RETRIEVE, "last_hash", b"h" * 31, "retrieve.params.last_hash"),
    ("retrieve", _GOOD_RETRIEVE, "namespace", _DROP, "retrieve.params.namespace"),
    ("delete", _GOOD_DELETE, "hashes", [], "delete.params.hashes"),
    ("delete", _GOOD_DELETE, "hashes", [bytes(32)] * 101, "delete.params.hashes"),
    ("delete", _GOOD_DELETE, "hashes", [bytes(31)], "delete.params.hashes[0]"),
    ("delete", _GOOD_DELETE, "hashes", bytes(32), "delete.params.hashes"),
    ("expire", _GOOD_EXPIRE, "expiry", -5, "expire.params.expiry"),
    ("expire", _GOOD_EXPIRE, "expiry", "soon", "expire.params.expiry"),
]


@pytest.mark.parametrize(
    ("method", "good", "name", "value", "path"),
    BAD_FIELDS,
    ids=[f"{m}.{n}-{i}" for i, (m, _, n, _, _) in enumerate(BAD_FIELDS)],
)
def test_each_bad_field_is_refused_by_name(
    method: str, good: dict[str, Any], name: str, value: object, path: str
) -> None:
    params = dict(good)
    if value is _DROP:
        del params[name]
    else:
        params[name] = value
    with pytest.raises(SchemaError) as info:
        rpc.decode_request(raw(method, params))
    assert str(info.value).startswith(path), str(info.value)


def test_inbox_ttl_is_capped_at_14_days_and_private_at_30() -> None:
    inbox = dict(params_of(rpc.make_store(BOB.id, b"x", 60_000, now_ms=NOW)))
    inbox["ttl"] = rpc.MAX_TTL_MS + 1
    with pytest.raises(SchemaError, match=r"^store\.params\.ttl"):
        rpc.decode_request(raw("store", inbox))
    with pytest.raises(InvalidTtl, match=r"^ttl_ms"):
        rpc.make_store(BOB.id, b"x", rpc.MAX_TTL_MS + 1, now_ms=NOW)
    rpc.make_store(ALICE, b"x", rpc.MAX_TTL_MS + 1, namespace=1, now_ms=NOW)


@pytest.mark.parametrize(
    ("namespace", "ttl"),
    [
        (0, rpc.MIN_TTL_MS - 1),
        (0, rpc.MAX_TTL_MS + 1),  # within the schema's range, over the inbox's limit
        (3, rpc.MAX_TTL_PRIVATE_MS + 1),
        (3, "60000"),
        (3, _DROP),
    ],
)
def test_a_bad_ttl_from_the_wire_is_a_typed_protocol_error(namespace: int, ttl: object) -> None:
    params = dict(_GOOD_STORE, namespace=namespace)
    if ttl is _DROP:
        del params["ttl"]
    else:
        params["ttl"] = ttl
    with pytest.raises(BadTtl, match=r"^store\.params\.ttl") as info:
        rpc.decode_request(raw("store", params))
    assert isinstance(info.value, SchemaError) and info.value.status == "bad_request"


@pytest.mark.parametrize(
    ("namespace", "ttl_ms"),
    [(0, rpc.MIN_TTL_MS - 1), (0, rpc.MAX_TTL_MS + 1), (3, rpc.MAX_TTL_PRIVATE_MS + 1), (3, 1.5)],
)
def test_a_bad_ttl_from_a_caller_is_a_local_value_error(namespace: int, ttl_ms: Any) -> None:
    to = ALICE if namespace else BOB.id
    with pytest.raises(InvalidTtl, match=r"^ttl_ms") as info:
        rpc.make_store(to, b"x", ttl_ms, namespace=namespace, now_ms=NOW)
    # Local misuse: a ValueError too (as pynacl's errors are), and no wire status.
    assert isinstance(info.value, ValueError) and not isinstance(info.value, ProtocolError)
    assert not hasattr(info.value, "status")
    with pytest.raises(InvalidTtl):
        rpc.check_ttl_ms(ttl_ms, namespace)
    assert rpc.check_ttl_ms(rpc.max_ttl_ms(namespace), namespace) == rpc.max_ttl_ms(namespace)


def test_bad_envelopes_are_refused() -> None:
    with pytest.raises(SchemaError, match=r"^request\.method"):
        rpc.decode_request(raw("drop_tables", {}))
    with pytest.raises(SchemaError, match=r"^request\.params"):
        rpc.decode_request(encode({"method": "info", "params": [1]}))
    with pytest.raises(SchemaError, match=r"^request\.params"):
        rpc.decode_request(encode({"method": "info"}))
    with pytest.raises(SchemaError, match=r"^request"):
        rpc.decode_request(encode([1, 2]))
    with pytest.raises(SchemaError, match=r"^info\.params"):
        rpc.decode_request(raw("info", {"x": 1}))
    with pytest.raises(DecodeError):
        rpc.decode_request(b"\xa2")
    with pytest.raises(DecodeError):
        rpc.decode_request(encode({"method": "info", "params": {}}) + b"\x00")


def test_size_is_checked_before_parsing() -> None:
    # Not even well-formed CBOR: the size alone refuses it.
    with pytest.raises(TooLarge):
        rpc.decode_request(b"\xff" * (rpc.MAX_REQUEST_SIZE + 1))


def test_builders_refuse_bad_values_before_signing() -> None:
    with pytest.raises(SchemaError, match=r"^expire\.params\.expiry"):
        rpc.make_expire(ALICE, [bytes(32)], -5, now_ms=NOW)
    with pytest.raises(InvalidTtl, match=r"^ttl_ms"):
        rpc.make_store(ALICE, b"x", -1, namespace=3, now_ms=NOW)
    with pytest.raises(SchemaError, match=r"^delete\.params\.hashes\[0\]"):
        rpc.make_delete(ALICE, [b"short"], now_ms=NOW)
    with pytest.raises(SchemaError, match=r"^retrieve\.params\.timestamp"):
        rpc.make_retrieve(ALICE, now_ms=-1)
    with pytest.raises(SchemaError, match=r"^store\.params\.data"):
        rpc.make_store(BOB.id, b"x" * (rpc.MAX_BODY + 1), 60_000, now_ms=NOW)


def test_builders_refuse_unsigned_private_requests() -> None:
    with pytest.raises(ValueError, match="namespace 3"):
        rpc.make_store(ALICE.id, b"x", 60_000, namespace=3, now_ms=NOW)
    with pytest.raises(ValueError, match="namespace 0"):
        rpc.make_retrieve(ALICE.id, now_ms=NOW)
    # Typed, and local (no wire status), as every error veil raises on purpose.
    with pytest.raises(UnsignedRequest) as info:
        rpc.make_retrieve(ALICE.id, now_ms=NOW, namespace=7)
    assert isinstance(info.value, VeilError) and not hasattr(info.value, "status")


# --- authentication --------------------------------------------------------------------------


def test_unsigned_requests_are_refused_where_a_signature_is_needed() -> None:
    unsigned_private_store = raw(
        "store",
        {"pubkey": str(ALICE.id), "namespace": 3, "data": b"x", "ttl": 60_000},
    )
    unsigned_inbox_read = raw("retrieve", {"pubkey": str(ALICE.id), "namespace": 0})
    unsigned_private_read = raw("retrieve", {"pubkey": str(ALICE.id), "namespace": 9})
    unsigned_delete = raw(
        "delete", {"pubkey": str(ALICE.id), "namespace": -4, "hashes": [bytes(32)]}
    )
    for data in (
        unsigned_private_store,
        unsigned_inbox_read,
        unsigned_private_read,
        unsigned_delete,
    ):
        with pytest.raises(Unauthorized):
            rpc.verify_request(rpc.decode_request(data), NOW)
    # Public-read namespaces are read unsigned; inbox stores are unsigned.
    rpc.verify_request(
        rpc.decode_request(raw("retrieve", {"pubkey": str(ALICE.id), "namespace": -4})), NOW
    )
    rpc.verify_request(rpc.decode_request(rpc.make_store(ALICE.id, b"x", 60_000, now_ms=NOW)), NOW)


def _with_auth(method: str, params: dict[str, Any], auth_from: bytes) -> rpc.Request:
    auth = {
        k: v
        for k, v in params_of(auth_from).items()
        if k in ("pubkey_ed25519", "timestamp", "signature")
    }
    return rpc.decode_request(raw(method, {**params, **auth}))


def test_a_signature_is_valid_for_one_method_namespace_and_account_only() -> None:
    retrieve = rpc.make_retrieve(ALICE, namespace=0, now_ms=NOW)
    rpc.verify_request(rpc.decode_request(retrieve), NOW)
    me = {"pubkey": str(ALICE.id), "namespace": 0}
    # The retrieve signature, moved onto a delete_all of the same namespace: refused.
    with pytest.raises(Unauthorized):
        rpc.verify_request(_with_auth("delete_all", me, retrieve), NOW)
    # ... onto a retrieve of another namespace: refused.
    with pytest.raises(Unauthorized):
        rpc.verify_request(_with_auth("retrieve", {**me, "namespace": 1}, retrieve), NOW)
    # ... onto a retrieve of another account: its key is not that account's.
    with pytest.raises(Unauthorized, match="not the key of the account"):
        rpc.verify_request(_with_auth("retrieve", {**me, "pubkey": str(BOB.id)}, retrieve), NOW)
    # A delete signature covers its hashes.
    delete = rpc.make_delete(ALICE, [b"a" * 32], now_ms=NOW)
    with pytest.raises(Unauthorized):
        rpc.verify_request(_with_auth("delete", {**me, "hashes": [b"b" * 32]}, delete), NOW)
    # A private store's signature covers its data and TTL.
    store = rpc.make_store(ALICE, b"one", 60_000, namespace=2, now_ms=NOW)
    good = params_of(store)
    with pytest.raises(Unauthorized):
        rpc.verify_request(rpc.decode_request(raw("store", {**good, "data": b"two"})), NOW)
    with pytest.raises(Unauthorized):
        rpc.verify_request(rpc.decode_request(raw("store", {**good, "ttl": 90_000})), NOW)
    # The same bytes signed under another domain are not a storage signature.
    message = rpc.signing_message("retrieve", ALICE.id, 0, NOW)
    forged = {**me, "pubkey_ed25519": ALICE.ed25519_public, "timestamp": NOW,
              "signature": ALICE.sign(b"other", message)}  # fmt: skip
    with pytest.raises(Unauthorized):
        rpc.verify_request(rpc.decode_request(raw("retrieve", forged)), NOW)
    ok = {**forged, "signature": crypto.sign(ALICE.ed25519_secret, rpc.DOMAIN, message)}
    rpc.verify_request(rpc.decode_request(raw("retrieve", ok)), NOW)


def test_a_signature_by_another_key_is_refused() -> None:
    params = params_of(rpc.make_retrieve(BOB, now_ms=NOW))
    params["pubkey"] = str(ALICE.id)
    params["pubkey_ed25519"] = ALICE.ed25519_public  # the right key, Bob's signature
    with pytest.raises(Unauthorized):
        rpc.verify_request(rpc.decode_request(raw("retrieve", params)), NOW)
    params["pubkey_ed25519"] = b"\x00" * 32  # not even a valid key
    with pytest.raises(Unauthorized):
        rpc.verify_request(rpc.decode_request(raw("retrieve", params)), NOW)


@pytest.mark.parametrize("offset", [-60_000, -1, 0, 1, 60_000])
def test_clock_skew_within_a_minute_is_accepted(offset: int) -> None:
    req = rpc.decode_request(rpc.make_delete_all(ALICE, namespace=1, now_ms=NOW + offset))
    rpc.verify_request(req, NOW)


@pytest.mark.parametrize("offset", [-60_001, 60_001, -DAY])
def test_clock_skew_beyond_a_minute_is_refused(offset: int) -> None:
    req = rpc.decode_request(rpc.make_delete_all(ALICE, namespace=1, now_ms=NOW + offset))
    with pytest.raises(ClockSkew):
        rpc.verify_request(req, NOW)
    rpc.verify_request(req, NOW, skew_ms=abs(offset))


# --- message hashes ----------------------------------------------------------------------------


def test_message_hash_is_the_hash_of_its_length_prefixed_fields() -> None:
    # message_hash joins the fields inline for speed; it must be the documented bytes.
    from veil.onion.rpc.canonical import MSG_HASH_PURPOSE, length_prefixed, namespace_bytes

    for namespace, data in [(0, b""), (-5, b"post"), (32767, bytes(range(256)))]:
        fields = length_prefixed(ALICE.id.x25519_public, namespace_bytes(namespace), data)
        expected = crypto.hash32(fields, MSG_HASH_PURPOSE)
        assert rpc.message_hash(ALICE.id, namespace, data) == expected


def test_message_hash_names_the_content_not_the_time() -> None:
    a = rpc.decode_request(rpc.make_store(BOB.id, b"same", 60_000, now_ms=NOW))
    b = rpc.decode_request(rpc.make_store(BOB.id, b"same", 99_000, now_ms=NOW + 5000))
    assert isinstance(a, rpc.StoreRequest) and isinstance(b, rpc.StoreRequest)
    assert a.hash == b.hash and len(a.hash) == 32
    others = {
        rpc.message_hash(ALICE.id, 0, b"same"),
        rpc.message_hash(BOB.id, 1, b"same"),
        rpc.message_hash(BOB.id, 0, b"other"),
    }
    assert a.hash not in others and len(others) == 3


# --- replies -------------------------------------------------------------------------------------


def test_replies_round_trip_and_carry_the_node_time() -> None:
    result = rpc.StoreResult(b"h" * 32, NOW + 1000, True)
    reply = rpc.decode_reply(rpc.ok_reply(NOW, result.to_wire()))
    assert reply.ok and reply.t_ms == NOW
    assert rpc.parse_result("store", reply.raise_for_status()) == result

    error = rpc.decode_reply(rpc.error_reply(NOW + 7, RateLimited("slow down")))
    assert (error.status, error.t_ms, error.error, error.result) == (
        "rate_limited",
        NOW + 7,
        "slow down",
        None,
    )
    with pytest.raises(RateLimited, match="slow down"):
        error.raise_for_status()
    skew = rpc.decode_reply(rpc.error_reply(NOW, ClockSkew("off")))
    with pytest.raises(ClockSkew):
        skew.raise_for_status()


def test_results_of_every_method_round_trip() -> None:
    results: dict[str, Any] = {
        "retrieve": rpc.RetrieveResult([rpc.Message(b"h" * 32, b"d", NOW, NOW + 1)], True),
        "delete": rpc.DeleteResult([b"h" * 32]),
        "delete_all": rpc.DeleteAllResult(12),
        "expire": rpc.ExpireResult([b"h" * 32], NOW + 10),
        "info": rpc.InfoResult.current("1.2.3"),
    }
    for method, result in results.items():
        wire = rpc.decode_reply(rpc.ok_reply(NOW, result.to_wire())).raise_for_status()
        assert rpc.parse_result(method, wire) == result
    with pytest.raises(SchemaError, match=r"retrieve\.result\.messages\[0\]\.hash"):
        rpc.parse_result(
            "retrieve",
            {
                "messages": [{"hash": b"short", "data": b"", "timestamp": 0, "expiry": 0}],
                "more": False,
            },
        )


def test_malformed_replies_are_refused() -> None:
    with pytest.raises(SchemaError, match=r"^reply\.t"):
        rpc.decode_reply(encode({"status": "ok", "result": {}}))
    with pytest.raises(SchemaError):
        rpc.decode_reply(encode({"status": "ok", "t": 1}))  # no result
    with pytest.raises(SchemaError):
        rpc.decode_reply(encode({"status": "not_found", "t": 1, "result": {}}))
    with pytest.raises(SchemaError, match=r"^reply\.status"):
        rpc.decode_reply(encode({"status": "fine", "t": 1, "result": {}}))
    with pytest.raises(TooLarge):
        rpc.decode_reply(b"\x00" * (rpc.MAX_REPLY_SIZE + 1))
    # A field from a later protocol version is kept, not refused.
    later = rpc.decode_reply(encode({"status": "wrong_swarm", "t": 1, "error": "no", "swarm": [1]}))
    assert later.extra == {"swarm": [1]}


def test_the_largest_retrieve_reply_fits_the_reply_limit() -> None:
    big_t = 2**63 - 1
    # Per-message overhead is within the allowance the store counts.
    for size in (0, 23, 24, 255, 256, 65_535, 65_536, rpc.MAX_BODY):
        wire = encode(rpc.Message(bytes(32), bytes(size), big_t, big_t).to_wire())
        assert len(wire) - size <= rpc.RETRIEVE_ITEM_OVERHEAD

    # Pages as the node fills them: within budget, or one message alone.
    def page(sizes: list[int]) -> bytes:
        msgs = [
            rpc.Message(bytes([i % 256]) * 32, bytes(s), big_t, big_t) for i, s in enumerate(sizes)
        ]
        return rpc.ok_reply(big_t, rpc.RetrieveResult(msgs, True).to_wire())

    per = rpc.RETRIEVE_ITEM_OVERHEAD
    fits = rpc.RETRIEVE_MAX_BYTES // rpc.RETRIEVE_MAX_LIMIT - per
    for sizes in (
        [rpc.MAX_BODY],
        [0] * rpc.RETRIEVE_MAX_LIMIT,
        [fits] * rpc.RETRIEVE_MAX_LIMIT,
        [rpc.MAX_BODY, rpc.RETRIEVE_MAX_BYTES - rpc.MAX_BODY - 2 * per],
    ):
        assert sum(s + per for s in sizes) <= rpc.RETRIEVE_MAX_BYTES or len(sizes) == 1
        reply = page(sizes)
        assert len(reply) <= rpc.MAX_REPLY_SIZE
        assert rpc.decode_reply(reply).ok


# --- hostile bytes -------------------------------------------------------------------------------

_VALID = [
    rpc.make_store(BOB.id, b"hello", 60_000, now_ms=NOW),
    rpc.make_store(ALICE, b"hello", 60_000, namespace=-3, now_ms=NOW),
    rpc.make_retrieve(ALICE, now_ms=NOW, last_hash=bytes(32), limit=3, wait_s=2),
    rpc.make_delete(ALICE, [bytes(32), b"x" * 32], now_ms=NOW),
    rpc.make_delete_all(ALICE, namespace=None, now_ms=NOW),
    rpc.make_expire(ALICE, [bytes(32)], NOW, now_ms=NOW),
    rpc.make_info(),
    rpc.make_get_swarm(ALICE.id),
]


def _decode_and_verify(data: bytes) -> None:
    try:
        req = rpc.decode_request(data)
        rpc.verify_request(req, NOW)
    except ProtocolError:
        pass  # typed, with a wire status: the node answers with it


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_typed_errors(data: bytes) -> None:
    _decode_and_verify(data)


@settings(max_examples=400)
@given(
    st.sampled_from(_VALID),
    st.lists(
        st.tuples(st.integers(0, 10**6), st.integers(0, 255), st.sampled_from("rid")),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_valid_requests_only_raise_typed_errors(
    base: bytes, edits: list[tuple[int, int, str]]
) -> None:
    data = bytearray(base)
    for where, byte, kind in edits:
        i = where % (len(data) + 1)
        if kind == "r" and i < len(data):
            data[i] = byte
        elif kind == "i":
            data.insert(i, byte)
        elif i < len(data):
            del data[i]
    _decode_and_verify(bytes(data))


_CBOR_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64 - 1)
    | st.binary(max_size=40)
    | st.text(max_size=70),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=400)
@given(st.sampled_from(_VALID), st.text(max_size=16), _CBOR_VALUES)
def test_mutated_fields_only_raise_schema_or_auth_errors(
    base: bytes, key: str, value: object
) -> None:
    obj = decode(base, max_size=rpc.MAX_REQUEST_SIZE)
    params = obj["params"]
    target = key if not params or key.startswith("new") else sorted(params)[len(key) % len(params)]
    params[target] = value
    with contextlib.suppress(SchemaError, Unauthorized, ClockSkew):
        rpc.verify_request(rpc.parse_request(obj), NOW)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_random_reply_bytes_only_raise_typed_errors(data: bytes) -> None:
    try:
        reply = rpc.decode_reply(data)
    except ProtocolError:
        return
    if not reply.ok:
        with pytest.raises(VeilError):
            reply.raise_for_status()


def test_a_groups_retrieve_signed_by_a_members_own_key_asks_the_nodes_reader() -> None:
    """verify_request decides: a group's retrieve signed by an account key with no chain
    passes only when the node's reader (its state of the session) says the account reads
    that namespace; anything else so signed is refused, and the signature still counts."""
    from veil.onion.capability import SessionKey
    from veil.onion.errors import Unauthorized
    from veil.onion.keys import GroupId

    group = GroupId(SessionKey.generate().ed25519_public)
    member = Account.generate()
    now = 1_767_225_600_000

    def request(method: str, extra: dict[str, Any], *, signer: Account = member) -> Any:
        params = {"pubkey": str(group), "namespace": 1, **extra}
        parsed = rpc.parse_request({"method": method, "params": dict(params)})
        message = rpc.signing_message(
            method, parsed.account, parsed.namespace, now, parsed.signed_extra()
        )
        params.update(pubkey_ed25519=member.ed25519_public, timestamp=now,
                      signature=signer.sign(rpc.DOMAIN, message))
        return rpc.parse_request({"method": method, "params": params})

    asked: list[tuple[Any, int]] = []

    def reader(answer: bool) -> Any:
        def reads(account: Any, namespace: int) -> bool:
            asked.append((account, namespace))
            return answer
        return reads

    retrieve = request("retrieve", {})
    assert rpc.verify_request(retrieve, now, group_reader=reader(True)) is None
    assert asked == [(member.id, 1)]
    for refusing in (None, reader(False)):
        with pytest.raises(Unauthorized):
            rpc.verify_request(retrieve, now, group_reader=refusing)
    # A store so signed is never a reader's question.
    asked.clear()
    store = request("store", {"data": b"x", "ttl": 60_000})
    with pytest.raises(Unauthorized):
        rpc.verify_request(store, now, group_reader=reader(True))
    assert asked == []
    # The signature must still be the account's.
    forged = request("retrieve", {}, signer=Account.generate())
    with pytest.raises(Unauthorized):
        rpc.verify_request(forged, now, group_reader=reader(True))
