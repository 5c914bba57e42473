"""The storage RPC: what a client asks a node's storage, and what the node answers.

Design note
-----------
Sans-IO and shared by node and client: bytes in, typed objects out, and builders so that
a client never hand-rolls a request or a signature.

Wire format (strict CBOR, :mod:`onion.cbor`)::

    request: {"method": str, "params": {...}}
    reply:   {"status": "ok", "t": node_ms, "result": {...}}
             {"status": <wire status>, "t": node_ms, "error": "message"}

Every reply, errors included, carries ``t``, the node's clock in ms, so that a client
whose clock is off learns by how much. Statuses are those of
:data:`onion.errors.STATUS_CODES`; :meth:`Reply.raise_for_status` turns one back into its
typed error. Replies are decoded with ``allow_unknown`` (a newer node may add fields, such
as the ``swarm`` of a ``wrong_swarm`` answer); requests are decoded strictly.

Accounts and namespaces. ``pubkey`` is the account ID (``05`` + hex of its X25519 key).
A namespace is an int in [-32768, 32767]:

* ``0`` is the inbox: anyone may store (unsigned, so the node does not learn the
  sender); only the owner retrieves, deletes or changes expiries;
* ``1 .. 32767`` are private: the owner alone stores and reads;
* ``-32768 .. -1`` are public-read: the owner alone stores; anyone retrieves unsigned
  (channel posts: a follower does not identify itself). The sign bit is the whole rule,
  which is hard to get wrong, and the default direction (positive) is the private one,
  so a mistaken namespace number never publishes anything.

TTL is 10 s to 14 days in the inbox and up to 30 days in the owner-written namespaces
(private and public-read): Session's limits, where the shorter one applies to what
anyone may write.

Authentication. A request that needs it carries ``pubkey_ed25519`` (the account's
Ed25519 key), ``timestamp`` (ms) and ``signature``. The node checks that the timestamp is
within :data:`CLOCK_SKEW_MS` of its clock, that the Ed25519 key maps to the account ID
(:func:`onion.keys.account_id_of_ed25519`), then the signature, made with
:func:`onion.crypto.sign` under the domain ``b"storage"`` over a canonical,
length-prefixed encoding of (method, account key, namespace, timestamp, method fields):
the message hash and TTL for a store, the hashes for a delete, the expiry and hashes for
an expire. Naming the method makes a retrieve signature useless as a delete signature. A
replayed signed request (within the skew window) does nothing new: stores deduplicate,
deletes and expiries are idempotent, retrieves only read.

Seam for delegated keys (the capabilities issue): :func:`verify_request` is the one
place where "this Ed25519 key may act for this account" is decided. A later ``capability``
param (a CBOR DIDSession-style capability signed by the account) will let it accept a
session key that the capability authorizes for the method and namespace, instead of
requiring ``account_id_of_ed25519(pubkey_ed25519) == account``.

Message hash: BLAKE2b-256 (purpose ``veil/msg-hash``) over the account key, the namespace
and the data, *not* the timestamp or TTL, so that sending the same message twice stores
it once (the node keeps the later expiry). Hashes travel as raw 32-byte CBOR byte
strings: CBOR carries bytes natively, so there is no base64 or hex on the wire (clients
show them in hex).

Swarms. A node that holds a consensus serves only the accounts of its own swarm. A
request for another account gets a ``wrong_swarm`` error whose reply carries, beside
``status``, ``t`` and ``error``, the account's swarm as the node sees it::

    "swarm": {"id": 64-bit swarm ID,
              "members": [{"id": node ID (32), "onion": onion key (32),
                           "host": IP literal, "port": int}, ...]}

so that a client can send the request again to one of those members at once
(:class:`SwarmMoved`, raised by :meth:`Reply.raise_for_status`, carries it as a
:class:`SwarmInfo`). ``get_swarm`` answers the same map from any node, with the epoch of
the consensus it comes from: ``{"swarm": {...}, "epoch": int}``. Both are hints from
one node: a client that holds a verified consensus of its own should trust that first.
A node that has no consensus yet answers ``unavailable``.

Hot paths. A node answers mostly unsigned stores, so :func:`decode_request` first
tries to read the one byte layout in which every veil client encodes them (canonical
CBOR) with plain slicing; anything else, or any value out of range, goes to the general
decode and :func:`parse_request`, which decide and raise. :func:`store_reply` assembles
a store's ok reply from constant parts. Both give exactly the general code's bytes,
requests and errors (tests/test_rpc_fast.py compares them).

Sizes. A request is at most :data:`MAX_REQUEST_SIZE` (a full message body plus room for
the rest), checked before parsing. A retrieve answer stops at :data:`RETRIEVE_MAX_BYTES`
(counting ``len(data) + RETRIEVE_ITEM_OVERHEAD`` per message, the first message always
included) and :data:`RETRIEVE_MAX_LIMIT` messages, so every reply fits in
:data:`MAX_REPLY_SIZE`, below the onion's largest size class (128 KiB); ``more`` tells the
client to ask again from the last hash.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from . import crypto
from .cbor import Field, Schema, decode, encode
from .errors import (
    STATUS_CODES,
    BadSignature,
    ClockSkew,
    InvalidId,
    InvalidKey,
    SchemaError,
    Unauthorized,
    VeilError,
    WrongSwarm,
    error_for_status,
    wire_status,
)
from .keys import Account, AccountId, account_id_of_ed25519
from .packet import Hop

__all__ = [
    "CLOCK_SKEW_MS",
    "DAY_MS",
    "DOMAIN",
    "INBOX",
    "MAX_BODY",
    "MAX_ERROR_CHARS",
    "MAX_HASHES",
    "MAX_REPLY_SIZE",
    "MAX_REQUEST_SIZE",
    "MAX_SWARM_MEMBERS",
    "MAX_TTL_MS",
    "MAX_TTL_PRIVATE_MS",
    "MAX_WAIT_S",
    "METHODS",
    "MIN_TTL_MS",
    "NAMESPACE_MAX",
    "NAMESPACE_MIN",
    "RETRIEVE_DEFAULT_LIMIT",
    "RETRIEVE_ITEM_OVERHEAD",
    "RETRIEVE_MAX_BYTES",
    "RETRIEVE_MAX_LIMIT",
    "Auth",
    "DeleteAllRequest",
    "DeleteAllResult",
    "DeleteRequest",
    "DeleteResult",
    "ExpireRequest",
    "ExpireResult",
    "GetSwarmRequest",
    "GetSwarmResult",
    "InfoRequest",
    "InfoResult",
    "Message",
    "Reply",
    "Request",
    "Result",
    "RetrieveRequest",
    "RetrieveResult",
    "StoreRequest",
    "StoreResult",
    "SwarmInfo",
    "SwarmMember",
    "SwarmMoved",
    "decode_reply",
    "decode_request",
    "encode_reply",
    "encode_request",
    "error_reply",
    "is_public_read",
    "make_delete",
    "make_delete_all",
    "make_expire",
    "make_get_swarm",
    "make_info",
    "make_retrieve",
    "make_store",
    "max_ttl_ms",
    "message_hash",
    "ok_reply",
    "parse_request",
    "parse_result",
    "read_needs_auth",
    "signing_message",
    "store_needs_auth",
    "store_reply",
    "swarm_of_reply",
    "verify_request",
]

# --- limits ------------------------------------------------------------------------------

DOMAIN: Final = b"storage"
DAY_MS: Final = 86_400_000
MAX_BODY: Final = 76_800
MIN_TTL_MS: Final = 10_000
MAX_TTL_MS: Final = 14 * DAY_MS
MAX_TTL_PRIVATE_MS: Final = 30 * DAY_MS
NAMESPACE_MIN: Final = -32768
NAMESPACE_MAX: Final = 32767
INBOX: Final = 0
RETRIEVE_MAX_LIMIT: Final = 256
RETRIEVE_DEFAULT_LIMIT: Final = 256
MAX_WAIT_S: Final = 30
#: Hashes in one delete or expire.
MAX_HASHES: Final = 100
CLOCK_SKEW_MS: Final = 60_000
#: A full body plus ample room for every other field (100 hashes take 3,400 bytes).
MAX_REQUEST_SIZE: Final = MAX_BODY + 4096
#: Byte budget of one retrieve answer; see the module note.
RETRIEVE_MAX_BYTES: Final = 100_000
#: Upper bound of the CBOR bytes around one message's data in a retrieve answer.
RETRIEVE_ITEM_OVERHEAD: Final = 100
MAX_REPLY_SIZE: Final = RETRIEVE_MAX_BYTES + 1024
MAX_ERROR_CHARS: Final = 500
#: Characters of an account ID as text ("05" + 64 hex digits).
ID_TEXT_LENGTH: Final = 66
#: Members listed in a ``swarm`` map: the largest swarm a consensus may hold
#: (``2 * onion.directory.MAX_SWARM_TARGET - 1``).
MAX_SWARM_MEMBERS: Final = 127
#: Longest IP literal a member's host may be (as onion.directory).
_MAX_HOST_LEN: Final = 45
_MAX_TIME_MS: Final = 2**63 - 1

METHODS: Final = frozenset(
    {"store", "retrieve", "delete", "delete_all", "expire", "info", "get_swarm"}
)


def is_public_read(namespace: int) -> bool:
    """Namespaces that anyone may read (channel posts): the negative ones."""
    return namespace < 0


def store_needs_auth(namespace: int) -> bool:
    """Storing is signed by the owner everywhere but in the inbox."""
    return namespace != INBOX


def read_needs_auth(namespace: int) -> bool:
    """Retrieving is signed by the owner everywhere but in public-read namespaces."""
    return not is_public_read(namespace)


def max_ttl_ms(namespace: int) -> int:
    """14 days in the inbox (anyone writes), 30 days where only the owner writes."""
    return MAX_TTL_MS if namespace == INBOX else MAX_TTL_PRIVATE_MS


def message_hash(account: AccountId, namespace: int, data: bytes) -> bytes:
    """The 32-byte hash that names (and deduplicates) a stored message."""
    # The bytes of _fields(key, _ns_bytes(namespace), data), joined in one go: this runs
    # for every store a node answers. tests/test_rpc.py checks the two agree.
    key = account.x25519_public
    return crypto.hash32(
        b"".join(
            (
                len(key).to_bytes(4, "big"),
                key,
                _NS_FIELD_LEN,
                namespace.to_bytes(2, "big", signed=True),
                len(data).to_bytes(4, "big"),
                data,
            )
        ),
        _MSG_HASH_PURPOSE,
    )


_MSG_HASH_PURPOSE: Final = b"veil/msg-hash"
_NS_FIELD_LEN: Final = (2).to_bytes(4, "big")  # the length prefix of a namespace field


# --- signatures ----------------------------------------------------------------------------


def _fields(*parts: bytes) -> bytes:
    """Length-prefixed concatenation: no two different field lists encode alike."""
    return b"".join([len(p).to_bytes(4, "big") + p for p in parts])


def _ns_bytes(namespace: int | None) -> bytes:
    return b"" if namespace is None else namespace.to_bytes(2, "big", signed=True)


def signing_message(
    method: str, account: AccountId, namespace: int | None, timestamp: int, extra: bytes = b""
) -> bytes:
    """The bytes signed (under :data:`DOMAIN`) for a request; see the module note.

    ``namespace`` None means "every namespace" (delete_all) and encodes as an empty field,
    distinct from every namespace number.
    """
    return _fields(
        method.encode(),
        account.x25519_public,
        _ns_bytes(namespace),
        timestamp.to_bytes(8, "big"),
        extra,
    )


@dataclass(frozen=True, slots=True, repr=False)
class Auth:
    """The signature fields of a request."""

    pubkey_ed25519: bytes
    timestamp: int
    signature: bytes

    def __repr__(self) -> str:
        return f"Auth(timestamp={self.timestamp})"


# --- typed requests ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoreRequest:
    method: ClassVar[str] = "store"
    account: AccountId
    namespace: int
    data: bytes
    ttl_ms: int
    auth: Auth | None = None

    @property
    def needs_auth(self) -> bool:
        return store_needs_auth(self.namespace)

    @property
    def hash(self) -> bytes:
        return message_hash(self.account, self.namespace, self.data)

    def signed_extra(self) -> bytes:
        return _fields(self.ttl_ms.to_bytes(8, "big"), self.hash)

    def __repr__(self) -> str:  # never the data
        return f"StoreRequest({self.account}, ns={self.namespace}, {len(self.data)} bytes)"


@dataclass(frozen=True, slots=True)
class RetrieveRequest:
    method: ClassVar[str] = "retrieve"
    account: AccountId
    namespace: int
    last_hash: bytes | None = None
    limit: int = RETRIEVE_DEFAULT_LIMIT
    wait_s: int = 0
    auth: Auth | None = None

    @property
    def needs_auth(self) -> bool:
        return read_needs_auth(self.namespace)

    def signed_extra(self) -> bytes:
        return b""


@dataclass(frozen=True, slots=True)
class DeleteRequest:
    method: ClassVar[str] = "delete"
    account: AccountId
    namespace: int
    hashes: tuple[bytes, ...]
    auth: Auth | None = None
    needs_auth: ClassVar[bool] = True

    def signed_extra(self) -> bytes:
        return _fields(*self.hashes)


@dataclass(frozen=True, slots=True)
class DeleteAllRequest:
    method: ClassVar[str] = "delete_all"
    account: AccountId
    #: None: every namespace of the account.
    namespace: int | None
    auth: Auth | None = None
    needs_auth: ClassVar[bool] = True

    def signed_extra(self) -> bytes:
        return b""


@dataclass(frozen=True, slots=True)
class ExpireRequest:
    method: ClassVar[str] = "expire"
    account: AccountId
    namespace: int
    hashes: tuple[bytes, ...]
    #: The new expiry, ms since the epoch (node's clock).
    expiry: int
    auth: Auth | None = None
    needs_auth: ClassVar[bool] = True

    def signed_extra(self) -> bytes:
        return _fields(self.expiry.to_bytes(8, "big"), *self.hashes)


@dataclass(frozen=True, slots=True)
class InfoRequest:
    method: ClassVar[str] = "info"
    needs_auth: ClassVar[bool] = False
    auth: ClassVar[None] = None


@dataclass(frozen=True, slots=True)
class GetSwarmRequest:
    """Which swarm holds an account (answered once the network issue lands)."""

    method: ClassVar[str] = "get_swarm"
    account: AccountId
    needs_auth: ClassVar[bool] = False
    auth: ClassVar[None] = None


Request = (
    StoreRequest
    | RetrieveRequest
    | DeleteRequest
    | DeleteAllRequest
    | ExpireRequest
    | InfoRequest
    | GetSwarmRequest
)
_Signable = StoreRequest | RetrieveRequest | DeleteRequest | DeleteAllRequest | ExpireRequest

# --- schemas ---------------------------------------------------------------------------------

_PUBKEY = Field(str, size=ID_TEXT_LENGTH)
_NAMESPACE = Field(int, min=NAMESPACE_MIN, max=NAMESPACE_MAX)
_HASH = Field(bytes, size=32)
_HASHES = Field(list, min_len=1, max_len=MAX_HASHES, items=_HASH)
_AUTH_FIELDS: Final = {
    "pubkey_ed25519": Field(bytes, size=32, required=False),
    "timestamp": Field(int, min=0, max=_MAX_TIME_MS, required=False),
    "signature": Field(bytes, size=crypto.SIG_BYTES, required=False),
}

_ENVELOPE = Schema(
    "request",
    {"method": Field(str, choices=METHODS), "params": Field(dict)},
)
_PARAMS: Final[dict[str, Schema]] = {
    "store": Schema(
        "store.params",
        {
            "pubkey": _PUBKEY,
            "namespace": _NAMESPACE,
            "data": Field(bytes, min_len=1, max_len=MAX_BODY),
            "ttl": Field(int, min=MIN_TTL_MS, max=MAX_TTL_PRIVATE_MS),
            **_AUTH_FIELDS,
        },
    ),
    "retrieve": Schema(
        "retrieve.params",
        {
            "pubkey": _PUBKEY,
            "namespace": _NAMESPACE,
            "last_hash": Field(bytes, size=32, required=False),
            "limit": Field(int, min=1, max=RETRIEVE_MAX_LIMIT, required=False),
            "wait": Field(int, min=0, max=MAX_WAIT_S, required=False),
            **_AUTH_FIELDS,
        },
    ),
    "delete": Schema(
        "delete.params",
        {"pubkey": _PUBKEY, "namespace": _NAMESPACE, "hashes": _HASHES, **_AUTH_FIELDS},
    ),
    "delete_all": Schema(
        "delete_all.params",
        {
            "pubkey": _PUBKEY,
            "namespace": Field(int, min=NAMESPACE_MIN, max=NAMESPACE_MAX, nullable=True),
            **_AUTH_FIELDS,
        },
    ),
    "expire": Schema(
        "expire.params",
        {
            "pubkey": _PUBKEY,
            "namespace": _NAMESPACE,
            "hashes": _HASHES,
            "expiry": Field(int, min=0, max=_MAX_TIME_MS),
            **_AUTH_FIELDS,
        },
    ),
    "info": Schema("info.params", {}),
    "get_swarm": Schema("get_swarm.params", {"pubkey": _PUBKEY}),
}


def _account(params: Mapping[str, Any], path: str) -> AccountId:
    try:
        return AccountId.parse(params["pubkey"])
    except InvalidId as exc:
        raise SchemaError(f"{path}.pubkey: {exc}") from None


def _auth(params: Mapping[str, Any], path: str) -> Auth | None:
    if "signature" not in params and "timestamp" not in params and "pubkey_ed25519" not in params:
        return None  # the usual unsigned request (an inbox store), decided quickly
    present = [k for k in _AUTH_FIELDS if k in params]
    if len(present) != len(_AUTH_FIELDS):
        missing = next(k for k in _AUTH_FIELDS if k not in params)
        raise SchemaError(
            f"{path}.{missing}: required with "
            + ", ".join(present)
            + " (pubkey_ed25519, timestamp and signature go together)"
        )
    return Auth(params["pubkey_ed25519"], params["timestamp"], params["signature"])


def parse_request(obj: object) -> Request:
    """Check a decoded request (a map) and return it typed; :class:`SchemaError` if not.

    Checks every field's type, size and range, and the per-namespace rules that do not
    need the node's state or clock (the TTL limit of the namespace). Signatures are
    checked by :func:`verify_request`.
    """
    if (
        type(obj) is dict
        and len(obj) == 2
        and type(obj.get("method")) is str
        and obj["method"] in METHODS
        and type(obj.get("params")) is dict
    ):
        envelope = obj  # exactly what _ENVELOPE accepts, and nothing else: no need to ask
    else:
        envelope = _ENVELOPE.check(obj)
    method: str = envelope["method"]
    path = f"{method}.params"
    p = _PARAMS[method].check(envelope["params"])  # errors name "<method>.params.<field>"
    if method == "info":
        return InfoRequest()
    account = _account(p, path)
    if method == "get_swarm":
        return GetSwarmRequest(account)
    auth = _auth(p, path)
    ns = p["namespace"]
    if method == "store":
        if p["ttl"] > max_ttl_ms(ns):
            raise SchemaError(
                f"{path}.ttl: {p['ttl']} is above the maximum {max_ttl_ms(ns)} of namespace {ns}"
            )
        return StoreRequest(account, ns, p["data"], p["ttl"], auth)
    if method == "retrieve":
        return RetrieveRequest(
            account,
            ns,
            p.get("last_hash"),
            p.get("limit", RETRIEVE_DEFAULT_LIMIT),
            p.get("wait", 0),
            auth,
        )
    if method == "delete":
        return DeleteRequest(account, ns, tuple(p["hashes"]), auth)
    if method == "delete_all":
        return DeleteAllRequest(account, ns, auth)
    assert method == "expire"
    return ExpireRequest(account, ns, tuple(p["hashes"]), p["expiry"], auth)


def decode_request(data: bytes | bytearray | memoryview) -> Request:
    """Decode and check a request from the network.

    Raises only :class:`~onion.errors.TooLarge` (over :data:`MAX_REQUEST_SIZE`, before
    parsing), :class:`~onion.errors.DecodeError` and :class:`~onion.errors.SchemaError`.
    """
    if type(data) is bytes and len(data) <= MAX_REQUEST_SIZE:
        fast = _fast_unsigned_store(data)
        if fast is not None:
            return fast
    return parse_request(decode(data, max_size=MAX_REQUEST_SIZE))


# --- the hot path of decode_request ------------------------------------------------------
#
# Most requests a node answers are unsigned inbox stores, and every veil client encodes
# them with onion.cbor.encode, so they arrive as exactly one byte layout (map keys in the
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


def verify_request(request: Request, now_ms: int, skew_ms: int = CLOCK_SKEW_MS) -> None:
    """Check a request's signature, if it needs one or carries one.

    Raises :class:`~onion.errors.Unauthorized` (missing, wrong key, bad signature) or
    :class:`~onion.errors.ClockSkew` (timestamp more than ``skew_ms`` from ``now_ms``;
    checked first, as it is the cheapest and the most useful to a client whose clock is
    off). A request that carries a signature it does not need is still checked: a bad
    signature is never ignored.
    """
    auth = request.auth
    if auth is None:
        if request.needs_auth:
            where = getattr(request, "namespace", None)
            raise Unauthorized(
                f"{request.method} in namespace {where} must be signed by the account"
            )
        return
    assert not isinstance(request, InfoRequest | GetSwarmRequest)
    if abs(auth.timestamp - now_ms) > skew_ms:
        raise ClockSkew(
            f"request timestamp {auth.timestamp} is more than {skew_ms} ms from the node's "
            f"time {now_ms}"
        )
    # Seam for delegated session keys: a capability would be checked here instead.
    try:
        owner = account_id_of_ed25519(auth.pubkey_ed25519)
    except (InvalidKey, InvalidId):
        raise Unauthorized("pubkey_ed25519 is not a valid Ed25519 key") from None
    if owner != request.account:
        raise Unauthorized("pubkey_ed25519 is not the key of the account")
    message = signing_message(
        request.method, request.account, request.namespace, auth.timestamp, request.signed_extra()
    )
    try:
        crypto.verify(auth.pubkey_ed25519, DOMAIN, message, auth.signature)
    except BadSignature:
        raise Unauthorized(f"signature does not verify for {request.method}") from None


# --- builders (client side) --------------------------------------------------------------


def _as_id(who: Account | AccountId | str) -> AccountId:
    if isinstance(who, Account):
        return who.id
    if isinstance(who, AccountId):
        return who
    return AccountId.parse(who)


def _signed(params: dict[str, Any], account: Account, method: str, now_ms: int) -> None:
    """Add the auth fields to ``params``, signing what :func:`verify_request` will check.

    The request is parsed first (SchemaError for a bad field, before anything is signed)
    and the signed bytes come from the parsed request, the same code the node runs.
    """
    request = parse_request({"method": method, "params": params})
    assert not isinstance(request, InfoRequest | GetSwarmRequest)
    _AUTH_FIELDS["timestamp"].check(now_ms, f"{method}.params.timestamp")
    message = signing_message(
        method, request.account, request.namespace, now_ms, request.signed_extra()
    )
    params["pubkey_ed25519"] = account.ed25519_public
    params["timestamp"] = now_ms
    params["signature"] = account.sign(DOMAIN, message)


def make_store(
    to: Account | AccountId | str,
    data: bytes,
    ttl_ms: int,
    *,
    now_ms: int,
    namespace: int = INBOX,
) -> bytes:
    """A store request. ``to`` is the recipient's ID for an (unsigned) inbox store, or the
    owner's :class:`Account` for a signed store into one of its own namespaces.

    Raises :class:`ValueError` if a namespace other than the inbox is given without the
    owner's Account, :class:`SchemaError` for a body, TTL or namespace out of limits.
    """
    account = _as_id(to)
    params: dict[str, Any] = {
        "pubkey": str(account),
        "namespace": namespace,
        "data": data,
        "ttl": ttl_ms,
    }
    if isinstance(to, Account):
        _signed(params, to, "store", now_ms)
    elif store_needs_auth(namespace):
        raise ValueError(f"storing into namespace {namespace} needs the owner's Account")
    return encode_request("store", params)


def make_retrieve(
    account: Account | AccountId | str,
    *,
    now_ms: int,
    namespace: int = INBOX,
    last_hash: bytes | None = None,
    limit: int | None = None,
    wait_s: int = 0,
) -> bytes:
    """A retrieve request: signed if ``account`` is an :class:`Account`; an ID alone is
    enough only for a public-read namespace (:class:`ValueError` otherwise)."""
    aid = _as_id(account)
    params: dict[str, Any] = {"pubkey": str(aid), "namespace": namespace}
    if last_hash is not None:
        params["last_hash"] = last_hash
    if limit is not None:
        params["limit"] = limit
    if wait_s:
        params["wait"] = wait_s
    if isinstance(account, Account):
        _signed(params, account, "retrieve", now_ms)
    elif read_needs_auth(namespace):
        raise ValueError(f"reading namespace {namespace} needs the owner's Account")
    return encode_request("retrieve", params)


def make_delete(
    account: Account, hashes: Sequence[bytes], *, now_ms: int, namespace: int = INBOX
) -> bytes:
    """A signed delete of up to :data:`MAX_HASHES` messages."""
    params: dict[str, Any] = {
        "pubkey": str(account.id),
        "namespace": namespace,
        "hashes": list(hashes),
    }
    _signed(params, account, "delete", now_ms)
    return encode_request("delete", params)


def make_delete_all(account: Account, *, namespace: int | None, now_ms: int) -> bytes:
    """A signed delete of every message in ``namespace`` (None: in every namespace)."""
    params: dict[str, Any] = {"pubkey": str(account.id), "namespace": namespace}
    _signed(params, account, "delete_all", now_ms)
    return encode_request("delete_all", params)


def make_expire(
    account: Account,
    hashes: Sequence[bytes],
    expiry_ms: int,
    *,
    now_ms: int,
    namespace: int = INBOX,
) -> bytes:
    """A signed change of these messages' expiry to ``expiry_ms`` (ms since the epoch)."""
    params: dict[str, Any] = {
        "pubkey": str(account.id),
        "namespace": namespace,
        "hashes": list(hashes),
        "expiry": expiry_ms,
    }
    _signed(params, account, "expire", now_ms)
    return encode_request("expire", params)


@functools.cache
def make_info() -> bytes:
    # The same bytes every time (no parameters, unsigned): encoded and checked once.
    return encode_request("info", {})


def make_get_swarm(account: AccountId | str) -> bytes:
    return encode_request("get_swarm", {"pubkey": str(_as_id(account))})


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoreResult:
    hash: bytes
    expiry: int
    #: False if the same message was already stored (its expiry may have been extended).
    created: bool

    SCHEMA: ClassVar[Schema] = Schema(
        "store.result",
        {"hash": _HASH, "expiry": Field(int, min=0), "created": Field(bool)},
    )

    def to_wire(self) -> dict[str, Any]:
        return {"hash": self.hash, "expiry": self.expiry, "created": self.created}

    @classmethod
    def from_wire(cls, r: dict[str, Any]) -> StoreResult:
        cls.SCHEMA.check(r)
        return cls(r["hash"], r["expiry"], r["created"])


@dataclass(frozen=True, slots=True)
class Message:
    hash: bytes
    data: bytes
    #: When the node stored it (ms, node's clock).
    timestamp: int
    expiry: int

    SCHEMA: ClassVar[Schema] = Schema(
        "message",
        {
            "hash": _HASH,
            "data": Field(bytes, max_len=MAX_BODY),
            "timestamp": Field(int, min=0),
            "expiry": Field(int, min=0),
        },
    )

    def to_wire(self) -> dict[str, Any]:
        return {
            "hash": self.hash,
            "data": self.data,
            "timestamp": self.timestamp,
            "expiry": self.expiry,
        }

    def __repr__(self) -> str:
        return f"Message({self.hash.hex()[:16]}..., {len(self.data)} bytes)"


@dataclass(frozen=True, slots=True)
class RetrieveResult:
    messages: list[Message]
    #: More messages follow: ask again with ``last_hash`` = the last message's hash.
    more: bool

    SCHEMA: ClassVar[Schema] = Schema(
        "retrieve.result",
        {
            "messages": Field(
                list, max_len=RETRIEVE_MAX_LIMIT, items=Field(dict, schema=Message.SCHEMA)
            ),
            "more": Field(bool),
        },
    )

    def to_wire(self) -> dict[str, Any]:
        return {"messages": [m.to_wire() for m in self.messages], "more": self.more}

    @classmethod
    def from_wire(cls, r: dict[str, Any]) -> RetrieveResult:
        cls.SCHEMA.check(r)
        return cls(
            [Message(m["hash"], m["data"], m["timestamp"], m["expiry"]) for m in r["messages"]],
            r["more"],
        )


@dataclass(frozen=True, slots=True)
class DeleteResult:
    #: The hashes that were there and are now deleted.
    deleted: list[bytes]

    SCHEMA: ClassVar[Schema] = Schema(
        "delete.result", {"deleted": Field(list, max_len=MAX_HASHES, items=_HASH)}
    )

    def to_wire(self) -> dict[str, Any]:
        return {"deleted": list(self.deleted)}

    @classmethod
    def from_wire(cls, r: dict[str, Any]) -> DeleteResult:
        cls.SCHEMA.check(r)
        return cls(list(r["deleted"]))


@dataclass(frozen=True, slots=True)
class DeleteAllResult:
    #: How many messages were deleted.
    deleted: int

    SCHEMA: ClassVar[Schema] = Schema("delete_all.result", {"deleted": Field(int, min=0)})

    def to_wire(self) -> dict[str, Any]:
        return {"deleted": self.deleted}

    @classmethod
    def from_wire(cls, r: dict[str, Any]) -> DeleteAllResult:
        cls.SCHEMA.check(r)
        return cls(r["deleted"])


@dataclass(frozen=True, slots=True)
class ExpireResult:
    #: The hashes whose expiry is now ``expiry`` (unknown or expired ones are left out).
    updated: list[bytes]
    expiry: int

    SCHEMA: ClassVar[Schema] = Schema(
        "expire.result",
        {"updated": Field(list, max_len=MAX_HASHES, items=_HASH), "expiry": Field(int, min=0)},
    )

    def to_wire(self) -> dict[str, Any]:
        return {"updated": list(self.updated), "expiry": self.expiry}

    @classmethod
    def from_wire(cls, r: dict[str, Any]) -> ExpireResult:
        cls.SCHEMA.check(r)
        return cls(list(r["updated"]), r["expiry"])


@dataclass(frozen=True, slots=True)
class InfoResult:
    version: str
    #: The node's limits by name (max_body, min_ttl_ms, max_ttl_ms, ...).
    limits: dict[str, int]

    SCHEMA: ClassVar[Schema] = Schema(
        "info.result",
        {"version": Field(str, max_len=64), "limits": Field(dict)},
        allow_unknown=True,
    )

    def to_wire(self) -> dict[str, Any]:
        return {"version": self.version, "limits": dict(self.limits)}

    @classmethod
    def from_wire(cls, r: dict[str, Any]) -> InfoResult:
        cls.SCHEMA.check(r)
        limits = r["limits"]
        if not all(isinstance(k, str) and type(v) is int for k, v in limits.items()):
            raise SchemaError("info.result.limits: expected a map of names to integers")
        return cls(r["version"], dict(limits))

    @classmethod
    def current(cls, version: str) -> InfoResult:
        """This protocol's limits, as a node reports them."""
        return cls(
            version,
            {
                "max_body": MAX_BODY,
                "min_ttl_ms": MIN_TTL_MS,
                "max_ttl_ms": MAX_TTL_MS,
                "max_ttl_private_ms": MAX_TTL_PRIVATE_MS,
                "retrieve_max_limit": RETRIEVE_MAX_LIMIT,
                "retrieve_max_bytes": RETRIEVE_MAX_BYTES,
                "max_wait_s": MAX_WAIT_S,
                "max_hashes": MAX_HASHES,
                "clock_skew_ms": CLOCK_SKEW_MS,
                "max_request_size": MAX_REQUEST_SIZE,
            },
        )


# --- swarms (wrong_swarm replies and get_swarm) ----------------------------------------

_SWARM_MEMBER = Schema(
    "swarm.member",
    {
        "id": Field(bytes, size=32),
        "onion": Field(bytes, size=32),
        "host": Field(str, min_len=1, max_len=_MAX_HOST_LEN),
        "port": Field(int, min=1, max=65535),
    },
    # Read from replies: a newer node may describe its members further.
    allow_unknown=True,
)
_SWARM = Schema(
    "swarm",
    {
        "id": Field(int, min=0, max=2**64 - 1),
        "members": Field(
            list, min_len=1, max_len=MAX_SWARM_MEMBERS, items=Field(dict, schema=_SWARM_MEMBER)
        ),
    },
    allow_unknown=True,
)


def _check_host(host: str, where: str) -> None:
    """An IP literal in canonical form (what a consensus holds), or SchemaError."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise SchemaError(f"{where}.host: {host!r} is not an IP address literal") from None
    if str(ip) != host or ip.is_unspecified or ip.is_multicast:
        raise SchemaError(f"{where}.host: {host!r} is not a canonical unicast IP literal")


@dataclass(frozen=True, slots=True)
class SwarmMember:
    """One member of a swarm as a reply names it: enough to build an onion path to it."""

    node_id: bytes
    onion_key: bytes
    host: str
    port: int

    def as_hop(self) -> Hop:
        """This member as the destination (or a relay) of an onion path."""
        return Hop(node_id=self.node_id, onion_key=self.onion_key, host=self.host, port=self.port)

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.node_id, "onion": self.onion_key, "host": self.host, "port": self.port}

    def __repr__(self) -> str:
        return f"SwarmMember({self.node_id.hex()[:16]}..., {self.host}:{self.port})"


@dataclass(frozen=True, slots=True)
class SwarmInfo:
    """A swarm's ID on the ring and its members (sorted by node ID, as in a consensus)."""

    swarm_id: int
    members: tuple[SwarmMember, ...]

    @classmethod
    def of(cls, swarm: Any) -> SwarmInfo:
        """From an :class:`onion.directory.Swarm` (anything with ``swarm_id`` and
        ``members`` that have ``node_id``, ``onion_key``, ``host`` and ``port``)."""
        return cls(
            swarm.swarm_id,
            tuple(SwarmMember(m.node_id, m.onion_key, m.host, m.port) for m in swarm.members),
        )

    @property
    def hops(self) -> tuple[Hop, ...]:
        return tuple(m.as_hop() for m in self.members)

    def to_wire(self) -> dict[str, Any]:
        """The ``swarm`` map; :class:`ValueError` if it would not pass :meth:`from_wire`."""
        obj = {"id": self.swarm_id, "members": [m.to_wire() for m in self.members]}
        try:
            SwarmInfo.from_wire(obj)
        except SchemaError as exc:
            raise ValueError(f"not a valid swarm: {exc}") from None
        return obj

    @classmethod
    def from_wire(cls, obj: object) -> SwarmInfo:
        """Check a ``swarm`` map from a reply; :class:`SchemaError` if it is not one.

        Unknown fields are ignored (a newer node may add some); hosts must be canonical
        IP literals and no node may be listed twice.
        """
        raw = _SWARM.check(obj)
        members = []
        seen: set[bytes] = set()
        for index, m in enumerate(raw["members"]):
            where = f"swarm.members[{index}]"
            _check_host(m["host"], where)
            if m["id"] in seen:
                raise SchemaError(f"{where}.id: node listed twice")
            seen.add(m["id"])
            members.append(SwarmMember(m["id"], m["onion"], m["host"], m["port"]))
        return cls(raw["id"], tuple(members))

    def __repr__(self) -> str:
        return f"SwarmInfo({self.swarm_id}, {len(self.members)} members)"


class SwarmMoved(WrongSwarm):
    """``wrong_swarm`` with the account's swarm: send the request to one of its members.

    The node raises it to answer (:func:`error_reply` adds the ``swarm`` field); a client
    gets it from :meth:`Reply.raise_for_status` when the reply names a valid swarm.
    """

    def __init__(self, message: str, swarm: SwarmInfo) -> None:
        super().__init__(message)
        self.swarm = swarm


@dataclass(frozen=True, slots=True)
class GetSwarmResult:
    """The account's swarm, from the consensus of ``epoch``."""

    swarm: SwarmInfo
    epoch: int

    SCHEMA: ClassVar[Schema] = Schema(
        "get_swarm.result",
        {"swarm": Field(dict), "epoch": Field(int, min=0, max=_MAX_TIME_MS)},
        allow_unknown=True,
    )

    def to_wire(self) -> dict[str, Any]:
        return {"swarm": self.swarm.to_wire(), "epoch": self.epoch}

    @classmethod
    def from_wire(cls, r: dict[str, Any]) -> GetSwarmResult:
        cls.SCHEMA.check(r)
        return cls(SwarmInfo.from_wire(r["swarm"]), r["epoch"])


def swarm_of_reply(reply: Reply) -> SwarmInfo | None:
    """The swarm a ``wrong_swarm`` reply names, or None if it names none.

    :class:`SchemaError` if the reply has a ``swarm`` field that is not a valid one
    (a client should then fall back on its own consensus).
    """
    if reply.status != WrongSwarm.status or not reply.extra or "swarm" not in reply.extra:
        return None
    return SwarmInfo.from_wire(reply.extra["swarm"])


Result = (
    StoreResult
    | RetrieveResult
    | DeleteResult
    | DeleteAllResult
    | ExpireResult
    | InfoResult
    | GetSwarmResult
)

_RESULTS: Final[dict[str, Any]] = {
    "store": StoreResult,
    "retrieve": RetrieveResult,
    "delete": DeleteResult,
    "delete_all": DeleteAllResult,
    "expire": ExpireResult,
    "info": InfoResult,
    "get_swarm": GetSwarmResult,
}


def parse_result(method: str, result: dict[str, Any]) -> Result:
    """The typed result of ``method`` from a reply's ``result`` map (:class:`SchemaError`)."""
    cls = _RESULTS.get(method)
    if cls is None:
        raise ValueError(f"no result type for {method!r}")
    return cls.from_wire(result)


# --- replies ---------------------------------------------------------------------------------

_REPLY = Schema(
    "reply",
    {
        "status": Field(str, choices=frozenset(STATUS_CODES)),
        "t": Field(int, min=0, max=_MAX_TIME_MS),
        "result": Field(dict, required=False),
        "error": Field(str, max_len=MAX_ERROR_CHARS, required=False),
    },
    # A newer node may add fields (e.g. "swarm" with wrong_swarm); a client ignores them.
    allow_unknown=True,
)


@dataclass(frozen=True, slots=True)
class Reply:
    """A decoded reply: ``status`` (wire status), ``t`` (node time, ms), and either
    ``result`` (status "ok") or ``error`` (a message)."""

    status: str
    t: int
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
        :class:`~onion.errors.WrongSwarm`.
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
    obj.update(status=reply.status, t=reply.t)
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


def ok_reply(t: int, result: Mapping[str, Any]) -> bytes:
    """The bytes of a successful reply at node time ``t``.

    Same bytes and same errors as ``encode_reply(Reply("ok", t, dict(result)))``; the
    usual case (an int ``t`` in range, a dict result) skips building and re-checking
    the reply map, which is the node's own.
    """
    if type(t) is int and 0 <= t <= _MAX_TIME_MS and type(result) is dict:
        return b"".join(
            (_OK_REPLY_HEAD, encode(t), _OK_REPLY_RESULT, encode(result), _OK_REPLY_TAIL)
        )
    return encode_reply(Reply("ok", t, dict(result)))


# The canonical encoding of a store's result map: keys "hash", "expiry", "created" (in the
# bytewise order of their encodings), the hash a 32-byte string.
_STORE_RESULT_HEAD: Final = b"\xa3\x64hash\x58\x20"
_STORE_RESULT_EXPIRY: Final = b"\x66expiry"
_STORE_RESULT_CREATED: Final = (b"\x67created\xf4", b"\x67created\xf5")


def store_reply(t: int, result: StoreResult) -> bytes:
    """The bytes of the successful reply to a store: ``ok_reply(t, result.to_wire())``.

    Same bytes and errors as that; the usual case (a 32-byte hash, an int expiry and a
    bool, as the node's store gives) is assembled from constant parts, since a node
    sends one of these for every message it takes.
    """
    h, expiry, created = result.hash, result.expiry, result.created
    if (
        type(t) is int
        and 0 <= t <= _MAX_TIME_MS
        and type(h) is bytes
        and len(h) == 32
        and type(expiry) is int
        and 0 <= expiry < 2**64
        and type(created) is bool
    ):
        return b"".join(
            (
                _OK_REPLY_HEAD,
                _encode_uint(t),
                _OK_REPLY_RESULT,
                _STORE_RESULT_HEAD,
                h,
                _STORE_RESULT_EXPIRY,
                _encode_uint(expiry),
                _STORE_RESULT_CREATED[created],
                _OK_REPLY_TAIL,
            )
        )
    return ok_reply(t, result.to_wire())


def _encode_uint(value: int) -> bytes:
    """``encode(value)`` for 0 <= value < 2**64; times in ms (above 2**32) inline."""
    if value >= 0x100000000:
        return b"\x1b" + value.to_bytes(8, "big")  # the shortest head for them
    return encode(value)


def error_reply(t: int, error: VeilError) -> bytes:
    """The bytes of the error reply for ``error`` (its status and message) at node time ``t``.

    The message is cut to :data:`MAX_ERROR_CHARS`; errors raised by veil never quote
    message contents. A :class:`SwarmMoved` error adds its ``swarm`` field.
    """
    status = wire_status(error)
    extra = {"swarm": error.swarm.to_wire()} if isinstance(error, SwarmMoved) else None
    return encode_reply(Reply(status, t, error=str(error) or status, extra=extra))


def decode_reply(data: bytes | bytearray | memoryview, *, max_size: int = MAX_REPLY_SIZE) -> Reply:
    """Decode a reply (TooLarge, DecodeError or SchemaError if it is not one).

    An error *status* is not raised here: the client reads ``t`` first (for clock skew),
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
