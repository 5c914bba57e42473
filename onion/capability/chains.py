"""Capability chains: the account's link down to the session key, and their verification.

Design note
-----------
A chain travels as the deterministic CBOR array of its links' encodings, the account's
link first::

    [link_0, link_1, ..., link_n]      (byte strings; 1 <= n + 1 <= 8 links)

and it proves that the last link's audience may act for the first link's owner on the
last link's resources until the earliest expiry. :func:`authorize` (what a node's
``verify_request`` calls) and :func:`verify_chain` accept it when:

1. it is at most :data:`~veil.onion.capability.limits.MAX_CHAIN_SIZE` bytes (checked
   before parsing), at most 8 links (checked before any link is decoded), each link
   well-formed (:class:`~veil.onion.capability.links.Capability`);
2. the first link is issued by the owner's key (an account's Ed25519 key, which maps to
   its ID; a group's key) and names no proof; every other link is issued by its
   parent's audience (an Ed25519 key, or a key that maps to an account audience: see
   :mod:`~veil.onion.capability.links`) and names its parent's digest as ``prf``
   (:class:`~veil.onion.errors.WrongIssuer`);
3. no link expires later than its parent (:class:`~veil.onion.errors.ExpiryExtended`),
   and every resource of a link is held by its parent, for each of its actions and over
   its whole namespace range, in resources that also hold ``delegate``
   (:class:`~veil.onion.errors.ResourcesWidened`); so the last link's resources are what
   the chain grants;
4. ``now`` is inside every link's ``[nbf, exp)``, give or take the clock skew
   (:class:`~veil.onion.errors.CapabilityExpired`,
   :class:`~veil.onion.errors.CapabilityNotYetValid`);
5. for a request: the signer is (or maps to) the last link's audience
   (:class:`~veil.onion.errors.WrongAudience`), the owner is the request's account
   (:class:`~veil.onion.errors.WrongAccount`), and the resources grant what the method
   needs in the namespace (:class:`~veil.onion.errors.ActionNotCovered`, naming the
   action; see :func:`~veil.onion.capability.resources.required`);
6. every link's signature verifies (:class:`~veil.onion.errors.BadCapabilitySignature`);
   :func:`verify_chain`, which is given no account to compare with, then checks that the
   owner is a valid key (:func:`check_owner_key`);
7. no link is revoked (:class:`~veil.onion.errors.CapabilityRevoked`): ``is_revoked`` is
   asked about each link's digest, last, so that only authentic chains reach the
   node's store.

Steps 1 to 5 are cheap (no cryptography), so a hostile chain costs a node at most a
parse of 16 KiB and some comparisons before it is refused; only a chain that passes them
costs up to 8 signature checks.

The checks of steps 2 to 5 and 7, functions of the links alone, are in
:mod:`~veil.onion.capability.chain_checks` (shared with the cache and revocation
records); this module decodes, orders the steps and builds chains.

Caching. :func:`chain_digest` of the bytes (BLAKE2b-256, purpose ``veil/cap-chain``)
names a chain before it is parsed; :class:`Proven` is what a verification proved
(owner, audience, resources, the window of validity, the links' digests). A node may
keep ``Proven`` by digest and, on a hit, call :meth:`Proven.check` (steps 4, 5 and 7
again: times, request, revocations) instead of verifying again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from .. import crypto
from ..cbor import decode, encode
from ..crypto import Rng, system_rng
from ..errors import (
    CapabilityExpired,
    CapabilityNotYetValid,
    CapabilityTooLarge,
    ChainTooLong,
    DecodeError,
    ExpiryExtended,
    InvalidKey,
    InvalidResource,
    InvalidValue,
    MalformedCapability,
    ResourcesWidened,
    TooLarge,
    WrongIssuer,
)
from ..keys import AccountId, is_valid_x25519_public
from .chain_checks import (
    RevocationLookup,
    _check_request,
    _check_revoked,
    _check_root_issuer,
    _check_structure,
    _check_times,
)
from .limits import (
    CHAIN_DIGEST_PURPOSE,
    DEFAULT_LIFETIME_MS,
    DEFAULT_SKEW_MS,
    MAX_CHAIN_LINKS,
    MAX_CHAIN_SIZE,
)
from .links import Capability, Signer, audience_matches, issue_link, x25519_of
from .resources import DELEGATE, Owner, Resource, format_resource, grants, missing_actions, required

__all__ = [
    "Chain",
    "Proven",
    "RevocationLookup",
    "authorize",
    "chain_digest",
    "check_owner_key",
    "delegate",
    "redelegate",
    "verify_chain",
]

_EMPTY_CHAIN: Final = b"\x80"
#: Memoized (method, namespace) answers kept per Proven, at most.
_MAX_MEMO: Final = 64


def chain_digest(encoded: bytes) -> bytes:
    """The digest that names a chain's bytes (a cache key), computed without parsing."""
    return crypto.hash32(encoded, CHAIN_DIGEST_PURPOSE)


@dataclass(frozen=True, slots=True, repr=False)
class Chain:
    """A decoded chain of links, the account's first. Not yet verified: see
    :func:`verify_chain` and :func:`authorize`."""

    links: tuple[Capability, ...]
    #: The exact bytes (what a request carries) and :func:`chain_digest` of them.
    encoded: bytes
    digest: bytes

    @classmethod
    def decode(cls, data: bytes) -> Chain:
        """Size, link count, then each link's format; no signature is checked."""
        if not isinstance(data, bytes):
            raise MalformedCapability("a chain is a byte string")
        if len(data) > MAX_CHAIN_SIZE:
            raise CapabilityTooLarge(
                f"a chain of {len(data)} bytes is over the limit of {MAX_CHAIN_SIZE}"
            )
        try:
            items = decode(data, max_size=MAX_CHAIN_SIZE, max_depth=1, canonical=True)
        except TooLarge as exc:  # pragma: no cover - checked above
            raise CapabilityTooLarge(str(exc)) from None
        except DecodeError as exc:
            raise MalformedCapability(f"chain: {exc}") from None
        if type(items) is not list:
            raise MalformedCapability("a chain is an array of links")
        if len(items) > MAX_CHAIN_LINKS:
            raise ChainTooLong(f"a chain has at most {MAX_CHAIN_LINKS} links, not {len(items)}")
        if not items:
            raise MalformedCapability("a chain has at least one link")
        if not all(type(item) is bytes for item in items):
            raise MalformedCapability("a chain's links are byte strings")
        links = tuple(Capability.decode(item) for item in items)
        return cls(links, data, chain_digest(data))

    @classmethod
    def from_links(cls, links: Sequence[Capability]) -> Chain:
        """The chain of these links (checked as :meth:`decode` checks bytes)."""
        return cls.decode(encode([link.encoded for link in links]))

    @property
    def owner(self) -> Owner:
        return self.links[0].owner

    @property
    def audience(self) -> bytes:
        """The key the chain authorizes: the last link's audience."""
        return self.links[-1].audience

    @property
    def resources(self) -> tuple[Resource, ...]:
        """What the chain grants (once verified): the last link's resources."""
        return self.links[-1].resources

    @property
    def expires_ms(self) -> int:
        return min(link.expires_ms for link in self.links)

    @property
    def not_before_ms(self) -> int:
        return max(link.not_before_ms for link in self.links)

    def missing(self, wanted: Resource) -> frozenset[str]:
        """The actions of ``wanted`` that the chain does not grant (empty: it does)."""
        return missing_actions(self.resources, wanted)

    def allows(self, method: str, namespace: int | None) -> bool:
        """Whether the chain's resources grant a request of ``method`` in ``namespace``."""
        action, first, last = required(method, namespace)
        return grants(self.resources, self.owner, action, first, last)

    def check_structure(self) -> None:
        """Steps 2 and 3 of the module note: issuers, proofs, expiries, attenuation."""
        _check_structure(self.links)

    def verify_signatures(self) -> None:
        for link in self.links:
            link.verify_signature()

    def __len__(self) -> int:
        return len(self.links)

    def __repr__(self) -> str:
        return f"Chain({len(self.links)} links, {self.owner} -> {self.audience.hex()[:12]}..)"


@dataclass(frozen=True, slots=True)
class Proven:
    """What a verified chain proves: ``audience`` may act for ``owner`` on
    ``resources`` from ``not_before_ms`` until ``expires_ms`` (the earliest expiry),
    unless a link of ``link_digests`` is revoked. Keyed by ``chain_digest``."""

    chain_digest: bytes
    link_digests: tuple[bytes, ...]
    owner: Owner
    audience: bytes
    resources: tuple[Resource, ...]
    not_before_ms: int
    expires_ms: int
    #: (method, namespace) -> whether the resources grant it: memoized for
    #: :meth:`check`, which a node calls on every request of a cached chain (a pure
    #: function of the frozen fields; a few entries per chain, bounded below).
    _granted: dict[tuple[str, int | None], bool] = field(
        default_factory=dict, compare=False, repr=False
    )

    def allows(self, method: str, namespace: int | None) -> bool:
        key = (method, namespace)
        granted = self._granted.get(key)
        if granted is None:
            action, first, last = required(method, namespace)
            granted = grants(self.resources, self.owner, action, first, last)
            if len(self._granted) < _MAX_MEMO:
                self._granted[key] = granted
        return granted

    def check(
        self,
        *,
        signer: bytes,
        account: Owner,
        method: str,
        namespace: int | None,
        now_ms: int,
        skew_ms: int = DEFAULT_SKEW_MS,
        is_revoked: RevocationLookup | None = None,
    ) -> None:
        """For a cached chain: the checks that depend on the time, the request and the
        revocations (the typed errors of :func:`authorize`)."""
        if now_ms - skew_ms >= self.expires_ms:
            raise CapabilityExpired(f"the chain expired at {self.expires_ms}")
        if self.not_before_ms > now_ms + skew_ms:
            raise CapabilityNotYetValid(f"the chain is valid from {self.not_before_ms}")
        if (
            self.owner != account
            or not audience_matches(self.audience, signer)
            or not self.allows(method, namespace)
        ):
            # The cheap answer is "no": say why, with the typed error of authorize().
            _check_request(
                self.owner, self.audience, self.resources, signer, account, method, namespace
            )
        if is_revoked is not None and any(map(is_revoked, self.link_digests)):
            _check_revoked(self.link_digests, is_revoked)  # names the revoked link


def _proven(chain: Chain) -> Proven:
    return Proven(
        chain_digest=chain.digest,
        link_digests=tuple(link.digest for link in chain.links),
        owner=chain.owner,
        audience=chain.audience,
        resources=chain.resources,
        not_before_ms=chain.not_before_ms,
        expires_ms=chain.expires_ms,
    )


def verify_chain(
    chain: bytes | Chain,
    *,
    now_ms: int,
    skew_ms: int = DEFAULT_SKEW_MS,
    is_revoked: RevocationLookup | None = None,
) -> Proven:
    """Verify a chain on its own (steps 1 to 4, 6, 7 of the module note): what it proves,
    or a typed :class:`~veil.onion.errors.CapabilityError`."""
    if not isinstance(chain, Chain):
        chain = Chain.decode(chain)
    _check_structure(chain.links)
    _check_times(chain.links, now_ms, skew_ms)
    chain.verify_signatures()
    check_owner_key(chain.owner)
    _check_revoked([link.digest for link in chain.links], is_revoked)
    return _proven(chain)


def check_owner_key(owner: Owner) -> None:
    """:class:`~veil.onion.errors.WrongIssuer` unless the owner's key is a valid key of
    prime order, as a parsed account or group ID's is.

    The first link's issuer check already refuses every owner that is not a point or is
    of small order; an issuer that holds a key of mixed order (a valid key plus a small
    torsion point, for which libsodium's signatures still verify) gives an owner that no
    account ID parses to. :func:`authorize` needs no such check (the owner must equal the
    request's account, a parsed ID); :func:`verify_chain` and revocations, which name no
    account, make it, after the signatures, so that only authentic chains pay for it.
    """
    if isinstance(owner, AccountId):
        valid = is_valid_x25519_public(owner.x25519_public)
    else:
        valid = crypto.ed25519_is_valid_point(owner.ed25519_public)
    if not valid:
        raise WrongIssuer("the chain's owner is not a valid account or group key")


def authorize(
    chain: bytes | Chain,
    *,
    signer: bytes,
    account: Owner,
    method: str,
    namespace: int | None,
    now_ms: int,
    skew_ms: int = DEFAULT_SKEW_MS,
    is_revoked: RevocationLookup | None = None,
) -> Proven:
    """Whether ``signer`` (the request's Ed25519 key) may make a ``method`` request in
    ``namespace`` (None: every namespace, ``delete_all``) of ``account``, by ``chain``.

    The one call of a node's ``verify_request`` for a delegated key: it returns what the
    chain proves (to cache by :attr:`Proven.chain_digest`) or raises a typed
    :class:`~veil.onion.errors.CapabilityError` (each with its wire status). The
    request's own signature, by ``signer``, is the caller's to check.
    """
    if not isinstance(chain, Chain):
        chain = Chain.decode(chain)
    links = chain.links
    _check_structure(links)
    _check_times(links, now_ms, skew_ms)
    _check_request(chain.owner, chain.audience, chain.resources, signer, account, method, namespace)
    chain.verify_signatures()
    _check_revoked([link.digest for link in links], is_revoked)
    return _proven(chain)


#: The cached Ed25519 -> X25519 conversion the first link's check uses
#: (:mod:`~veil.onion.capability.chain_checks`), under the name scripts/bench_core.py
#: clears to time an account never seen before: the same function object.
_x25519_of = x25519_of


def delegate(
    issuer: Signer,
    audience: bytes | AccountId,
    resources: Sequence[Resource],
    *,
    now_ms: int,
    lifetime_ms: int = DEFAULT_LIFETIME_MS,
    not_before_ms: int | None = None,
    statement: str | None = None,
    rng: Rng = system_rng,
) -> Chain:
    """The account's (or group's) capability for ``audience``: a chain of one link.

    ``issuer`` must own every resource (:class:`~veil.onion.errors.InvalidResource`
    otherwise: a capability for another account is refused before it is signed).
    """
    if not resources:
        raise InvalidResource("a capability grants at least one resource")
    try:
        _check_root_issuer(issuer.ed25519_public, resources[0].owner)
    except WrongIssuer:
        raise InvalidResource(
            f"the issuer does not own {resources[0].owner}: it cannot grant its resources"
        ) from None
    link = issue_link(
        issuer,
        audience,
        resources,
        now_ms=now_ms,
        expires_ms=now_ms + lifetime_ms,
        not_before_ms=not_before_ms,
        statement=statement,
        rng=rng,
    )
    chain = Chain.from_links((link,))
    chain.check_structure()
    return chain


def redelegate(
    chain: Chain,
    holder: Signer,
    audience: bytes | AccountId,
    resources: Sequence[Resource],
    *,
    now_ms: int,
    expires_ms: int | None = None,
    not_before_ms: int | None = None,
    statement: str | None = None,
    rng: Rng = system_rng,
) -> Chain:
    """``chain`` with one more link: ``holder`` (the chain's audience) grants
    ``audience`` a part of what it holds with ``delegate``, until ``expires_ms`` (by
    default the chain's own expiry, capped at the default lifetime from now).

    Refused before signing, with the errors a node would raise: a holder that is not the
    audience (``InvalidKey``), a chain already 8 links long (``InvalidValue``), widened
    resources (:class:`~veil.onion.errors.ResourcesWidened`) or a later expiry
    (:class:`~veil.onion.errors.ExpiryExtended`).
    """
    if not audience_matches(chain.audience, holder.ed25519_public):
        raise InvalidKey("only the chain's audience (or its account's key) can extend it")
    if len(chain.links) >= MAX_CHAIN_LINKS:
        raise InvalidValue(f"a chain has at most {MAX_CHAIN_LINKS} links")
    if expires_ms is None:
        expires_ms = min(chain.expires_ms, now_ms + DEFAULT_LIFETIME_MS)
    if expires_ms > chain.expires_ms:
        raise ExpiryExtended(
            f"a link cannot expire after its parent ({chain.expires_ms}), not {expires_ms}"
        )
    delegable = [r for r in chain.resources if DELEGATE in r.actions]
    for resource in resources:
        missing = missing_actions(delegable, resource)
        if missing:
            raise ResourcesWidened(
                f"the chain does not hold {','.join(sorted(missing))} in "
                f"{format_resource(resource)} with {DELEGATE}"
            )
    link = issue_link(
        holder,
        audience,
        resources,
        now_ms=now_ms,
        expires_ms=expires_ms,
        not_before_ms=not_before_ms,
        statement=statement,
        proof=chain.links[-1].digest,
        rng=rng,
    )
    extended = Chain.from_links((*chain.links, link))
    extended.check_structure()
    return extended
