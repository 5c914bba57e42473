"""One capability (a link of a chain): its CBOR format, its signature and its digest.

Design note
-----------
A link is a deterministic CBOR map (:mod:`veil.onion.cbor`), in the spirit of CACAO and
UCAN, whose fields are::

    "v":     1
    "iss":   issuer's Ed25519 public key (32 bytes): the account's for the first link
    "aud":   the audience: an Ed25519 public key (32 bytes: the session key it
             authorizes, a ``did:key``), or an account (33 bytes: 0x05, then the
             account's X25519 key), exercised by any Ed25519 key that maps to it
    "iat":   issued at (ms since the epoch)
    "nbf":   not before (ms), iat <= nbf
    "exp":   expiry (ms), nbf < exp and exp - iat <= MAX_LIFETIME_MS (30 days)
    "nonce": 16 random bytes, so that two identical grants have two digests
    "stmt":  optional human-readable statement, at most 256 characters
    "res":   1 to 16 resources (:mod:`~veil.onion.capability.resources`), one owner
    "prf":   digest of the parent link; absent in the account's link
    "sig":   Ed25519 signature by "iss"

The signature is :func:`veil.onion.crypto.sign` under the domain ``capability/v1`` (the
signed bytes are ``veil/capability/v1``, NUL, then the encoding of the map without
``sig``), so it is valid for nothing else. A link is decoded with
``canonical=True``: there is exactly one encoding of each link, so the signed bytes are
the re-encoding without ``sig`` and the link's digest, BLAKE2b-256 of its encoding
(purpose ``veil/cap-link``), names it for proofs, revocations and caches.

Account audiences. A member of an encryption session is known to others by its account
ID (``05...``, an X25519 key), from which its Ed25519 key cannot be recovered (the map
loses the sign bit), so whoever adds it cannot name its Ed25519 key. A link may then
name the *account* as its audience: it is exercised, as the request's signer or as the
issuer of the next link, by any Ed25519 key whose X25519 map is that account's key
(:func:`audience_matches`), which is exactly how a node checks an account owner's own
signature (:func:`veil.onion.keys.account_id_of_ed25519`). Both keys that map to one
account (``A`` and ``-A``) are held by the account's seed alone.

Keys travel as raw bytes and are not point-checked here: a key that is not a valid
point never verifies a signature, and checking would cost as much as the signature.

Decoding checks size, shape and values only (:class:`~veil.onion.errors.CapabilityTooLarge`,
:class:`~veil.onion.errors.MalformedCapability`,
:class:`~veil.onion.errors.UnknownAction`); the signature is checked by the chain's
verifier, after every cheaper check (:mod:`~veil.onion.capability.chains`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from .. import crypto
from ..cbor import Field, Schema, encode
from ..crypto import Rng, system_rng
from ..errors import (
    BadCapabilitySignature,
    BadSignature,
    CapabilityTooLarge,
    DecodeError,
    InvalidKey,
    InvalidResource,
    InvalidValue,
    MalformedCapability,
    SchemaError,
    TooLarge,
)
from ..keys import AccountId
from .did import did_key
from .limits import (
    ACCOUNT_AUDIENCE_BYTES,
    ACCOUNT_AUDIENCE_PREFIX,
    KEY_BYTES,
    LINK_DIGEST_PURPOSE,
    LINK_DOMAIN,
    MAX_LIFETIME_MS,
    MAX_LINK_SIZE,
    MAX_RESOURCES,
    MAX_STATEMENT,
    MAX_TIME_MS,
    NAMESPACE_MAX,
    NAMESPACE_MIN,
    NONCE_BYTES,
    OWNER_BYTES,
    VERSION,
)
from .resources import ACTIONS, Owner, Resource, sorted_resources

__all__ = [
    "Capability",
    "SessionKey",
    "Signer",
    "audience_account",
    "audience_bytes",
    "audience_matches",
    "issue_link",
    "link_digest",
]

_TIME: Final = Field(int, min=0, max=MAX_TIME_MS)

RESOURCE_SCHEMA: Final = Schema(
    "resource",
    {
        "with": Field(bytes, size=OWNER_BYTES),
        "ns": Field(list, size=2, items=Field(int, min=NAMESPACE_MIN, max=NAMESPACE_MAX)),
        "can": Field(list, min_len=1, max_len=len(ACTIONS), items=Field(str, max_len=16)),
    },
)

LINK_SCHEMA: Final = Schema(
    "capability",
    {
        "v": Field(int, choices={VERSION}),
        "iss": Field(bytes, size=KEY_BYTES),
        "aud": Field(bytes, min_len=KEY_BYTES, max_len=ACCOUNT_AUDIENCE_BYTES),
        "iat": _TIME,
        "nbf": _TIME,
        "exp": _TIME,
        "nonce": Field(bytes, size=NONCE_BYTES),
        "stmt": Field(str, max_len=MAX_STATEMENT, required=False),
        "res": Field(
            list,
            min_len=1,
            max_len=MAX_RESOURCES,
            items=Field(dict, schema=RESOURCE_SCHEMA),
        ),
        "prf": Field(bytes, size=32, required=False),
        "sig": Field(bytes, size=crypto.SIG_BYTES),
    },
)

#: Nesting of a link: map > list of resources > resource map > list.
_LINK_DEPTH: Final = 4


def link_digest(encoded: bytes) -> bytes:
    """The 32-byte digest that names a link (its proof, its revocation)."""
    return crypto.hash32(encoded, LINK_DIGEST_PURPOSE)


@functools.lru_cache(maxsize=4096)
def x25519_of(ed25519_public: bytes) -> bytes:
    """The X25519 key of an Ed25519 key (libsodium's map, which refuses a key that is not
    a valid point of prime order: :class:`InvalidKey`). Cached: a node sees the same
    keys over and over; errors are not cached."""
    return crypto.ed25519_to_x25519_public(ed25519_public)


def audience_bytes(audience: bytes | AccountId) -> bytes:
    """An audience as it is written on the wire: an Ed25519 key (32 bytes) as it is, an
    account as 0x05 + its X25519 key (33 bytes). :class:`InvalidKey` otherwise."""
    if isinstance(audience, AccountId):
        return ACCOUNT_AUDIENCE_PREFIX + audience.x25519_public
    if not isinstance(audience, bytes) or not crypto.ed25519_is_valid_point(audience):
        raise InvalidKey("an audience is a 32-byte Ed25519 public key or an AccountId")
    return audience


def audience_account(audience: bytes) -> AccountId | None:
    """The account of an account audience (33 wire bytes), None for an Ed25519 key."""
    if len(audience) != ACCOUNT_AUDIENCE_BYTES:
        return None
    account: AccountId = object.__new__(AccountId)
    object.__setattr__(account, "x25519_public", audience[1:])
    return account


def audience_matches(audience: bytes, key: bytes) -> bool:
    """Whether the Ed25519 key ``key`` exercises ``audience`` (wire bytes): equal to an
    Ed25519 audience, or mapping to an account audience's X25519 key. Public values
    only: no secret is compared."""
    if len(audience) == KEY_BYTES:
        return key == audience
    if len(audience) != ACCOUNT_AUDIENCE_BYTES or len(key) != KEY_BYTES:
        return False
    try:
        return x25519_of(key) == audience[1:]
    except InvalidKey:
        return False


class Signer(Protocol):
    """Anything that holds an Ed25519 key pair: an :class:`~veil.onion.keys.Account`, a
    :class:`SessionKey`."""

    @property
    def ed25519_secret(self) -> bytes: ...

    @property
    def ed25519_public(self) -> bytes: ...


@dataclass(frozen=True, slots=True, repr=False)
class SessionKey:
    """A session key: a fresh Ed25519 key pair from a 32-byte seed. Never printed whole."""

    seed: bytes
    ed25519_secret: bytes = field(init=False)
    ed25519_public: bytes = field(init=False)

    def __post_init__(self) -> None:
        sk, pk = crypto.ed25519_keypair_from_seed(self.seed)
        object.__setattr__(self, "ed25519_secret", sk)
        object.__setattr__(self, "ed25519_public", pk)

    @classmethod
    def generate(cls, rng: Rng = system_rng) -> SessionKey:
        return cls(rng(32))

    @property
    def did(self) -> str:
        return did_key(self.ed25519_public)

    def sign(self, domain: bytes, message: bytes) -> bytes:
        return crypto.sign(self.ed25519_secret, domain, message)

    def __repr__(self) -> str:
        return f"SessionKey({self.did})"


@dataclass(frozen=True, slots=True, repr=False)
class Capability:
    """One decoded link. Built only by :meth:`decode` (from bytes) or :func:`issue_link`."""

    issuer: bytes
    audience: bytes
    issued_ms: int
    not_before_ms: int
    expires_ms: int
    nonce: bytes
    statement: str | None
    resources: tuple[Resource, ...]
    #: Digest of the parent link; None for the account's link.
    proof: bytes | None
    signature: bytes
    #: The exact bytes (canonical CBOR) and their digest.
    encoded: bytes
    digest: bytes
    _map: dict[str, Any] = field(compare=False)

    @property
    def owner(self) -> Owner:
        """The account (or group) whose resources this link grants."""
        return self.resources[0].owner

    @property
    def issuer_did(self) -> str:
        return did_key(self.issuer)

    @property
    def audience_account(self) -> AccountId | None:
        """The account this link authorizes (an account audience), or None (a key)."""
        return audience_account(self.audience)

    @property
    def audience_did(self) -> str:
        """The audience's ``did:key``, or its account ID (``05...``) for an account."""
        account = audience_account(self.audience)
        return str(account) if account is not None else did_key(self.audience)

    def exercised_by(self, key: bytes) -> bool:
        """Whether the Ed25519 key ``key`` is (or maps to) this link's audience."""
        return audience_matches(self.audience, key)

    def signed_bytes(self) -> bytes:
        """What the issuer signed (under ``capability/v1``): the map without ``sig``."""
        return encode({key: value for key, value in self._map.items() if key != "sig"})

    def verify_signature(self) -> None:
        """:class:`BadCapabilitySignature` unless ``sig`` is the issuer's."""
        try:
            crypto.verify(self.issuer, LINK_DOMAIN, self.signed_bytes(), self.signature)
        except BadSignature:
            raise BadCapabilitySignature(
                "a link's signature does not verify under its issuer's key"
            ) from None

    @classmethod
    def decode(cls, data: bytes) -> Capability:
        """A link from its bytes: size, canonical CBOR, schema and values (no signature)."""
        if not isinstance(data, bytes):
            raise MalformedCapability("a link is a byte string")
        try:
            obj = LINK_SCHEMA.decode(
                data, max_size=MAX_LINK_SIZE, max_depth=_LINK_DEPTH, canonical=True
            )
        except TooLarge as exc:
            raise CapabilityTooLarge(str(exc)) from None
        except (DecodeError, SchemaError) as exc:
            raise MalformedCapability(str(exc)) from None
        aud = obj["aud"]
        if len(aud) == ACCOUNT_AUDIENCE_BYTES and aud[:1] != ACCOUNT_AUDIENCE_PREFIX:
            raise MalformedCapability("a 33-byte audience is an account: 0x05 + X25519 key")
        iat, nbf, exp = obj["iat"], obj["nbf"], obj["exp"]
        if not iat <= nbf < exp:
            raise MalformedCapability("a link's times are out of order (iat <= nbf < exp)")
        if exp - iat > MAX_LIFETIME_MS:
            raise MalformedCapability(f"a link lives at most {MAX_LIFETIME_MS} ms from its issue")
        wire_resources = obj["res"]
        owner = wire_resources[0]["with"]
        if any(r["with"] != owner for r in wire_resources):
            raise MalformedCapability("a link's resources all name one owner")
        resources = tuple(Resource.from_wire(r) for r in wire_resources)
        return cls(
            issuer=obj["iss"],
            audience=obj["aud"],
            issued_ms=iat,
            not_before_ms=nbf,
            expires_ms=exp,
            nonce=obj["nonce"],
            statement=obj.get("stmt"),
            resources=resources,
            proof=obj.get("prf"),
            signature=obj["sig"],
            encoded=data,
            digest=link_digest(data),
            _map=obj,
        )

    def __repr__(self) -> str:
        return (
            f"Capability({self.issuer.hex()[:12]}.. -> {self.audience.hex()[:12]}.., "
            f"{len(self.resources)} resource(s), exp={self.expires_ms})"
        )


def issue_link(
    signer: Signer,
    audience: bytes | AccountId,
    resources: Sequence[Resource],
    *,
    now_ms: int,
    expires_ms: int,
    not_before_ms: int | None = None,
    statement: str | None = None,
    proof: bytes | None = None,
    rng: Rng = system_rng,
) -> Capability:
    """Sign one link; local misuse (a bad key, time or resource) is an ``InvalidValue``.

    This checks the link alone; the chain builders of
    :mod:`~veil.onion.capability.chains` check it against its parent.
    """
    audience = audience_bytes(audience)
    resources = sorted_resources(resources)
    if not 1 <= len(resources) <= MAX_RESOURCES:
        raise InvalidResource(f"a capability grants 1 to {MAX_RESOURCES} resources")
    if not all(isinstance(r, Resource) for r in resources):
        raise InvalidResource("resources are Resource objects")
    if any(r.owner != resources[0].owner for r in resources):
        raise InvalidResource("a capability's resources all name one owner")
    nbf = now_ms if not_before_ms is None else not_before_ms
    if not 0 <= now_ms <= nbf < expires_ms <= MAX_TIME_MS:
        raise InvalidValue("times must be 0 <= now <= not_before < expiry")
    if expires_ms - now_ms > MAX_LIFETIME_MS:
        raise InvalidValue(f"a capability lives at most {MAX_LIFETIME_MS} ms")
    if statement is not None and (not isinstance(statement, str) or len(statement) > MAX_STATEMENT):
        raise InvalidValue(f"a statement is text of at most {MAX_STATEMENT} characters")
    nonce = rng(NONCE_BYTES)
    body: dict[str, Any] = {
        "v": VERSION,
        "iss": signer.ed25519_public,
        "aud": audience,
        "iat": now_ms,
        "nbf": nbf,
        "exp": expires_ms,
        "nonce": nonce,
        "res": [r.to_wire() for r in resources],
    }
    if statement is not None:
        body["stmt"] = statement
    if proof is not None:
        body["prf"] = proof
    body["sig"] = crypto.sign(signer.ed25519_secret, LINK_DOMAIN, encode(body))
    return Capability.decode(encode(body))
