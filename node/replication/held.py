"""The messages this node stored lately, by hash: so a summary's rows need no store read.

Design note
-----------
Anti-entropy asks each peer for a summary of its rows and pulls only those not held
here (anti_entropy.py). In the steady state every row is held (pushes brought it), and
looking each one up in the store (an indexed read and a trio checkpoint, about 25 us)
was half of a summary's cost at the asker. :class:`HeldHashes` remembers the hash and
expiry of every message this node stored lately (a client's store before its push, a
push received, a pulled row), once the store has committed it, so most rows of a summary
are answered from memory; a row not found here is looked up in the store as before.

Why it is safe: a hash names (account, namespace, data), so an entry can only stand for
the message the summary names; a copy is skipped only if the one remembered expires no
earlier than the copy (as the store's check). An entry may outlive the row (an owner's
delete, the sweep): then the row is not pulled again, which is what the tombstone, or
the expiry, would have decided anyway. Memory is bounded (``max_entries``; the oldest
go first); a restart starts empty, and everything is looked up in the store again.
"""

from __future__ import annotations

from collections.abc import Iterable

from veil.onion.replica import ReplicaMessage

__all__ = ["HeldHashes"]

#: Entries kept, at most: about a minute of a busy swarm's messages (~100 bytes each).
DEFAULT_MAX_ENTRIES = 65_536


class HeldHashes:
    """Hashes (with expiries) of messages this node stored lately; see the module note."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._expiry_ms: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self._expiry_ms)

    def note(self, messages: Iterable[ReplicaMessage]) -> None:
        """Remember ``messages`` as stored here (call once the store has committed them)."""
        held = self._expiry_ms
        for m in messages:
            if held.get(m.hash, -1) < m.expiry_ms:
                held.pop(m.hash, None)  # re-inserted: the newest entries go last
                held[m.hash] = m.expiry_ms
        while len(held) > self.max_entries:
            del held[next(iter(held))]

    def holds(self, hash: bytes, expiry_ms: int) -> bool:
        """True if a message with this hash, expiring no earlier, was stored here lately."""
        return self._expiry_ms.get(hash, -1) >= expiry_ms
