"""The delegations a home issued: recorded when they are made, listed, found, revoked.

Design note
-----------
A capability is not registered anywhere when it is issued (the nodes check it when it is
used), so the only list of the sessions an account handed out is the issuer's own. Every
session a home issues (:meth:`veil.client.veil_client.VeilClient.authorize`,
``veil id delegate``, :meth:`~veil.client.delegation.store.SessionStore.get`) is recorded
in the home's state file (table ``delegations``, :mod:`veil.client.state_schema`): its
link's hash, owner, issuer, audience (the session key), the chain down to the link,
when it was issued and expires, and when this home revoked it. The session's secret key
is not kept there.

What ``veil id delegations`` shows is :class:`Delegation`, one per issued link: its DID,
its resources, its expiry, and whether it is revoked (by this home: a revocation made
elsewhere, by an upstream issuer, is not known here) or expired.

A revocation target (:func:`find`) is a DID (every link issued to that key), a link's
hash (64 hex digits, or a unique prefix of at least 8), or a
:class:`~veil.client.delegation.session.DelegatedSession`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from veil.client.delegation.session import DelegatedSession
from veil.client.errors import UnknownDelegation
from veil.client.home import Home
from veil.client.state import ClientState, open_state
from veil.client.state_records import IssuedDelegation
from veil.onion.capability import Chain, did_key, format_resource, parse_did_key
from veil.onion.capability.resources import owner_bytes, owner_from_bytes
from veil.onion.errors import InvalidDid

__all__ = [
    "Delegation",
    "RevocationTarget",
    "chains_of",
    "describe",
    "find",
    "list_issued",
    "record_issued",
]

#: What names delegations to revoke: a DID, a link hash (hex), or a session.
RevocationTarget = str | bytes | DelegatedSession

_HEX = re.compile(r"[0-9a-f]{8,64}")


@dataclass(frozen=True, slots=True)
class Delegation:
    """One issued link, as ``veil id delegations`` lists it."""

    did: str
    link_hash: str
    account: str
    issuer_did: str
    resources: tuple[str, ...]
    statement: str | None
    issued_ms: int
    expires_ms: int
    revoked_ms: int | None
    depth: int

    @property
    def revoked(self) -> bool:
        return self.revoked_ms is not None

    def expired(self, now_ms: int) -> bool:
        return now_ms >= self.expires_ms

    def to_json(self, now_ms: int) -> dict[str, Any]:
        return {
            "did": self.did,
            "hash": self.link_hash,
            "account": self.account,
            "issuer": self.issuer_did,
            "resources": list(self.resources),
            "statement": self.statement,
            "issued_ms": self.issued_ms,
            "expires_ms": self.expires_ms,
            "expired": self.expired(now_ms),
            "revoked": self.revoked,
            "revoked_ms": self.revoked_ms,
            "depth": self.depth,
        }


def record_issued(state: ClientState, session: DelegatedSession) -> IssuedDelegation:
    """Record ``session``'s own link as issued by this home. Blocking (a commit)."""
    link = session.chain.links[-1]
    row = IssuedDelegation(
        link=link.digest,
        owner=owner_bytes(session.chain.owner),
        issuer=link.issuer,
        audience=link.audience,
        chain=session.chain.encoded,
        issued_at_ms=link.issued_ms,
        expires_at_ms=session.expires_ms,
        revoked_at_ms=None,
    )
    state.record_delegation(row)
    return row


def describe(row: IssuedDelegation) -> Delegation:
    """The listing of a recorded link (its chain is re-read: the state is not trusted
    more than that; a damaged row shows what it can)."""
    chain = Chain.decode(row.chain)
    link = chain.links[-1]
    owner = owner_from_bytes(row.owner)
    return Delegation(
        did=did_key(row.audience),
        link_hash=row.link.hex(),
        account=str(owner),
        issuer_did=did_key(row.issuer),
        resources=tuple(format_resource(r) for r in link.resources),
        statement=link.statement,
        issued_ms=row.issued_at_ms,
        expires_ms=row.expires_at_ms,
        revoked_ms=row.revoked_at_ms,
        depth=len(chain.links),
    )


def find(state: ClientState, target: RevocationTarget) -> list[IssuedDelegation]:
    """The recorded links ``target`` names (see the module note), oldest first.

    :class:`UnknownDelegation` if it names none, or is neither a DID nor a hash."""
    if isinstance(target, DelegatedSession):
        digest = target.chain.links[-1].digest
        rows = state.list_delegations(link=digest)
        shown = target.link_hash
    elif isinstance(target, bytes):
        rows = state.list_delegations(link=target)
        shown = target.hex()
    elif isinstance(target, str) and target.startswith("did:"):
        try:
            audience = parse_did_key(target)
        except InvalidDid as exc:
            raise UnknownDelegation(f"not a did:key: {exc}") from None
        rows = state.list_delegations(audience=audience)
        shown = target
    elif isinstance(target, str) and _HEX.fullmatch(target.strip().lower()):
        prefix = target.strip().lower()
        rows = [r for r in state.list_delegations() if r.link.hex().startswith(prefix)]
        if len({r.link for r in rows}) > 1:
            raise UnknownDelegation(f"hash prefix {prefix} names several delegations")
        shown = prefix
    else:
        text = target if isinstance(target, str) else repr(target)
        raise UnknownDelegation(f"{text[:80]!r} is neither a did:key nor a delegation's hash (hex)")
    if not rows:
        raise UnknownDelegation(f"no delegation issued by this home matches {shown}")
    return rows


def chains_of(rows: Sequence[IssuedDelegation]) -> list[Chain]:
    return [Chain.decode(row.chain) for row in rows]


def list_issued(home: Home) -> list[Delegation]:
    """Every delegation ``home`` issued, oldest first (``veil id delegations``).
    Blocking (opens the state file)."""
    if not home.state_path.exists():
        return []
    with contextlib.closing(open_state(home)) as state:
        return [describe(row) for row in state.list_delegations()]
