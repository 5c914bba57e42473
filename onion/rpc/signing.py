"""Signing and verifying storage requests: who may act for an account.

Design note
-----------
A request that needs it carries ``pubkey_ed25519`` (the key that signed), ``timestamp``
(ms) and ``signature``. The node checks that the timestamp is within
:data:`~veil.onion.rpc.limits.CLOCK_SKEW_MS` of its clock, that the key may act for the
account (below), then the signature, made with :func:`veil.onion.crypto.sign` under the
domain :data:`DOMAIN` over :func:`signing_message`: a length-prefixed encoding
(:func:`~veil.onion.rpc.canonical.length_prefixed`) of (method, account key, namespace,
timestamp, the request's :meth:`signed_extra`), and for a delegated key a sixth field,
the :func:`~veil.onion.capability.chain_digest` of the chain it carries. Naming the method
makes a retrieve signature useless as a delete signature; naming the chain makes a
session key's signature useless with any other chain (a narrower one it also holds, or
one that a revocation does not reach). A replayed signed request (within the skew
window) does nothing new: stores deduplicate, deletes and expiries are idempotent,
retrieves only read.

Who may act for an account. :func:`verify_request` is the one place it is decided:

* without ``capability``: the account's own key, ``account_id_of_ed25519(pubkey_ed25519)
  == account``;
* with ``capability`` (issue 12, delegated session keys): the chain decides, whatever
  the key is. It must pass :func:`veil.onion.capability.authorize` for (signer =
  ``pubkey_ed25519``, the request's account, method and namespace, the node's clock and
  skew, its revocations), and the signature must verify under that key. A request
  signed by the account's own key that carries a capability is judged by the chain too
  (its audience would have to be the account's key): a chain is never ignored, so a
  bad one is never let through unseen. The typed
  :class:`~veil.onion.errors.CapabilityError` of a refused chain propagates, each with its
  wire status (expired, revoked, widened, not covered: ``unauthorized``; not yet valid:
  ``clock_skew``; malformed or an unknown action: ``bad_request``; too large or too
  long: ``too_large``). Verified chains are kept in a
  :class:`~veil.onion.capability.ChainCache` when the caller passes one, so that a
  delegated request costs one signature check, as an owner-signed one does.

Groups (issue 13, encryption sessions). A request's ``pubkey`` may be a group ID
(``03...``): it is then signed by the session's own key (``pubkey_ed25519`` is the
group's key), or through a capability chain from it (a member's, whose audience is the
member's account, exercised by the account's own Ed25519 key; see
:mod:`veil.onion.capability.links`), or, for a ``retrieve`` only, by a member's own
account key with no chain: the node passes ``group_reader``, its answer from the
session's state as it holds it (a live membership of the account
``account_id_of_ed25519(pubkey_ed25519)``, not revoked, not expired, with ``read``, and
the namespace one of the session's), and the request is refused unless it says yes. So
a new member reads the session's records (and finds its chain there) without an
invitation; a node that does not know the session yet refuses it (the client then
falls back to the invitation's chain). The owner's field in the signed bytes is
:func:`veil.onion.keys.owner_key`: an account's X25519 key as before, ``0x03`` + the
group's key for a group, so that a signature for one is never one for the other. Which
namespaces and which revocations count for a group is the node's
(node/groups.py: the session's records, not the ``revoke`` RPC).

``revoke`` requests are unsigned; their record is, and :func:`verify_request` checks it
with :func:`veil.onion.capability.verify_revocation` (the node's clock and skew; the
revocations kept, for an administrator's authority chain) and that it is the
account's.

:func:`sign_params` is the one place a client signs, with an
:class:`~veil.onion.keys.Account` or a :class:`~veil.onion.capability.DelegatedSigner`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from .. import crypto
from ..capability import (
    ChainCache,
    DelegatedSigner,
    Proven,
    RevocationLookup,
    authorize,
    chain_digest,
    verify_revocation,
)
from ..errors import (
    ActionNotCovered,
    BadSignature,
    ClockSkew,
    InvalidId,
    InvalidKey,
    Unauthorized,
    WrongAccount,
)
from ..keys import Account, AccountId, GroupId, account_id_of_ed25519, owner_key
from .canonical import length_prefixed, namespace_bytes
from .limits import CLOCK_SKEW_MS
from .requests import (
    AUTH_FIELDS,
    GetSwarmRequest,
    InfoRequest,
    Request,
    RetrieveRequest,
    RevokeRequest,
    parse_request,
)

#: The signature domain of every storage request.
DOMAIN: Final = b"storage"

#: A node's answer, from a session's state as it holds it, to "may this account read
#: this namespace of the group now": ``reader(account, namespace) -> bool`` (see the
#: module note, "Groups").
GroupReader = Callable[[AccountId, int], bool]


def signing_message(
    method: str,
    account: AccountId | GroupId,
    namespace: int | None,
    timestamp_ms: int,
    extra: bytes = b"",
    chain: bytes | None = None,
    *,
    chain_id: bytes | None = None,
) -> bytes:
    """The bytes signed (under :data:`DOMAIN`) for a request; see the module note.

    ``namespace`` None means "every namespace" (delete_all) and encodes as an empty field,
    distinct from every namespace number. ``chain``: the bytes of a delegated key's
    capability chain, bound by its digest as a sixth field (None: the account's key);
    ``chain_id``: that digest, when the caller has it already.
    """
    fields = [
        method.encode(),
        owner_key(account),
        namespace_bytes(namespace),
        timestamp_ms.to_bytes(8, "big"),
        extra,
    ]
    if chain_id is not None:
        fields.append(chain_id)
    elif chain is not None:
        fields.append(chain_digest(chain))
    return length_prefixed(*fields)


def verify_request(
    request: Request,
    now_ms: int,
    skew_ms: int = CLOCK_SKEW_MS,
    *,
    is_revoked: RevocationLookup | None = None,
    chains: ChainCache | None = None,
    group_reader: GroupReader | None = None,
) -> Proven | None:
    """Check a request's signature, if it needs one or carries one; what a delegated
    key's chain proved (None for the account's own key, or an unsigned request).

    Raises :class:`~veil.onion.errors.Unauthorized` (missing, wrong key, bad signature),
    :class:`~veil.onion.errors.ClockSkew` (timestamp more than ``skew_ms`` from
    ``now_ms``; checked first, as it is the cheapest and the most useful to a client
    whose clock is off), or a :class:`~veil.onion.errors.CapabilityError` for a chain or
    a revocation record that does not authorize the request (see the module note). A
    request that carries a signature it does not need is still checked: a bad
    signature is never ignored. ``is_revoked`` is the node's revocation lookup;
    ``chains`` its cache of verified chains (None: verify every chain in full);
    ``group_reader`` the node's membership lookup for a group's retrieve signed by a
    member's own account key (None: such a request is refused).
    """
    if type(request) is RevokeRequest:
        record = verify_revocation(
            request.revocation, now_ms=now_ms, skew_ms=skew_ms, is_revoked=is_revoked
        )
        if record.owner != request.account:
            raise WrongAccount(f"the revocation is for {record.owner}, not {request.account}")
        return None
    auth = request.auth
    if auth is None:
        if request.needs_auth:
            where = getattr(request, "namespace", None)
            raise Unauthorized(
                f"{request.method} in namespace {where} must be signed by the account"
            )
        return None
    assert not isinstance(request, InfoRequest | GetSwarmRequest | RevokeRequest)
    if abs(auth.timestamp_ms - now_ms) > skew_ms:
        raise ClockSkew(
            f"request timestamp {auth.timestamp_ms} is more than {skew_ms} ms from the node's "
            f"time {now_ms}"
        )
    proven: Proven | None = None
    if auth.capability is not None:
        check = authorize if chains is None else chains.authorize
        proven = check(
            auth.capability,
            signer=auth.pubkey_ed25519,
            account=request.account,
            method=request.method,
            namespace=request.namespace,
            now_ms=now_ms,
            skew_ms=skew_ms,
            is_revoked=is_revoked,
        )
    elif isinstance(request.account, GroupId):
        # A session's own key (its creator's administrator key) acts for it directly;
        # a member reads with its own account key when the node's state of the session
        # holds its live membership with read; everyone else presents a chain.
        if auth.pubkey_ed25519 != request.account.ed25519_public and not _member_reads(
            request, auth.pubkey_ed25519, group_reader
        ):
            raise Unauthorized(
                "a group's request is signed by its key, through a chain, or (a retrieve) "
                "by a live member with read"
            )
    else:
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
        auth.capability,
        chain_id=None if proven is None else proven.chain_digest,
    )
    try:
        crypto.verify(auth.pubkey_ed25519, DOMAIN, message, auth.signature)
    except BadSignature:
        raise Unauthorized(f"signature does not verify for {request.method}") from None
    return proven


def _member_reads(request: Request, pubkey: bytes, reader: GroupReader | None) -> bool:
    """Whether a group's request without a chain, signed by ``pubkey``, is a retrieve by
    an account that ``reader`` (the node's state of the session) says may read."""
    if reader is None or type(request) is not RetrieveRequest:
        return False
    try:
        account = account_id_of_ed25519(pubkey)
    except (InvalidKey, InvalidId):
        return False
    return reader(account, request.namespace)


def sign_params(
    params: dict[str, Any], signer: Account | DelegatedSigner, method: str, now_ms: int
) -> None:
    """Add the auth fields to ``params``, signing what :func:`verify_request` will check:
    with the account's key, or with a delegated session key (then ``capability`` carries
    its chain, and :class:`~veil.onion.errors.ActionNotCovered` is raised, before anything
    is signed, if the chain does not grant the request).

    The request is parsed first (SchemaError for a bad field, before anything is signed)
    and the signed bytes come from the parsed request, the same code the node runs.
    """
    request = parse_request({"method": method, "params": params})
    assert not isinstance(request, InfoRequest | GetSwarmRequest | RevokeRequest)
    AUTH_FIELDS["timestamp"].check(now_ms, f"{method}.params.timestamp")
    chain: bytes | None = None
    if isinstance(signer, DelegatedSigner):
        namespace = request.namespace
        missing = signer.missing(method, namespace)
        if missing:
            where = "every namespace" if namespace is None else f"namespace {namespace}"
            raise ActionNotCovered(
                f"the session's capability does not grant {','.join(sorted(missing))} "
                f"(needed by {method} in {where})",
                action=min(missing),
                namespace=namespace,
            )
        chain = signer.chain.encoded
    message = signing_message(
        method, request.account, request.namespace, now_ms, request.signed_extra(), chain
    )
    params["pubkey_ed25519"] = signer.ed25519_public
    params["timestamp"] = now_ms
    params["signature"] = signer.sign(DOMAIN, message)
    if chain is not None:
        params["capability"] = chain
