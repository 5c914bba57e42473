"""Signing and verifying storage requests: who may act for an account.

Design note
-----------
A request that needs it carries ``pubkey_ed25519`` (the account's Ed25519 key),
``timestamp`` (ms) and ``signature``. The node checks that the timestamp is within
:data:`~veil.onion.rpc.limits.CLOCK_SKEW_MS` of its clock, that the Ed25519 key maps to
the account ID (:func:`veil.onion.keys.account_id_of_ed25519`), then the signature, made
with :func:`veil.onion.crypto.sign` under the domain :data:`DOMAIN` over
:func:`signing_message`: a length-prefixed encoding
(:func:`~veil.onion.rpc.canonical.length_prefixed`) of (method, account key, namespace,
timestamp, the request's :meth:`signed_extra`). Naming the method makes a retrieve
signature useless as a delete signature. A replayed signed request (within the skew
window) does nothing new: stores deduplicate, deletes and expiries are idempotent,
retrieves only read.

This module is the seam for delegated keys (the capabilities issue):
:func:`verify_request` is the one place where "this Ed25519 key may act for this
account" is decided, and :func:`sign_params` the one place a client signs. A later
``capability`` param (a CBOR DIDSession-style capability signed by the account) will let
it accept a session key that the capability authorizes for the method and namespace,
instead of requiring ``account_id_of_ed25519(pubkey_ed25519) == account``.
"""

from __future__ import annotations

from typing import Any, Final

from .. import crypto
from ..errors import BadSignature, ClockSkew, InvalidId, InvalidKey, Unauthorized
from ..keys import Account, AccountId, account_id_of_ed25519
from .canonical import length_prefixed, namespace_bytes
from .limits import CLOCK_SKEW_MS
from .requests import AUTH_FIELDS, GetSwarmRequest, InfoRequest, Request, parse_request

#: The signature domain of every storage request.
DOMAIN: Final = b"storage"


def signing_message(
    method: str, account: AccountId, namespace: int | None, timestamp_ms: int, extra: bytes = b""
) -> bytes:
    """The bytes signed (under :data:`DOMAIN`) for a request; see the module note.

    ``namespace`` None means "every namespace" (delete_all) and encodes as an empty field,
    distinct from every namespace number.
    """
    return length_prefixed(
        method.encode(),
        account.x25519_public,
        namespace_bytes(namespace),
        timestamp_ms.to_bytes(8, "big"),
        extra,
    )


def verify_request(request: Request, now_ms: int, skew_ms: int = CLOCK_SKEW_MS) -> None:
    """Check a request's signature, if it needs one or carries one.

    Raises :class:`~veil.onion.errors.Unauthorized` (missing, wrong key, bad signature) or
    :class:`~veil.onion.errors.ClockSkew` (timestamp more than ``skew_ms`` from ``now_ms``;
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
    if abs(auth.timestamp_ms - now_ms) > skew_ms:
        raise ClockSkew(
            f"request timestamp {auth.timestamp_ms} is more than {skew_ms} ms from the node's "
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
        request.method,
        request.account,
        request.namespace,
        auth.timestamp_ms,
        request.signed_extra(),
    )
    try:
        crypto.verify(auth.pubkey_ed25519, DOMAIN, message, auth.signature)
    except BadSignature:
        raise Unauthorized(f"signature does not verify for {request.method}") from None


def sign_params(params: dict[str, Any], account: Account, method: str, now_ms: int) -> None:
    """Add the auth fields to ``params``, signing what :func:`verify_request` will check.

    The request is parsed first (SchemaError for a bad field, before anything is signed)
    and the signed bytes come from the parsed request, the same code the node runs.
    """
    request = parse_request({"method": method, "params": params})
    assert not isinstance(request, InfoRequest | GetSwarmRequest)
    AUTH_FIELDS["timestamp"].check(now_ms, f"{method}.params.timestamp")
    message = signing_message(
        method, request.account, request.namespace, now_ms, request.signed_extra()
    )
    params["pubkey_ed25519"] = account.ed25519_public
    params["timestamp"] = now_ms
    params["signature"] = account.sign(DOMAIN, message)
