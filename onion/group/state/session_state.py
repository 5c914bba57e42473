"""A session's state: a pure function of a set of records.

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
also ask (:func:`~veil.onion.group.state.node_checks.check_record`) that it be dated
now and wrap its key for every live member with read: the revoker can rotate the key
away from whom it revoked, never away from anyone else, and only right after revoking.
So a revocation by an adder is followed by its own rotation, in the same step, and the
revoked member reads nothing encrypted afterwards.

Key epochs form a DAG by their parents. The heads are the valid epochs no valid epoch
names as parent; two concurrent rotations give two heads, both accepted, and the next
rotation names both. :attr:`SessionState.current_epoch` is the head to encrypt under:
among the heads whose key no non-member holds (through the epoch's wraps or a member
record's), the latest by (date, ID); :meth:`SessionState.needs_rotation` says when no
head qualifies (a member was revoked since), and the client then rotates first.

Each record is judged on its own (step 2) in :mod:`~veil.onion.group.state.judging`;
the node's questions about the present are in
:mod:`~veil.onion.group.state.node_checks`.

Why one module of about 560 lines: :class:`SessionState` is one immutable object,
built once from the set (steps 1 to 4: ``_build``, ``_follow_verdict``, ``_void``) and
then read (members, rights, chains) and asked for keys (heads, epoch keys); the three
parts work on the same fields the build fills (``records``, ``revoked_links``,
``member_records``, ``epochs``, ``heads``), so apart they would be one class's methods
in three files. What can stand alone has left: a record's judgement and the node's
questions. Measured: the class is about 410 lines (330 of code); the rest is this note
(about 75 lines), the imports and the two small types beside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from ... import crypto
from ...capability import Chain
from ...errors import (
    BadAuthor,
    CapabilityError,
    GroupError,
    IntegrityError,
    InvalidId,
    InvalidKey,
    InvalidValue,
    MalformedRecord,
    RevocationNotAllowed,
    RightMissing,
    WrongSession,
)
from ...keys import AccountId, GroupId, account_id_of_ed25519
from ..limits import DEFAULT_SKEW_MS, FOLLOW_WINDOW_MS, MAX_RECORDS
from ..records import (
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
from ..rights import ALL_RIGHTS, READ, REVOKE_RIGHT, Rights, rights_of_resources
from .judging import _RECORD_TYPES, _judge, _Judged, _times_ok

__all__ = ["KeyHolder", "Member", "SessionState"]


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


def _account_of_key(x25519_public: bytes) -> AccountId:
    """An AccountId of a key read from a verified record, without the point check (a
    key that is not valid names no account that a request can match)."""
    account: AccountId = object.__new__(AccountId)
    object.__setattr__(account, "x25519_public", x25519_public)
    return account


#: An epoch whose followed revocations are not all here yet: kept aside, not judged.
_PENDING: Final = object()


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
                revocation.issued_ms <= epoch.issued_ms <= revocation.issued_ms + FOLLOW_WINDOW_MS
            ):
                return RightMissing(
                    "an epoch that follows a revocation is dated within 10 minutes after it",
                    right=REVOKE_RIGHT,
                )
        return None

    def _void(self, judged: _Judged, at_ms: int) -> bool:
        return any(self.revoked_links.get(link, at_ms + 1) <= at_ms for link in judged.signer_links)

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
        return tuple(sorted((m for m in out if not self.live_chains(m, now_ms=now_ms)), key=str))

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
        return max(
            chains,
            key=lambda c: (
                len(rights_of_resources(session, c.resources)),
                c.expires_ms,
                -len(c.links),
            ),
        )

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
