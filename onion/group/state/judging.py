"""A record of a session judged on its own: signatures, chains, rights, times.

Design note
-----------
Step 2 of how a session's state reads its set of records
(:mod:`~veil.onion.group.state.session_state`): each record is judged on its own first
(signatures, the capability chain's structure and attenuation, right sets, times *at the
record's own date*, the policy), against the session's genesis and nothing else. These
judgements never change, so the state caches them by (genesis, record) digest; what
depends on the rest of the set (revocations before a record's date, the revocations an
epoch follows) and on the present is the state's and the node's
(:mod:`~veil.onion.group.state.node_checks`).

A judgement is a :class:`_Judged`: the typed error that refuses the record (None: it is
valid on its own), the links of its signer's membership (whose revocation before the
record's date voids it) and its signer. Who may sign what: a member record by the
issuer of the new member's link (the adder: ``forward`` and every right it gives), a
revocation by the policy's rule (``rights``: a holder of ``revoke``; ``delegation``: also
an upstream issuer of the revoked link; never the creator's link), an epoch or the end
by the session key or a holder of ``revoke``, or an epoch that follows its signer's own
revocations by any member.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise

from ...capability import Chain, verify_revocation
from ...capability.links import Capability, audience_matches
from ...errors import (
    BadRecordSignature,
    CapabilityError,
    GroupError,
    MalformedRecord,
    NotAMember,
    NotEntitledToRevoke,
    RevocationNotAllowed,
    RightMissing,
)
from ...keys import GroupId
from ..records import (
    RIGHTS_POLICY,
    EndRecord,
    EpochRecord,
    GenesisRecord,
    MemberRecord,
    Record,
    RevokeRecord,
)
from ..rights import FORWARD, REVOKE_RIGHT, Rights, rights_of_resources

_RECORD_TYPES = (GenesisRecord, MemberRecord, RevokeRecord, EpochRecord, EndRecord)


@dataclass(frozen=True, slots=True)
class _Judged:
    """What judging a record on its own gave: its error (None: valid), the links whose
    revocation before its date voids it (its signer's membership), and its signer."""

    error: GroupError | CapabilityError | None
    signer_links: tuple[bytes, ...] = ()
    signer: bytes = b""


def _times_ok(links: Iterable[Capability], at_ms: int, skew_ms: int) -> bool:
    return all(
        link.not_before_ms <= at_ms + skew_ms and at_ms - skew_ms < link.expires_ms
        for link in links
    )


def _check_rights_chain(session: GroupId, chain: Chain) -> tuple[Rights, ...]:
    """Each link's right set, checked down the chain: every parent holds ``forward``
    and every right it gives (:class:`RightMissing` naming it)."""
    if chain.owner != session:
        raise MalformedRecord("the chain is not of this session")
    rights = tuple(rights_of_resources(session, link.resources) for link in chain.links)
    for parent, child in pairwise(rights):
        if FORWARD not in parent:
            raise RightMissing("a member without forward cannot add members", right=FORWARD)
        extra = child - parent
        if extra:
            right = min(extra)
            raise RightMissing(f"a member gives no right it lacks ({right})", right=right)
    return rights


def _verified_chain(session: GroupId, chain: Chain, at_ms: int, skew_ms: int) -> Rights:
    """The chain's right set once its rights, structure, times at ``at_ms`` and
    signatures are checked (typed errors)."""
    rights = _check_rights_chain(session, chain)
    try:
        chain.check_structure()
    except CapabilityError as exc:
        raise MalformedRecord(f"chain: {exc}") from None
    if not _times_ok(chain.links, at_ms, skew_ms):
        raise NotAMember("the chain is not valid at the record's date")
    try:
        chain.verify_signatures()
    except CapabilityError:
        raise BadRecordSignature("a link of the chain does not verify") from None
    return rights[-1]


def _authority(
    session: GroupId, signer: bytes, authority: Chain | None, at_ms: int, skew_ms: int
) -> tuple[bytes, ...]:
    """The signer's membership links if it may act as a revoker at ``at_ms`` (the
    session key needs none): :class:`RightMissing` otherwise."""
    if signer == session.ed25519_public:
        return ()
    if authority is None:
        raise RightMissing("only the session key or a holder of revoke may", right=REVOKE_RIGHT)
    if not audience_matches(authority.audience, signer):
        raise RightMissing("the authority chain is not the signer's", right=REVOKE_RIGHT)
    rights = _verified_chain(session, authority, at_ms, skew_ms)
    if REVOKE_RIGHT not in rights:
        raise RightMissing("the signer does not hold revoke", right=REVOKE_RIGHT)
    return tuple(link.digest for link in authority.links)


def _member_authority(
    session: GroupId, signer: bytes, authority: Chain | None, at_ms: int, skew_ms: int
) -> tuple[bytes, ...]:
    """The signer's membership links at ``at_ms``, whatever its rights (the session key
    needs none): for an epoch that follows the signer's own revocations."""
    if signer == session.ed25519_public:
        return ()
    if authority is None or not audience_matches(authority.audience, signer):
        raise NotAMember("the epoch's chain is not the signer's membership")
    _verified_chain(session, authority, at_ms, skew_ms)
    return tuple(link.digest for link in authority.links)


def _judge(genesis: GenesisRecord, record: Record, skew_ms: int) -> _Judged:
    """``record`` on its own (step 2 of the module note)."""
    session = GroupId(genesis.session)
    try:
        if isinstance(record, GenesisRecord):
            if not record.creator_is_valid():
                raise MalformedRecord("the genesis's creator is not a valid account key")
            record.verify_signature()
            return _Judged(None, (), record.session)
        if isinstance(record, MemberRecord):
            _verified_chain(session, record.chain, record.issued_ms, skew_ms)
            record.verify_signature()
            links = tuple(link.digest for link in record.chain.links[:-1])
            return _Judged(None, links, record.adder)
        if isinstance(record, RevokeRecord):
            return _judge_revoke(genesis, session, record, skew_ms)
        if isinstance(record, EpochRecord) and record.follows:
            # Entitled by the revocations it follows (checked against the set: state).
            links = _member_authority(
                session, record.issuer, record.authority, record.issued_ms, skew_ms
            )
        else:
            links = _authority(session, record.issuer, record.authority, record.issued_ms, skew_ms)
        record.verify_signature()
        return _Judged(None, links, record.issuer)
    except (GroupError, CapabilityError) as exc:
        return _Judged(exc)


def _judge_revoke(
    genesis: GenesisRecord, session: GroupId, record: RevokeRecord, skew_ms: int
) -> _Judged:
    revocation = record.revocation
    proof = revocation.proof
    revoker = revocation.revoker
    if proof.links[-1].audience == b"\x05" + genesis.creator:
        raise RevocationNotAllowed("no one can revoke the session's creator")
    _check_rights_chain(session, proof)
    try:
        verify_revocation(revocation, now_ms=revocation.issued_ms, skew_ms=skew_ms)
    except NotEntitledToRevoke as exc:
        raise RevocationNotAllowed(str(exc)) from None
    if revoker == genesis.session:
        return _Judged(None, (), revoker)
    issuers = [link.issuer for link in proof.links]
    upstream = revoker in issuers
    if genesis.policy == RIGHTS_POLICY or not upstream:
        # Under "rights" only a holder of revoke revokes (by its chain); under
        # "delegation" an upstream issuer may too, and anyone else needs that chain.
        if revocation.authority is None:
            raise RevocationNotAllowed(
                "under the rights policy only holders of revoke may revoke"
                if genesis.policy == RIGHTS_POLICY
                else "the revoker neither added the member nor holds revoke"
            )
        try:
            links = _authority(
                session, revoker, revocation.authority, revocation.issued_ms, skew_ms
            )
        except RightMissing as exc:
            raise RevocationNotAllowed(str(exc)) from None
        return _Judged(None, links, revoker)
    # The revoker's own membership: the links above the first one it issued.
    above = proof.links[: issuers.index(revoker)]
    return _Judged(None, tuple(link.digest for link in above), revoker)
