"""veil.onion.cbor: strict decoding of hostile bytes, deterministic encoding, schemas."""

from __future__ import annotations

import tracemalloc
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veil.onion import cbor
from veil.onion.cbor import Field, Schema
from veil.onion.errors import DecodeError, ProtocolError, SchemaError, TooLarge

BIG = 1 << 20  # a max_size that does not get in the way


def dec(data: bytes, **kwargs: Any) -> Any:
    return cbor.decode(data, max_size=BIG, **kwargs)


# --- the subset, as hypothesis strategies ------------------------------------------------

ints = st.integers(min_value=-(2**64), max_value=2**64 - 1)
scalars = st.one_of(st.none(), st.booleans(), ints, st.binary(max_size=40), st.text(max_size=20))
keys = st.one_of(ints, st.text(max_size=30))


def values(max_leaves: int = 25) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=6),
            st.dictionaries(keys, children, max_size=6),
        ),
        max_leaves=max_leaves,
    )


def depth_of(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    return 0


# --- round trips and interoperability ----------------------------------------------------


@given(values())
def test_round_trip(value: Any) -> None:
    encoded = cbor.encode(value)
    assert cbor.decode(encoded, max_size=len(encoded), max_depth=cbor.MAX_DEPTH_LIMIT) == value


@given(values())
def test_encoding_is_canonical_and_read_by_cbor2(value: Any) -> None:
    encoded = cbor.encode(value)
    # What we write passes our own canonical check, and an independent decoder agrees.
    assert dec(encoded, canonical=True, max_depth=cbor.MAX_DEPTH_LIMIT) == value
    assert cbor2.loads(encoded) == value


@given(values())
def test_reads_what_cbor2_writes(value: Any) -> None:
    # cbor2 orders map keys differently (length-first); the non-canonical mode reads it.
    assert dec(cbor2.dumps(value), max_depth=cbor.MAX_DEPTH_LIMIT) == value


def test_tuples_encode_as_arrays_and_bytes_likes_as_byte_strings() -> None:
    assert cbor.encode((1, 2)) == cbor.encode([1, 2])
    assert cbor.encode(bytearray(b"ab")) == cbor.encode(memoryview(b"ab")) == cbor.encode(b"ab")


# RFC 8949 Appendix A examples (the subset's part of them): value, hex.
RFC_EXAMPLES: list[tuple[Any, str]] = [
    (0, "00"),
    (1, "01"),
    (10, "0a"),
    (23, "17"),
    (24, "1818"),
    (25, "1819"),
    (100, "1864"),
    (1000, "1903e8"),
    (1000000, "1a000f4240"),
    (1000000000000, "1b000000e8d4a51000"),
    (18446744073709551615, "1bffffffffffffffff"),
    (-18446744073709551616, "3bffffffffffffffff"),
    (-1, "20"),
    (-10, "29"),
    (-100, "3863"),
    (-1000, "3903e7"),
    (False, "f4"),
    (True, "f5"),
    (None, "f6"),
    (b"", "40"),
    (b"\x01\x02\x03\x04", "4401020304"),
    ("", "60"),
    ("a", "6161"),
    ("IETF", "6449455446"),
    ('"\\', "62225c"),
    ("\u00fc", "62c3bc"),
    ("\u6c34", "63e6b0b4"),
    ("\U00010151", "64f0908591"),
    ([], "80"),
    ([1, 2, 3], "83010203"),
    ([1, [2, 3], [4, 5]], "8301820203820405"),
    (list(range(1, 26)), "98190102030405060708090a0b0c0d0e0f101112131415161718181819"),
    ({}, "a0"),
    ({1: 2, 3: 4}, "a201020304"),
    ({"a": 1, "b": [2, 3]}, "a26161016162820203"),
    (["a", {"b": "c"}], "826161a161626163"),
    (
        {"a": "A", "b": "B", "c": "C", "d": "D", "e": "E"},
        "a56161614161626142616361436164614461656145",
    ),
]


@pytest.mark.parametrize(("value", "hex_"), RFC_EXAMPLES)
def test_rfc8949_examples(value: Any, hex_: str) -> None:
    assert cbor.encode(value).hex() == hex_
    assert dec(bytes.fromhex(hex_), canonical=True) == value


def test_map_keys_in_bytewise_order_of_their_encoding() -> None:
    # RFC 8949 §4.2.1's example order (restricted to int and text keys):
    # 10, 100, -1, "z", "aa".
    value = {"aa": 0, "z": 0, -1: 0, 100: 0, 10: 0}
    assert cbor.encode(value).hex() == "a5" + "0a00" + "186400" + "2000" + "617a00" + "62616100"
    # Length-first order (RFC 7049; cbor2's canonical=True) puts -1 before 100 instead.
    assert cbor2.dumps(value, canonical=True).hex().startswith("a50a002000")
    with pytest.raises(DecodeError, match="non-canonical"):
        dec(cbor2.dumps(value, canonical=True), canonical=True)
    # Insertion order does not matter.
    assert cbor.encode(dict(reversed(list(value.items())))) == cbor.encode(value)
    # Long text keys sort by their head first: a 24-byte key (head 0x78 0x18) after a short one.
    long_key = "a" * 24
    assert list(dec(cbor.encode({long_key: 1, "b": 2}))) == ["b", long_key]


def test_encode_refuses_what_is_outside_the_subset() -> None:
    for bad in (1.5, {1, 2}, object(), {b"k": 1}, {True: 1}, {None: 1}, {(1,): 2}, [1.0]):
        with pytest.raises(TypeError):
            cbor.encode(bad)
    for big in (2**64, -(2**64) - 1):
        with pytest.raises(ValueError):
            cbor.encode(big)
    with pytest.raises(ValueError):
        cbor.encode("\ud800")  # a lone surrogate has no UTF-8 encoding
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError):
        cbor.encode(loop)


# --- size limit first --------------------------------------------------------------------


def test_size_limit_is_checked_before_parsing() -> None:
    assert cbor.decode(b"\x00" * 1, max_size=1) == 0
    # Even garbage that would be a DecodeError is refused for its size first.
    with pytest.raises(TooLarge):
        cbor.decode(b"\xff" * 11, max_size=10)
    with pytest.raises(TooLarge):
        cbor.decode(memoryview(cbor.encode(b"x" * 100)), max_size=50)
    with pytest.raises(TooLarge):
        Schema("s", {}).decode(b"\xa0" * 3, max_size=2)


def test_bytes_likes_are_accepted_and_other_types_are_misuse() -> None:
    assert cbor.decode(bytearray(b"\x01"), max_size=1) == 1
    assert cbor.decode(memoryview(b"\x41\x00"), max_size=2) == b"\x00"
    with pytest.raises(TypeError):
        cbor.decode("00", max_size=10)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        cbor.decode(b"\x00", max_size=1, max_depth=cbor.MAX_DEPTH_LIMIT + 1)


# --- every rejection, with its typed error -----------------------------------------------

REJECTED: dict[str, str] = {
    "empty input": "",
    "trailing byte": "0000",
    "trailing item": "a0a0",
    "truncated uint8 head": "18",
    "truncated uint64 head": "1b0000",
    "truncated bytes": "4301",
    "truncated text": "63616263"[:-2],
    "truncated array": "820102"[:-2],
    "truncated map value": "a16161",
    "truncated map key": "a2616101",
    "indefinite bytes": "5f4101ff",
    "indefinite text": "7f6161ff",
    "indefinite array": "9f01ff",
    "indefinite map": "bf616101ff",
    "break outside indefinite": "ff",
    "indefinite uint": "1f",
    "indefinite nint": "3f",
    "reserved ai 28": "1c",
    "reserved ai 29 bytes": "5d",
    "reserved ai 30 array": "9e",
    "reserved simple ai 28": "fc",
    "tag 0 date": "c074323031332d30332d32315432303a30343a30305a",
    "tag 1 epoch": "c11a514b67b0",
    "bignum tag 2": "c249010000000000000000",
    "negative bignum tag 3": "c349010000000000000000",
    "tag with 1-byte number": "d82076687474703a2f2f7777772e6578616d706c652e636f6d",
    "shared ref tag 28": "d81c80",
    "half float": "f90000",
    "single float": "fa47c35000",
    "double float": "fb3ff199999999999a",
    "float infinity": "f97c00",
    "float nan": "f97e00",
    "undefined": "f7",
    "simple value 16": "f0",
    "simple value 255": "f8ff",
    "simple value 32 (1-byte form)": "f820",
    "bytes map key": "a14100f6",
    "array map key": "a180f6",
    "map map key": "a1a0f6",
    "bool map key": "a1f501",
    "null map key": "a1f601",
    "tagged map key": "a1c001f6",
    "float map key": "a1f93c0001",
    "duplicate text key": "a2616101616102",
    "duplicate int key": "a2010101f6",
    "duplicate int key, one non-minimal": "a201001801f6",
    "duplicate negative key": "a2200020f6",
    "invalid utf-8": "62c328",
    "utf-8 surrogate": "63eda080",
    "overlong utf-8": "62c0af",
    "invalid utf-8 in a key": "a162c32801",
    "tag inside an array": "8201c001",
    "float deep inside": "81818181f93c00",
}


@pytest.mark.parametrize("hex_", REJECTED.values(), ids=REJECTED.keys())
def test_rejected_with_decode_error(hex_: str) -> None:
    with pytest.raises(DecodeError) as info:
        dec(bytes.fromhex(hex_))
    assert str(info.value)  # every refusal says what is wrong


def test_messages_say_what_is_wrong() -> None:
    cases = {
        "5f4101ff": "indefinite",
        "c11a514b67b0": "tag",
        "f93c00": "float",
        "f7": "undefined",
        "a2616101616102": "duplicate",
        "a14100f6": "key",
        "0000": "trailing",
        "62c328": "UTF-8",
        "5bffffffffffffffff00": "declares",
    }
    for hex_, word in cases.items():
        with pytest.raises(DecodeError, match=word):
            dec(bytes.fromhex(hex_))


def test_integers_at_the_64_bit_edges() -> None:
    assert dec(bytes.fromhex("1bffffffffffffffff")) == 2**64 - 1
    assert dec(bytes.fromhex("3bffffffffffffffff")) == -(2**64)
    assert dec(bytes.fromhex("3b0000000000000000")) == -1  # non-minimal, fine unless canonical


def test_int_and_text_keys_that_look_alike_are_distinct() -> None:
    assert dec(bytes.fromhex("a2016161616101")) == {1: "a", "a": 1}


# --- canonical mode ----------------------------------------------------------------------

NON_CANONICAL = {
    "1 in a 1-byte head": "1801",
    "23 in a 1-byte head": "1817",
    "255 in a 2-byte head": "1900ff",
    "65535 in a 4-byte head": "1a0000ffff",
    "2**32-1 in an 8-byte head": "1b00000000ffffffff",
    "-1 in a 1-byte head": "3800",
    "bytes length in a long head": "580100",
    "array count in a long head": "980100",
    "keys out of order": "a2616201616101",
    "int key after text key": "a2616101010f",
    "short key after long key": "a2626161016162f6",
}


@pytest.mark.parametrize("hex_", NON_CANONICAL.values(), ids=NON_CANONICAL.keys())
def test_canonical_mode_refuses_what_encode_would_not_write(hex_: str) -> None:
    data = bytes.fromhex(hex_)
    value = dec(data)  # well-formed: the default mode reads it
    assert cbor.encode(value) != data
    with pytest.raises(DecodeError, match="non-canonical"):
        dec(data, canonical=True)


# --- depth and declared lengths: no crash, no allocation ---------------------------------


def nested_arrays(depth: int) -> bytes:
    return b"\x81" * depth + b"\x00"


def test_nesting_limit_default_and_configurable() -> None:
    assert depth_of(dec(nested_arrays(cbor.DEFAULT_MAX_DEPTH - 1))) == cbor.DEFAULT_MAX_DEPTH - 1
    assert dec(b"\x81" * (cbor.DEFAULT_MAX_DEPTH - 1) + b"\x80") is not None  # 16 levels
    with pytest.raises(DecodeError, match="nesting"):
        dec(b"\x81" * cbor.DEFAULT_MAX_DEPTH + b"\x80")  # 17 levels
    assert dec(b"\x81\x80", max_depth=2) == [[]]
    with pytest.raises(DecodeError, match="nesting"):
        dec(b"\x81\x81\x80", max_depth=2)
    with pytest.raises(DecodeError, match="nesting"):
        dec(b"\xa1\x61a\xa0", max_depth=1)  # maps count too
    assert dec(b"\x05", max_depth=0) == 5  # a scalar has no depth
    assert depth_of(dec(nested_arrays(150), max_depth=cbor.MAX_DEPTH_LIMIT)) == 150


@pytest.mark.parametrize(
    "data",
    [
        nested_arrays(100_000),
        b"\x9f" * 100_000,  # indefinite arrays, nested
        b"\xa1\x61a" * 100_000 + b"\x00",  # nested maps
        b"\x81" * 100_000,  # and truncated
    ],
    ids=["arrays", "indefinite", "maps", "truncated"],
)
def test_deep_nesting_refused_cleanly(data: bytes) -> None:
    with pytest.raises(DecodeError):
        dec(data)


@pytest.mark.parametrize(
    "hex_",
    [
        "5bffffffffffffffff00",  # bytes of 2**64-1
        "7bffffffffffffffff00",  # text of 2**64-1
        "5a7fffffff00",  # bytes of 2**31-1
        "9bffffffffffffffff00",  # array of 2**64-1 items
        "9a7fffffff" + "00" * 16,  # array of 2**31-1 items, a few present
        "bbffffffffffffffff0000",  # map of 2**64-1 entries
        "ba00100000" + "0000" * 10,  # map of 2**20 entries, 10 present
        "8181819bffffffffffffffff",  # a huge count deep inside
    ],
)
def test_huge_declared_length_refused_without_allocating(hex_: str) -> None:
    data = bytes.fromhex(hex_)
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError):
            dec(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


# --- hostile input: only typed errors ----------------------------------------------------


def decode_or_typed_error(data: bytes, **kwargs: Any) -> Any:
    """Decode; a DecodeError/TooLarge is fine, any other exception fails the test."""
    try:
        return cbor.decode(data, max_size=kwargs.pop("max_size", BIG), **kwargs)
    except (DecodeError, TooLarge):
        return None


@settings(max_examples=500)
@given(st.binary(max_size=200), st.booleans())
def test_arbitrary_bytes_give_only_typed_errors(data: bytes, canonical: bool) -> None:
    result = decode_or_typed_error(data, canonical=canonical)
    if result is not None:
        # Whatever decodes is inside the subset: it re-encodes and decodes to itself.
        assert dec(cbor.encode(result)) == result


@given(st.binary(max_size=300), st.integers(min_value=0, max_value=300))
def test_size_limit_holds_for_arbitrary_bytes(data: bytes, limit: int) -> None:
    try:
        cbor.decode(data, max_size=limit)
    except TooLarge:
        assert len(data) > limit
    except DecodeError:
        assert len(data) <= limit


@st.composite
def mutated_encodings(draw: st.DrawFn) -> bytes:
    data = bytearray(cbor.encode(draw(values(max_leaves=15))))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = draw(st.integers(min_value=0, max_value=max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif op == "set" and data:
            data[pos] = draw(st.integers(min_value=0, max_value=255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=9))
        elif op == "delete" and data:
            del data[pos]
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_encodings(), st.booleans())
def test_mutated_encodings_give_only_typed_errors(data: bytes, canonical: bool) -> None:
    result = decode_or_typed_error(data, canonical=canonical)
    if result is not None:
        assert dec(cbor.encode(result)) == result


@given(st.sampled_from(sorted(REJECTED.values())), values(max_leaves=5))
def test_bad_item_is_refused_anywhere_in_a_document(hex_: str, value: Any) -> None:
    # A refused item stays refused wherever it sits: inside an array or a map value.
    bad = bytes.fromhex(hex_)
    if not bad or hex_ in (REJECTED["trailing byte"], REJECTED["trailing item"]):
        return  # these two are only wrong at the top level
    good = cbor.encode(value)
    for wrapped in (b"\x82" + good + bad, b"\xa2\x61a" + good + b"\x61b" + bad):
        with pytest.raises(DecodeError):
            dec(wrapped)


# --- schemas -----------------------------------------------------------------------------

KEY = Schema("key", {"id": Field(bytes, size=32), "label": Field(str, required=False)})
REQUEST = Schema(
    "store",
    {
        "method": Field(str, choices={"store", "retrieve"}),
        "namespace": Field(int, min=-32768, max=32767),
        "pubkey": Field(bytes, size=32),
        "data": Field(bytes, max_len=100),
        "tag": Field(str, min_len=1, max_len=8, required=False),
        "wait": Field(bool, required=False),
        "last_hash": Field(str, nullable=True, required=False),
        "keys": Field(list, items=Field(dict, schema=KEY), max_len=4, required=False),
        "hashes": Field(list, items=Field(bytes, size=4), required=False),
        "meta": Field(dict, required=False),
    },
)


def good_request(**changes: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "method": "store",
        "namespace": 0,
        "pubkey": b"k" * 32,
        "data": b"hello",
    }
    request.update(changes)
    return {k: v for k, v in request.items() if v is not _ABSENT}


_ABSENT = object()


def test_schema_accepts_and_returns_the_map() -> None:
    full = good_request(
        tag="t",
        wait=True,
        last_hash=None,
        keys=[{"id": b"i" * 32}, {"id": b"j" * 32, "label": "x"}],
        hashes=[b"abcd"],
        meta={1: [2, {"x": None}]},
    )
    assert REQUEST.check(full) is full
    assert REQUEST.decode(cbor.encode(full), max_size=1000) == full
    assert REQUEST.decode(REQUEST.encode(full), max_size=1000, canonical=True) == full
    assert REQUEST.check(good_request()) == good_request()  # optional fields absent


SCHEMA_ERRORS: list[tuple[dict[str, Any] | Any, str]] = [
    (good_request(extra=1), "store: unknown field 'extra'"),
    (good_request(**{"7": 1}), "store: unknown field '7'"),
    ({**good_request(), 7: 1}, "store: unknown field 7"),
    (good_request(pubkey=_ABSENT), "store.pubkey: required field is missing"),
    (good_request(pubkey=b"k" * 31), "store.pubkey: length must be 32, got 31"),
    (good_request(pubkey="k" * 32), "store.pubkey: expected bytes, got str"),
    (good_request(pubkey=None), "store.pubkey: expected bytes, got null"),
    (good_request(data=b"x" * 101), "store.data: length 101 is above the maximum 100"),
    (good_request(namespace=32768), "store.namespace: 32768 is above the maximum 32767"),
    (good_request(namespace=-32769), "store.namespace: -32769 is below the minimum -32768"),
    (good_request(namespace=True), "store.namespace: expected int, got bool"),
    (good_request(wait=1), "store.wait: expected bool, got int"),
    (good_request(method="delete"), "store.method: 'delete' is not one of the allowed values"),
    (good_request(tag=""), "store.tag: length 0 is below the minimum 1"),
    (good_request(tag="x" * 9), "store.tag: length 9 is above the maximum 8"),
    (good_request(last_hash=5), "store.last_hash: expected str, got int"),
    (good_request(keys=[{"id": b"i" * 32}] * 5), "store.keys: length 5 is above the maximum 4"),
    (good_request(keys=[{"id": b"i" * 32}, 3]), "store.keys[1]: expected dict, got int"),
    (good_request(keys=[{"id": b"i" * 32}, {}]), "store.keys[1].id: required field is missing"),
    (good_request(keys=[{"id": b"i" * 32, "x": 1}]), "store.keys[0]: unknown field 'x'"),
    (good_request(keys=[{"id": b"i", "label": "l"}]), "store.keys[0].id: length must be 32, got 1"),
    (good_request(hashes=[b"abcd", b"abc"]), "store.hashes[1]: length must be 4, got 3"),
    (good_request(meta=[]), "store.meta: expected dict, got list"),
    ([1, 2], "store: expected a map, got list"),
    (None, "store: expected a map, got null"),
]


@pytest.mark.parametrize(("obj", "message"), SCHEMA_ERRORS)
def test_schema_errors_name_the_field(obj: Any, message: str) -> None:
    with pytest.raises(SchemaError) as info:
        REQUEST.check(obj)
    assert str(info.value) == message
    # The same through the wire: decode + check, and encode refuses to send it.
    try:
        data = cbor.encode(obj)
    except TypeError:
        return
    with pytest.raises(SchemaError, match="^" + message.replace("[", r"\[").replace("(", r"\(")):
        REQUEST.decode(data, max_size=10_000)
    with pytest.raises(SchemaError):
        REQUEST.encode(obj)


def test_schema_errors_are_protocol_errors_with_a_status() -> None:
    with pytest.raises(ProtocolError) as info:
        REQUEST.check({})
    assert info.value.status == "bad_request"
    assert info.value.http_status == 400


def test_allow_unknown_keeps_extra_fields() -> None:
    loose = Schema("doc", {"v": Field(int)}, allow_unknown=True)
    assert loose.check({"v": 1, "future": [1], 3: "x"}) == {"v": 1, "future": [1], 3: "x"}
    with pytest.raises(SchemaError, match=r"^doc\.v: required field is missing$"):
        loose.check({"future": 1})


def test_schemas_compose() -> None:
    v2 = Schema("store2", {**REQUEST.fields, "priority": Field(int, min=0, max=9)})
    assert v2.check(good_request(priority=3))["priority"] == 3
    with pytest.raises(SchemaError, match=r"^store2\.priority: "):
        v2.check(good_request(priority=10))


def test_field_check_alone() -> None:
    Field(bytes, size=2).check(b"ab")
    with pytest.raises(SchemaError, match=r"^sig: length must be 2, got 3$"):
        Field(bytes, size=2).check(b"abc", "sig")


def test_int_subclasses_are_ints_but_bools_are_not() -> None:
    import enum

    class Level(enum.IntEnum):
        LOW = 1

    Field(int, min=1, max=1).check(Level.LOW)
    with pytest.raises(SchemaError):
        Field(int).check(False)
    with pytest.raises(SchemaError):
        Field(bool).check(0)


@pytest.mark.parametrize(
    "declare",
    [
        lambda: Field(float),  # type: ignore[arg-type]
        lambda: Field(int, size=3),
        lambda: Field(bytes, min=1),
        lambda: Field(list, schema=KEY),
        lambda: Field(dict, items=Field(int)),
        lambda: Field(bytes, size=3, max_len=4),
        lambda: Field(bytes, min_len=5, max_len=4),
        lambda: Field(int, min=5, max=4),
        lambda: Field(bytes, max_len=-1),
        lambda: Field(list, choices={1}),
        lambda: Schema("s", {"a": int}),  # type: ignore[dict-item]
    ],
)
def test_nonsense_declarations_fail_when_written(declare: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        declare()


@given(values(max_leaves=10))
def test_schema_check_gives_only_schema_errors(value: Any) -> None:
    try:
        REQUEST.check(value)
    except SchemaError as exc:
        assert str(exc).startswith("store")
