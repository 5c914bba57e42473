"""Deterministic CBOR encoding (RFC 8949 §4.2.1 "core deterministic").

Design note
-----------
Shortest heads, definite lengths, and map keys sorted by the bytewise order of their
encodings. Written here rather than taken from cbor2 for two reasons: it refuses every
type outside veil's subset instead of inventing an encoding for it, and cbor2's
``canonical=True`` uses the older RFC 7049 length-first key order, which differs when a
map mixes negative and larger positive integer keys, or integer and text keys (-1
before 100 there, 100 before -1 here). Encode with this module, not cbor2, wherever bytes
are signed or compared.

Speed: :func:`_encode_into` dispatches on the exact type first, and the encodings of
text map keys are cached (tests/test_cbor_fast.py compares this with the plain code).
"""

from __future__ import annotations

import struct
from typing import Final

from .decoding import MAX_DEPTH_LIMIT

_UINT64_MAX: Final = 2**64 - 1
_NINT64_MIN: Final = -(2**64)

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


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
