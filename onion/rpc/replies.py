"""Replies as bytes: the reply envelope, its codec, and the node's fast encoders.

Design note
-----------
Wire format (strict CBOR)::

    {"status": "ok", "t": node_ms, "result": {...}}
    {"status": <wire status>, "t": node_ms, "error": "message"}

Every reply, errors included, carries ``t``, the node's clock in ms, so that a client
whose clock is off learns by how much. Statuses are those of
:data:`veil.onion.errors.STATUS_CODES`; :meth:`Reply.raise_for_status` turns one back
into its typed error. Replies are decoded with ``allow_unknown`` (a newer node may add
fields, such as the ``swarm`` of a ``wrong_swarm`` answer).

Hot path. :func:`ok_reply` and :func:`store_reply` assemble the node's usual answers
from constant parts instead of building and re-checking a reply map; they give exactly
the bytes and errors of :func:`encode_reply` (tests/test_rpc_fast.py compares them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from ..cbor import Field, Schema, encode
from ..errors import STATUS_CODES, SchemaError, VeilError, WrongSwarm, error_for_status, wire_status
from .limits import MAX_ERROR_CHARS, MAX_REPLY_SIZE, MAX_TIME_MS
from .results import StoreResult
from .swarms import SwarmInfo, SwarmMoved

_REPLY = Schema(
    "reply",
    {
        "status": Field(str, choices=frozenset(STATUS_CODES)),
        "t": Field(int, min=0, max=MAX_TIME_MS),
        "result": Field(dict, required=False),
        "error": Field(str, max_len=MAX_ERROR_CHARS, required=False),
    },
    # A newer node may add fields (e.g. "swarm" with wrong_swarm); a client ignores them.
    allow_unknown=True,
)


@dataclass(frozen=True, slots=True)
class Reply:
    """A decoded reply: ``status`` (wire status), ``t_ms`` (the node's clock, ms since the
    epoch: ``t`` on the wire), and either
    ``result`` (status "ok") or ``error`` (a message)."""

    status: str
    t_ms: int
    result: dict[str, Any] | None = None
    error: str | None = None
    #: Fields beyond the four above, kept for later protocol versions (e.g. "swarm").
    extra: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def raise_for_status(self) -> dict[str, Any]:
        """The result if ok; else raise the typed error of the status (``t`` stays here).

        A ``wrong_swarm`` reply that names a valid swarm raises :class:`SwarmMoved`
        (carrying it); one without, or with a malformed one, the plain
        :class:`~veil.onion.errors.WrongSwarm`.
        """
        if self.status == "ok":
            assert self.result is not None
            return self.result
        if self.status == WrongSwarm.status:
            try:
                swarm = swarm_of_reply(self)
            except SchemaError:
                swarm = None
            if swarm is not None:
                raise SwarmMoved(self.error or self.status, swarm)
        raise error_for_status(self.status, self.error or "")


def encode_reply(reply: Reply) -> bytes:
    """Encode a reply after checking it (``ValueError`` for an inconsistent one)."""
    obj: dict[str, Any] = dict(reply.extra or {})
    obj.update(status=reply.status, t=reply.t_ms)
    if reply.status == "ok":
        if reply.result is None or reply.error is not None:
            raise ValueError("an ok reply has a result and no error")
        obj["result"] = reply.result
    else:
        if reply.error is None or reply.result is not None:
            raise ValueError("an error reply has an error message and no result")
        obj["error"] = reply.error[:MAX_ERROR_CHARS]
    try:
        _REPLY.check(obj)
    except SchemaError as exc:
        raise ValueError(f"not a valid reply: {exc}") from None
    return encode(obj)


# The canonical encoding of an ok reply is {"t": t, "result": {...}, "status": "ok"} (keys
# in bytewise order of their encodings), so the node's hot path assembles it from parts.
_OK_REPLY_HEAD: Final = b"\xa3\x61t"
_OK_REPLY_RESULT: Final = b"\x66result"
_OK_REPLY_TAIL: Final = b"\x66status\x62ok"


def ok_reply(t_ms: int, result: Mapping[str, Any]) -> bytes:
    """The bytes of a successful reply at node time ``t_ms``.

    Same bytes and same errors as ``encode_reply(Reply("ok", t_ms, dict(result)))``; the
    usual case (an int ``t_ms`` in range, a dict result) skips building and re-checking
    the reply map, which is the node's own.
    """
    if type(t_ms) is int and 0 <= t_ms <= MAX_TIME_MS and type(result) is dict:
        return b"".join(
            (_OK_REPLY_HEAD, encode(t_ms), _OK_REPLY_RESULT, encode(result), _OK_REPLY_TAIL)
        )
    return encode_reply(Reply("ok", t_ms, dict(result)))


# The canonical encoding of a store's result map: keys "hash", "expiry", "created" (in the
# bytewise order of their encodings), the hash a 32-byte string.
_STORE_RESULT_HEAD: Final = b"\xa3\x64hash\x58\x20"
_STORE_RESULT_EXPIRY: Final = b"\x66expiry"
_STORE_RESULT_CREATED: Final = (b"\x67created\xf4", b"\x67created\xf5")


def store_reply(t_ms: int, result: StoreResult) -> bytes:
    """The bytes of the successful reply to a store: ``ok_reply(t_ms, result.to_wire())``.

    Same bytes and errors as that; the usual case (a 32-byte hash, an int expiry and a
    bool, as the node's store gives) is assembled from constant parts, since a node
    sends one of these for every message it takes.
    """
    h, expiry, created = result.hash, result.expiry_ms, result.created
    if (
        type(t_ms) is int
        and 0 <= t_ms <= MAX_TIME_MS
        and type(h) is bytes
        and len(h) == 32
        and type(expiry) is int
        and 0 <= expiry < 2**64
        and type(created) is bool
    ):
        return b"".join(
            (
                _OK_REPLY_HEAD,
                _encode_uint(t_ms),
                _OK_REPLY_RESULT,
                _STORE_RESULT_HEAD,
                h,
                _STORE_RESULT_EXPIRY,
                _encode_uint(expiry),
                _STORE_RESULT_CREATED[created],
                _OK_REPLY_TAIL,
            )
        )
    return ok_reply(t_ms, result.to_wire())


def _encode_uint(value: int) -> bytes:
    """``encode(value)`` for 0 <= value < 2**64; times in ms (above 2**32) inline."""
    if value >= 0x100000000:
        return b"\x1b" + value.to_bytes(8, "big")  # the shortest head for them
    return encode(value)


def error_reply(t_ms: int, error: VeilError) -> bytes:
    """The bytes of the error reply for ``error`` (its status and message) at node time
    ``t_ms``.

    The message is cut to :data:`MAX_ERROR_CHARS`; errors raised by veil never quote
    message contents. A :class:`SwarmMoved` error adds its ``swarm`` field.
    """
    status = wire_status(error)
    extra = {"swarm": error.swarm.to_wire()} if isinstance(error, SwarmMoved) else None
    return encode_reply(Reply(status, t_ms, error=str(error) or status, extra=extra))


def decode_reply(data: bytes | bytearray | memoryview, *, max_size: int = MAX_REPLY_SIZE) -> Reply:
    """Decode a reply (TooLarge, DecodeError or SchemaError if it is not one).

    An error *status* is not raised here: the client reads ``t_ms`` first (clock skew),
    then calls :meth:`Reply.raise_for_status`.
    """
    obj = _REPLY.decode(data, max_size=max_size)
    status = obj["status"]
    if status == "ok":
        if "result" not in obj or "error" in obj:
            raise SchemaError("reply: an ok reply has a result and no error")
    elif "error" not in obj or "result" in obj:
        raise SchemaError("reply: an error reply has an error and no result")
    extra = {k: v for k, v in obj.items() if k not in _REPLY.fields} or None
    return Reply(status, obj["t"], obj.get("result"), obj.get("error"), extra)


def swarm_of_reply(reply: Reply) -> SwarmInfo | None:
    """The swarm a ``wrong_swarm`` reply names, or None if it names none.

    :class:`SchemaError` if the reply has a ``swarm`` field that is not a valid one
    (a client should then fall back on its own consensus).
    """
    if reply.status != WrongSwarm.status or not reply.extra or "swarm" not in reply.extra:
        return None
    return SwarmInfo.from_wire(reply.extra["swarm"])
