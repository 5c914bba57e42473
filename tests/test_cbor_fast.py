"""veil.onion.cbor's fast paths are exact: the same results and the same errors as the plain,
one-function-per-item code they replaced, which is kept below as the reference.

What is compared: :func:`cbor.decode` (values, and for refused input the error's type
and message, in both canonical modes) on arbitrary bytes, on mutations of valid
encodings and on valid encodings; :func:`cbor.encode` (bytes, or the error's type) on
values inside and outside the subset; :meth:`Schema.check` with and without its
per-field fast path; :func:`rpc.ok_reply` against :func:`rpc.encode_reply`.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_cbor import mutated_encodings, values
from veil.onion import cbor, rpc
from veil.onion.cbor import Field, Schema
from veil.onion.cbor.decoding import _MAJOR_NAMES, _MIN_FOR_AI, _U16, _U32, _U64
from veil.onion.cbor.encoding import _NINT64_MIN, _UINT64_MAX
from veil.onion.errors import DecodeError, SchemaError, TooLarge

# --- the reference: veil.onion.cbor before its fast paths ------------------------------------


def ref_decode(
    data: bytes, *, max_depth: int = cbor.DEFAULT_MAX_DEPTH, canonical: bool = False
) -> Any:
    if not data:
        raise DecodeError("empty input: expected one CBOR item")
    value, pos = _ref_decode_item(data, 0, max_depth, canonical)
    if pos != len(data):
        raise DecodeError(f"{len(data) - pos} trailing byte(s) after the CBOR item at offset {pos}")
    return value


def ref_encode(obj: object) -> bytes:
    out = bytearray()
    _ref_encode_into(obj, out, cbor.MAX_DEPTH_LIMIT)
    return bytes(out)


def _ref_decode_item(data: bytes, pos: int, depth: int, canonical: bool) -> tuple[Any, int]:
    """Decode the item at ``pos``; return it and the offset just after it.

    ``depth`` is how many more levels of arrays and maps may be opened. Recursion is
    bounded by it (at most MAX_DEPTH_LIMIT), so Python's recursion limit is never met.
    """
    end = len(data)
    if pos >= end:
        raise DecodeError(f"truncated input: expected an item at offset {pos}")
    start = pos
    initial = data[pos]
    major = initial >> 5
    ai = initial & 0x1F
    pos += 1

    if major == 7:
        # Only the three simple values we use; everything else is refused by name.
        if ai == 20:
            return False, pos
        if ai == 21:
            return True, pos
        if ai == 22:
            return None, pos
        raise DecodeError(f"{_ref_simple_name(ai)} at offset {start} is not allowed")
    if major == 6:
        raise DecodeError(f"tags are not allowed (offset {start})")

    # The argument: a count, a length or the integer itself.
    if ai < 24:
        arg = ai
    elif ai < 28:
        width = 1 << (ai - 24)  # 1, 2, 4 or 8 bytes follow
        if pos + width > end:
            raise DecodeError(f"truncated input: head at offset {start} needs {width} more bytes")
        if width == 1:
            arg = data[pos]
        elif width == 2:
            arg = _U16.unpack_from(data, pos)[0]
        elif width == 4:
            arg = _U32.unpack_from(data, pos)[0]
        else:
            arg = _U64.unpack_from(data, pos)[0]
        pos += width
        if canonical and arg < _MIN_FOR_AI[ai]:
            raise DecodeError(f"non-canonical: head at offset {start} is longer than needed")
    elif ai == 31:
        raise DecodeError(
            f"indefinite length {_MAJOR_NAMES[major]} at offset {start} is not allowed"
        )
    else:
        raise DecodeError(f"reserved additional information {ai} at offset {start}")

    if major == 0:
        return arg, pos
    if major == 1:
        return -1 - arg, pos
    if major == 2 or major == 3:
        # Compare with what remains before slicing: a declared length is never trusted.
        if arg > end - pos:
            raise DecodeError(
                f"truncated input: {_MAJOR_NAMES[major]} at offset {start} declares "
                f"{arg} bytes but {end - pos} remain"
            )
        stop = pos + arg
        raw = data[pos:stop]
        if major == 2:
            return raw, stop
        try:
            return raw.decode("utf-8"), stop
        except UnicodeDecodeError:
            raise DecodeError(f"text at offset {start} is not valid UTF-8") from None

    # Arrays and maps.
    if depth <= 0:
        raise DecodeError(f"nesting deeper than allowed at offset {start}")
    if major == 4:
        # Every item takes at least one byte, so a longer count cannot be honest.
        if arg > end - pos:
            raise DecodeError(
                f"truncated input: array at offset {start} declares {arg} items "
                f"but {end - pos} bytes remain"
            )
        items = []
        append = items.append
        depth -= 1
        for _ in range(arg):
            value, pos = _ref_decode_item(data, pos, depth, canonical)
            append(value)
        return items, pos

    # major == 5: a map; every entry takes at least two bytes.
    if arg > (end - pos) >> 1:
        raise DecodeError(
            f"truncated input: map at offset {start} declares {arg} entries "
            f"but {end - pos} bytes remain"
        )
    result: dict[Any, Any] = {}
    depth -= 1
    previous_key = b""
    for _ in range(arg):
        if pos >= end:
            raise DecodeError(f"truncated input: expected a map key at offset {pos}")
        key_start = pos
        initial = data[pos]
        if 0x60 <= initial <= 0x77:
            # Fast path for the usual key, text of fewer than 24 bytes (same checks).
            pos += 1 + (initial - 0x60)
            if pos > end:
                raise DecodeError(f"truncated input: map key at offset {key_start}")
            try:
                key = data[key_start + 1 : pos].decode("utf-8")
            except UnicodeDecodeError:
                raise DecodeError(f"text at offset {key_start} is not valid UTF-8") from None
        else:
            key_major = initial >> 5
            if key_major > 1 and key_major != 3:
                raise DecodeError(
                    f"map key at offset {pos} is {_MAJOR_NAMES[key_major]}: "
                    "only integer and text keys are allowed"
                )
            key, pos = _ref_decode_item(data, pos, depth, canonical)
        if key in result:
            raise DecodeError(f"duplicate map key {key!r} at offset {key_start}")
        if canonical:
            key_bytes = data[key_start:pos]
            if key_bytes <= previous_key:
                raise DecodeError(
                    f"non-canonical: map key {key!r} at offset {key_start} is out of order"
                )
            previous_key = key_bytes
        result[key], pos = _ref_decode_item(data, pos, depth, canonical)
    return result, pos


def _ref_simple_name(ai: int) -> str:
    if ai == 23:
        return "undefined"
    if 25 <= ai <= 27:
        return "a float"
    if ai == 31:
        return "a 'break' outside an indefinite-length item"
    if ai == 24 or ai < 20:
        return "a simple value other than true, false and null"
    return f"reserved additional information {ai}"


_ref_SMALL_HEADS = tuple(tuple(bytes(((m << 5) | i,)) for i in range(24)) for m in range(8))


def _ref_head(major: int, arg: int) -> bytes:
    """The shortest head for ``major`` with argument ``arg`` (0 <= arg < 2**64)."""
    if arg < 24:
        return _ref_SMALL_HEADS[major][arg]
    mt = major << 5
    if arg < 0x100:
        return bytes((mt | 24, arg))
    if arg < 0x10000:
        return bytes((mt | 25,)) + _U16.pack(arg)
    if arg < 0x100000000:
        return bytes((mt | 26,)) + _U32.pack(arg)
    return bytes((mt | 27,)) + _U64.pack(arg)


def _ref_encode_int(value: int) -> bytes:
    if value >= 0:
        if value > _UINT64_MAX:
            raise ValueError(f"integer {value} does not fit CBOR's 64-bit range")
        return _ref_head(0, value)
    if value < _NINT64_MIN:
        raise ValueError(f"integer {value} does not fit CBOR's 64-bit range")
    return _ref_head(1, -1 - value)


def _ref_encode_key(key: object) -> bytes:
    if isinstance(key, str):
        raw = key.encode("utf-8")
        return _ref_head(3, len(raw)) + raw
    if isinstance(key, int) and not isinstance(key, bool):
        return _ref_encode_int(key)
    raise TypeError(f"map keys must be str or int, not {type(key).__name__}")


def _ref_encode_into(obj: object, out: bytearray, depth: int) -> None:
    # Strings first (the common case); bool before int, because bool is a subclass of int.
    if isinstance(obj, bytes):
        out += _ref_head(2, len(obj))
        out += obj
    elif isinstance(obj, str):
        raw = obj.encode("utf-8")  # a lone surrogate raises UnicodeEncodeError (ValueError)
        out += _ref_head(3, len(raw))
        out += raw
    elif obj is None:
        out.append(0xF6)
    elif obj is True:
        out.append(0xF5)
    elif obj is False:
        out.append(0xF4)
    elif isinstance(obj, int):
        out += _ref_encode_int(obj)
    elif isinstance(obj, bytearray | memoryview):
        raw = bytes(obj)
        out += _ref_head(2, len(raw))
        out += raw
    elif isinstance(obj, list | tuple):
        if depth <= 0:
            raise ValueError("nesting too deep to encode (or a container holds itself)")
        out += _ref_head(4, len(obj))
        for item in obj:
            _ref_encode_into(item, out, depth - 1)
    elif isinstance(obj, dict):
        if depth <= 0:
            raise ValueError("nesting too deep to encode (or a container holds itself)")
        # Sort by the encoded key. Encoded keys are distinct (distinct dict keys never
        # encode alike), so the sort never goes on to compare the values.
        entries = sorted([(_ref_encode_key(key), value) for key, value in obj.items()])
        out += _ref_head(5, len(entries))
        for key_bytes, value in entries:
            out += key_bytes
            _ref_encode_into(value, out, depth - 1)
    else:
        raise TypeError(f"cannot encode {type(obj).__name__} as veil CBOR")


# --- decode --------------------------------------------------------------------------------


def outcome(fn: Any, *args: Any, **kwargs: Any) -> tuple[str, Any]:
    """What ``fn`` does: ("ok", value) or (error type name, message)."""
    try:
        return ("ok", fn(*args, **kwargs))
    except (DecodeError, TooLarge, TypeError, ValueError) as exc:
        return (type(exc).__name__, str(exc))


def assert_decoders_agree(data: bytes, canonical: bool, max_depth: int) -> None:
    fast = outcome(cbor.decode, data, max_size=1 << 20, max_depth=max_depth, canonical=canonical)
    slow = outcome(ref_decode, data, max_depth=max_depth, canonical=canonical)
    assert fast == slow
    if fast[0] == "ok":  # == does not tell 1 from True: compare the encodings too
        assert cbor.encode(fast[1]) == ref_encode(slow[1])


@settings(max_examples=500)
@given(st.binary(max_size=120), st.booleans(), st.integers(min_value=0, max_value=4))
def test_decode_agrees_on_arbitrary_bytes(data: bytes, canonical: bool, depth: int) -> None:
    assert_decoders_agree(data, canonical, depth)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_encodings(), st.booleans(), st.integers(min_value=0, max_value=17))
def test_decode_agrees_on_mutated_encodings(data: bytes, canonical: bool, depth: int) -> None:
    assert_decoders_agree(data, canonical, depth)


@given(values(), st.booleans())
def test_decode_agrees_on_valid_encodings(value: Any, canonical: bool) -> None:
    assert_decoders_agree(cbor.encode(value), canonical, cbor.MAX_DEPTH_LIMIT)


# Map values of every kind the inline path handles, and the ways each one can be wrong.
SHORT_CASES = """
    00 17 1818 1817 18 19ffff 1900ff 19ff 1a00010000 1a0000ffff 1b0000000100000000
    1b00000000ffffffff 1bffffffffffffffff 1b00 20 37 3818 38 39ffff 3b 3bffffffffffffffff
    40 4101 41 5801ff 59 590001ff 60 6161 61ff 62c3a9 61 7801 78 7a00000001
    5c 7c 5f 7f 1c 3f 80 a0 c0 f4 f7 f9 ff
"""
MAP_VALUE_CASES = [
    *SHORT_CASES.split(),
    "5818" + "00" * 24,
    "5819" + "00" * 24,
    "7818" + "61" * 24,
    "",
]


@pytest.mark.parametrize("value_hex", MAP_VALUE_CASES)
@pytest.mark.parametrize("canonical", [False, True])
def test_decode_agrees_on_each_kind_of_map_value(value_hex: str, canonical: bool) -> None:
    # {"a": value} and {"a": 0, "b": value}; then with a byte more and a byte less.
    for doc in ("a16161" + value_hex, "a26161006162" + value_hex):
        data = bytes.fromhex(doc)
        assert_decoders_agree(data, canonical, cbor.DEFAULT_MAX_DEPTH)
        assert_decoders_agree(data + b"\x00", canonical, cbor.DEFAULT_MAX_DEPTH)
        assert_decoders_agree(data[:-1], canonical, cbor.DEFAULT_MAX_DEPTH)


# --- encode --------------------------------------------------------------------------------

odd_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**65), max_value=2**65),
        st.binary(max_size=30),
        st.binary(max_size=30).map(bytearray),
        st.text(max_size=30),
        st.just("\ud800"),
        st.floats(allow_nan=False),
        st.just(frozenset()),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.lists(children, max_size=5).map(tuple),
        st.dictionaries(
            st.one_of(st.text(max_size=20), st.integers(), st.booleans(), st.binary(max_size=3)),
            children,
            max_size=5,
        ),
    ),
    max_leaves=20,
)


def assert_encoders_agree(value: Any) -> None:
    fast = outcome(cbor.encode, value)
    slow = outcome(ref_encode, value)
    assert fast[0] == slow[0]
    if fast[0] == "ok":
        assert fast[1] == slow[1]


@given(values())
def test_encode_agrees_on_the_subset(value: Any) -> None:
    assert_encoders_agree(value)


@given(odd_values)
def test_encode_agrees_outside_the_subset(value: Any) -> None:
    assert_encoders_agree(value)


def test_encode_agrees_on_deep_nesting_and_many_keys() -> None:
    deep: Any = 0
    for _ in range(cbor.MAX_DEPTH_LIMIT + 1):
        deep = {"k": deep}
    assert_encoders_agree(deep)
    assert_encoders_agree(deep["k"])
    cycle: list[Any] = []
    cycle.append(cycle)
    assert_encoders_agree(cycle)
    # More distinct text keys than the key cache holds: every one still encodes right.
    many = {f"key{i}": i for i in range(2000)}
    assert_encoders_agree(many)
    assert_encoders_agree(many)


# --- schemas --------------------------------------------------------------------------------

FAST_SCHEMA = Schema(
    "s",
    {
        "i": Field(int, min=-5, max=1000),
        "u": Field(int),
        "b": Field(bytes, size=3),
        "t": Field(str, min_len=1, max_len=4, required=False),
        "n": Field(int, min=0, nullable=True, required=False),
        "c": Field(str, choices={"a", "b"}, required=False),
        "l": Field(list, max_len=2, items=Field(int, max=3), required=False),
        "bo": Field(bool, required=False),
        "ci": Field(int, choices={1, 3}, required=False),
        "d": Field(dict, required=False),
        "ds": Field(dict, schema=Schema("inner", {"i": Field(int, max=3)}), required=False),
    },
)


def slow_schema(schema: Schema) -> Schema:
    """The same schema with the per-field fast path turned off."""
    slow = Schema(schema.name, schema.fields, allow_unknown=schema.allow_unknown)
    slow._bounds = {}
    return slow


field_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-10, max_value=2000),
    st.binary(max_size=5),
    st.text(max_size=6),
    st.sampled_from(["a", "b", "ab"]),
    st.lists(st.integers(min_value=0, max_value=5), max_size=3),
    st.dictionaries(st.sampled_from(["i", "j"]), st.integers(min_value=0, max_value=5), max_size=2),
)


@settings(max_examples=500)
@given(
    st.dictionaries(
        st.sampled_from(["i", "u", "b", "t", "n", "c", "l", "bo", "ci", "d", "ds", "x"]),
        field_values,
        max_size=12,
    ),
    st.booleans(),
)
def test_schema_fast_path_agrees(obj: dict[str, Any], allow_unknown: bool) -> None:
    fast = Schema("s", FAST_SCHEMA.fields, allow_unknown=allow_unknown)
    assert fast._bounds  # the fast path is on for the plain fields
    slow = slow_schema(fast)
    assert outcome_schema(fast, obj) == outcome_schema(slow, obj)


def outcome_schema(schema: Schema, obj: Any) -> tuple[str, str]:
    try:
        schema.check(obj)
    except SchemaError as exc:
        return ("SchemaError", str(exc))
    return ("ok", "")


def test_schema_fast_path_agrees_on_request_schemas() -> None:
    # Every RPC schema, fed each field's edge values.
    for schema in [*rpc._PARAMS.values(), rpc._ENVELOPE, rpc._REPLY]:
        slow = slow_schema(schema)
        for key, spec in schema.fields.items():
            edges: list[Any] = [None, True, b"", "", 0, -1, [], {}, *(spec.choices or ())]
            for bound in (spec.min, spec.max):
                if bound is not None:
                    edges += [bound - 1, bound, bound + 1]
            for bound in (spec.size, spec.min_len, spec.max_len):
                if bound is not None:
                    edges += [b"x" * max(0, bound + d) for d in (-1, 0, 1)]
                    edges += ["x" * max(0, bound + d) for d in (-1, 0, 1)]
            for edge in edges:
                obj = {key: edge}
                assert outcome_schema(schema, obj) == outcome_schema(slow, obj)


# --- replies --------------------------------------------------------------------------------


@given(
    st.one_of(st.integers(min_value=-5, max_value=2**64), st.booleans()),
    st.dictionaries(st.text(max_size=8), values(max_leaves=5), max_size=4),
)
def test_ok_reply_is_encode_reply(t: int, result: dict[str, Any]) -> None:
    fast = outcome(rpc.ok_reply, t, result)
    slow = outcome(rpc.encode_reply, rpc.Reply("ok", t, dict(result)))
    assert fast == slow
    if fast[0] == "ok":
        reply = rpc.decode_reply(fast[1])
        assert (reply.status, reply.t_ms, reply.result) == ("ok", t, result)
