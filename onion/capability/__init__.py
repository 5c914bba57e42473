"""Delegated session keys: capabilities, chains of them, revocations (issue #12).

Design note
-----------
An account authorizes a fresh Ed25519 session key (shown as a ``did:key``) to act for
it on listed resources until an expiry, as DIDSession does; the holder of ``delegate``
may pass on a narrower part, as UCAN's proofs do, in a chain of at most 8 links; nodes
check the whole chain from the account's key down and accept it in place of the
account's signature; the account or any issuer upstream of a link may revoke it before
it expires. Everything here is sans-IO: bytes in, typed objects or typed errors out.

One module per job, each importing only those above it in this list:

* :mod:`~veil.onion.capability.limits`: sizes, counts, times, domains, hash purposes;
* :mod:`~veil.onion.capability.did`: ``did:key`` of Ed25519 keys;
* :mod:`~veil.onion.capability.resources`: actions, resources, what a storage method
  needs, coverage, the command line's ``OWNER:NAMESPACES:ACTIONS``;
* :mod:`~veil.onion.capability.links`: one signed capability (a link), session keys,
  audiences (an Ed25519 key, ``did:key``; or an account, ``05...``, exercised by any
  Ed25519 key that maps to it: how encryption-session members are named);
* :mod:`~veil.onion.capability.chain_checks`: the checks of a chain's links (issuers,
  attenuation, times, the request, revocations), no cryptography;
* :mod:`~veil.onion.capability.chains`: chains, :func:`authorize` (a node's call),
  :func:`verify_chain`, :class:`Proven` (what a node caches), the builders;
* :mod:`~veil.onion.capability.cache`: :class:`ChainCache`, a node's bounded cache of
  verified chains;
* :mod:`~veil.onion.capability.revocations`: signed revocation records;
* :mod:`~veil.onion.capability.sessions`: a session key and its chain as one string;
* :mod:`~veil.onion.capability.signer`: :class:`DelegatedSigner`, a session key with its
  chain, which the storage RPC's builders sign requests with.

Why not UCAN or CACAO as they are: both are JSON/JWT or IPLD (DAG-CBOR with CIDs),
signed over an encoding veil does not otherwise speak, and carry DID strings where veil
has 32-byte keys. veil keeps their fields (issuer, audience, issued-at, not-before,
expiry, nonce, statement, resources, proof) in its own deterministic CBOR, signs them
with veil's domain-separated Ed25519 (:func:`veil.onion.crypto.sign`), and bounds every
size and count, so that a hostile chain costs a node a bounded, small amount of work
(no signature is checked before every cheaper check has passed).

Every refusal is a typed error of :mod:`veil.onion.errors`: the
:class:`~veil.onion.errors.CapabilityError` family (each with its wire status) for what
comes from outside, :class:`~veil.onion.errors.InvalidDid`,
:class:`~veil.onion.errors.InvalidResource` and
:class:`~veil.onion.errors.InvalidSession` (``InvalidValue``) for a caller's input.
"""

from __future__ import annotations

from .cache import ChainCache
from .chains import (
    Chain,
    Proven,
    RevocationLookup,
    authorize,
    chain_digest,
    delegate,
    redelegate,
    verify_chain,
)
from .did import DID_KEY_PREFIX, did_key, parse_did_key
from .limits import (
    DEFAULT_LIFETIME_MS,
    DEFAULT_SKEW_MS,
    LINK_DOMAIN,
    MAX_CHAIN_LINKS,
    MAX_CHAIN_SIZE,
    MAX_LIFETIME_MS,
    MAX_LINK_SIZE,
    MAX_RESOURCES,
    MAX_REVOCATION_SIZE,
    MAX_SESSION_CHARS,
    MAX_STATEMENT,
    REVOCATION_DOMAIN,
)
from .links import (
    Capability,
    SessionKey,
    Signer,
    audience_account,
    audience_bytes,
    audience_matches,
    issue_link,
    link_digest,
)
from .resources import (
    ACTIONS,
    ALL_NAMESPACES,
    DELEGATE,
    DELETE,
    EXPIRE,
    POST,
    RETRIEVE,
    REVOKE,
    STORE,
    Owner,
    Resource,
    format_resource,
    grants,
    missing_actions,
    parse_resources,
    required,
)
from .revocations import Revocation, revoke, verify_revocation
from .sessions import SESSION_PREFIX, decode_session, encode_session
from .signer import DelegatedSigner

__all__ = [
    "ACTIONS",
    "ALL_NAMESPACES",
    "DEFAULT_LIFETIME_MS",
    "DEFAULT_SKEW_MS",
    "DELEGATE",
    "DELETE",
    "DID_KEY_PREFIX",
    "EXPIRE",
    "LINK_DOMAIN",
    "MAX_CHAIN_LINKS",
    "MAX_CHAIN_SIZE",
    "MAX_LIFETIME_MS",
    "MAX_LINK_SIZE",
    "MAX_RESOURCES",
    "MAX_REVOCATION_SIZE",
    "MAX_SESSION_CHARS",
    "MAX_STATEMENT",
    "POST",
    "RETRIEVE",
    "REVOCATION_DOMAIN",
    "REVOKE",
    "SESSION_PREFIX",
    "STORE",
    "Capability",
    "Chain",
    "ChainCache",
    "DelegatedSigner",
    "Owner",
    "Proven",
    "Resource",
    "Revocation",
    "RevocationLookup",
    "SessionKey",
    "Signer",
    "audience_account",
    "audience_bytes",
    "audience_matches",
    "authorize",
    "chain_digest",
    "decode_session",
    "delegate",
    "did_key",
    "encode_session",
    "format_resource",
    "grants",
    "issue_link",
    "link_digest",
    "missing_actions",
    "parse_did_key",
    "parse_resources",
    "redelegate",
    "required",
    "revoke",
    "verify_chain",
    "verify_revocation",
]
