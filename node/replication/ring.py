"""Which accounts are whose: ring positions from raw account keys, and pull scopes.

Design note
-----------
Replication handles accounts as their raw 32-byte X25519 keys (as the store keeps
them), so it computes ring positions from those bytes without building an
:class:`~veil.onion.keys.AccountId` (and its point check) per row. A *scope* names the
range of accounts a swarm holds; pull cursors are kept per scope (node/replication/
anti_entropy.py), and a pull names the scope it asks for.
"""

from __future__ import annotations

from veil.onion.directory import Consensus

__all__ = ["ring_position", "sync_scope"]


def sync_scope(consensus: Consensus, swarm_id: int) -> bytes:
    """A swarm's ID and its two ring neighbours' (24 bytes): they fix which accounts the
    swarm holds, so pull cursors are kept per scope, and a pull names it."""
    ids = consensus.swarm_ids
    i = ids.index(swarm_id)
    left, right = ids[i - 1], ids[(i + 1) % len(ids)]
    return b"".join(x.to_bytes(8, "big") for x in (swarm_id, left, right))


def ring_position(account_key: bytes) -> int:
    """An owner's ring position from its storage key: an account's 32-byte X25519 key
    (as :attr:`veil.onion.keys.AccountId.ring_position`, without the point check), or a
    group's 0x03 + Ed25519 key (:attr:`veil.onion.keys.GroupId.ring_position`)."""
    if len(account_key) == 33:
        account_key = account_key[1:]
    pos = 0
    for i in range(0, 32, 8):
        pos ^= int.from_bytes(account_key[i : i + 8], "big")
    return pos
