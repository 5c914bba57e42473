"""veil.onion.rpc's hot paths are exact: the same results and the same errors as the general
code they stand in for.

What is compared: :func:`rpc.decode_request` (its byte-level fast path for unsigned
stores) against decode + :func:`rpc.parse_request` on valid, out-of-range, re-encoded and
mutated store requests and on arbitrary bytes; :func:`rpc.parse_request`'s envelope
shortcut against the envelope schema; :func:`rpc.store_reply` against
:func:`rpc.ok_reply`; :func:`rpc.message_hash` against its definition (the hash of the
length-prefixed fields).
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veil.onion import cbor, crypto, rpc
from veil.onion.errors import ProtocolError
from veil.onion.keys import Account

NOW = 1_700_000_000_000
ACCOUNTS = [Account(bytes([n]) * 32).id for n in (1, 2, 3)]


def general(data: bytes) -> rpc.Request | tuple[type[Exception], str]:
    """What decode_request gives without its fast path: the request, or the error."""
    try:
        return rpc.parse_request(cbor.decode(data, max_size=rpc.MAX_REQUEST_SIZE))
    except ProtocolError as exc:
        return type(exc), str(exc)


def decoded(data: bytes) -> rpc.Request | tuple[type[Exception], str]:
    try:
        return rpc.decode_request(data)
    except ProtocolError as exc:
        return type(exc), str(exc)


def check_same(data: bytes) -> rpc.StoreRequest | None:
    """decode_request(data) is what the general path gives; returns the fast path's answer."""
    fast = rpc._fast_unsigned_store(data)
    expected = general(data)
    if fast is not None:
        assert fast == expected  # only ever accepts what the general path accepts, as it does
    assert decoded(data) == expected
    return fast


# --- store requests, valid and not quite -------------------------------------------------

_PUBKEYS = (
    st.sampled_from([str(a) for a in ACCOUNTS])
    | st.sampled_from(
        [
            "05" + "00" * 32,  # hex, but not a valid key
            "05" + "zz" * 32,
            "06" + ACCOUNTS[0].x25519_public.hex(),
            str(ACCOUNTS[0])[:-1],
            str(ACCOUNTS[0]) + "0",
            "05" + "é" * 64,  # 66 characters, more bytes
        ]
    )
)
_EDGE_TTLS = [0, rpc.MIN_TTL_MS - 1, rpc.MIN_TTL_MS, rpc.MAX_TTL_MS, rpc.MAX_TTL_MS + 1]
_EDGE_TTLS += [rpc.MAX_TTL_PRIVATE_MS, rpc.MAX_TTL_PRIVATE_MS + 1, 2**32, 2**64 - 1]
_TTLS = st.sampled_from(_EDGE_TTLS) | st.integers(0, 2**34) | st.integers(-5, -1)
_NAMESPACES = st.sampled_from([0, 1, -1, 23, 24, -24, -25, 255, 256, 32767, -32768]) | (
    st.integers(-40_000, 40_000)
)
_BODIES = st.binary(max_size=300) | st.sampled_from(
    [bytes(rpc.MAX_BODY), bytes(rpc.MAX_BODY + 1), bytes(23), bytes(24), bytes(255), bytes(256)]
)
_EXTRA = st.dictionaries(
    st.sampled_from(["signature", "timestamp", "pubkey_ed25519", "limit", "zzz"]),
    st.integers(0, 10) | st.binary(max_size=4),
    max_size=2,
)


def _store_obj(pubkey: Any, namespace: Any, data: Any, ttl: Any, extra: dict[str, Any]) -> Any:
    return {
        "method": "store",
        "params": {"pubkey": pubkey, "namespace": namespace, "data": data, "ttl": ttl, **extra},
    }


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(_PUBKEYS, _NAMESPACES, _BODIES, _TTLS, _EXTRA)
def test_store_requests_decode_as_the_general_path_decodes_them(
    pubkey: str, namespace: int, data: bytes, ttl: int, extra: dict[str, Any]
) -> None:
    try:
        encoded = cbor.encode(_store_obj(pubkey, namespace, data, ttl, extra))
    except ValueError:  # an integer outside CBOR's range: nothing to decode
        return
    if len(encoded) > rpc.MAX_REQUEST_SIZE:
        return
    fast = check_same(encoded)
    valid = (
        pubkey in {str(a) for a in ACCOUNTS}
        and rpc.NAMESPACE_MIN <= namespace <= rpc.NAMESPACE_MAX
        and 1 <= len(data) <= rpc.MAX_BODY
        and rpc.MIN_TTL_MS <= ttl <= rpc.max_ttl_ms(namespace)
    )
    if valid and not extra:
        assert fast is not None  # the usual store takes the fast path


@settings(max_examples=300)
@given(st.sampled_from(ACCOUNTS), st.binary(min_size=1, max_size=200), _NAMESPACES)
def test_builders_requests_take_the_fast_path(account: Any, data: bytes, namespace: int) -> None:
    if not rpc.NAMESPACE_MIN <= namespace <= rpc.NAMESPACE_MAX or namespace != rpc.INBOX:
        namespace = rpc.INBOX
    request = rpc.make_store(account, data, rpc.DAY_MS, now_ms=NOW, namespace=namespace)
    fast = check_same(request)
    assert fast == rpc.StoreRequest(account, namespace, data, rpc.DAY_MS)
    # Signed stores, and every other method, take the general path, with the same result.
    owner = Account(bytes([9]) * 32)
    signed = rpc.make_store(owner, data, rpc.DAY_MS, now_ms=NOW, namespace=1)
    assert check_same(signed) is None
    assert check_same(rpc.make_retrieve(owner, now_ms=NOW)) is None


def test_longer_heads_than_needed_decode_the_same() -> None:
    # A client may encode a value with a longer head than needed; the general decoder
    # (not canonical for requests) takes it, and so must decode_request, with the same
    # result, whichever path it takes.
    base = rpc.make_store(ACCOUNTS[0], b"hi", rpc.DAY_MS, now_ms=NOW)
    ttl_head = cbor.encode(rpc.DAY_MS)
    assert ttl_head in base
    for longer in (b"\x1b" + rpc.DAY_MS.to_bytes(8, "big"),):
        req = check_same(base.replace(ttl_head, longer, 1))
        assert req is None
    body = b"\x42hi"
    for longer in (b"\x58\x02hi", b"\x59\x00\x02hi", b"\x5a\x00\x00\x00\x02hi"):
        assert check_same(base.replace(body, longer, 1)) == rpc.StoreRequest(
            ACCOUNTS[0], 0, b"hi", rpc.DAY_MS
        )
    ns = b"\x69namespace\x00"
    for longer in (b"\x69namespace\x18\x00", b"\x69namespace\x19\x00\x00"):
        assert check_same(base.replace(ns, longer, 1)) == rpc.StoreRequest(
            ACCOUNTS[0], 0, b"hi", rpc.DAY_MS
        )


_VALID = [
    rpc.make_store(ACCOUNTS[0], b"x", rpc.MIN_TTL_MS, now_ms=NOW),
    rpc.make_store(ACCOUNTS[1], bytes(300), rpc.MAX_TTL_MS, now_ms=NOW),
    rpc.make_store(ACCOUNTS[2], bytes(70_000), rpc.DAY_MS, now_ms=NOW),
]


@settings(max_examples=800)
@given(
    st.sampled_from(_VALID),
    st.lists(
        st.tuples(st.integers(0, 10**6), st.integers(0, 255), st.sampled_from("ridt")),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_store_requests_decode_as_the_general_path(
    base: bytes, edits: list[tuple[int, int, str]]
) -> None:
    data = bytearray(base)
    for where, byte, kind in edits:
        # Most edits land in the first 120 bytes, where the layout's heads and keys are.
        i = where % min(len(data) + 1, 120) if where % 4 else where % (len(data) + 1)
        if kind == "r" and i < len(data):
            data[i] = byte
        elif kind == "i":
            data.insert(i, byte)
        elif kind == "t":
            del data[i:]
        elif i < len(data):
            del data[i]
    check_same(bytes(data))


@settings(max_examples=200)
@given(st.sampled_from(_VALID), st.binary(min_size=1, max_size=8), st.integers(0, 3))
def test_cut_or_extended_store_requests_decode_as_the_general_path(
    base: bytes, extra: bytes, cut: int
) -> None:
    assert check_same(base + extra) is None  # trailing bytes: refused by the general path
    assert check_same(base[: len(base) - 1 - cut]) is None  # truncated


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_random_bytes_decode_as_the_general_path(data: bytes) -> None:
    check_same(rpc._FAST_STORE_HEAD + data)
    check_same(data)


def test_over_the_size_limit_is_too_large_before_anything_else() -> None:
    big = rpc.make_store(ACCOUNTS[0], bytes(rpc.MAX_BODY), rpc.DAY_MS, now_ms=NOW)
    big += bytes(rpc.MAX_REQUEST_SIZE - len(big) + 1)
    assert decoded(big)[0].__name__ == "TooLarge"  # type: ignore[index, union-attr]


# --- the envelope shortcut -----------------------------------------------------------------

_ENVELOPE_VALUES = st.none() | st.integers(-3, 3) | st.text(max_size=12) | st.binary(max_size=4)
_ENVELOPE_VALUES |= st.sampled_from(sorted(rpc.METHODS)) | st.just({}) | st.just([])


@settings(max_examples=500)
@given(
    st.dictionaries(st.sampled_from(["method", "params", "other", 1]), _ENVELOPE_VALUES, max_size=3)
    | _ENVELOPE_VALUES
)
def test_envelopes_are_refused_as_the_envelope_schema_refuses_them(obj: Any) -> None:
    try:
        rpc._ENVELOPE.check(obj)
    except ProtocolError as exc:
        expected: Any = (type(exc), str(exc))
    else:
        expected = None
    try:
        rpc.parse_request(obj)
    except ProtocolError as exc:
        if expected is not None:
            assert (type(exc), str(exc)) == expected
    else:
        assert expected is None


# --- replies and hashes --------------------------------------------------------------------


def _reply_or_error(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except (ValueError, TypeError) as exc:
        return type(exc)


@settings(max_examples=500)
@given(
    st.integers(-1, 2**64) | st.sampled_from([0, NOW, 2**63 - 1, 2**63]),
    st.binary(min_size=30, max_size=34),
    st.integers(-(2**64) - 1, 2**64) | st.sampled_from([0, 23, 24, 2**32, 2**64 - 1]),
    st.booleans(),
)
def test_store_reply_is_ok_reply(t: int, hash: bytes, expiry: int, created: bool) -> None:
    result = rpc.StoreResult(hash, expiry, created)
    fast = _reply_or_error(rpc.store_reply, t, result)
    assert fast == _reply_or_error(rpc.ok_reply, t, result.to_wire())
    if isinstance(fast, bytes):
        reply = rpc.decode_reply(fast)
        assert (reply.status, reply.t_ms) == ("ok", t)
        if len(hash) == 32 and expiry >= 0:  # a result a node can give: it reads back
            assert rpc.StoreResult.from_wire(reply.raise_for_status()) == result


@settings(max_examples=300)
@given(st.sampled_from(ACCOUNTS), st.integers(rpc.NAMESPACE_MIN, rpc.NAMESPACE_MAX), st.binary())
def test_message_hash_is_the_hash_of_the_length_prefixed_fields(
    account: Any, namespace: int, data: bytes
) -> None:
    fields = b"".join(
        len(p).to_bytes(4, "big") + p
        for p in (account.x25519_public, namespace.to_bytes(2, "big", signed=True), data)
    )
    assert rpc.message_hash(account, namespace, data) == crypto.hash32(fields, b"veil/msg-hash")
