"""The checks of a capability chain's links: issuers, attenuation, times, request,
revocations.

Design note
-----------
Steps 2 to 5 and 7 of a chain's verification (the numbered list of
:mod:`~veil.onion.capability.chains`), each a function of the links alone, with no
cryptography: :func:`_check_structure` (issuers, proofs, expiries, attenuation, the
root issued by the owner's key: :func:`_check_root_issuer`), :func:`_check_times`,
:func:`_check_request` (audience, account, what the method needs),
:func:`_check_revoked`. Each raises the typed
:class:`~veil.onion.errors.CapabilityError` that names the link at fault.

Their callers: :func:`~veil.onion.capability.chains.authorize` and
:func:`~veil.onion.capability.chains.verify_chain` (every step, in the note's order, the
signatures between the cheap steps and the revocations), the check of a cached
:class:`~veil.onion.capability.chains.Proven`,
:class:`~veil.onion.capability.cache.ChainCache`, and revocation records
(:mod:`~veil.onion.capability.revocations`), which check the chain that entitles a
revoker. The underscore names are the package's own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise

from ..errors import (
    ActionNotCovered,
    CapabilityExpired,
    CapabilityNotYetValid,
    CapabilityRevoked,
    ExpiryExtended,
    InvalidKey,
    ResourcesWidened,
    WrongAccount,
    WrongAudience,
    WrongIssuer,
)
from ..keys import AccountId
from .links import Capability, audience_matches, x25519_of
from .resources import DELEGATE, Owner, Resource, format_resource, grants, missing_actions, required

#: ``is_revoked(link_digest) -> bool``: the node's revocations of the account.
RevocationLookup = Callable[[bytes], bool]


_x25519_of = x25519_of


def _check_root_issuer(issuer: bytes, owner: Owner) -> None:
    """The first link must be issued by the owner's key; this is also what makes an owner
    read from the wire a valid key (see ``resources.owner_from_bytes``)."""
    if isinstance(owner, AccountId):
        try:
            issuer_x25519 = _x25519_of(issuer)
        except InvalidKey:
            raise WrongIssuer("the first link's issuer is not a valid Ed25519 key") from None
        if issuer_x25519 != owner.x25519_public:
            raise WrongIssuer("the first link is not issued by the account's key")
    elif issuer != owner.ed25519_public:
        raise WrongIssuer("the first link is not issued by the group's key")


def _check_structure(links: Sequence[Capability]) -> None:
    root = links[0]
    if root.proof is not None:
        raise WrongIssuer("the first link names a proof: it is not the account's")
    _check_root_issuer(root.issuer, root.owner)
    for depth, (parent, child) in enumerate(pairwise(links), start=1):
        if child.proof != parent.digest:
            raise WrongIssuer(f"link {depth} does not name its parent as its proof")
        if not audience_matches(parent.audience, child.issuer):
            raise WrongIssuer(f"link {depth} is not issued by its parent's audience")
        if child.expires_ms > parent.expires_ms:
            raise ExpiryExtended(
                f"link {depth} expires at {child.expires_ms}, after its parent "
                f"({parent.expires_ms})"
            )
        delegable = [r for r in parent.resources if DELEGATE in r.actions]
        for resource in child.resources:
            missing = missing_actions(delegable, resource)
            if missing:
                raise ResourcesWidened(
                    f"link {depth} grants {','.join(sorted(missing))} in "
                    f"{format_resource(resource)}, which its parent does not hold "
                    f"with {DELEGATE}"
                )


def _check_times(links: Sequence[Capability], now_ms: int, skew_ms: int) -> None:
    for depth, link in enumerate(links):
        if now_ms - skew_ms >= link.expires_ms:
            raise CapabilityExpired(f"link {depth} expired at {link.expires_ms}")
    for depth, link in enumerate(links):
        if link.not_before_ms > now_ms + skew_ms:
            raise CapabilityNotYetValid(f"link {depth} is valid from {link.not_before_ms}")


def _check_request(
    owner: Owner,
    audience: bytes,
    resources: Sequence[Resource],
    signer: bytes,
    account: Owner,
    method: str,
    namespace: int | None,
) -> None:
    if not audience_matches(audience, signer):
        raise WrongAudience("the request is not signed by the key the chain authorizes")
    if owner != account:
        raise WrongAccount(f"the chain is for {owner}, not {account}")
    action, first, last = required(method, namespace)
    if not grants(resources, owner, action, first, last):
        where = "every namespace" if namespace is None else f"namespace {namespace}"
        raise ActionNotCovered(
            f"the chain does not grant {action} in {where} (needed by {method})",
            action=action,
            namespace=namespace,
        )


def _check_revoked(digests: Sequence[bytes], is_revoked: RevocationLookup | None) -> None:
    if is_revoked is None:
        return
    for depth, digest in enumerate(digests):
        if is_revoked(digest):
            raise CapabilityRevoked(f"link {depth} ({digest.hex()[:16]}..) is revoked")
