"""Building a session's records: create, add, revoke, rotate, end.

Design note
-----------
The writers' side of :mod:`~veil.onion.group.state`: each function takes the state the
caller holds and returns the signed records to store in the session's state namespace,
refusing first, with the typed error a node would answer, what a node would refuse
(every record built here passes :func:`~veil.onion.group.state.check_record` against
the state given). Nothing here stores anything: the client does, through the swarm.

* :func:`create_session`: a fresh session key (the group ID ``03...``), the genesis,
  a membership link from the session key for the creator (every right; unless
  ``encrypt_for_self=False``: a service that creates a session for others then acts
  with the session key alone) and for each recipient, and the first key epoch wrapped
  for all of them. The caller keeps the session key (the creator's administrator key).
* :func:`add_members`: links issued by the adder (the session key, or a member that
  holds ``forward`` and every right it gives), each in a member record that wraps the
  heads' keys for the new member, so it reads the whole session (as a Seald recipient).
* :func:`revoke_members`: a capability revocation of every live link of each member
  (so everything below it stops working: see the state's note on the members a
  revoked member had added).
* :func:`rotate`: a new epoch wrapped for the live members with ``read``, naming every
  head as parent: after a revocation, and to merge concurrent rotations. By the session
  key or a holder of ``revoke``, or right after its own revocations by a member the
  policy entitled to them (``follows``: an adder under ``delegation``).
* :func:`end_session`: the whole session's revocation.

Membership links live at most 30 days (the capability limit,
:data:`~veil.onion.capability.MAX_LIFETIME_MS`), as long as anything stored in a
private namespace: a session that lives longer is renewed by its creator (or adders)
re-adding its members before their links expire.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..capability import (
    MAX_LIFETIME_MS,
    Chain,
    SessionKey,
    Signer,
    delegate,
    redelegate,
    revoke,
)
from ..crypto import Rng, system_rng
from ..errors import (
    InvalidValue,
    NotAMember,
    NotEntitledToRevoke,
    RevocationNotAllowed,
    RightMissing,
    UnknownEpoch,
)
from ..keys import Account, AccountId, GroupId, account_id_of_ed25519
from .limits import MAX_FOLLOWS
from .records import (
    RIGHTS_POLICY,
    EndRecord,
    EpochRecord,
    MemberRecord,
    Record,
    RevokeRecord,
    make_end,
    make_epoch,
    make_genesis,
    make_member,
    make_revoke,
    wrap_key,
)
from .rights import (
    ALL_RIGHTS,
    DEFAULT_RIGHTS,
    FORWARD,
    READ,
    REVOKE_RIGHT,
    check_rights,
    resources_of_rights,
    rights_of_resources,
)
from .state import SessionState, check_record

__all__ = [
    "NewSession",
    "add_members",
    "create_session",
    "end_session",
    "revoke_members",
    "rotate",
]


@dataclass(frozen=True, slots=True)
class NewSession:
    """A created session: its key (keep it: it is the creator's administrator key),
    its records (store them, the genesis first), its state, and its first epoch."""

    session_key: SessionKey
    records: tuple[Record, ...]
    state: SessionState
    epoch: bytes
    epoch_key: bytes

    @property
    def session_id(self) -> GroupId:
        return GroupId(self.session_key.ed25519_public)


def _recipients(
    recipients: Mapping[AccountId, Iterable[str]] | Iterable[AccountId],
) -> dict[AccountId, frozenset[str]]:
    if isinstance(recipients, Mapping):
        out = {key: check_rights(rights) for key, rights in recipients.items()}
    else:
        out = {key: DEFAULT_RIGHTS for key in recipients}
    if not all(isinstance(key, AccountId) for key in out):
        raise InvalidValue("members are named by their AccountId")
    return out


def create_session(
    creator: Account,
    recipients: Mapping[AccountId, Iterable[str]] | Iterable[AccountId] = (),
    *,
    metadata: str | None = None,
    policy: str = RIGHTS_POLICY,
    encrypt_for_self: bool = True,
    now_ms: int,
    lifetime_ms: int = MAX_LIFETIME_MS,
    rng: Rng = system_rng,
) -> NewSession:
    """A new session (see the module note). ``recipients``: accounts, with their
    rights (default ``read`` and ``forward``) when given as a mapping."""
    members = _recipients(recipients)
    members.pop(creator.id, None)
    session_key = SessionKey.generate(rng)
    sid = session_key.ed25519_public
    group = GroupId(sid)
    genesis = make_genesis(
        session_key, creator.id, policy=policy, metadata=metadata, now_ms=now_ms
    )
    if encrypt_for_self:
        members = {creator.id: ALL_RIGHTS, **members}
    records: list[Record] = [genesis]
    for member, rights in members.items():
        chain = delegate(
            session_key,
            member,
            resources_of_rights(group, rights),
            now_ms=now_ms,
            lifetime_ms=lifetime_ms,
            rng=rng,
        )
        records.append(make_member(session_key, chain, now_ms=now_ms))
    epoch, key = make_epoch(session_key, sid, list(members), now_ms=now_ms, rng=rng)
    records.append(epoch)
    state = SessionState(group, records)
    return NewSession(session_key, tuple(records), state, epoch.epoch_id, key)


def _acting_chain(state: SessionState, actor: Signer, right: str, now_ms: int) -> Chain | None:
    """None for the session key; else the actor's live chain with ``right``."""
    if actor.ed25519_public == state.session:
        return None
    account = account_id_of_ed25519(actor.ed25519_public)
    chain = state.chain_for(account, right, now_ms=now_ms)
    if chain is None:
        if not state.live_chains(account, now_ms=now_ms):
            raise NotAMember("the actor is not a live member of the session")
        raise RightMissing(f"the actor does not hold {right}", right=right)
    return chain


def _heads_wrapped(
    state: SessionState, member: AccountId, keys: Mapping[bytes, bytes], rng: Rng
) -> list[tuple[bytes, bytes]]:
    wraps = []
    for head in state.heads:
        if head not in keys:
            raise UnknownEpoch("the adder holds no key of a head epoch")
        epoch = state.epochs[head]
        wraps.append((head, wrap_key(keys[head], member, state.session, epoch.salt, rng=rng)))
    return wraps


def add_members(
    state: SessionState,
    adder: Signer,
    members: Mapping[AccountId, Iterable[str]] | Iterable[AccountId],
    *,
    keys: Mapping[bytes, bytes],
    now_ms: int,
    lifetime_ms: int = MAX_LIFETIME_MS,
    rng: Rng = system_rng,
) -> list[MemberRecord]:
    """Member records that add ``members`` (accounts, with rights; default ``read``
    and ``forward``), by ``adder``: the session key, or a member holding ``forward``
    and every right it gives (:class:`~veil.onion.errors.RightMissing` otherwise).
    ``keys`` are the adder's epoch keys (:meth:`SessionState.epoch_keys`)."""
    wanted = _recipients(members)
    group = state.session_id
    acting = _acting_chain(state, adder, FORWARD, now_ms)
    out = []
    for key, rights in wanted.items():
        resources = resources_of_rights(group, rights)
        if acting is None:
            new = delegate(adder, key, resources, now_ms=now_ms, lifetime_ms=lifetime_ms, rng=rng)
        else:
            parent = _chain_holding(
                state, account_id_of_ed25519(adder.ed25519_public), rights, now_ms
            )
            new = redelegate(
                parent,
                adder,
                key,
                resources,
                now_ms=now_ms,
                expires_ms=min(parent.expires_ms, now_ms + lifetime_ms),
                rng=rng,
            )
        record = make_member(
            adder, new, wraps=_heads_wrapped(state, key, keys, rng), now_ms=now_ms
        )
        check_record(state, record, now_ms=now_ms)
        out.append(record)
    return out


def _chain_holding(
    state: SessionState, adder: AccountId, rights: frozenset[str], now_ms: int
) -> Chain:
    """The adder's live chain (the longest-lived) that holds ``forward`` and every
    right it gives; :class:`RightMissing` naming a right it lacks otherwise."""
    chains = [
        (c, rights_of_resources(state.session_id, c.resources))
        for c in state.live_chains(adder, now_ms=now_ms)
    ]
    fitting = [c for c, held in chains if FORWARD in held and rights <= held]
    if fitting:
        return max(fitting, key=lambda c: c.expires_ms)
    held = frozenset().union(*(h for _, h in chains if FORWARD in h))
    right = min(rights - held) if rights - held else REVOKE_RIGHT
    raise RightMissing(f"a member gives no right it lacks ({right})", right=right)


def revoke_members(
    state: SessionState, revoker: Signer, members: Iterable[AccountId], *, now_ms: int
) -> list[RevokeRecord]:
    """Revocation records of every live link of each member, by ``revoker`` (the
    session key, a holder of revoke, or under the ``delegation`` policy a member
    upstream of the link); refused with the typed error a node would answer
    (:class:`~veil.onion.errors.RevocationNotAllowed` and kin)."""
    authority = None
    if revoker.ed25519_public != state.session:
        authority = state.chain_for(
            account_id_of_ed25519(revoker.ed25519_public), REVOKE_RIGHT, now_ms=now_ms
        )
    out = []
    for member in members:
        if member == state.creator:
            raise RevocationNotAllowed("no one can revoke the session's creator")
        chains = state.live_chains(member, now_ms=now_ms)
        if not chains:
            raise NotAMember("not a live member of the session")
        for chain in chains:
            upstream = any(link.issuer == revoker.ed25519_public for link in chain.links)
            auth = None
            if revoker.ed25519_public != state.session and (
                state.policy == RIGHTS_POLICY or not upstream
            ):
                if authority is None:
                    raise RevocationNotAllowed(
                        "under the rights policy only holders of revoke may revoke"
                        if state.policy == RIGHTS_POLICY
                        else "the revoker neither holds revoke nor added the member"
                    )
                auth = authority
            try:
                revocation = revoke(revoker, chain, now_ms=now_ms, authority=auth)
            except NotEntitledToRevoke as exc:
                raise RevocationNotAllowed(str(exc)) from None
            record = make_revoke(revocation)
            check_record(state, record, now_ms=now_ms)
            out.append(record)
    return out


def rotate(
    state: SessionState,
    signer: Signer,
    *,
    keys: Mapping[bytes, bytes],
    now_ms: int,
    members: Iterable[AccountId] | None = None,
    carry_history: bool = True,
    follows: Iterable[RevokeRecord] = (),
    rng: Rng = system_rng,
) -> tuple[EpochRecord, bytes]:
    """A new key epoch for the live members with ``read`` (or ``members``), naming every
    head as its parent, by the session key or a holder of revoke. Returns the record
    and its key. ``carry_history=False`` lets a rotator that holds no head's key (a
    creator with ``encrypt_for_self=False``) rotate anyway: the epoch then carries no
    earlier key (see :mod:`~veil.onion.group.records`). ``follows``: the revocations
    the signer has just made (in ``state``), which entitle it to rotate without
    ``revoke`` (the policy ``delegation``: see :mod:`~veil.onion.group.state`); at most
    the last 16 are named."""
    follows = sorted(follows, key=lambda r: (r.issued_ms, r.digest))[-MAX_FOLLOWS:]
    if follows and signer.ed25519_public != state.session:
        account = account_id_of_ed25519(signer.ed25519_public)
        authority = state.chain_for(account, REVOKE_RIGHT, now_ms=now_ms)
        if authority is None:
            # Any live chain of the signer: the revocations entitle it, not its rights.
            chains = state.live_chains(account, now_ms=now_ms)
            if not chains:
                raise NotAMember("the actor is not a live member of the session")
            authority = max(chains, key=lambda c: (c.expires_ms, -len(c.links)))
        else:
            follows = []
    else:
        authority = _acting_chain(state, signer, REVOKE_RIGHT, now_ms)
        follows = []
    if members is None:
        live = state.members(now_ms=now_ms)
        members = [key for key, m in live.items() if READ in m.rights]
    parents: list[tuple[bytes, bytes | None]] = []
    for head in state.heads:
        if head not in keys and carry_history:
            raise UnknownEpoch("the rotator holds no key of a head epoch")
        parents.append((head, keys.get(head)))
    record, key = make_epoch(
        signer,
        state.session,
        list(members),
        parents=parents,
        authority=authority,
        follows=[r.digest for r in follows],
        now_ms=now_ms,
        rng=rng,
    )
    check_record(state, record, now_ms=now_ms)
    return record, key


def end_session(state: SessionState, signer: Signer, *, now_ms: int) -> EndRecord:
    """The whole session's revocation, by the session key or a holder of revoke."""
    authority = _acting_chain(state, signer, REVOKE_RIGHT, now_ms)
    record = make_end(signer, state.session, authority=authority, now_ms=now_ms)
    check_record(state, record, now_ms=now_ms)
    return record

