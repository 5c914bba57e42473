"""Long-poll slots: the node-wide cap, the per-source share, signed polls first.

Design note
-----------
Waiting slots (:class:`WaiterSlots`; issue 11: 10,000 unsigned retrieves of one
public-read namespace took every slot and the owner's own poll was refused):

* At most ``max_waiters`` polls wait at a time, node-wide.
* A *source* holds at most ``max_waiters_per_source`` of them, counted apart for signed
  and unsigned polls (so a source's unsigned polls never use up its signed ones' share).
  The source is what the node can tell about who sent the request, which for an onion
  request is the *previous hop*, not the client (onion routing hides that): the
  connecting address of a ``POST /onion`` (IPv6 by its /64, as the rate limit keys it,
  node/ratelimit.py) or the peer of the link the packet came on. A client that posts
  its packets to this node directly is its own source; clients behind a relay share the
  relay's share, which is why the share is a tenth of the cap and not less: an honest
  relay carries many clients, and a destination sees its polls arrive spread over the
  network's relays. A request with no known source (a test, an in-process caller) is
  not limited per source, only by the cap.
* A *signed* poll (it carries a verified signature: the account's owner, or a key the
  owner delegated) is never refused because of unsigned ones: at the cap it evicts the
  oldest unsigned waiter, which is answered at once with what it has (nothing, as a
  wait that ended), exactly what its client would get a little later anyway. Signing
  costs an account, but accounts are free, so signed polls are bounded too: by the
  per-source share and the cap. Only when every slot holds a signed poll is a signed
  poll refused.
* Refused polls get ``rate_limited`` at once (so a client backs off instead of
  spinning).
* When the node stops (:meth:`WaiterSlots.close`), every waiting poll is answered at
  once with what it has, and no poll waits afterwards: a long-poll holds its request in
  flight at this node and at every relay of its path, and each of them would otherwise
  drain it for its whole ``shutdown_grace`` (5 s) before exiting.

Not thread-safe: trio tasks only. See node/service/storage.py for how a retrieve waits.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import trio

from veil.onion.errors import RateLimited

__all__ = ["WaiterSlots"]


@dataclass(eq=False, slots=True)
class _Slot:
    """One waiting poll's place; ``scope`` ends its wait when it is evicted."""

    key: tuple[bool, str] | None
    signed: bool
    scope: trio.CancelScope
    held: bool = True


class WaiterSlots:
    """The long-poll slots: the node-wide cap, the per-source share, and signed polls
    evicting unsigned ones (see the module note). Not thread-safe; trio tasks only."""

    def __init__(self, max_waiters: int, max_per_source: int) -> None:
        self.max_waiters = max_waiters
        self.max_per_source = max_per_source
        self.waiting = 0
        #: Unsigned polls evicted so far.
        self.evicted = 0
        #: (signed, source) -> polls waiting.
        self._per_source: Counter[tuple[bool, str]] = Counter()
        #: Unsigned polls waiting, oldest first (a dict keeps insertion order).
        self._unsigned: dict[_Slot, None] = {}
        #: Every poll waiting, for :meth:`close`.
        self._held: set[_Slot] = set()
        #: Set by :meth:`close`: polls no longer wait.
        self.closed = False

    def close(self) -> None:
        """End every wait (each poll answers with what it has) and let no poll wait
        from now on (:attr:`closed`); the node is stopping."""
        self.closed = True
        for slot in list(self._held):
            self.release(slot)
            slot.scope.cancel()

    def take(self, *, signed: bool, source: str | None, scope: trio.CancelScope) -> _Slot:
        """A slot for a poll waiting in ``scope``; raises RateLimited if there is none.

        A signed poll at the cap evicts the oldest unsigned one: its slot is freed here
        and its scope cancelled, so its wait ends and it answers with what it has."""
        key = None if source is None else (signed, source)
        if key is not None and self._per_source[key] >= self.max_per_source:
            raise RateLimited("too many long-polls from this source; poll later")
        if self.waiting >= self.max_waiters:
            if not signed or not self._unsigned:
                raise RateLimited("too many long-polls waiting on this node; poll later")
            oldest = next(iter(self._unsigned))
            self.release(oldest)
            oldest.scope.cancel()
            self.evicted += 1
        slot = _Slot(key, signed, scope)
        if self.closed:
            scope.cancel()  # the node is stopping: answer at once
        self._held.add(slot)
        self.waiting += 1
        if key is not None:
            self._per_source[key] += 1
        if not signed:
            self._unsigned[slot] = None
        return slot

    def release(self, slot: _Slot) -> None:
        """Give ``slot`` back (once; a second call, after an eviction, does nothing)."""
        if not slot.held:
            return
        slot.held = False
        self._held.discard(slot)
        self.waiting -= 1
        if slot.key is not None:
            left = self._per_source[slot.key] - 1
            if left:
                self._per_source[slot.key] = left
            else:
                del self._per_source[slot.key]  # the map holds only sources waiting now
        if not slot.signed:
            del self._unsigned[slot]
