"""The node's questions about a session's record or request, asked now.

Design note
-----------
:func:`check_record` is the node's question, asked before a record is stored: would it
be accepted now? The same judgement as the state's
(:mod:`~veil.onion.group.state.session_state`), plus the present: the session is not
ended (:class:`~veil.onion.errors.SessionRevoked`), the record is not dated ahead of the
clock, its signer's membership is live and holds the right it needs now (a revoked or
expired member stores nothing), and for a member record the adder holds ``forward`` and
every right it gives (:class:`~veil.onion.errors.RightMissing`).

For an epoch that follows its signer's own revocations (the state's "Rotation after a
delegated revocation"), nodes also ask that it be dated now and wrap its key for every
live member with read (:func:`_check_follower`): the revoker can rotate the key away
from whom it revoked, never away from anyone else, and only right after revoking.

:func:`check_access` is what a node adds for a session's account to the capability
check of every storage request: after the whole session's revocation, no store or read.
"""

from __future__ import annotations

from ...capability import Chain
from ...errors import (
    GroupError,
    InvalidValue,
    NotAMember,
    RecordFromFuture,
    RightMissing,
    SessionRevoked,
    UnknownSession,
    WrongSession,
)
from ..limits import DEFAULT_SKEW_MS
from ..records import (
    EndRecord,
    EpochRecord,
    GenesisRecord,
    MemberRecord,
    Record,
    RevokeRecord,
    decode_record,
)
from ..rights import READ, REVOKE_RIGHT
from .judging import _RECORD_TYPES, _judge, _times_ok
from .session_state import _PENDING, SessionState

__all__ = ["check_access", "check_record"]


def check_record(
    state: SessionState,
    record: bytes | Record,
    *,
    now_ms: int,
    skew_ms: int = DEFAULT_SKEW_MS,
) -> Record:
    """Whether a node accepts ``record`` into ``state``'s session now: the record, or
    the typed :class:`~veil.onion.errors.GroupError` (or capability error) that refuses
    it (see the module note)."""
    if isinstance(record, bytes):
        record = decode_record(record)
    elif not isinstance(record, _RECORD_TYPES):
        raise InvalidValue("a record is its bytes or a decoded record")
    if record.session != state.session:
        raise WrongSession("the record is of another session")
    if record.digest in state.records and record.digest not in state.rejected:
        return record
    if state.ended:
        raise SessionRevoked("the session was revoked")
    if record.issued_ms > now_ms + skew_ms:
        raise RecordFromFuture(f"the record is dated {record.issued_ms}, ahead of {now_ms}")
    genesis = state.genesis
    if isinstance(record, GenesisRecord):
        if genesis is not None:
            raise UnknownSession("the session already has another genesis")
        genesis = record
    if genesis is None:
        raise UnknownSession("the session's genesis is not known")
    judged = _judge(genesis, record, skew_ms)
    if judged.error is not None:
        raise judged.error
    if isinstance(record, GenesisRecord):
        return record
    signer_links = set(judged.signer_links)
    if any(link in state.revoked_links for link in signer_links):
        raise NotAMember("the signer's membership was revoked")
    # The signer's membership must also be live now (not expired since).
    chain = _signer_chain(record)
    if chain is not None and not _times_ok(chain.links, now_ms, skew_ms):
        raise NotAMember("the signer's membership has expired")
    if isinstance(record, MemberRecord) and not _times_ok(record.chain.links, now_ms, skew_ms):
        raise NotAMember("the new member's link is not valid now")
    if isinstance(record, EpochRecord) and record.follows:
        _check_follower(state, record, now_ms=now_ms, skew_ms=skew_ms)
    return record


def _check_follower(state: SessionState, record: EpochRecord, *, now_ms: int, skew_ms: int) -> None:
    """The present's part of an epoch that follows its signer's revocations: they are
    all here and count, the epoch is dated now (not backdated into their window), and
    it wraps its key for every live member with read (so that an adder without revoke
    cannot leave anyone out of the session by rotating)."""
    verdict = state._follow_verdict(record)
    if verdict is _PENDING:
        raise RightMissing(
            "the revocations the epoch follows are not known here", right=REVOKE_RIGHT
        )
    if isinstance(verdict, GroupError):
        raise verdict
    if record.issued_ms < now_ms - skew_ms:
        raise RightMissing(
            "an epoch that follows a revocation is stored when it is made", right=REVOKE_RIGHT
        )
    wrapped = {to for to, _ in record.wraps}
    live = state.members(now_ms=now_ms)
    if any(m.x25519_public not in wrapped for m, info in live.items() if READ in info.rights):
        raise RightMissing(
            "an epoch that follows a revocation wraps its key for every member with read",
            right=REVOKE_RIGHT,
        )


def _signer_chain(record: Record) -> Chain | None:
    if isinstance(record, MemberRecord):
        return Chain.from_links(record.chain.links[:-1]) if len(record.chain.links) > 1 else None
    if isinstance(record, RevokeRecord):
        return record.revocation.authority
    if isinstance(record, EpochRecord | EndRecord):
        return record.authority
    return None


def check_access(state: SessionState, *, method: str, namespace: int | None) -> None:
    """What a node adds, for a session's account, to the capability check of a storage
    request (:func:`~veil.onion.capability.authorize`, with the session's revoked
    links): after the whole session's revocation it refuses every store and read
    (:class:`~veil.onion.errors.SessionRevoked`); deletes and expiries stay allowed, so
    the swarm can drop the session's content. A store into the state namespace also
    goes through :func:`check_record`."""
    if state.ended and method in ("store", "retrieve"):
        raise SessionRevoked("the session was revoked")
