"""The owner's proof that travels with a replicated message: who stored it, signed.

Design note
-----------
Only the owner stores into an owner-written namespace (every one but the inbox and the
room namespace, :func:`~veil.onion.rpc.namespaces.store_needs_auth`), and a node checks the owner's
signature on the client's store (:func:`~veil.onion.rpc.signing.verify_request`). A
message that reaches a member by replication (push, pull, handover) did not come with
that request, so without more a member would have to trust the peer that sent it
(issue 11, item 6: a listed node of another swarm wrote forged posts into public-read
namespaces that way). So the member that took the client's store keeps the request's
signature with the message, as a *proof*, and it travels with every copy; every member
that receives a copy checks it here, as if it were the client's request.

The proof is a small CBOR map, at most :data:`MAX_PROOF_BYTES`::

    {"v": 1, "k": signer's Ed25519 key (32), "t": signed timestamp (ms),
     "ttl": signed TTL (ms), "sig": Ed25519 signature (64)
     [, "cap": the capability chain of a delegated key (bytes)]}

It is the store request's auth fields plus its TTL: with the message's account,
namespace and hash (which the receiver recomputes from the data) they are exactly what
the owner signed, :func:`~veil.onion.rpc.signing.signing_message` of ``store`` under
:data:`~veil.onion.rpc.signing.DOMAIN`, whose extra part covers the TTL and the hash.
:func:`verify_store_proof` is the one function that checks one, on every path; it also
checks that the expiry a peer claims is no later than the signed TTL allows from the
signed time (plus :data:`~veil.onion.rpc.limits.CLOCK_SKEW_MS`, the distance the storing
node may have been from the client's clock), so a peer cannot stretch a message's life.
:func:`expiry_limit` is that bound, which a sender applies before it sends (an owner's
``expire`` may have moved an expiry later than the store's TTL; such a copy travels with
the store's bound, see node/replication/).

Inbox messages (anyone writes them, unsigned) carry no proof, and a proof on one is
refused (one message, one encoding).

Delegated keys (issue 12). A store signed by a session key keeps its chain in ``cap``
and the session key in ``k``; the signed bytes bind the chain's digest (as the
request's did, :func:`~veil.onion.rpc.signing.signing_message`). A receiver checks the
chain with :func:`veil.onion.capability.authorize` *at the proof's signed time* (not
now: a copy of a message stored yesterday by a key that has since expired is still the
owner's), with the clock skew, and against the revocations it keeps: a revocation does
not delete what was stored before it (each member keeps its copies until they expire),
but no member accepts a *new* copy whose chain is revoked, by push, pull or handover.
The signed time is the key holder's claim, so a holder of a revoked key could otherwise
backdate a store to before the revocation and have any listed node push it. The cost:
a member that missed a delegated store before the revocation does not get it after.

Groups (issue 13). A session's records and messages are stored under its group ID and
replicate the same way: the proof's key is the session's own key, or a member's key
with its membership chain in ``cap`` (the chain's owner must be the group, checked by
:func:`~veil.onion.capability.authorize`). The session's own revocations (its records)
are the receiving node's to apply (node/groups.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .. import crypto
from ..capability import MAX_CHAIN_SIZE, ChainCache, RevocationLookup, authorize
from ..cbor import Field, Schema, encode
from ..errors import BadSignature, InvalidId, InvalidKey, ProtocolError, Unauthorized
from ..keys import AccountId, GroupId, account_id_of_ed25519
from .limits import CLOCK_SKEW_MS, MAX_TTL_PRIVATE_MS, MIN_TTL_MS
from .namespaces import store_needs_auth, ttl_problem
from .requests import StoreRequest, store_signed_extra
from .signing import DOMAIN, signing_message

__all__ = [
    "MAX_PROOF_BYTES",
    "PROOF_VERSION",
    "StoreProof",
    "decode_proof",
    "expiry_limit",
    "proof_of_request",
    "verify_store_proof",
]

PROOF_VERSION: Final = 1
#: A proof's size limit, checked before parsing: an owner's proof is about 130 bytes; a
#: delegated key's carries its chain too (at most MAX_CHAIN_SIZE).
MAX_PROOF_BYTES: Final = MAX_CHAIN_SIZE + 256
_MAX_TIME_MS: Final = 2**63 - 1

_PROOF = Schema(
    "store_proof",
    {
        "v": Field(int, choices=frozenset({PROOF_VERSION})),
        "k": Field(bytes, size=32),
        "t": Field(int, min=0, max=_MAX_TIME_MS),
        "ttl": Field(int, min=MIN_TTL_MS, max=MAX_TTL_PRIVATE_MS),
        "sig": Field(bytes, size=crypto.SIG_BYTES),
        "cap": Field(bytes, min_len=1, max_len=MAX_CHAIN_SIZE, required=False),
    },
)


@dataclass(frozen=True, slots=True, repr=False)
class StoreProof:
    """A decoded proof (see the module note)."""

    #: The Ed25519 key that signed: the account's own, or a delegated session key.
    signer: bytes
    #: The signed timestamp (ms, the client's clock) and TTL (ms).
    timestamp_ms: int
    ttl_ms: int
    signature: bytes
    #: The chain that lets ``signer`` store for the account (delegated keys); None for
    #: the account's own key.
    capability: bytes | None = None

    def encode(self) -> bytes:
        obj: dict[str, object] = {
            "v": PROOF_VERSION,
            "k": self.signer,
            "t": self.timestamp_ms,
            "ttl": self.ttl_ms,
            "sig": self.signature,
        }
        if self.capability is not None:
            obj["cap"] = self.capability
        return encode(obj)

    def __repr__(self) -> str:
        return f"StoreProof(t={self.timestamp_ms}, ttl={self.ttl_ms})"


def decode_proof(blob: bytes) -> StoreProof:
    """Parse a proof from a peer; :class:`~veil.onion.errors.TooLarge`,
    :class:`~veil.onion.errors.DecodeError` or :class:`~veil.onion.errors.SchemaError`
    for anything but one (size checked before parsing; canonical CBOR only)."""
    obj = _PROOF.decode(blob, max_size=MAX_PROOF_BYTES, max_depth=1)
    return StoreProof(obj["k"], obj["t"], obj["ttl"], obj["sig"], obj.get("cap"))


def proof_of_request(request: StoreRequest) -> bytes | None:
    """The proof to keep with the message ``request`` stored (None in the inbox and the
    room namespace, whose copies carry none, or for an unsigned request). Call it only
    for a request that :func:`verify_request` passed."""
    if not store_needs_auth(request.namespace) or request.auth is None:
        return None
    auth = request.auth
    return StoreProof(
        auth.pubkey_ed25519, auth.timestamp_ms, request.ttl_ms, auth.signature, auth.capability
    ).encode()


def expiry_limit(proof: StoreProof) -> int:
    """The latest expiry (ms) a copy carrying ``proof`` may have: the signed time plus
    the signed TTL plus the clock skew a storing node may have had."""
    return proof.timestamp_ms + proof.ttl_ms + CLOCK_SKEW_MS


def verify_store_proof(
    account: AccountId | GroupId,
    namespace: int,
    hash: bytes,
    expiry_ms: int,
    proof: bytes | None,
    *,
    is_revoked: RevocationLookup | None = None,
    chains: ChainCache | None = None,
) -> StoreProof | None:
    """Check that the owner of ``account`` stored the message ``hash`` (already checked
    against its data) in ``namespace``, no longer than until ``expiry_ms``; return the
    decoded proof (None for an inbox message, which must carry none).

    Raises :class:`~veil.onion.errors.Unauthorized` (no proof where one is needed,
    another key than the account's without a capability, a bad signature, an expiry
    later than the signed TTL allows), a :class:`~veil.onion.errors.CapabilityError` (a
    chain that did not let the signer store there at the signed time, or is revoked by
    ``is_revoked``), or the errors of :func:`decode_proof` and
    :class:`~veil.onion.errors.ProtocolError` (a proof on an inbox message, a TTL the
    namespace does not take). ``chains``: a cache of verified chains.
    """
    if not store_needs_auth(namespace):
        if proof is not None:
            raise ProtocolError("an inbox or room message carries no proof (anyone stores it)")
        return None
    if proof is None:
        raise Unauthorized(f"a message in namespace {namespace} must carry its owner's proof")
    decoded = decode_proof(proof)
    problem = ttl_problem(decoded.ttl_ms, namespace)
    if problem is not None:
        raise ProtocolError(f"the proof's ttl: {problem}")
    if decoded.capability is not None:
        check = authorize if chains is None else chains.authorize
        check(
            decoded.capability,
            signer=decoded.signer,
            account=account,
            method=StoreRequest.method,
            namespace=namespace,
            now_ms=decoded.timestamp_ms,
            skew_ms=CLOCK_SKEW_MS,
            is_revoked=is_revoked,
        )
    elif isinstance(account, GroupId):
        if decoded.signer != account.ed25519_public:
            raise Unauthorized("the proof is not signed by the group's key or through a chain")
    else:
        try:
            owner = account_id_of_ed25519(decoded.signer)
        except (InvalidKey, InvalidId):
            raise Unauthorized("the proof's key is not a valid Ed25519 key") from None
        if owner != account:
            raise Unauthorized("the proof is not signed by the account's key")
    message = signing_message(
        StoreRequest.method,
        account,
        namespace,
        decoded.timestamp_ms,
        store_signed_extra(decoded.ttl_ms, hash),
        decoded.capability,
    )
    try:
        crypto.verify(decoded.signer, DOMAIN, message, decoded.signature)
    except BadSignature:
        raise Unauthorized("the proof's signature does not verify") from None
    if expiry_ms > expiry_limit(decoded):
        raise Unauthorized("the expiry is later than the owner's signed TTL allows")
    return decoded
