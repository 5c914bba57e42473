"""A session's state: a pure function of a set of records, and the node's check.

Design note
-----------
:class:`SessionState` is built from a *set* of records (:mod:`~veil.onion.group.records`)
and from nothing else: not the order they arrived in, not the clock. Two replicas that
hold the same records hold the same state, so swarm members and clients merge by union
(:meth:`SessionState.merge`) without coordination, which an ordered log of operations
would not allow (two members appending at two nodes fork it).

How the set is read:

1. The genesis: the session key's signed record of its creator, policy and metadata.
   Without one, every other record waits. Two valid ones (a creator that signed twice)
   are resolved by the smaller digest, and :attr:`SessionState.conflict` is set.
2. Each record is judged on its own first (signatures, the capability chain's structure
   and attenuation, right sets, times *at the record's own date*, the policy). These
   judgements never change, so they are cached by digest.
3. Revocations are applied in the order of (date, digest): one counts unless its
   revoker's own membership was revoked by a revocation applied before it. So two
   administrators that revoke each other: the earlier one wins (a tie by digest).
   A revoked link is revoked from the revocation's date on.
4. Member records, key epochs and the session's end count unless their signer was
   revoked at their date: what a revoked member signs after its revocation is void
   (:attr:`SessionState.void`). What it backdates to before its revocation is judged
   as of that date: nodes refuse it (its membership is revoked *now*), but a client
   reading from a hostile node cannot tell it from a late delivery; members it adds
   that way are below its revoked link, so they gain nothing.

Membership. A member is an account (``05...``: every membership link's audience is an
account, exercised by the account's own Ed25519 key) with at least one *live* chain:
a member record's chain from the session key, inside its validity (with the clock
skew) and with no link revoked. Its rights are the union of its live chains' right
sets. The creator (the genesis names its account) holds every right (it holds the
session key, and nobody can revoke it).

**Members added by a revoked member.** Revoking a member revokes its links, and a
capability revoked revokes everything below it: the members it added (directly or
through others) lose their membership *through it* at the same moment, unless they
also hold a chain that does not pass through it (they were added again by someone
else, or by the creator). A client that revokes a member and wants to keep those it
added re-adds them (:func:`~veil.onion.group.session.add_members`) before it rotates.

**Rotation after a delegated revocation.** An epoch is signed by the session key or a
holder of ``revoke``, or by a member entitled by the policy to revocations it has just
made (under ``delegation``, an adder revoking whom it added, without ``revoke``): such
an epoch names them (its ``revs``), and counts only if each is in the set, counts (not
rejected, not void), was made by the epoch's signer, and the epoch is dated within
:data:`~veil.onion.group.limits.FOLLOW_WINDOW_MS` (10 minutes) after it; the signer's
chain (any rights) must be live at the epoch's date, as for any record. Until a named
revocation arrives, the epoch waits aside (as records wait for the genesis). Nodes
also ask (:func:`check_record`) that it be dated now and wrap its key for every live
member with read: the revoker can rotate the key away from whom it revoked, never away
from anyone else, and only right after revoking. So a revocation by an adder is
followed by its own rotation, in the same step, and the revoked member reads nothing
encrypted afterwards.

Key epochs form a DAG by their parents. The heads are the valid epochs no valid epoch
names as parent; two concurrent rotations give two heads, both accepted, and the next
rotation names both. :attr:`SessionState.current_epoch` is the head to encrypt under:
among the heads whose key no non-member holds (through the epoch's wraps or a member
record's), the latest by (date, ID); :meth:`SessionState.needs_rotation` says when no
head qualifies (a member was revoked since), and the client then rotates first.

:func:`check_record` is the node's question, asked before a record is stored: would it
be accepted now? The same judgement as above, plus the present: the session is not
ended (:class:`~veil.onion.errors.SessionRevoked`), the record is not dated ahead of the
clock, its signer's membership is live and holds the right it needs now (a revoked or
expired member stores nothing), and for a member record the adder holds ``forward`` and
every right it gives (:class:`~veil.onion.errors.RightMissing`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Final, Protocol

from .. import crypto
from ..capability import Chain, verify_revocation
from ..capability.links import Capability, audience_matches
from ..errors import (
    BadAuthor,
    BadRecordSignature,
    CapabilityError,
    GroupError,
    IntegrityError,
    InvalidId,
    InvalidKey,
    InvalidValue,
    MalformedRecord,
    NotAMember,
    NotEntitledToRevoke,
    RecordFromFuture,
    RevocationNotAllowed,
    RightMissing,
    SessionRevoked,
    UnknownSession,
    WrongSession,
)
from ..keys import AccountId, GroupId, account_id_of_ed25519
from .limits import DEFAULT_SKEW_MS, FOLLOW_WINDOW_MS, MAX_RECORDS
from .records import (
    RIGHTS_POLICY,
    EndRecord,
    EpochRecord,
    GenesisRecord,
    MemberRecord,
    Record,
    RevokeRecord,
    decode_record,
    epoch_commitment,
    open_back,
    unwrap_key,
)
from .rights import ALL_RIGHTS, FORWARD, READ, REVOKE_RIGHT, Rights, rights_of_resources

__all__ = ["KeyHolder", "Member", "SessionState", "check_access", "check_record"]


_RECORD_TYPES = (GenesisRecord, MemberRecord, RevokeRecord, EpochRecord, EndRecord)


class KeyHolder(Protocol):
    """Anything that holds an account's keys (an :class:`~veil.onion.keys.Account`)."""

    @property
    def ed25519_public(self) -> bytes: ...

    @property
    def x25519_secret(self) -> bytes: ...

    @property
    def x25519_public(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Member:
    """A live member: its account ID, rights, who added it, its chains."""

    account: AccountId
    rights: Rights
    #: The accounts that added it (the creator's for the session key), sorted.
    added_by: tuple[AccountId, ...]
    chains: tuple[Chain, ...]


@dataclass(frozen=True, slots=True)
class _Judged:
    """What judging a record on its own gave: its error (None: valid), the links whose
    revocation before its date voids it (its signer's membership), and its signer."""

    error: GroupError | CapabilityError | None
    signer_links: tuple[bytes, ...] = ()
    signer: bytes = b""


def _account_of_key(x25519_public: bytes) -> AccountId:
    """An AccountId of a key read from a verified record, without the point check (a
    key that is not valid names no account that a request can match)."""
    account: AccountId = object.__new__(AccountId)
    object.__setattr__(account, "x25519_public", x25519_public)
    return account


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


#: An epoch whose followed revocations are not all here yet: kept aside, not judged.
_PENDING: Final = object()


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
            links = _authority(
                session, record.issuer, record.authority, record.issued_ms, skew_ms
            )
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


class SessionState:
    """The state of one session, from a set of records (see the module note).

    Immutable: :meth:`add` and :meth:`merge` return a new state. Records that are not
    valid are kept aside in :attr:`rejected` (digest -> typed error), so that a client
    can tell what a node served it that it should not have.
    """

    def __init__(
        self,
        session_id: GroupId,
        records: Iterable[bytes | Record] = (),
        *,
        skew_ms: int = DEFAULT_SKEW_MS,
        _judged: Mapping[tuple[bytes, bytes], _Judged] | None = None,
    ) -> None:
        if not isinstance(session_id, GroupId):
            raise InvalidValue("a session is named by its GroupId")
        self.session_id = session_id
        self.session = session_id.ed25519_public
        self.skew_ms = skew_ms
        self.records: dict[bytes, Record] = {}
        self.rejected: dict[bytes, GroupError | CapabilityError] = {}
        for item in records:
            if isinstance(item, bytes):
                try:
                    record = decode_record(item)
                except GroupError as exc:
                    self.rejected[crypto.hash32(item)] = exc
                    continue
            elif isinstance(item, _RECORD_TYPES):
                record = item
            else:
                raise InvalidValue("a record is its bytes or a decoded record")
            if record.session != self.session:
                self.rejected[record.digest] = WrongSession("a record of another session")
                continue
            self.records[record.digest] = record
        if len(self.records) > MAX_RECORDS:
            raise InvalidValue(f"a session state holds at most {MAX_RECORDS} records")
        self._judged: dict[tuple[bytes, bytes], _Judged] = dict(_judged or {})
        self._build()

    # --- building ---------------------------------------------------------------------

    def _judge(self, genesis: GenesisRecord, record: Record) -> _Judged:
        key = (genesis.digest, record.digest)
        judged = self._judged.get(key)
        if judged is None:
            judged = self._judged[key] = _judge(genesis, record, self.skew_ms)
        return judged

    def _build(self) -> None:
        self.genesis: GenesisRecord | None = None
        self.conflict = False
        self.revoked_links: dict[bytes, int] = {}
        self.member_records: list[MemberRecord] = []
        self.epochs: dict[bytes, EpochRecord] = {}
        self.end: EndRecord | None = None
        self.revocations: list[RevokeRecord] = []
        #: Records valid on their own but signed by a member revoked before their date.
        self.void: set[bytes] = set()
        geneses = sorted(
            (r for r in self.records.values() if isinstance(r, GenesisRecord)),
            key=lambda r: r.digest,
        )
        valid = []
        for g in geneses:
            judged = _judge(g, g, self.skew_ms)
            if judged.error is None:
                valid.append(g)
            else:
                self.rejected[g.digest] = judged.error
        if not valid:
            return
        genesis = self.genesis = valid[0]
        self.conflict = len(valid) > 1
        verdicts = {
            digest: self._judge(genesis, record)
            for digest, record in self.records.items()
            if not isinstance(record, GenesisRecord)
        }
        for digest, j in verdicts.items():
            if j.error is not None:
                self.rejected[digest] = j.error
        revokes = sorted(
            (r for r in self.records.values() if isinstance(r, RevokeRecord)),
            key=lambda r: (r.issued_ms, r.digest),
        )
        for revocation in revokes:
            j = verdicts[revocation.digest]
            if j.error is not None:
                continue
            if self._void(j, revocation.issued_ms):
                self.void.add(revocation.digest)
                continue
            self.revocations.append(revocation)
            self.revoked_links.setdefault(revocation.link, revocation.issued_ms)
        for record in self.records.values():
            if isinstance(record, GenesisRecord | RevokeRecord):
                continue
            j = verdicts[record.digest]
            if j.error is not None:
                continue
            if self._void(j, record.issued_ms):
                self.void.add(record.digest)
                continue
            if isinstance(record, MemberRecord):
                self.member_records.append(record)
            elif isinstance(record, EpochRecord):
                if record.follows:
                    verdict = self._follow_verdict(record)
                    if verdict is _PENDING:
                        continue
                    if isinstance(verdict, GroupError):
                        self.rejected[record.digest] = verdict
                        continue
                self.epochs[record.digest] = record
            elif self.end is None or (record.issued_ms, record.digest) < (
                self.end.issued_ms,
                self.end.digest,
            ):
                self.end = record
        self.member_records.sort(key=lambda r: (r.issued_ms, r.digest))
        named = {parent for epoch in self.epochs.values() for parent in epoch.parents}
        self.heads: tuple[bytes, ...] = tuple(
            sorted(
                (e for e in self.epochs if e not in named),
                key=lambda e: (self.epochs[e].issued_ms, e),
            )
        )

    def _follow_verdict(self, epoch: EpochRecord) -> GroupError | object | None:
        """An epoch that follows revocations (see the module note): None when each one
        it names is here, counts, was made by the epoch's signer, and the epoch is dated
        within :data:`FOLLOW_WINDOW_MS` after it; :data:`_PENDING` when one is not here
        yet; else the error that refuses it."""
        counted = {r.digest for r in self.revocations}
        for digest in epoch.follows:
            revocation = self.records.get(digest)
            if revocation is None:
                return _PENDING
            if not isinstance(revocation, RevokeRecord):
                return MalformedRecord("an epoch's revs name revocation records")
            if digest not in counted:
                return RevocationNotAllowed("the epoch follows a revocation that does not count")
            if revocation.revocation.revoker != epoch.issuer:
                return RightMissing(
                    "an epoch follows only its signer's own revocations", right=REVOKE_RIGHT
                )
            if not (
                revocation.issued_ms
                <= epoch.issued_ms
                <= revocation.issued_ms + FOLLOW_WINDOW_MS
            ):
                return RightMissing(
                    "an epoch that follows a revocation is dated within 10 minutes after it",
                    right=REVOKE_RIGHT,
                )
        return None

    def _void(self, judged: _Judged, at_ms: int) -> bool:
        return any(
            self.revoked_links.get(link, at_ms + 1) <= at_ms for link in judged.signer_links
        )

    # --- merging ----------------------------------------------------------------------

    def add(self, *records: bytes | Record) -> SessionState:
        """A new state with ``records`` added."""
        return SessionState(
            self.session_id,
            [*self.records.values(), *records],
            skew_ms=self.skew_ms,
            _judged=self._judged,
        )

    def merge(self, other: SessionState) -> SessionState:
        """The state of both replicas' records (a plain union)."""
        if other.session != self.session:
            raise WrongSession("the states are of two sessions")
        return SessionState(
            self.session_id,
            [*self.records.values(), *other.records.values()],
            skew_ms=self.skew_ms,
            _judged={**other._judged, **self._judged},
        )

    def encoded(self) -> list[bytes]:
        """Every record's bytes, in digest order (what a replica sends)."""
        return [self.records[d].encoded for d in sorted(self.records)]

    # --- reading ----------------------------------------------------------------------

    @property
    def creator(self) -> AccountId | None:
        """The creator's account (it holds every right and cannot be revoked)."""
        return self.genesis.creator_id if self.genesis else None

    @property
    def policy(self) -> str | None:
        return self.genesis.policy if self.genesis else None

    @property
    def metadata(self) -> str | None:
        return self.genesis.metadata if self.genesis else None

    @property
    def ended(self) -> bool:
        """Whether the whole session was revoked."""
        return self.end is not None

    def _live(self, chain: Chain, at_ms: int | None, now_ms: int) -> bool:
        when = now_ms if at_ms is None else at_ms
        if not _times_ok(chain.links, when, self.skew_ms):
            return False
        for link in chain.links:
            revoked_at = self.revoked_links.get(link.digest)
            if revoked_at is not None and (at_ms is None or revoked_at <= at_ms):
                return False
        return True

    def live_chains(
        self, member: AccountId, *, now_ms: int, at_ms: int | None = None
    ) -> list[Chain]:
        """``member``'s live chains now (``at_ms`` None: every revocation counts) or at
        ``at_ms`` (only revocations dated at or before it count)."""
        return [
            r.chain
            for r in self.member_records
            if r.member == member and self._live(r.chain, at_ms, now_ms)
        ]

    def rights_of(self, member: AccountId, *, now_ms: int, at_ms: int | None = None) -> Rights:
        """``member``'s rights (empty: not a member); the creator holds every right."""
        if self.genesis is not None and member.x25519_public == self.genesis.creator:
            return ALL_RIGHTS
        session = self.session_id
        return frozenset().union(
            *(
                rights_of_resources(session, chain.resources)
                for chain in self.live_chains(member, now_ms=now_ms, at_ms=at_ms)
            )
        )

    def _adder(self, record: MemberRecord) -> AccountId:
        adder = record.adder
        if adder == self.session and self.genesis is not None:
            return self.genesis.creator_id
        return account_id_of_ed25519(adder)

    def added_by(self, member: AccountId) -> tuple[AccountId, ...]:
        """Every account that ever validly added ``member`` (the creator for the session
        key)."""
        return tuple(
            sorted(
                {self._adder(r) for r in self.member_records if r.member == member},
                key=str,
            )
        )

    def members(self, *, now_ms: int) -> dict[AccountId, Member]:
        """The live members now, by account."""
        out = {}
        for key in sorted({r.member for r in self.member_records}, key=str):
            chains = self.live_chains(key, now_ms=now_ms)
            if not chains:
                continue
            out[key] = Member(
                account=key,
                rights=self.rights_of(key, now_ms=now_ms),
                added_by=self.added_by(key),
                chains=tuple(chains),
            )
        return out

    def may_read(self, account: AccountId, *, now_ms: int) -> bool:
        """Whether ``account`` is a live member now (in :meth:`members`: a chain neither
        revoked nor expired) with ``read``, and the session has not ended: what a node
        asks before it serves a retrieve signed by the account's own key alone."""
        if self.ended or not self.live_chains(account, now_ms=now_ms):
            return False
        return READ in self.rights_of(account, now_ms=now_ms)

    def revoked_members(self, *, now_ms: int) -> tuple[AccountId, ...]:
        """Accounts once added that hold no live chain now and had a link revoked."""
        out = set()
        for r in self.member_records:
            if any(link.digest in self.revoked_links for link in r.chain.links):
                out.add(r.member)
        return tuple(
            sorted((m for m in out if not self.live_chains(m, now_ms=now_ms)), key=str)
        )

    def chain_for(self, member: AccountId, right: str, *, now_ms: int) -> Chain | None:
        """A live chain of ``member`` that holds ``right`` (the longest-lived), or None."""
        session = self.session_id
        chains = [
            c
            for c in self.live_chains(member, now_ms=now_ms)
            if right in rights_of_resources(session, c.resources)
        ]
        if not chains:
            return None
        return max(chains, key=lambda c: (len(rights_of_resources(session, c.resources)),
                                          c.expires_ms, -len(c.links)))

    def check_author(self, author: bytes | AccountId, at_ms: int, *, now_ms: int) -> None:
        """:class:`BadAuthor` unless ``author`` (its Ed25519 key or account) held
        ``read`` at ``at_ms`` (a group message's date): membership at the time it was
        sent."""
        if isinstance(author, bytes):
            try:
                author = account_id_of_ed25519(author)
            except (InvalidKey, InvalidId):
                raise BadAuthor("the author's key is not a valid Ed25519 key") from None
        if READ not in self.rights_of(author, now_ms=now_ms, at_ms=at_ms):
            raise BadAuthor("the author was not a member when the message was sent")

    # --- epochs -----------------------------------------------------------------------

    def _holder_keys(self, epoch: bytes) -> frozenset[bytes]:
        record = self.epochs.get(epoch)
        out = {to for to, _ in record.wraps} if record else set()
        out.update(
            r.member.x25519_public
            for r in self.member_records
            if any(e == epoch for e, _ in r.wraps)
        )
        return frozenset(out)

    def holders(self, epoch: bytes) -> frozenset[AccountId]:
        """The accounts an epoch's key was wrapped for (its record's and member
        records')."""
        return frozenset(_account_of_key(k) for k in self._holder_keys(epoch))

    def clean_heads(self, *, now_ms: int) -> tuple[bytes, ...]:
        """The heads whose key only live members (and the creator) hold."""
        members = {m.x25519_public for m in self.members(now_ms=now_ms)}
        if self.genesis is not None:
            members.add(self.genesis.creator)
        return tuple(h for h in self.heads if self._holder_keys(h) <= members)

    def current_epoch(self, *, now_ms: int) -> bytes | None:
        """The head to encrypt under (the module note), or None."""
        clean = self.clean_heads(now_ms=now_ms)
        return clean[-1] if clean else None

    def needs_rotation(self, *, now_ms: int) -> bool:
        """True when no head is clean: a member lost access since the last rotation (or
        there is no epoch yet)."""
        return not self.clean_heads(now_ms=now_ms)

    def epoch_keys(self, reader: KeyHolder) -> dict[bytes, bytes]:
        """Every epoch key ``reader`` can get: its wraps (epochs' and member records'),
        each checked against its epoch's commitment, then every ancestor's through the
        chain back. Wraps that do not open or do not match are skipped."""
        me = _account_of_key(reader.x25519_public)
        keys: dict[bytes, bytes] = {}

        def take(epoch_id: bytes, wrapped: bytes) -> None:
            epoch = self.epochs.get(epoch_id)
            if epoch is None or epoch_id in keys:
                return
            try:
                key = unwrap_key(
                    reader.x25519_secret, reader.x25519_public, wrapped, self.session, epoch.salt
                )
            except (IntegrityError, InvalidKey):
                return
            if crypto.ct_equal(epoch_commitment(key, self.session, epoch.salt), epoch.commitment):
                keys[epoch_id] = key

        for epoch_id, epoch in self.epochs.items():
            wrapped = epoch.wrap_for(me)
            if wrapped is not None:
                take(epoch_id, wrapped)
        for record in self.member_records:
            if record.member == me:
                for epoch_id, wrapped in record.wraps:
                    take(epoch_id, wrapped)
        todo = list(keys)
        while todo:
            epoch_id = todo.pop()
            epoch = self.epochs[epoch_id]
            if not epoch.parents:
                continue
            try:
                parents = open_back(epoch, keys[epoch_id])
            except IntegrityError:
                continue
            for parent, key in parents.items():
                known = self.epochs.get(parent)
                if parent in keys or known is None:
                    continue
                if crypto.ct_equal(
                    epoch_commitment(key, self.session, known.salt), known.commitment
                ):
                    keys[parent] = key
                    todo.append(parent)
        return keys

    def __repr__(self) -> str:
        return (
            f"SessionState({self.session_id}, {len(self.records)} records, "
            f"{len(self.heads)} head(s){', ended' if self.ended else ''})"
        )


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
