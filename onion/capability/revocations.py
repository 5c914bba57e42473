"""Revocations: a signed record that stops a link, and everything below it, before expiry.

Design note
-----------
A revocation names the revoked link by its digest, and carries the proof that its
signer may revoke it, so that every member of the account's swarm can check it alone
and keep it until the revoked link would have expired. Deterministic CBOR::

    "v":    1
    "with": the owner (33 bytes, as a resource's), the account whose swarm keeps it
    "link": digest of the revoked link (32 bytes)
    "exp":  the revoked link's expiry (ms): how long nodes keep the record
    "iss":  the revoker's Ed25519 public key (32 bytes)
    "iat":  when it was signed (ms)
    "prf":  the chain from the account's link down to the revoked link (its bytes)
    "auth": optional: a chain that grants the revoker ``revoke`` (its bytes)
    "sig":  Ed25519 signature by "iss" under the domain ``cap-revoke/v1``, over the map
            without "sig"

Who may revoke a link (:class:`~veil.onion.errors.NotEntitledToRevoke` otherwise):

* the account (the issuer of the first link), or any issuer upstream of the link in
  its chain, the link's own issuer included. Each link names its parent's digest, so
  the chain above a link is fixed by the link itself: nobody can place itself upstream;
* or a key that holds ``revoke``, by a valid chain of the same account (``auth``),
  over every namespace of every resource of the revoked link (an administrator's
  session key that did not issue the link).

Checks, cheapest first: size (before parsing), format, the proof's structure (as a
chain's), that ``link`` and ``exp`` are the last proof link's, the entitlement, the
times (a revocation from the future is refused, and one of an already expired link has
nothing left to do: :class:`~veil.onion.errors.CapabilityExpired`, the node need not
keep it), then the signatures (the proof's links, the authority's, the record's), and
last the authority chain's own revocations. A link of the proof that is already
revoked does not stop a revocation below it: revoking twice is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from .. import crypto
from ..cbor import Field, Schema, encode
from ..errors import (
    BadCapabilitySignature,
    BadSignature,
    CapabilityExpired,
    CapabilityNotYetValid,
    CapabilityTooLarge,
    DecodeError,
    InvalidValue,
    MalformedCapability,
    NotEntitledToRevoke,
    SchemaError,
    TooLarge,
)
from .chains import Chain, RevocationLookup, _check_revoked, _check_times, check_owner_key
from .limits import (
    DEFAULT_SKEW_MS,
    KEY_BYTES,
    MAX_CHAIN_SIZE,
    MAX_REVOCATION_SIZE,
    MAX_TIME_MS,
    OWNER_BYTES,
    REVOCATION_DIGEST_PURPOSE,
    REVOCATION_DOMAIN,
    VERSION,
)
from .links import Signer, audience_matches
from .resources import REVOKE, Owner, Resource, missing_actions, owner_bytes

__all__ = ["Revocation", "revoke", "verify_revocation"]

_TIME: Final = Field(int, min=0, max=MAX_TIME_MS)

REVOCATION_SCHEMA: Final = Schema(
    "revocation",
    {
        "v": Field(int, choices={VERSION}),
        "with": Field(bytes, size=OWNER_BYTES),
        "link": Field(bytes, size=32),
        "exp": _TIME,
        "iss": Field(bytes, size=KEY_BYTES),
        "iat": _TIME,
        "prf": Field(bytes, max_len=MAX_CHAIN_SIZE),
        "auth": Field(bytes, max_len=MAX_CHAIN_SIZE, required=False),
        "sig": Field(bytes, size=crypto.SIG_BYTES),
    },
)


@dataclass(frozen=True, slots=True, repr=False)
class Revocation:
    """A decoded revocation record (verified only by :func:`verify_revocation`)."""

    owner: Owner
    #: Digest of the revoked link, and its expiry: keep the record until then.
    link: bytes
    expires_ms: int
    revoker: bytes
    issued_ms: int
    #: The chain from the account's link down to the revoked link.
    proof: Chain
    #: The chain that grants the revoker ``revoke``, if it is not upstream of the link.
    authority: Chain | None
    signature: bytes
    encoded: bytes
    #: BLAKE2b-256 of ``encoded`` (purpose ``veil/cap-revoke``): the record's name.
    digest: bytes
    _map: dict[str, Any] = field(compare=False)

    @classmethod
    def decode(cls, data: bytes) -> Revocation:
        if not isinstance(data, bytes):
            raise MalformedCapability("a revocation is a byte string")
        try:
            obj = REVOCATION_SCHEMA.decode(
                data, max_size=MAX_REVOCATION_SIZE, max_depth=1, canonical=True
            )
        except TooLarge as exc:
            raise CapabilityTooLarge(str(exc)) from None
        except (DecodeError, SchemaError) as exc:
            raise MalformedCapability(str(exc)) from None
        proof = Chain.decode(obj["prf"])
        authority = Chain.decode(obj["auth"]) if "auth" in obj else None
        revoked = proof.links[-1]
        if obj["link"] != revoked.digest:
            raise MalformedCapability("revocation: 'link' is not the last link of its proof")
        if obj["exp"] != revoked.expires_ms:
            raise MalformedCapability("revocation: 'exp' is not the revoked link's expiry")
        if obj["with"] != owner_bytes(proof.owner):
            raise MalformedCapability("revocation: 'with' is not the owner of its proof")
        return cls(
            owner=proof.owner,
            link=obj["link"],
            expires_ms=obj["exp"],
            revoker=obj["iss"],
            issued_ms=obj["iat"],
            proof=proof,
            authority=authority,
            signature=obj["sig"],
            encoded=data,
            digest=crypto.hash32(data, REVOCATION_DIGEST_PURPOSE),
            _map=obj,
        )

    def signed_bytes(self) -> bytes:
        return encode({key: value for key, value in self._map.items() if key != "sig"})

    def __repr__(self) -> str:
        return f"Revocation({self.owner}, link {self.link.hex()[:16]}.., exp={self.expires_ms})"


def _check_entitled(
    revoker: bytes, proof: Chain, authority: Chain | None, now_ms: int, skew_ms: int
) -> None:
    """The cheap part of the entitlement: no signature (those are checked after)."""
    if any(link.issuer == revoker for link in proof.links):
        return  # the account, or an issuer upstream of the link (or the link's own)
    if authority is None:
        raise NotEntitledToRevoke(
            "the revoker is neither the account nor an issuer upstream of the link"
        )
    authority.check_structure()
    if authority.owner != proof.owner:
        raise NotEntitledToRevoke("the revoker's authority is for another account")
    if not audience_matches(authority.audience, revoker):
        raise NotEntitledToRevoke("the authority chain is not the revoker's")
    for resource in proof.resources:
        wanted = Resource(resource.owner, resource.first, resource.last, frozenset({REVOKE}))
        if missing_actions(authority.resources, wanted):
            raise NotEntitledToRevoke(
                f"the revoker does not hold {REVOKE} over {resource}, which the link grants"
            )
    _check_times(authority.links, now_ms, skew_ms)


def verify_revocation(
    record: bytes | Revocation,
    *,
    now_ms: int,
    skew_ms: int = DEFAULT_SKEW_MS,
    is_revoked: RevocationLookup | None = None,
) -> Revocation:
    """The revocation, once every check of the module note passes; a typed
    :class:`~veil.onion.errors.CapabilityError` otherwise. ``is_revoked`` is asked only
    about the authority chain's links (a revoked administrator revokes nothing)."""
    if not isinstance(record, Revocation):
        record = Revocation.decode(record)
    proof = record.proof
    proof.check_structure()
    _check_entitled(record.revoker, proof, record.authority, now_ms, skew_ms)
    if record.issued_ms > now_ms + skew_ms:
        raise CapabilityNotYetValid(f"the revocation is dated {record.issued_ms}, ahead")
    if now_ms - skew_ms >= record.expires_ms:
        raise CapabilityExpired("the revoked link has expired: nothing is left to revoke")
    proof.verify_signatures()
    if record.authority is not None:
        record.authority.verify_signatures()
    try:
        crypto.verify(record.revoker, REVOCATION_DOMAIN, record.signed_bytes(), record.signature)
    except BadSignature:
        raise BadCapabilitySignature("the revocation's signature does not verify") from None
    check_owner_key(record.owner)
    if record.authority is not None:
        _check_revoked([link.digest for link in record.authority.links], is_revoked)
    return record


def revoke(
    revoker: Signer,
    chain: Chain,
    link: bytes | None = None,
    *,
    now_ms: int,
    authority: Chain | None = None,
) -> Revocation:
    """Sign the revocation of ``chain``'s link whose digest is ``link`` (None: the last
    link), by ``revoker``: the account, an issuer upstream of the link, or the holder of
    ``authority``, a chain granting it ``revoke`` over the link's resources.

    Refused before signing with :class:`~veil.onion.errors.NotEntitledToRevoke` (and
    :class:`InvalidValue` for a digest that is not in the chain)."""
    digests = [each.digest for each in chain.links]
    if link is None:
        link = digests[-1]
    if link not in digests:
        raise InvalidValue("the link to revoke is not in the chain")
    proof = Chain.from_links(chain.links[: digests.index(link) + 1])
    _check_entitled(revoker.ed25519_public, proof, authority, now_ms, DEFAULT_SKEW_MS)
    revoked = proof.links[-1]
    body: dict[str, Any] = {
        "v": VERSION,
        "with": owner_bytes(proof.owner),
        "link": revoked.digest,
        "exp": revoked.expires_ms,
        "iss": revoker.ed25519_public,
        "iat": now_ms,
        "prf": proof.encoded,
    }
    if authority is not None:
        body["auth"] = authority.encoded
    body["sig"] = crypto.sign(revoker.ed25519_secret, REVOCATION_DOMAIN, encode(body))
    return Revocation.decode(encode(body))
