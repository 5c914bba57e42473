"""The storage RPC's requests: their typed form, their schemas, and the parser.

Design note
-----------
One frozen dataclass per method, built only by :func:`parse_request` (from a decoded
map, checking every field's type, size and range, and the namespace rules that need no
clock or state) so that a node's handlers never see an unchecked field. Each signable
request names what its signature covers (:meth:`signed_extra`: the message hash and TTL
of a store, the hashes of a delete, the expiry and hashes of an expire); checking the
signature itself is :mod:`veil.onion.rpc.signing`'s job, and bytes in and out are
:mod:`veil.onion.rpc.request_codec`'s.

A TTL out of limits is refused with :class:`~veil.onion.errors.BadTtl`, a
:class:`~veil.onion.errors.SchemaError` whose message names ``<method>.params.ttl``.

Delegated keys (issue 12): every signable request may carry ``capability``, the bytes of
a capability chain (at most :data:`~veil.onion.rpc.limits.MAX_CAPABILITY`, checked by the
chain's decoder: ``too_large``), which goes
with the three signature fields (never alone); then ``pubkey_ed25519`` is the session
key that signed, and :func:`~veil.onion.rpc.signing.verify_request` judges the request by
the chain. ``revoke`` is unsigned: its ``record`` (a revocation,
:mod:`veil.onion.capability.revocations`) is signed itself; it is decoded here (size and
format only, no signature) and names its owner, which must be ``pubkey``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from .. import crypto
from ..capability.revocations import Revocation
from ..cbor import Field, Schema
from ..errors import BadTtl, InvalidId, SchemaError
from ..keys import AccountId, GroupId, parse_owner
from .canonical import length_prefixed, message_hash
from .limits import (
    ID_TEXT_LENGTH,
    MAX_BODY,
    MAX_HASHES,
    MAX_RECORD,
    MAX_TIME_MS,
    MAX_TTL_PRIVATE_MS,
    MAX_WAIT_S,
    METHODS,
    MIN_TTL_MS,
    NAMESPACE_MAX,
    NAMESPACE_MIN,
    RETRIEVE_DEFAULT_LIMIT,
    RETRIEVE_MAX_LIMIT,
)
from .namespaces import max_ttl_ms, read_needs_auth, store_needs_auth


@dataclass(frozen=True, slots=True, repr=False)
class Auth:
    """The signature fields of a request."""

    #: The key that signed: the account's, or a session key that ``capability`` authorizes.
    pubkey_ed25519: bytes
    #: When the client signed (ms since the epoch, client's clock).
    timestamp_ms: int
    signature: bytes
    #: A delegated key's capability chain (its bytes), or None for the account's own key.
    capability: bytes | None = None

    def __repr__(self) -> str:
        delegated = ", delegated" if self.capability is not None else ""
        return f"Auth(timestamp_ms={self.timestamp_ms}{delegated})"


# --- typed requests ------------------------------------------------------------------------


def store_signed_extra(ttl_ms: int, hash: bytes) -> bytes:
    """What a store's signature covers besides the common fields: its TTL and the
    message's hash (also checked on replicated copies, onion/rpc/proof.py)."""
    return length_prefixed(ttl_ms.to_bytes(8, "big"), hash)


@dataclass(frozen=True, slots=True)
class StoreRequest:
    method: ClassVar[str] = "store"
    account: AccountId | GroupId
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
        return store_signed_extra(self.ttl_ms, self.hash)

    def __repr__(self) -> str:  # never the data
        return f"StoreRequest({self.account}, ns={self.namespace}, {len(self.data)} bytes)"


@dataclass(frozen=True, slots=True)
class RetrieveRequest:
    method: ClassVar[str] = "retrieve"
    account: AccountId | GroupId
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
    account: AccountId | GroupId
    namespace: int
    hashes: tuple[bytes, ...]
    auth: Auth | None = None
    needs_auth: ClassVar[bool] = True

    def signed_extra(self) -> bytes:
        return length_prefixed(*self.hashes)


@dataclass(frozen=True, slots=True)
class DeleteAllRequest:
    method: ClassVar[str] = "delete_all"
    account: AccountId | GroupId
    #: None: every namespace of the account.
    namespace: int | None
    auth: Auth | None = None
    needs_auth: ClassVar[bool] = True

    def signed_extra(self) -> bytes:
        return b""


@dataclass(frozen=True, slots=True)
class ExpireRequest:
    method: ClassVar[str] = "expire"
    account: AccountId | GroupId
    namespace: int
    hashes: tuple[bytes, ...]
    #: The new expiry, ms since the epoch (node's clock).
    expiry_ms: int
    auth: Auth | None = None
    needs_auth: ClassVar[bool] = True

    def signed_extra(self) -> bytes:
        return length_prefixed(self.expiry_ms.to_bytes(8, "big"), *self.hashes)


@dataclass(frozen=True, slots=True)
class InfoRequest:
    method: ClassVar[str] = "info"
    needs_auth: ClassVar[bool] = False
    auth: ClassVar[None] = None


@dataclass(frozen=True, slots=True)
class GetSwarmRequest:
    """Which swarm holds an account (answered once the network issue lands)."""

    method: ClassVar[str] = "get_swarm"
    account: AccountId | GroupId
    needs_auth: ClassVar[bool] = False
    auth: ClassVar[None] = None


@dataclass(frozen=True, slots=True)
class RevokeRequest:
    """Keep a revocation (a signed record that stops a delegated link) in the swarm of
    its owner, ``account``. Unsigned: the record carries its own signature and proof,
    which :func:`~veil.onion.rpc.signing.verify_request` checks."""

    method: ClassVar[str] = "revoke"
    account: AccountId | GroupId
    #: The record as sent, and decoded (format only: not yet verified).
    record: bytes
    revocation: Revocation
    needs_auth: ClassVar[bool] = False
    auth: ClassVar[None] = None
    namespace: ClassVar[None] = None

    def __repr__(self) -> str:
        return f"RevokeRequest({self.account}, {self.revocation!r})"


Request = (
    StoreRequest
    | RetrieveRequest
    | DeleteRequest
    | DeleteAllRequest
    | ExpireRequest
    | InfoRequest
    | GetSwarmRequest
    | RevokeRequest
)

# --- schemas ---------------------------------------------------------------------------------

_PUBKEY = Field(str, size=ID_TEXT_LENGTH)
_NAMESPACE = Field(int, min=NAMESPACE_MIN, max=NAMESPACE_MAX)
_HASH = Field(bytes, size=32)
_HASHES = Field(list, min_len=1, max_len=MAX_HASHES, items=_HASH)
AUTH_FIELDS: Final = {
    "pubkey_ed25519": Field(bytes, size=32, required=False),
    "timestamp": Field(int, min=0, max=MAX_TIME_MS, required=False),
    "signature": Field(bytes, size=crypto.SIG_BYTES, required=False),
}
#: The signature fields and the optional capability chain of a delegated key. The
#: chain's own limit (MAX_CAPABILITY) is checked by the chain's decoder, before parsing,
#: so that an oversized chain is ``too_large`` as a chain (CapabilityTooLarge); the
#: request's size limit bounds it before that.
_SIGNED_FIELDS: Final = {
    **AUTH_FIELDS,
    "capability": Field(bytes, min_len=1, required=False),
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
            "ttl": Field(int, min=MIN_TTL_MS, max=MAX_TTL_PRIVATE_MS, error=BadTtl),
            **_SIGNED_FIELDS,
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
            **_SIGNED_FIELDS,
        },
    ),
    "delete": Schema(
        "delete.params",
        {"pubkey": _PUBKEY, "namespace": _NAMESPACE, "hashes": _HASHES, **_SIGNED_FIELDS},
    ),
    "delete_all": Schema(
        "delete_all.params",
        {
            "pubkey": _PUBKEY,
            "namespace": Field(int, min=NAMESPACE_MIN, max=NAMESPACE_MAX, nullable=True),
            **_SIGNED_FIELDS,
        },
    ),
    "expire": Schema(
        "expire.params",
        {
            "pubkey": _PUBKEY,
            "namespace": _NAMESPACE,
            "hashes": _HASHES,
            "expiry": Field(int, min=0, max=MAX_TIME_MS),
            **_SIGNED_FIELDS,
        },
    ),
    "info": Schema("info.params", {}),
    "get_swarm": Schema("get_swarm.params", {"pubkey": _PUBKEY}),
    "revoke": Schema(
        "revoke.params",
        {"pubkey": _PUBKEY, "record": Field(bytes, min_len=1, max_len=MAX_RECORD)},
    ),
}


def _account(params: Mapping[str, Any], path: str) -> AccountId | GroupId:
    try:
        return parse_owner(params["pubkey"])
    except InvalidId as exc:
        raise SchemaError(f"{path}.pubkey: {exc}") from None


def _auth(params: Mapping[str, Any], path: str) -> Auth | None:
    if "signature" not in params and "timestamp" not in params and "pubkey_ed25519" not in params:
        if "capability" in params:
            raise SchemaError(
                f"{path}.capability: only with pubkey_ed25519, timestamp and signature"
            )
        return None  # the usual unsigned request (an inbox store), decided quickly
    present = [k for k in AUTH_FIELDS if k in params]
    if len(present) != len(AUTH_FIELDS):
        missing = next(k for k in AUTH_FIELDS if k not in params)
        raise SchemaError(
            f"{path}.{missing}: required with "
            + ", ".join(present)
            + " (pubkey_ed25519, timestamp and signature go together)"
        )
    return Auth(
        params["pubkey_ed25519"],
        params["timestamp"],
        params["signature"],
        params.get("capability"),
    )


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
    if method == "revoke":
        return RevokeRequest(account, p["record"], Revocation.decode(p["record"]))
    auth = _auth(p, path)
    ns = p["namespace"]
    if method == "store":
        if p["ttl"] > max_ttl_ms(ns):
            raise BadTtl(
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
