"""Requests as bytes: encoding a checked request, and decoding one from the network.

Design note
-----------
A request is at most :data:`~veil.onion.rpc.limits.MAX_REQUEST_SIZE` bytes (a full body
plus room for the rest), checked before parsing; requests are decoded strictly.

Hot path. A node answers mostly unsigned stores, so :func:`decode_request` first tries
to read the one byte layout in which every veil client encodes them (canonical CBOR)
with plain slicing; anything else, or any value out of range, goes to the general decode
and :func:`~veil.onion.rpc.requests.parse_request`, which decide and raise. It gives
exactly the general code's requests and errors (tests/test_rpc_fast.py compares them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from ..cbor import decode, encode
from ..errors import InvalidId, SchemaError
from ..keys import AccountId
from .limits import (
    ID_TEXT_LENGTH,
    MAX_BODY,
    MAX_REQUEST_SIZE,
    MIN_TTL_MS,
    NAMESPACE_MAX,
    NAMESPACE_MIN,
)
from .namespaces import max_ttl_ms
from .requests import Request, StoreRequest, parse_request


def decode_request(data: bytes | bytearray | memoryview) -> Request:
    """Decode and check a request from the network.

    Raises only :class:`~veil.onion.errors.TooLarge` (over :data:`MAX_REQUEST_SIZE`, before
    parsing), :class:`~veil.onion.errors.DecodeError` and :class:`~veil.onion.errors.SchemaError`.
    """
    if type(data) is bytes and len(data) <= MAX_REQUEST_SIZE:
        fast = _fast_unsigned_store(data)
        if fast is not None:
            return fast
    return parse_request(decode(data, max_size=MAX_REQUEST_SIZE))


# --- the hot path of decode_request ------------------------------------------------------
#
# Most requests a node answers are unsigned inbox stores, and every veil client encodes
# them with veil.onion.cbor.encode, so they arrive as exactly one byte layout (map keys in the
# bytewise order of their encodings):
#
#   {"method": "store", "params": {"ttl": uint, "data": bytes, "pubkey": text(66),
#                                  "namespace": int}}
#
# _fast_unsigned_store reads that layout with plain slicing. It only ever *accepts*: for
# any input that is not exactly this layout with every value in range, it returns None
# and decode_request takes the general path (decode + parse_request), which decides
# and raises its usual errors. So the checks and errors are those of the general path,
# and an accepted input gives the very request the general path would give
# (tests/test_rpc.py compares the two on valid, out-of-range and mutated inputs).

_FAST_STORE_HEAD: Final = b"\xa2\x66method\x65store\x66params\xa4\x63ttl"
_FAST_DATA_KEY: Final = b"\x64data"
#: The "pubkey" key, then the head of a 66-character text (an account ID's length).
_FAST_PUBKEY_KEY: Final = b"\x66pubkey\x78\x42"
_FAST_NAMESPACE_KEY: Final = b"\x69namespace"
#: Bytes of argument after a head's first byte, by its additional information.
_FAST_WIDTHS: Final = {24: 1, 25: 2, 26: 4}


def _fast_head(data: bytes, pos: int) -> tuple[int, int, int]:
    """``(major type, argument, offset after the head)`` of the CBOR head at ``pos``, for
    the heads of at most 4 bytes of argument; ``(-1, 0, pos)`` for any other (or none)."""
    if pos >= len(data):
        return -1, 0, pos
    initial = data[pos]
    ai = initial & 0x1F
    if ai < 24:
        return initial >> 5, ai, pos + 1
    width = _FAST_WIDTHS.get(ai)
    if width is None or pos + 1 + width > len(data):
        return -1, 0, pos
    return initial >> 5, int.from_bytes(data[pos + 1 : pos + 1 + width], "big"), pos + 1 + width


def _fast_unsigned_store(data: bytes) -> StoreRequest | None:
    """The request, if ``data`` is exactly the layout above with valid values; else None."""
    if not data.startswith(_FAST_STORE_HEAD):
        return None
    major, ttl, pos = _fast_head(data, len(_FAST_STORE_HEAD))
    if major != 0 or not data.startswith(_FAST_DATA_KEY, pos):
        return None
    major, size, pos = _fast_head(data, pos + len(_FAST_DATA_KEY))
    if major != 2 or not 1 <= size <= MAX_BODY:
        return None
    body = data[pos : pos + size]
    pos += size
    if len(body) != size or not data.startswith(_FAST_PUBKEY_KEY, pos):
        return None
    pos += len(_FAST_PUBKEY_KEY)
    raw_id = data[pos : pos + ID_TEXT_LENGTH]
    pos += ID_TEXT_LENGTH
    if len(raw_id) != ID_TEXT_LENGTH or not data.startswith(_FAST_NAMESPACE_KEY, pos):
        return None
    major, arg, pos = _fast_head(data, pos + len(_FAST_NAMESPACE_KEY))
    if major == 0:
        namespace = arg
    elif major == 1:
        namespace = -1 - arg
    else:
        return None
    if (
        pos != len(data)
        or not NAMESPACE_MIN <= namespace <= NAMESPACE_MAX
        or not MIN_TTL_MS <= ttl <= max_ttl_ms(namespace)
        or not raw_id.isascii()  # then it is valid UTF-8, and decodes as ASCII
    ):
        return None
    try:
        account = AccountId.parse(raw_id.decode("ascii"))
    except InvalidId:
        return None
    return StoreRequest(account, namespace, body, ttl)


def encode_request(method: str, params: Mapping[str, Any]) -> bytes:
    """Encode a request after checking it as the node will (:class:`SchemaError` if bad)."""
    obj = {"method": method, "params": dict(params)}
    parse_request(obj)
    out = encode(obj)
    if len(out) > MAX_REQUEST_SIZE:  # pragma: no cover - the schema's limits prevent it
        raise SchemaError(f"{method}: request of {len(out)} bytes is over {MAX_REQUEST_SIZE}")
    return out
