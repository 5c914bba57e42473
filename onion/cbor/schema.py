"""Schemas: the shape a decoded map must have, each refusal naming the field at fault.

Design note
-----------
:class:`Schema` checks unknown, missing and mistyped fields, lengths and integer ranges,
each refused with a :class:`~veil.onion.errors.SchemaError` (or the field's own subclass,
``Field(..., error=BadTtl)``) whose message starts with the field's path
(``store.params.pubkey``, ``batch.items[3]``)::

    STORE = Schema("store", {
        "pubkey": Field(bytes, size=32),
        "ttl_ms": Field(int, min=10_000, max=14 * 86_400_000),
        "data": Field(bytes, max_len=76_800),
        "tag": Field(str, max_len=64, required=False),
    })
    request = STORE.decode(body, max_size=100_000)   # dict, or DecodeError/SchemaError

Speed: a value of exactly its field's type and within its bounds passes without the full
check (:func:`_plain_bounds`); anything else takes the full check, so every error is the
same (tests/test_cbor_fast.py compares the two). The path of a failing field is built
only when a check fails.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, TypeAlias

from ..errors import SchemaError
from .decoding import DEFAULT_MAX_DEPTH, decode
from .encoding import encode

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
