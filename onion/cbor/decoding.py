"""Strict CBOR decoding: the subset veil accepts from the network, and nothing else.

Design note
-----------
Bytes from outside are hostile, so :func:`decode` accepts only the subset described in
:mod:`veil.onion.cbor` and refuses the rest with :class:`~veil.onion.errors.DecodeError`.
The size limit is checked before a single byte is parsed
(:class:`~veil.onion.errors.TooLarge`). A declared length is compared with the bytes that
remain *before* anything is allocated for it, so a 5-byte input that claims a 2**64-byte
string or a 2**32-item array costs nothing; since every item takes at least one byte of
input, the decoded objects are bounded by the input size. Nesting is bounded by
``max_depth`` before Python's recursion limit can be reached, so no ``RecursionError``,
``MemoryError``, ``OverflowError`` or ``UnicodeDecodeError`` can escape: only
``DecodeError`` and ``TooLarge``.

One single-pass, depth-bounded recursive parser, hand-tuned: the values of a map that
are integers or strings are handled inline (same checks, same errors as the general
case; tests/test_cbor_fast.py compares the two), which is why :func:`_decode_item` is
one long function rather than one per major type: a call per item costs more than the
check itself on veil's small maps.
"""

from __future__ import annotations

import struct
from typing import Any, Final

from ..errors import DecodeError, TooLarge

#: Nesting allowed by default: ``[[...]]`` 16 levels deep decodes, 17 does not.
DEFAULT_MAX_DEPTH: Final = 16
#: The largest ``max_depth`` a caller may ask for: far below Python's recursion limit.
MAX_DEPTH_LIMIT: Final = 200

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")

# Smallest argument that needs each head size; a smaller one is not canonical.
_MIN_FOR_AI: Final = {24: 24, 25: 0x100, 26: 0x10000, 27: 0x100000000}

_MAJOR_NAMES: Final = ("uint", "nint", "bytes", "text", "array", "map", "tag", "simple")


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
