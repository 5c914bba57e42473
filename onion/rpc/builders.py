"""Builders: the bytes of each request, for a client, checked and signed as a node will.

Design note
-----------
A client never hand-rolls a request or a signature: each ``make_*`` builds the params,
signs them with :func:`~veil.onion.rpc.signing.sign_params` when a signer is given
(the owner's :class:`~veil.onion.keys.Account`, or a
:class:`~veil.onion.capability.DelegatedSigner`: a session key and its capability chain),
and encodes them with :func:`~veil.onion.rpc.request_codec.encode_request`, which parses
them as the node will, so what a client sends is what a node accepts. A TTL out of
limits is refused before anything is built (:class:`~veil.onion.errors.InvalidTtl`,
also a :class:`ValueError`), and so is a request that a delegated signer's chain does
not grant (:class:`~veil.onion.errors.ActionNotCovered`, naming the missing action and
the namespace): every node would refuse it.

Encryption sessions (issue 13): a :class:`~veil.onion.capability.DelegatedSigner` whose
chain is a member's (owned by a session's group ID,
:meth:`~veil.onion.capability.DelegatedSigner.for_member`) addresses the request to the
group ID (``pubkey`` = ``03...``): the member's own key signs, the membership chain
travels as ``capability``. Nodes take a group's requests in namespaces 1 (the session's
records) and 2 (its messages) only.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from ..capability import DelegatedSigner, Revocation
from ..errors import ActionNotCovered, UnsignedRequest, WrongAccount
from ..keys import Account, AccountId, GroupId, parse_owner
from .limits import INBOX
from .namespaces import check_ttl_ms, read_needs_auth, store_needs_auth
from .request_codec import encode_request
from .signing import sign_params

Signer = Account | DelegatedSigner


def _as_id(
    who: Account | DelegatedSigner | AccountId | GroupId | str,
) -> AccountId | GroupId:
    if isinstance(who, Account):
        return who.id
    if isinstance(who, DelegatedSigner):
        return who.owner  # a member's chain: the request goes to the group ID
    if isinstance(who, AccountId | GroupId):
        return who
    return parse_owner(who)


def _check_granted(signer: object, method: str, namespace: int | None) -> None:
    """:class:`ActionNotCovered` if ``signer`` is a delegated key whose chain does not
    grant ``method`` in ``namespace`` (checked before anything is built)."""
    if not isinstance(signer, DelegatedSigner):
        return
    missing = signer.missing(method, namespace)
    if missing:
        where = "every namespace" if namespace is None else f"namespace {namespace}"
        raise ActionNotCovered(
            f"the session's capability does not grant {','.join(sorted(missing))} "
            f"(needed by {method} in {where})",
            action=min(missing),
            namespace=namespace,
        )


def make_store(
    to: Account | DelegatedSigner | AccountId | str,
    data: bytes,
    ttl_ms: int,
    *,
    now_ms: int,
    namespace: int = INBOX,
) -> bytes:
    """A store request. ``to`` is the recipient's ID for an (unsigned) inbox store, or the
    owner's :class:`Account` (or a :class:`DelegatedSigner` acting for it) for a signed
    store into one of its own namespaces.

    Raises :class:`~veil.onion.errors.InvalidTtl` (a :class:`ValueError`) for a TTL
    outside the namespace's limits, :class:`~veil.onion.errors.UnsignedRequest` (a
    :class:`ValueError`) if a namespace other than the inbox is given without a signer,
    :class:`~veil.onion.errors.ActionNotCovered` if a delegated signer's chain does not
    grant it (``store``; ``post`` in a public-read namespace), :class:`SchemaError` for a
    body or namespace out of limits.
    """
    _check_granted(to, "store", namespace)
    account = _as_id(to)
    check_ttl_ms(ttl_ms, namespace)
    params: dict[str, Any] = {
        "pubkey": str(account),
        "namespace": namespace,
        "data": data,
        "ttl": ttl_ms,
    }
    if isinstance(to, Account | DelegatedSigner):
        sign_params(params, to, "store", now_ms)
    elif store_needs_auth(namespace):
        raise UnsignedRequest(f"storing into namespace {namespace} needs the owner's Account")
    return encode_request("store", params)


def make_retrieve(
    account: Account | DelegatedSigner | AccountId | str,
    *,
    now_ms: int,
    namespace: int = INBOX,
    last_hash: bytes | None = None,
    limit: int | None = None,
    wait_s: int = 0,
) -> bytes:
    """A retrieve request: signed if ``account`` is an :class:`Account` or a
    :class:`DelegatedSigner`; an ID alone is enough only for a public-read namespace
    (:class:`~veil.onion.errors.UnsignedRequest`, a :class:`ValueError`, otherwise)."""
    _check_granted(account, "retrieve", namespace)
    aid = _as_id(account)
    params: dict[str, Any] = {"pubkey": str(aid), "namespace": namespace}
    if last_hash is not None:
        params["last_hash"] = last_hash
    if limit is not None:
        params["limit"] = limit
    if wait_s:
        params["wait"] = wait_s
    if isinstance(account, Account | DelegatedSigner):
        sign_params(params, account, "retrieve", now_ms)
    elif read_needs_auth(namespace):
        raise UnsignedRequest(f"reading namespace {namespace} needs the owner's Account")
    return encode_request("retrieve", params)


def make_delete(
    account: Account | DelegatedSigner,
    hashes: Sequence[bytes],
    *,
    now_ms: int,
    namespace: int = INBOX,
) -> bytes:
    """A signed delete of up to :data:`MAX_HASHES` messages."""
    _check_granted(account, "delete", namespace)
    params: dict[str, Any] = {
        "pubkey": str(_as_id(account)),
        "namespace": namespace,
        "hashes": list(hashes),
    }
    sign_params(params, account, "delete", now_ms)
    return encode_request("delete", params)


def make_delete_all(
    account: Account | DelegatedSigner, *, namespace: int | None, now_ms: int
) -> bytes:
    """A signed delete of every message in ``namespace`` (None: in every namespace; a
    delegated key needs ``delete`` over the whole range for that)."""
    _check_granted(account, "delete_all", namespace)
    params: dict[str, Any] = {"pubkey": str(_as_id(account)), "namespace": namespace}
    sign_params(params, account, "delete_all", now_ms)
    return encode_request("delete_all", params)


def make_expire(
    account: Account | DelegatedSigner,
    hashes: Sequence[bytes],
    expiry_ms: int,
    *,
    now_ms: int,
    namespace: int = INBOX,
) -> bytes:
    """A signed change of these messages' expiry to ``expiry_ms`` (ms since the epoch)."""
    _check_granted(account, "expire", namespace)
    params: dict[str, Any] = {
        "pubkey": str(_as_id(account)),
        "namespace": namespace,
        "hashes": list(hashes),
        "expiry": expiry_ms,
    }
    sign_params(params, account, "expire", now_ms)
    return encode_request("expire", params)


def make_revoke(record: bytes) -> bytes:
    """A ``revoke`` request: keep ``record`` (the bytes of a revocation made by
    :func:`veil.onion.capability.revoke`, its ``.encoded``) in its owner's swarm. Send it
    to a member of the owner's swarm (the request names the owner as ``pubkey``). The
    record is decoded (format and size) before anything is built; a group's record is
    refused (:class:`~veil.onion.errors.WrongAccount`: revocations of group links are
    kept by the group's swarm, not yet built)."""
    revocation = Revocation.decode(record)
    owner = revocation.owner
    if not isinstance(owner, AccountId):
        raise WrongAccount("a group's revocation is not kept by an account's swarm")
    return encode_request("revoke", {"pubkey": str(owner), "record": record})


@functools.cache
def make_info() -> bytes:
    # The same bytes every time (no parameters, unsigned): encoded and checked once.
    return encode_request("info", {})


def make_get_swarm(account: AccountId | GroupId | str) -> bytes:
    return encode_request("get_swarm", {"pubkey": str(_as_id(account))})
