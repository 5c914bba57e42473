"""A message as swarm members exchange it: the data classes of the replication frames.

Design note
-----------
Plain frozen data, no behaviour: :class:`ReplicaMessage` is one stored message with its
account, the times it was first stored with (times travel with a message, so every
copy expires together) and, outside the inbox, its owner's proof (the signed store
request's auth, :mod:`veil.onion.rpc.proof`, which every member that receives a copy
checks), and :class:`ReplicaPage` is a page of them in the sender's
``seq`` order, as a pull answers. They live in onion/ because the frames
(:mod:`veil.onion.replication_frames`) carry them; the node's store
(:mod:`veil.node.store`) reads and writes them and re-exports both names.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ReplicaMessage", "ReplicaPage", "SummaryEntry"]


@dataclass(frozen=True, slots=True)
class ReplicaMessage:
    """A message as nodes exchange it (node/replication/): its account's 32-byte X25519
    key, and the timestamp and expiry it was first stored with (times travel with it)."""

    account: bytes
    namespace: int
    hash: bytes
    data: bytes
    #: When it was first stored (ms since the epoch, the storing node's clock).
    timestamp_ms: int
    #: When every copy expires (ms since the epoch).
    expiry_ms: int
    #: The owner's signed store (:mod:`veil.onion.rpc.proof`), for a message in an
    #: owner-written namespace; None in the inbox.
    proof: bytes | None = None

    def __repr__(self) -> str:  # never the data
        return f"ReplicaMessage({self.hash.hex()[:16]}..., ns={self.namespace})"


@dataclass(frozen=True, slots=True)
class SummaryEntry:
    """One row of a summary page (node/replication/anti_entropy.py): what identifies a
    copy the sender holds, and ``start``, the seq after which one page of rows holds it."""

    start: int
    account: bytes
    namespace: int
    hash: bytes
    #: The expiry the copy would carry (a copy with a later one is worth pulling).
    expiry_ms: int


@dataclass(frozen=True, slots=True)
class ReplicaPage:
    """A page of :class:`ReplicaMessage` in seq order, for replication."""

    messages: list[ReplicaMessage]
    #: Where the next page starts: the seq of the last row looked at (ask "after" it).
    next_seq: int
    #: True if rows after ``next_seq`` may remain (the page or the scan was cut short).
    more: bool
    #: A page of deletions instead (see node/replication/anti_entropy.py): the owner's
    #: signed delete and delete_all requests, as sent, in the sender's order.
    deletes: tuple[bytes, ...] = ()
    #: A page of revocations instead (issue 12): verified revocation records of
    #: delegated links, as kept, in the sender's order.
    revocations: tuple[bytes, ...] = ()
    #: A page of a summary instead (version 5): the rows after the cursor, identified
    #: but not sent, for the asker to pull only those it lacks.
    summary: tuple[SummaryEntry, ...] = ()
