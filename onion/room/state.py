"""A room's state: a pure function of a set of records, and the node's check of a post.

Design note
-----------
:class:`RoomState` is built from a *set* of room records (:mod:`.records`) and nothing
else: not their order, not the clock. Replicas that hold the same records hold the
same state, so nodes and readers merge by union (:meth:`RoomState.merge`).

How the set is read:

1. Metadata: among the valid ones signed by the owner, the highest ``seq`` wins; two
   different ones with the same ``seq`` (an owner that signed twice) are resolved by
   the smaller record ID, and :attr:`RoomState.conflict` is set.
2. Moderation records count if their signer is the owner or a moderator listed in the
   *current* metadata: removing a moderator voids what it did (the owner re-issues what
   it wants kept). Without metadata none counts.
3. Deletes: every counting delete removes its posts, for good.
4. Bans: an author's latest counting ban or unban, by (time, record ID), says whether
   it is banned, and from when. A counting ban with ``past`` also removes every post of
   the author dated at or before it, for good (a later unban brings none back).
5. Posts: those of the room whose signature verified; :meth:`RoomState.posts` shows the
   ones no delete or ban removed, a banned author's posts dated from its ban on
   excluded.

:func:`check_post` is the node's question before it stores a post: is it dated now,
within the room's rules, by an author not banned, not removed by moderation, under the
caller's count of the author's recent posts? :func:`check_moderation` asks the same of
metadata and moderation records. :func:`check_copy` is a member's question about a
copy a peer sends (replication): the same rules without the ones that only make sense
when a record is first stored (its date is not "now", the author's rate is the first
node's to count), judging a post by the bans in force *at its date*. Each refusal is a
typed :class:`~veil.onion.errors.RoomError`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from ..capability import ChainCache, RevocationLookup
from ..errors import (
    AuthorBanned,
    MalformedRoomRecord,
    NotAModerator,
    RoomError,
    RoomPostOutOfTime,
    RoomPostRemoved,
    RoomRateLimited,
    RoomRecordTooLarge,
    StaleRoomMetadata,
    UnknownRoom,
    WrongRoom,
)
from ..keys import AccountId
from ..rpc.limits import CLOCK_SKEW_MS
from .pow import check_pow
from .records import (
    RATE_WINDOW_MS,
    Moderation,
    RoomMeta,
    RoomPost,
    RoomRecord,
    decode_room_record,
)

__all__ = ["DEFAULT_SKEW_MS", "RoomState", "check_copy", "check_moderation", "check_post"]

#: The clock skew a node allows around a post's date (the network's, 2 minutes).
DEFAULT_SKEW_MS: Final = 120_000


class RoomState:
    """The state of ``room`` from a set of records (bytes or decoded). Records that do
    not parse, do not verify or name another room are kept out (:attr:`rejected` counts
    them); the state never raises for a bad record."""

    def __init__(self, room: AccountId, records: Iterable[bytes | RoomRecord] = ()) -> None:
        self.room = room
        self._records: dict[bytes, RoomRecord] = {}
        self.rejected = 0
        for record in records:
            self._add(record)
        self._build()

    def _add(self, record: bytes | RoomRecord) -> None:
        if not isinstance(record, RoomMeta | RoomPost | Moderation):
            try:
                record = decode_room_record(record)
            except RoomError:
                self.rejected += 1
                return
        if record.room != self.room:
            self.rejected += 1
            return
        self._records[record.encoded] = record

    def _build(self) -> None:
        metas = [r for r in self._records.values() if isinstance(r, RoomMeta)]
        self.meta: RoomMeta | None = None
        self.conflict = False
        if metas:
            top = max(m.seq for m in metas)
            best = sorted((m for m in metas if m.seq == top), key=lambda m: m.record_id)
            self.meta = best[0]
            self.conflict = len({m.record_id for m in best}) > 1
        self.deleted: set[bytes] = set()
        self._bans: dict[AccountId, tuple[int, bytes, bool]] = {}  # (ts, id, banned)
        self._purged: dict[AccountId, int] = {}  # posts dated <= this are gone
        self.void = 0
        for mod in self._records.values():
            if not isinstance(mod, Moderation):
                continue
            if not self._may_moderate(mod.signer):
                self.void += 1
                continue
            if mod.op == "delete":
                self.deleted |= mod.post_ids
                continue
            assert mod.who is not None
            entry = (mod.timestamp_ms, mod.record_id, mod.op == "ban")
            if mod.who not in self._bans or entry[:2] > self._bans[mod.who][:2]:
                self._bans[mod.who] = entry
            if mod.op == "ban" and mod.delete_past:
                self._purged[mod.who] = max(self._purged.get(mod.who, -1), mod.timestamp_ms)

    def _may_moderate(self, signer: AccountId) -> bool:
        return self.meta is not None and (signer == self.room or signer in self.meta.moderators)

    def may_moderate(self, account: AccountId) -> bool:
        """The owner or a moderator of the current metadata."""
        return self._may_moderate(account)

    def banned_since(self, author: AccountId) -> int | None:
        """The time of the ban in force on ``author``, or None (not banned)."""
        entry = self._bans.get(author)
        return entry[0] if entry is not None and entry[2] else None

    def is_banned(self, author: AccountId) -> bool:
        return self.banned_since(author) is not None

    def purged(self, post: RoomPost) -> bool:
        """True if a ban with ``past`` removed ``post`` (dated at or before it), for good."""
        return post.timestamp_ms <= self._purged.get(post.author, -1)

    def banned_at(self, post: RoomPost) -> bool:
        """True if the ban in force on the post's author dates from the post's time or
        before (an unban, later, lifts it)."""
        since = self.banned_since(post.author)
        return since is not None and post.timestamp_ms >= since

    def _visible(self, post: RoomPost) -> bool:
        if post.post_id in self.deleted:
            return False
        return not self.purged(post) and not self.banned_at(post)

    def posts(self) -> list[RoomPost]:
        """The posts no delete or ban removed, by (time, post ID)."""
        shown = [r for r in self._records.values() if isinstance(r, RoomPost) and self._visible(r)]
        return sorted(shown, key=lambda p: (p.timestamp_ms, p.post_id))

    def add(self, *records: bytes | RoomRecord) -> RoomState:
        """A new state with ``records`` added (this one is unchanged)."""
        return RoomState(self.room, [*self._records.values(), *records])

    def merge(self, other: RoomState) -> RoomState:
        """The state of the union of both sets (same room)."""
        if other.room != self.room:
            raise WrongRoom("cannot merge the states of two rooms")
        return self.add(*other._records.values())

    def encoded(self) -> list[bytes]:
        """The records held, sorted (for storage and comparison)."""
        return sorted(self._records)

    def summary(self) -> tuple[object, ...]:
        """Everything the state says, comparable between replicas."""
        return (
            self.meta.record_id if self.meta else None,
            self.conflict,
            frozenset(self.deleted),
            frozenset((a, self.banned_since(a)) for a in self._bans),
            tuple(p.post_id for p in self.posts()),
        )


def _room_of(
    state: RoomState,
    data: bytes | RoomRecord,
    is_revoked: RevocationLookup | None = None,
    chains: ChainCache | None = None,
) -> RoomRecord:
    """``data`` parsed (or as decoded already by the caller), if it is of this room."""
    if isinstance(data, RoomMeta | RoomPost | Moderation):
        record: RoomRecord = data
    else:
        record = decode_room_record(data, is_revoked=is_revoked, chains=chains)
    if record.room != state.room:
        raise WrongRoom("the record names another room")
    return record


def _within_rules(state: RoomState, post: RoomPost) -> RoomMeta:
    """The room's metadata, if ``post`` keeps its size and work rules and no moderator
    deleted it."""
    meta = state.meta
    if meta is None:
        raise UnknownRoom("the room has no metadata")
    if len(post.text.encode()) > meta.size:
        raise RoomRecordTooLarge(f"the room takes posts of {meta.size} bytes at most")
    check_pow(post.work_bytes, post.pow_nonce, meta.pow_bits)
    if post.post_id in state.deleted:
        raise RoomPostRemoved("the post was deleted from the room")
    return meta


def check_post(
    state: RoomState,
    post_bytes: bytes | RoomPost,
    now_ms: int,
    skew_ms: int = DEFAULT_SKEW_MS,
    recent_count: int = 0,
    *,
    is_revoked: RevocationLookup | None = None,
    chains: ChainCache | None = None,
) -> RoomPost:
    """Would a node store this post now? ``recent_count``: the author's posts the node
    stored in this room in the last :data:`~.records.RATE_WINDOW_MS`; ``is_revoked``
    and ``chains``: the node's revocations and cache of chains (a delegated key's).

    In order: size, form and signature (:func:`~.records.decode_room_record`);
    a post, of this room (:class:`MalformedRoomRecord`, :class:`WrongRoom`); metadata
    held (:class:`UnknownRoom`); dated within ``skew_ms`` of ``now_ms``
    (:class:`RoomPostOutOfTime`); the room's size rule (:class:`RoomRecordTooLarge`);
    its work (:class:`~veil.onion.errors.InsufficientWork`); not deleted by a moderator
    (:class:`RoomPostRemoved`); the author not banned (:class:`AuthorBanned`); its rate
    (:class:`RoomRateLimited`)."""
    post = _room_of(state, post_bytes, is_revoked, chains)
    if not isinstance(post, RoomPost):
        raise MalformedRoomRecord("not a post")
    if state.meta is None:
        raise UnknownRoom("the room has no metadata")
    if abs(post.timestamp_ms - now_ms) > skew_ms:
        raise RoomPostOutOfTime("the post is not dated now")
    meta = _within_rules(state, post)
    if state.is_banned(post.author) or state.purged(post):
        raise AuthorBanned("the author is banned from this room")
    if recent_count >= meta.rate:
        raise RoomRateLimited(
            f"the room takes {meta.rate} posts per {RATE_WINDOW_MS // 1000} s from an author"
        )
    return post


def check_moderation(
    state: RoomState,
    data: bytes | RoomMeta | Moderation,
    now_ms: int,
    skew_ms: int = DEFAULT_SKEW_MS,
    *,
    is_revoked: RevocationLookup | None = None,
    chains: ChainCache | None = None,
) -> Moderation | RoomMeta:
    """Would a node store this metadata or moderation record now? Metadata: signed by
    the owner, ``seq`` above the held one (:class:`StaleRoomMetadata`). Moderation:
    dated now (:class:`RoomPostOutOfTime`), signed by the owner or a moderator
    (:class:`NotAModerator`, :class:`UnknownRoom` without metadata)."""
    record = _room_of(state, data, is_revoked, chains)
    if isinstance(record, RoomMeta):
        if state.meta is not None and record.seq <= state.meta.seq:
            raise StaleRoomMetadata(f"the room's metadata is already at {state.meta.seq}")
        return record
    if not isinstance(record, Moderation):
        raise MalformedRoomRecord("not a metadata or moderation record")
    if state.meta is None:
        raise UnknownRoom("the room has no metadata")
    if abs(record.timestamp_ms - now_ms) > skew_ms:
        raise RoomPostOutOfTime("the record is not dated now")
    if not state.may_moderate(record.signer):
        raise NotAModerator("only the room's owner and moderators moderate")
    return record


def check_copy(
    state: RoomState,
    data: bytes | RoomRecord,
    *,
    is_revoked: RevocationLookup | None = None,
    chains: ChainCache | None = None,
    skew_ms: int = CLOCK_SKEW_MS,
) -> RoomRecord:
    """Would a member keep this copy of a record that another member stored? The checks
    of :func:`check_post` and :func:`check_moderation` that hold whenever the record
    arrives: form, signature (a delegated key's chain at the record's date, against
    ``is_revoked``), room, metadata held; a post's size, work and moderation (deleted:
    :class:`RoomPostRemoved`; its author banned at its date or its past deleted:
    :class:`AuthorBanned`); a moderation record's signer (:class:`NotAModerator`);
    metadata below the held ``seq`` (:class:`StaleRoomMetadata`; the same ``seq`` is
    kept, so that members that hold both pick the same one). Not the date (the record
    was dated when first stored) nor the rate (counted where it was first stored). A
    post a ban's ``past`` removed is :class:`RoomPostRemoved`, as a deleted one: both
    are for good.

    Some refusals may change as records arrive: :class:`UnknownRoom` (a copy before the
    metadata it needs), :class:`NotAModerator` (a moderator's record before the metadata
    that names it), :class:`AuthorBanned` (a post of an author banned now, whom a later
    unban may clear). A node keeps such copies aside and asks again."""
    if isinstance(data, RoomMeta | RoomPost | Moderation):
        record: RoomRecord = data
    else:
        record = decode_room_record(data, is_revoked=is_revoked, chains=chains, skew_ms=skew_ms)
    if record.room != state.room:
        raise WrongRoom("the record names another room")
    if isinstance(record, RoomMeta):
        if state.meta is not None and record.seq < state.meta.seq:
            raise StaleRoomMetadata(f"the room's metadata is already at {state.meta.seq}")
        return record
    if state.meta is None:
        raise UnknownRoom("the room has no metadata")
    if isinstance(record, Moderation):
        if not state.may_moderate(record.signer):
            raise NotAModerator("only the room's owner and moderators moderate")
        return record
    _within_rules(state, record)
    if state.purged(record):
        raise RoomPostRemoved("the post was removed with its author's past posts")
    if state.banned_at(record):
        raise AuthorBanned("the author was banned from this room when it posted")
    return record
