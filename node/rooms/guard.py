"""Open groups at the node: each room's rules, enforced on every store and every copy.

Design note
-----------
A room (issue 16) is an account's room namespace (-2,
:data:`~veil.onion.room.ROOM_NAMESPACE`): every message there is one room record
(:mod:`veil.onion.room`) that authenticates itself, so a store needs no request
signature, and the node judges each record against the room's records it holds
(:class:`~veil.node.rooms.states.RoomStates`). This module applies
:mod:`veil.onion.room`'s rules to the node's store; the storage service
(node/service/) calls it for every request and copy in that namespace.

A client's store (:meth:`RoomGuard.judge_store`), in order:

* the same bytes stored already: answered as a store (``created`` false), so a client
  that retries after a lost reply succeeds, whatever else changed since;
* the record parsed and its signer checked: size before parsing, form, signature, a
  delegated key's chain at the record's date against this node's revocations
  (:func:`~veil.onion.room.decode_room_record`);
* the first record a room takes is its metadata (anything else: ``not_found``); then
  metadata signed by the owner with a higher ``seq``
  (:func:`~veil.onion.room.check_moderation`); a moderation record dated now and signed
  by the owner or a moderator of the current metadata; a post
  (:func:`~veil.onion.room.check_post`) dated now, within the room's size and work, not
  deleted, by an author not banned, under the room's per-author rate (the author's
  posts first stored in the last minute, counted in the store's index, copies from
  other members included), and within the room's share of the node (a token bucket per
  room, :class:`~veil.node.rooms.policy.RoomPolicy`).

Refusals are the typed :class:`~veil.onion.errors.RoomError`\\ s, each with its wire
status: a forged or badly delegated record ``unauthorized``; a banned author, or a
moderation record by someone who is not a moderator, ``forbidden``; over the rate
``rate_limited``; a deleted post ``gone``; no metadata ``not_found``; stale metadata
``replayed``; out of time ``clock_skew``; too large ``too_large``; malformed, another
room's, without the work ``bad_request``. ``delete``, ``delete_all`` and ``expire`` of
the namespace are refused (:class:`~veil.onion.errors.RoomRecordsNotDeletable`,
``bad_request``): a room's records go by its moderation records and their TTL (an
owner's ``delete_all`` of every namespace leaves the room, node/store/).

Effects (:meth:`RoomGuard.stored`, after the commit, for a client's store and a copy
alike). A moderator's delete deletes the posts it names; a ban with ``past`` the
author's posts dated at or before it: through the store's ``delete``, so each leaves a
tombstone and no copy comes back by replication; a later copy of such a post is also
refused by the state (:func:`~veil.onion.room.check_copy`). The moderation record stays
in the namespace (readers apply it themselves). Deletes are final at the node: a
moderator removed later does not bring back what it deleted.

Copies from peers (:meth:`RoomGuard.take_copies`): a copy carries no owner's proof
(the record is its own); each member judges it with
:func:`~veil.onion.room.check_copy`: signature, chain and revocations, room, metadata,
a post's size, work, deletes and bans *at its date*, a moderation record's signer; not
the date or the rate, which belonged to its first store. A copy that cannot be judged
*yet* (its room's metadata, or the metadata naming its moderator, has not arrived; its
author is banned now and a later unban may clear it) is kept in the store's
``deferred_copies`` (bounded in all, per peer and per room, kept at most ``defer_ms``)
and judged again whenever the room's metadata or moderation records change here: copies
arrive in any order (pushes from several members, pages of anti-entropy, a handover),
and one refused for now is otherwise lost at that member, since the pull cursor moves
past it. Deferred copies survive a restart (they are in SQLite).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import trio

from veil.onion import rpc
from veil.onion.capability import ChainCache
from veil.onion.errors import (
    AuthorBanned,
    NotAModerator,
    RoomRateLimited,
    RoomRecordsNotDeletable,
    UnknownRoom,
    VeilError,
    wire_status,
)
from veil.onion.keys import AccountId
from veil.onion.replica import ReplicaMessage
from veil.onion.room import (
    RATE_WINDOW_MS,
    ROOM_NAMESPACE,
    Moderation,
    RoomPost,
    RoomRecord,
    check_copy,
    check_moderation,
    check_post,
    decode_room_record,
)

from ..logging import PeerWarnings
from ..ratelimit import TokenBucketLimiter
from ..store import (
    ROOM_META,
    ROOM_MODERATION,
    ROOM_POST,
    DeferLimits,
    MessageStore,
    RoomIndex,
)
from .policy import DEFAULT_POLICY, RoomPolicy
from .states import RoomStates

__all__ = ["Judged", "RoomCounters", "RoomGuard", "index_of"]

log = logging.getLogger("veil.node.rooms")

#: Refusals of a copy that a record arriving later may lift (see the module note).
_NOT_YET = (UnknownRoom, NotAModerator, AuthorBanned)


def index_of(record: RoomRecord) -> RoomIndex:
    """What the store indexes of ``record``."""
    if isinstance(record, RoomPost):
        return RoomIndex(
            ROOM_POST, record.post_id, record.author.x25519_public, record.timestamp_ms
        )
    if isinstance(record, Moderation):
        return RoomIndex(ROOM_MODERATION, record.record_id, None, record.timestamp_ms)
    return RoomIndex(ROOM_META, record.record_id, None, 0)


@dataclass(frozen=True, slots=True)
class Judged:
    """A client's room record that may be stored: the record and its index entry."""

    record: RoomRecord
    index: RoomIndex


@dataclass(slots=True)
class RoomCounters:
    """Counters for the metrics code; read them, do not write them."""

    #: Copies from peers refused (for good), kept for later, and not kept (over the
    #: bounds of the deferred copies: the peer still holds them).
    copies_refused: int = 0
    copies_deferred: int = 0
    copies_not_kept: int = 0
    #: Deferred copies stored at last.
    copies_recovered: int = 0
    #: Posts deleted by moderators' deletes and bans.
    posts_removed: int = 0


class RoomGuard:
    """A node's rooms: the checks of stores and copies, and moderation's effects."""

    def __init__(
        self,
        store: MessageStore,
        *,
        clock: Callable[[], int],
        chains: ChainCache | None = None,
        policy: RoomPolicy = DEFAULT_POLICY,
    ) -> None:
        self.store = store
        self.clock = clock
        self.chains = chains
        self.policy = policy
        self.states = RoomStates(store, policy, clock)
        self.counters = RoomCounters()
        self._buckets = TokenBucketLimiter(
            policy.room_posts_per_s, policy.room_post_burst, policy.max_room_buckets
        )
        self._limits = DeferLimits(
            policy.max_deferred, policy.max_deferred_per_source, policy.max_deferred_per_room
        )
        self._lines = PeerWarnings(interval_s=60.0)

    # --- a client's requests -----------------------------------------------------------

    @staticmethod
    def check_shape(req: rpc.Request) -> None:
        """Before any signature: no ``delete``, ``delete_all`` or ``expire`` of a room."""
        if (
            isinstance(req, rpc.DeleteRequest | rpc.DeleteAllRequest | rpc.ExpireRequest)
            and req.namespace == ROOM_NAMESPACE
        ):
            raise RoomRecordsNotDeletable(
                "a room's records are removed by its moderators' records or their TTL, "
                f"not by {req.method}"
            )

    async def judge_store(self, req: rpc.StoreRequest) -> Judged | rpc.StoreResult:
        """A client's store into a room: the record to store (with its index entry), or
        the result of storing it before (the same bytes); raises the typed refusal."""
        room = req.account
        assert isinstance(room, AccountId)  # a group's requests never name namespace -2
        held = await self.store.get(room, ROOM_NAMESPACE, req.hash)
        if held is not None:
            return rpc.StoreResult(held.hash, held.expiry_ms, False)
        record = decode_room_record(req.data, is_revoked=self.store.is_revoked, chains=self.chains)
        state = await self.states.get(room)
        now = self.clock()
        skew = self.policy.skew_ms
        if isinstance(record, RoomPost):
            meta = state.meta
            recent = 0
            if meta is not None:
                recent = await self.store.room_recent_posts(
                    room, record.author.x25519_public, now - RATE_WINDOW_MS, limit=meta.rate
                )
            check_post(state, record, now, skew, recent)
            if not self._buckets.allow(room.x25519_public, trio.current_time()):
                raise RoomRateLimited("the room takes no more posts for now; try again later")
        else:
            check_moderation(state, record, now, skew)
        return Judged(record, index_of(record))

    # --- after a record is stored (a client's, or a copy) ---------------------------------

    async def stored(self, room: AccountId, record: RoomRecord, expiry_ms: int) -> None:
        """``record`` was just stored here: keep the room's state up to date, apply a
        moderation record, and judge again the copies that waited for such a change."""
        if await self._took(room, record, expiry_ms):
            await self._retry(room)

    async def _took(self, room: AccountId, record: RoomRecord, expiry_ms: int) -> bool:
        """The state and the effects of a stored record; True if the room's metadata or
        moderation changed (a post changes neither)."""
        if isinstance(record, RoomPost):
            return False
        self.states.added(room, record, expiry_ms)
        if isinstance(record, Moderation):
            await self._apply(room, record)
        return True

    async def _apply(self, room: AccountId, mod: Moderation) -> None:
        """A stored moderation record's effect on the store (see the module note)."""
        if mod.op == "delete":
            hashes = await self.store.room_posts_named(room, sorted(mod.post_ids))
            if hashes:
                self.counters.posts_removed += len(
                    await self.store.delete(room, ROOM_NAMESPACE, hashes)
                )
            return
        if mod.op != "ban" or not mod.delete_past or mod.who is None:
            return
        batch = self.policy.purge_batch
        while True:
            hashes = await self.store.room_posts_by(
                room, mod.who.x25519_public, mod.timestamp_ms, limit=batch
            )
            if hashes:
                self.counters.posts_removed += len(
                    await self.store.delete(room, ROOM_NAMESPACE, hashes)
                )
            if len(hashes) < batch:
                return

    # --- copies from peers -------------------------------------------------------------

    async def _admit(self, room: AccountId, m: ReplicaMessage) -> RoomRecord:
        state = await self.states.get(room)
        return check_copy(state, m.data, is_revoked=self.store.is_revoked, chains=self.chains)

    def _refused(self, source: bytes, exc: VeilError) -> None:
        self.counters.copies_refused += 1
        status = wire_status(exc)
        self._lines.warn(
            log,
            "room_copy_refused",
            (source, status),
            level=logging.INFO,
            status=status,
            error=str(exc),
        )

    async def take_copies(
        self, copies: Sequence[tuple[ReplicaMessage, AccountId]], source: bytes
    ) -> list[bool]:
        """Judge, store and apply copies of room records from the peer ``source`` (already
        through ``check_message``); per copy stored, whether it was new here. Copies that
        cannot be judged yet are kept for later (see the module note)."""
        admitted: list[tuple[ReplicaMessage, AccountId, RoomRecord]] = []
        waiting: list[ReplicaMessage] = []
        for m, room in copies:
            try:
                record = await self._admit(room, m)
            except _NOT_YET:
                waiting.append(m)
                continue
            except VeilError as exc:
                self._refused(source, exc)
                continue
            admitted.append((m, room, record))
        created: list[bool] = []
        changed: dict[bytes, AccountId] = {}
        if admitted:
            created = await self.store.store_replicated(
                [m for m, _, _ in admitted], {m.hash: index_of(r) for m, _, r in admitted}
            )
            for (m, room, record), new in zip(admitted, created, strict=True):
                if new and await self._took(room, record, m.expiry_ms):
                    changed[room.x25519_public] = room
        if waiting:
            kept = await self.store.defer_copies(
                waiting, source, self.clock() + self.policy.defer_ms, self._limits
            )
            self.counters.copies_deferred += kept
            self.counters.copies_not_kept += len(waiting) - kept
            for m in waiting:  # what waits may be judged now, after this batch
                room = AccountId(m.account)
                changed.setdefault(room.x25519_public, room)
        for room in changed.values():
            await self._retry(room)
        return created

    async def _retry(self, room: AccountId) -> None:
        """Judge again the copies kept for ``room``, until a pass changes nothing."""
        key = room.x25519_public
        while True:
            copies = await self.store.deferred_of(key, limit=self.policy.max_deferred_per_room)
            if not copies:
                return
            done: list[tuple[int, bytes]] = []
            progress = False
            for m in copies:
                try:
                    record = await self._admit(room, m)
                except _NOT_YET:
                    continue
                except VeilError as exc:
                    self._refused(b"deferred", exc)
                    done.append((m.namespace, m.hash))
                    continue
                (new,) = await self.store.store_replicated([m], {m.hash: index_of(record)})
                done.append((m.namespace, m.hash))
                self.counters.copies_recovered += int(new)
                if new and await self._took(room, record, m.expiry_ms):
                    progress = True
            if done:
                await self.store.forget_deferred(key, done)
            if not progress:
                return
