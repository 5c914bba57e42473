"""The store's replication methods: copies from peers, pages for peers, deletions and
revocations that travel, and the handover's walk.

Design note
-----------
A mixin of :class:`~veil.node.store.MessageStore` (on
:class:`~veil.node.store.base.StoreBase`): what node/replication/ asks of the store.
:meth:`ReplicationMethods.store_replicated` stores copies with their original times and
proofs, except a copy of a message deleted here (its tombstone);
:meth:`ReplicationMethods.record_deletion`, :meth:`ReplicationMethods.deletion_page` and
:meth:`ReplicationMethods.apply_deletion` keep, list and apply (as of their signed time)
the owners' signed deletes; :meth:`ReplicationMethods.store_revocation` keeps a verified
revocation of a delegated link and :meth:`ReplicationMethods.is_revoked` answers from
the index in memory; the pages and cursors of anti-entropy, and the walk of one account
for a handover. The module note of message_store.py says how it all fits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import trio

from veil.onion import crypto, rpc
from veil.onion.keys import OwnerId, owner_key
from veil.onion.replica import ReplicaMessage, ReplicaPage

from . import reads, writes
from .base import StoreBase
from .records import RoomIndex

__all__ = ["ReplicationMethods", "deletion_digest", "deletion_until"]


class ReplicationMethods(StoreBase):
    """The replication methods of the message store (see the module note)."""

    async def record_deletion(
        self, account: OwnerId, digest: bytes, request: bytes, until_ms: int
    ) -> bool:
        """Keep the owner's signed delete or delete_all ``request`` for anti-entropy
        until ``until_ms``; False if it was kept already."""
        return await self._submit(
            writes.record_deletion(owner_key(account), digest, request, until_ms)
        )

    async def apply_deletion(
        self,
        account: OwnerId,
        namespace: int | None,
        hashes: Sequence[bytes] | None,
        *,
        signed_ms: int,
        digest: bytes,
        request: bytes,
        until_ms: int,
        keep: int | None = None,
    ) -> int:
        """Apply a deletion another member executed, as of its signed time (see
        :func:`~veil.node.store.writes.apply_deletion`; ``keep``: a namespace a delete_all
        of every namespace leaves); how many rows it deleted here. One transaction (a
        delete_all of a large account holds the writer that long)."""
        return await self._submit(
            writes.apply_deletion(
                owner_key(account),
                namespace,
                None if hashes is None else list(hashes),
                signed_ms,
                digest,
                request,
                until_ms,
                self.clock(),
                keep,
            )
        )

    async def store_revocation(
        self, account: OwnerId, link: bytes, record: bytes, link_expiry_ms: int, until_ms: int
    ) -> bool:
        """Keep a verified revocation ``record`` of the delegated link ``link`` (served to
        peers until ``link_expiry_ms``, kept until ``until_ms``); from the commit on,
        :meth:`is_revoked` answers True for the link. False if the link was revoked here
        already (the record kept first stays)."""
        created = await self._submit(
            writes.store_revocation(owner_key(account), link, record, link_expiry_ms, until_ms)
        )
        known = self._revoked.get(link)
        if known is None or known[1] < until_ms:
            self._revoked[link] = (owner_key(account), until_ms)
        return bool(created)

    def is_revoked(self, link: bytes) -> bool:
        """Whether a revocation of the delegated link ``link`` (its digest) is kept here:
        a dict lookup (the index is in memory; see the module note)."""
        return link in self._revoked

    def revocations(self) -> int:
        """How many revoked links are kept (a gauge)."""
        return len(self._revoked)

    def revoked_accounts(self) -> dict[bytes, set[bytes]]:
        """The accounts (32-byte keys) with revocations kept here, and their revoked
        links (from the index in memory; for a handover)."""
        accounts: dict[bytes, set[bytes]] = {}
        for link, (account, _) in self._revoked.items():
            accounts.setdefault(account, set()).add(link)
        return accounts

    async def account_revocations(self, account: bytes) -> list[bytes]:
        """The revocation records of ``account`` (its 32-byte key) whose link could
        still be used, in arrival order: what a handover sends to its new swarm."""
        await trio.lowlevel.checkpoint()
        return reads.account_revocations(self._reader_or_raise(), account, self.clock())

    async def remember_request(self, digest: bytes, until_ms: int) -> bool:
        """Note that a signed request (its ``digest``) is executed, until ``until_ms``;
        False if it was already (then do not execute it again). Kept across restarts."""
        return await self._submit(writes.remember_request(digest, until_ms, self.clock()))

    async def forget_request(self, digest: bytes) -> None:
        """Undo :meth:`remember_request` (the request failed; it may come again)."""
        await self._submit(writes.forget_request(digest))

    async def store_replicated(
        self,
        messages: Sequence[ReplicaMessage],
        rooms: Mapping[bytes, RoomIndex] | None = None,
    ) -> list[bool]:
        """Store messages that another node holds, keeping their timestamp and expiry.

        One write (one transaction) for the whole list; returns, per message, whether it
        was new here. Deduplicated as :meth:`store`: a live copy keeps the later expiry,
        an expired copy is replaced; a message whose expiry has passed is skipped (False).
        The caller has checked every field (node/replication/). Long-polls on a
        new message's (account, namespace) wake up. Cancel and errors as :meth:`store`.
        ``rooms``: the index entries of room records (namespace -2), by message hash.
        """
        return await self._submit(writes.store_replicas(list(messages), self.clock(), rooms))

    async def delete_replicas(self, account: bytes, items: Sequence[tuple[int, bytes]]) -> int:
        """Delete these ``(namespace, hash)`` messages of ``account`` (its 32-byte key), as
        a handover does once another swarm holds them; returns how many were there."""
        return await self._submit(writes.delete_replicas(account, list(dict.fromkeys(items))))

    async def set_sync_cursor(self, peer: bytes, scope: bytes, seq: int) -> None:
        """Remember that ``peer``'s rows up to ``seq`` were pulled for ``scope``; cursors of
        this peer for other scopes are dropped (a node keeps one scope at a time)."""
        await self._submit(writes.set_sync_cursor(peer, scope, seq))

    # --- what peers pull, and the handover's walk (reads, trio thread) ----------------

    async def replica_page(
        self,
        after_seq: int,
        *,
        accept: Callable[[bytes], bool],
        limit: int,
        max_bytes: int,
        item_overhead: int = 0,
        scan_limit: int = 1024,
    ) -> ReplicaPage:
        """Unexpired messages with a seq after ``after_seq`` whose account key ``accept``
        takes, in seq order: what a peer pulls (anti-entropy).

        At most ``limit`` messages and ``max_bytes`` (``len(data) + item_overhead`` each,
        the first message always included), and at most ``scan_limit`` rows looked at,
        so a page costs little even when ``accept`` refuses most rows. Data is read only
        for the rows taken. ``next_seq`` is where the next page starts. A read on the trio
        thread with one checkpoint, before reading.
        """
        await trio.lowlevel.checkpoint()
        return reads.replica_page(
            self._reader_or_raise(),
            after_seq,
            self.clock(),
            accept,
            limit,
            max_bytes,
            item_overhead,
            scan_limit,
        )

    async def replica_summary(
        self,
        after_seq: int,
        *,
        accept: Callable[[bytes], bool],
        limit: int,
        max_bytes: int,
        item_overhead: int = 0,
        scan_limit: int = 1024,
    ) -> tuple[list[tuple[bytes, int, bytes, int]], int, bool]:
        """What :meth:`replica_page` would return with the same arguments, as
        ``(account, namespace, hash, expiry_ms)`` rows without their data, with its
        ``next_seq`` and ``more``: a summary for anti-entropy (node/replication), which
        names rows and never sends them, so it reads no message data (that read was
        most of a summary's cost at the peer that answers it). A read on the trio
        thread with one checkpoint, before reading.
        """
        await trio.lowlevel.checkpoint()
        return reads.replica_summary(
            self._reader_or_raise(),
            after_seq,
            self.clock(),
            accept,
            limit,
            max_bytes,
            item_overhead,
            scan_limit,
        )

    async def deletion_page(
        self,
        after_seq: int,
        *,
        accept: Callable[[bytes], bool],
        limit: int,
        max_bytes: int,
        scan_limit: int = 1024,
    ) -> ReplicaPage:
        """The signed deletions kept here (:meth:`record_deletion`) with a seq after
        ``after_seq`` whose account ``accept`` takes, in seq order, as a page whose
        ``deletes`` hold them (no messages): what a peer pulls to learn the deletes it
        missed. Limits as :meth:`replica_page` (the byte budget counts the requests)."""
        await trio.lowlevel.checkpoint()
        return reads.deletion_page(
            self._reader_or_raise(), after_seq, self.clock(), accept, limit, max_bytes, scan_limit
        )

    async def revocation_page(
        self,
        after_seq: int,
        *,
        accept: Callable[[bytes], bool],
        limit: int,
        max_bytes: int,
        scan_limit: int = 1024,
    ) -> ReplicaPage:
        """The revocation records kept here with a seq after ``after_seq`` whose account
        ``accept`` takes and whose link could still be used, in seq order, as a page
        whose ``revocations`` hold them (no messages): what a peer pulls to learn the
        revocations it missed. Limits as :meth:`deletion_page`."""
        await trio.lowlevel.checkpoint()
        return reads.revocation_page(
            self._reader_or_raise(), after_seq, self.clock(), accept, limit, max_bytes, scan_limit
        )

    async def account_replicas(
        self,
        account: bytes,
        after: tuple[int, int] = (-(2**15) - 1, 0),
        *,
        limit: int,
        max_bytes: int,
        item_overhead: int = 0,
    ) -> tuple[list[ReplicaMessage], tuple[int, int], bool]:
        """One account's unexpired messages after the cursor ``after`` = (namespace,
        seq), in that order (the index's): ``(messages, next cursor, more)``.

        For a handover, which walks one account at a time. Limits as
        :meth:`replica_page`. A read on the trio thread.
        """
        await trio.lowlevel.checkpoint()
        conn = self._reader_or_raise()
        return reads.account_replicas(
            conn, account, after, self.clock(), limit, max_bytes, item_overhead
        )

    async def accounts(self, after: bytes | None = None, *, limit: int) -> list[bytes]:
        """Up to ``limit`` account keys that have rows here (expired ones too), in key
        order, after ``after``. One index seek per account; a read on the trio thread."""
        await trio.lowlevel.checkpoint()
        return reads.accounts(self._reader_or_raise(), after, limit)

    async def sync_cursor(self, peer: bytes, scope: bytes) -> int:
        """The seq up to which ``peer``'s rows were pulled for ``scope`` (0: none yet)."""
        await trio.lowlevel.checkpoint()
        return reads.sync_cursor(self._reader_or_raise(), peer, scope)


def deletion_digest(req: rpc.DeleteRequest | rpc.DeleteAllRequest) -> bytes:
    """What names a signed delete or delete_all (in ``executed_requests`` and
    ``deletions``): a digest of its signature, which only the owner makes and which is
    the same for the same signed request (Ed25519 is deterministic and libsodium refuses
    malleated signatures)."""
    assert req.auth is not None  # deletes are always signed (verify_request)
    return crypto.hash32(req.auth.signature, b"veil/executed")


def deletion_until(req: rpc.DeleteRequest | rpc.DeleteAllRequest) -> int:
    """How long a signed deletion is kept for anti-entropy: until every message it could
    have deleted (stored up to its signed time, plus the clock skew) has expired."""
    assert req.auth is not None
    longest = rpc.MAX_TTL_PRIVATE_MS if req.namespace is None else rpc.max_ttl_ms(req.namespace)
    return req.auth.timestamp_ms + longest + 2 * rpc.CLOCK_SKEW_MS
