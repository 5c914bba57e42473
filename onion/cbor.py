"""Strict CBOR for everything that comes from the network, and schemas on top of it.

Design note
-----------
veil speaks CBOR (RFC 8949) on the wire: RPC requests and replies, envelopes, directory
documents, capabilities. Bytes from outside are hostile, so :func:`decode` accepts only
a small, boring subset and refuses the rest with :class:`~onion.errors.DecodeError`:

* integers (major types 0 and 1, so -2**64 .. 2**64-1), byte strings, UTF-8 text,
  arrays, maps, ``false``, ``true`` and ``null``;
* definite lengths only: no indefinite strings, arrays or maps, no "break";
* no tags (so no bignums, dates, shared references...), no floats, no ``undefined``,
  no other simple values, no reserved additional-information values;
* map keys are integers or text, never twice in one map;
* at most ``max_depth`` (default 16) nested arrays and maps;
* exactly one item, with no trailing bytes.

The size limit is checked before a single byte is parsed (:class:`~onion.errors.TooLarge`).
A declared length is compared with the bytes that remain *before* anything is allocated
for it, so a 5-byte input that claims a 2**64-byte string or a 2**32-item array costs
nothing; since every item takes at least one byte of input, the decoded objects are
bounded by the input size. Nesting is bounded by ``max_depth`` before Python's recursion
limit can be reached, so no ``RecursionError``, ``MemoryError``, ``OverflowError`` or
``UnicodeDecodeError`` can escape: only ``DecodeError`` and ``TooLarge``.

Why a decoder of our own rather than cbor2 plus checks: cbor2 decodes tags into objects
(datetimes, bignums, shared references, sets) before any hook of ours runs, floats and
simple values would need a second walk over the result, and its C extension has had
memory-safety bugs on hostile input. Pre-validating the structure and then calling cbor2
would parse every request twice. The subset above is small enough that one single-pass,
depth-bounded recursive parser (about a hundred lines, below) is easier to audit than
the combination, and fast enough: a ten-field request map decodes in about 10-15 µs
on this project's machines (cbor2's C decoder: 2-4 µs, without the checks).

Speed without a second code path to audit: the decoder handles the values of a map that
are integers or strings inline (same checks, same errors), the encoder dispatches on the
exact type first and caches the encodings of text keys, and :class:`Schema` lets a value
of exactly its field's type and within its bounds through without the full check
(anything else takes the full check, so every error is the same). tests/test_cbor_fast.py
checks all three against the plain code they replaced, on valid and hostile input.

:func:`encode` is the matching encoder, written here for the same reason (it refuses
every type outside the subset instead of inventing an encoding for it). Its output is
RFC 8949 §4.2.1 "core deterministic" CBOR: shortest heads, definite lengths, and map
keys sorted by the bytewise order of their encodings. (cbor2's ``canonical=True`` uses
the older RFC 7049 length-first key order, which differs when a map mixes negative and
larger positive integer keys, or integer and text keys: -1 before 100 there, 100 before
-1 here. Encode with this module, not cbor2, wherever bytes are signed or compared.) ``decode(...,
canonical=True)`` additionally refuses anything that is not in exactly that form, for
documents whose signature is over their re-encoding.

The :class:`Schema` layer checks the shape of a decoded map: unknown, missing and
mistyped fields, lengths and integer ranges, each refused with a
:class:`~onion.errors.SchemaError` that names the field by its path
(``store.params.pubkey``, ``batch.items[3]``)::

    STORE = Schema("store", {
        "pubkey": Field(bytes, size=32),
        "ttl_ms": Field(int, min=10_000, max=14 * 86_400_000),
        "data": Field(bytes, max_len=76_800),
        "tag": Field(str, max_len=64, required=False),
    })
    request = STORE.decode(body, max_size=100_000)   # dict, or DecodeError/SchemaError
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, TypeAlias

from .errors import DecodeError, SchemaError, TooLarge

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "MAX_DEPTH_LIMIT",
    "Field",
    "Schema",
    "decode",
    "encode",
]

#: Nesting allowed by default: ``[[...]]`` 16 levels deep decodes, 17 does not.
DEFAULT_MAX_DEPTH: Final = 16
#: The largest ``max_depth`` a caller may ask for: far below Python's recursion limit.
MAX_DEPTH_LIMIT: Final = 200

_UINT64_MAX: Final = 2**64 - 1
_NINT64_MIN: Final = -(2**64)

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")

# Smallest argument that needs each head size; a smaller one is not canonical.
_MIN_FOR_AI: Final = {24: 24, 25: 0x100, 26: 0x10000, 27: 0x100000000}

_MAJOR_NAMES: Final = ("uint", "nint", "bytes", "text", "array", "map", "tag", "simple")


# --- decoding ----------------------------------------------------------------------------


def decode(
    data: bytes | bytearray | memoryview,
    *,
    max_size: int,
    max_depth: int = DEFAULT_MAX_DEPTH,
    canonical: bool = False,
) -> Any:
    """Decode one item of strict CBOR from ``data`` (see the module note for the subset).

    Raises :class:`TooLarge` if ``data`` is longer than ``max_size`` (checked before
    parsing) and :class:`DecodeError`, saying what and where, for anything outside the
    subset. With ``canonical=True`` it also refuses any encoding :func:`encode` would
    not have produced (longer heads than needed, map keys out of order).
    Arrays decode to ``list``, maps to ``dict``, byte strings to ``bytes``.
    """
    if type(data) is bytes:
        size = len(data)
    elif isinstance(data, memoryview):
        size = data.nbytes
    elif isinstance(data, bytes | bytearray):
        size = len(data)
    else:
        raise TypeError(f"decode takes bytes, not {type(data).__name__}")
    if size > max_size:
        raise TooLarge(f"CBOR input of {size} bytes is over the limit of {max_size}")
    if not 0 <= max_depth <= MAX_DEPTH_LIMIT:
        raise ValueError(f"max_depth must be between 0 and {MAX_DEPTH_LIMIT}")
    if type(data) is not bytes:
        data = bytes(data)  # bounded by max_size, checked above
    if size == 0:
        raise DecodeError("empty input: expected one CBOR item")
    value, pos = _decode_item(data, 0, max_depth, canonical)
    if pos != size:
        raise DecodeError(f"{size - pos} trailing byte(s) after the CBOR item at offset {pos}")
    return value


def _decode_item(data: bytes, pos: int, depth: int, canonical: bool) -> tuple[Any, int]:
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
        raise DecodeError(f"{_simple_name(ai)} at offset {start} is not allowed")
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
        items: list[Any] = []
        append = items.append
        depth -= 1
        for _ in range(arg):
            value, pos = _decode_item(data, pos, depth, canonical)
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
            key, pos = _decode_item(data, pos, depth, canonical)
        if key in result:
            raise DecodeError(f"duplicate map key {key!r} at offset {key_start}")
        if canonical:
            key_bytes = data[key_start:pos]
            if key_bytes <= previous_key:
                raise DecodeError(
                    f"non-canonical: map key {key!r} at offset {key_start} is out of order"
                )
            previous_key = key_bytes
        # The value. Integers and byte and text strings (most values in veil's maps) are
        # decoded inline, with exactly the checks and errors of _decode_item, which saves
        # a call per entry; everything else (containers, simple values, tags, reserved
        # and indefinite heads, truncation) goes through _decode_item.
        if pos < end:
            initial = data[pos]
            ai = initial & 0x1F
            if initial < 0x80 and ai < 28:
                start = pos
                pos += 1
                if ai < 24:
                    arg = ai
                else:
                    width = 1 << (ai - 24)
                    if pos + width > end:
                        raise DecodeError(
                            f"truncated input: head at offset {start} needs {width} more bytes"
                        )
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
                        raise DecodeError(
                            f"non-canonical: head at offset {start} is longer than needed"
                        )
                major = initial >> 5
                if major == 0:
                    result[key] = arg
                elif major == 1:
                    result[key] = -1 - arg
                else:
                    if arg > end - pos:
                        raise DecodeError(
                            f"truncated input: {_MAJOR_NAMES[major]} at offset {start} declares "
                            f"{arg} bytes but {end - pos} remain"
                        )
                    stop = pos + arg
                    if major == 2:
                        result[key] = data[pos:stop]
                    else:
                        try:
                            result[key] = data[pos:stop].decode("utf-8")
                        except UnicodeDecodeError:
                            raise DecodeError(
                                f"text at offset {start} is not valid UTF-8"
                            ) from None
                    pos = stop
                continue
        result[key], pos = _decode_item(data, pos, depth, canonical)
    return result, pos


def _simple_name(ai: int) -> str:
    if ai == 23:
        return "undefined"
    if 25 <= ai <= 27:
        return "a float"
    if ai == 31:
        return "a 'break' outside an indefinite-length item"
    if ai == 24 or ai < 20:
        return "a simple value other than true, false and null"
    return f"reserved additional information {ai}"


# --- encoding ----------------------------------------------------------------------------


def encode(obj: object) -> bytes:
    """Deterministic CBOR (RFC 8949 §4.2.1) of ``obj``.

    Takes ``int`` (-2**64 .. 2**64-1), ``bytes``/``bytearray``/``memoryview``, ``str``,
    ``bool``, ``None``, ``list``/``tuple``, and ``dict`` with ``str`` or ``int`` keys.
    Anything else is local misuse: :class:`TypeError` for a type outside the subset,
    :class:`ValueError` for an integer out of range or nesting deeper than
    :data:`MAX_DEPTH_LIMIT` (which also stops on a list that contains itself).
    """
    out = bytearray()
    _encode_into(obj, out, MAX_DEPTH_LIMIT)
    return bytes(out)


# One-byte heads, precomputed: most lengths and small integers in veil's maps are < 24.
_SMALL_HEADS: Final = tuple(tuple(bytes(((m << 5) | i,)) for i in range(24)) for m in range(8))


def _head(major: int, arg: int) -> bytes:
    """The shortest head for ``major`` with argument ``arg`` (0 <= arg < 2**64)."""
    if arg < 24:
        return _SMALL_HEADS[major][arg]
    mt = major << 5
    if arg < 0x100:
        return bytes((mt | 24, arg))
    if arg < 0x10000:
        return bytes((mt | 25,)) + _U16.pack(arg)
    if arg < 0x100000000:
        return bytes((mt | 26,)) + _U32.pack(arg)
    return bytes((mt | 27,)) + _U64.pack(arg)


def _encode_int(value: int) -> bytes:
    if value >= 0:
        if value > _UINT64_MAX:
            raise ValueError(f"integer {value} does not fit CBOR's 64-bit range")
        return _head(0, value)
    if value < _NINT64_MIN:
        raise ValueError(f"integer {value} does not fit CBOR's 64-bit range")
    return _head(1, -1 - value)


#: Encoded text map keys, by key: veil's maps use a few dozen field names, so caching
#: their encodings saves a UTF-8 encode and a head per key. Bounded, so that encoding
#: maps with many distinct keys cannot grow it without limit.
_TEXT_KEYS: dict[str, bytes] = {}
_TEXT_KEYS_MAX: Final = 512


def _encode_key(key: object) -> bytes:
    if type(key) is str:
        cached = _TEXT_KEYS.get(key)
        if cached is not None:
            return cached
        raw = key.encode("utf-8")
        encoded = _head(3, len(raw)) + raw
        if len(_TEXT_KEYS) < _TEXT_KEYS_MAX:
            _TEXT_KEYS[key] = encoded
        return encoded
    if isinstance(key, str):
        raw = key.encode("utf-8")
        return _head(3, len(raw)) + raw
    if isinstance(key, int) and not isinstance(key, bool):
        return _encode_int(key)
    raise TypeError(f"map keys must be str or int, not {type(key).__name__}")


def _encode_into(obj: object, out: bytearray, depth: int) -> None:
    # Dispatch on the exact type first (the common, fast case); subclasses and the
    # constants take the isinstance chain below, which decides the same way.
    kind = type(obj)
    if kind is bytes:
        n = len(obj)  # type: ignore[arg-type]
        out += _SMALL_HEADS[2][n] if n < 24 else _head(2, n)
        out += obj  # type: ignore[arg-type]
        return
    if kind is str:
        raw = obj.encode("utf-8")  # type: ignore[attr-defined]
        n = len(raw)
        out += _SMALL_HEADS[3][n] if n < 24 else _head(3, n)
        out += raw
        return
    if kind is int:
        if 0 <= obj < 24:  # type: ignore[operator]
            out += _SMALL_HEADS[0][obj]  # type: ignore[call-overload]
        else:
            out += _encode_int(obj)  # type: ignore[arg-type]
        return
    if kind is dict:
        if depth <= 0:
            raise ValueError("nesting too deep to encode (or a container holds itself)")
        # Sort by the encoded key. Encoded keys are distinct (distinct dict keys never
        # encode alike), so the sort never goes on to compare the values.
        entries = sorted([(_encode_key(key), value) for key, value in obj.items()])  # type: ignore[attr-defined]
        n = len(entries)
        out += _SMALL_HEADS[5][n] if n < 24 else _head(5, n)
        depth -= 1
        for key_bytes, value in entries:
            out += key_bytes
            _encode_into(value, out, depth)
        return
    _encode_other(obj, out, depth)


def _encode_other(obj: object, out: bytearray, depth: int) -> None:
    # Strings first (the common case); bool before int, because bool is a subclass of int.
    if isinstance(obj, bytes):
        out += _head(2, len(obj))
        out += obj
    elif isinstance(obj, str):
        raw = obj.encode("utf-8")  # a lone surrogate raises UnicodeEncodeError (ValueError)
        out += _head(3, len(raw))
        out += raw
    elif obj is None:
        out.append(0xF6)
    elif obj is True:
        out.append(0xF5)
    elif obj is False:
        out.append(0xF4)
    elif isinstance(obj, int):
        out += _encode_int(obj)
    elif isinstance(obj, bytearray | memoryview):
        raw = bytes(obj)
        out += _head(2, len(raw))
        out += raw
    elif isinstance(obj, list | tuple):
        if depth <= 0:
            raise ValueError("nesting too deep to encode (or a container holds itself)")
        out += _head(4, len(obj))
        for item in obj:
            _encode_into(item, out, depth - 1)
    elif isinstance(obj, dict):
        if depth <= 0:
            raise ValueError("nesting too deep to encode (or a container holds itself)")
        entries = sorted([(_encode_key(key), value) for key, value in obj.items()])
        out += _head(5, len(entries))
        for key_bytes, value in entries:
            out += key_bytes
            _encode_into(value, out, depth - 1)
    else:
        raise TypeError(f"cannot encode {type(obj).__name__} as veil CBOR")


# --- schemas -----------------------------------------------------------------------------

_FIELD_TYPES: Final = (int, bytes, str, bool, list, dict)
_SIZED_TYPES: Final = (bytes, str, list)
#: A Field's ``error`` (named here: inside Field, ``type`` is the field's own attribute).
_ErrorClass: TypeAlias = type[SchemaError]


@dataclass(frozen=True, slots=True)
class Field:
    """What one field of a map must hold.

    ``type`` is one of ``int``, ``bytes``, ``str``, ``bool``, ``list``, ``dict``
    (``bool`` is never accepted as ``int``, nor ``int`` as ``bool``).

    * ``required=False``: the field may be absent (absent, not ``null``).
    * ``nullable=True``: the field may be ``null`` (``None``).
    * ``size``, ``min_len``, ``max_len``: the length of ``bytes``, ``str`` (in
      characters) or ``list``; ``size`` is an exact length.
    * ``min``, ``max``: the inclusive range of an ``int``.
    * ``choices``: the only values allowed (e.g. method names).
    * ``schema``: the :class:`Schema` that a ``dict`` must follow (without it, any
      strictly decoded map is accepted).
    * ``items``: the :class:`Field` every element of a ``list`` must follow.
    * ``error``: the :class:`SchemaError` subclass raised when this field is missing or
      does not fit (a TTL out of range is a ``BadTtl``), so that a caller can tell
      one field's refusal from the rest without reading the message; the innermost
      field that names one wins. None: :class:`SchemaError`.

    A declaration that makes no sense (``size`` on an int, ``schema`` on a list, ...)
    raises :class:`TypeError` or :class:`ValueError` when it is written, not when a
    message arrives.
    """

    type: type
    required: bool = True
    nullable: bool = False
    size: int | None = None
    min_len: int | None = None
    max_len: int | None = None
    min: int | None = None
    max: int | None = None
    choices: AbstractSet[Any] | None = None
    schema: Schema | None = None
    items: Field | None = None
    error: _ErrorClass | None = None

    def __post_init__(self) -> None:
        if self.type not in _FIELD_TYPES:
            raise TypeError(
                f"a Field's type is one of int, bytes, str, bool, list, dict; not {self.type!r}"
            )
        sized = self.type in _SIZED_TYPES
        if not sized and (
            self.size is not None or self.min_len is not None or self.max_len is not None
        ):
            raise TypeError(
                f"size/min_len/max_len apply to bytes, str and list, not {self.type.__name__}"
            )
        if self.type is not int and (self.min is not None or self.max is not None):
            raise TypeError("min/max apply to int fields; use min_len/max_len for lengths")
        if self.schema is not None and self.type is not dict:
            raise TypeError("schema applies to dict fields")
        if self.items is not None and self.type is not list:
            raise TypeError("items applies to list fields")
        if self.size is not None and (self.min_len is not None or self.max_len is not None):
            raise ValueError("give either size or min_len/max_len, not both")
        for name in ("size", "min_len", "max_len"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative")
        if self.min_len is not None and self.max_len is not None and self.min_len > self.max_len:
            raise ValueError("min_len is greater than max_len")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is greater than max")
        if self.choices is not None and self.type in (list, dict):
            raise TypeError("choices apply to int, bytes, str and bool fields")
        if self.choices is not None and not isinstance(self.choices, frozenset):
            object.__setattr__(self, "choices", frozenset(self.choices))

    def check(self, value: object, name: str = "value") -> None:
        """Raise :class:`SchemaError` naming ``name`` unless ``value`` fits this field."""
        try:
            self._check(value)
        except _Mismatch as exc:
            if exc.error is None:
                exc.error = self.error
            raise exc.to_error(name) from None

    def _check(self, value: object) -> None:
        if value is None:
            if self.nullable:
                return
            raise _Mismatch(f"expected {self.type.__name__}, got null")
        expected = self.type
        kind = type(value)
        # Subclasses (an IntEnum, a str subclass) are fine, but never bool for int.
        if kind is not expected and (kind is bool or not isinstance(value, expected)):
            raise _Mismatch(f"expected {expected.__name__}, got {_type_name(value)}")
        if expected is int:
            assert isinstance(value, int)
            if self.min is not None and value < self.min:
                raise _Mismatch(f"{value} is below the minimum {self.min}")
            if self.max is not None and value > self.max:
                raise _Mismatch(f"{value} is above the maximum {self.max}")
        elif expected in _SIZED_TYPES:
            assert isinstance(value, bytes | str | list)
            length = len(value)
            if self.size is not None and length != self.size:
                raise _Mismatch(f"length must be {self.size}, got {length}")
            if self.min_len is not None and length < self.min_len:
                raise _Mismatch(f"length {length} is below the minimum {self.min_len}")
            if self.max_len is not None and length > self.max_len:
                raise _Mismatch(f"length {length} is above the maximum {self.max_len}")
            if self.items is not None:
                assert isinstance(value, list)
                check_item = self.items._check
                for index, item in enumerate(value):
                    try:
                        check_item(item)
                    except _Mismatch as exc:
                        exc.path.append(f"[{index}]")
                        if exc.error is None:
                            exc.error = self.items.error
                        raise
        elif self.schema is not None:
            self.schema._check(value)
        if self.choices is not None and value not in self.choices:
            raise _Mismatch(f"{_short_repr(value)} is not one of the allowed values")


class _Mismatch(Exception):
    """Internal: a value that does not fit, with its path collected on the way out.

    The path of a field is only built when a check fails, so a passing check costs no
    string formatting.
    """

    def __init__(
        self,
        message: str,
        path: list[str] | None = None,
        error: type[SchemaError] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[str] = path if path is not None else []  # innermost part first
        #: The error class of the innermost field that declares one (None: SchemaError).
        self.error = error

    def to_error(self, root: str) -> SchemaError:
        return (self.error or SchemaError)(
            root + "".join(reversed(self.path)) + ": " + self.message
        )


class Schema:
    """The fields a map must have; see :class:`Field` and the module note.

    ``Schema(name, fields, allow_unknown=False)``: with ``allow_unknown=True`` fields
    not declared are kept unchecked (for forward-compatible documents); otherwise they
    are refused. ``fields`` is kept as a read-only mapping, so that a schema can be
    extended with ``Schema("v2", {**V1.fields, "extra": Field(int)})``.
    """

    __slots__ = ("_bounds", "_fields", "_required", "allow_unknown", "fields", "name")

    def __init__(self, name: str, fields: Mapping[str, Field], *, allow_unknown: bool = False):
        for key, spec in fields.items():
            if not isinstance(key, str) or not isinstance(spec, Field):
                raise TypeError(f"schema {name!r}: fields map str names to Field objects")
        self.name = name
        self._fields = dict(fields)
        self.fields: Mapping[str, Field] = MappingProxyType(self._fields)
        self.allow_unknown = allow_unknown
        self._required = tuple(key for key, spec in self._fields.items() if spec.required)
        self._bounds = {
            key: bounds
            for key, spec in self._fields.items()
            if (bounds := _plain_bounds(spec)) is not None
        }

    def __repr__(self) -> str:
        return f"Schema({self.name!r}, {len(self.fields)} fields)"

    def check(self, obj: object) -> dict[str, Any]:
        """Return ``obj`` (the same dict) if it fits, else raise :class:`SchemaError`.

        The error's message starts with the path of the field at fault, rooted at the
        schema's name: ``store.pubkey: length must be 32, got 31``.
        """
        try:
            return self._check(obj)
        except _Mismatch as exc:
            raise exc.to_error(self.name) from None

    def _check(self, obj: object) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise _Mismatch(f"expected a map, got {_type_name(obj)}")
        fields = self._fields
        bounds = self._bounds
        for key, value in obj.items():
            # Fast path: a value of exactly the field's type, within its bounds, passes.
            # Anything else (including every failure) takes the full check below.
            plain = bounds.get(key)
            if plain is not None:
                kind, low, high, choices = plain
                if type(value) is kind:
                    measure = value if kind is int else len(value)
                    if low <= measure <= high and (choices is None or value in choices):
                        continue
            spec = fields.get(key)
            if spec is None:
                if self.allow_unknown:
                    continue
                raise _Mismatch(f"unknown field {_short_repr(key)}")
            try:
                spec._check(value)
            except _Mismatch as exc:
                exc.path.append("." + key)
                if exc.error is None:
                    exc.error = spec.error
                raise
        for key in self._required:
            if key not in obj:
                raise _Mismatch("required field is missing", ["." + key], fields[key].error)
        return obj

    def decode(
        self,
        data: bytes | bytearray | memoryview,
        *,
        max_size: int,
        max_depth: int = DEFAULT_MAX_DEPTH,
        canonical: bool = False,
    ) -> dict[str, Any]:
        """:func:`decode` then :meth:`check`: TooLarge, DecodeError or SchemaError."""
        return self.check(decode(data, max_size=max_size, max_depth=max_depth, canonical=canonical))

    def encode(self, obj: dict[str, Any]) -> bytes:
        """:meth:`check` then :func:`encode`, so that we never send what we would refuse."""
        return encode(self.check(obj))


def _plain_bounds(
    spec: Field,
) -> tuple[type[Any], float, float, AbstractSet[Any] | None] | None:
    """``(type, low, high, choices)`` if ``spec`` accepts exactly the values of that type
    whose value (int) or length (bytes, str, dict) is within ``[low, high]`` and, if
    ``choices`` is not None, that are among them; None if it has more rules (items, a
    schema) or is of another type (bool, list)."""
    if spec.items is not None or spec.schema is not None:
        return None
    if spec.type is int:
        low = spec.min if spec.min is not None else -math.inf
        high = spec.max if spec.max is not None else math.inf
        return (int, low, high, spec.choices)
    if spec.type is bytes or spec.type is str:
        if spec.size is not None:
            return (spec.type, spec.size, spec.size, spec.choices)
        low = spec.min_len if spec.min_len is not None else 0
        high = spec.max_len if spec.max_len is not None else math.inf
        return (spec.type, low, high, spec.choices)
    if spec.type is dict:  # no schema: any map (dict fields take no choices)
        return (dict, 0, math.inf, None)
    return None


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return type(value).__name__


def _short_repr(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
