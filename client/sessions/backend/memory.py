"""A session's storage in memory, refusing what a node refuses: :class:`MemoryBackend`.

Design note
-----------
What does not need the network (creating a session to encrypt files, tests, the
benchmark) runs here: the same five calls as the session's swarm, checking what a node
checks (:func:`~veil.onion.group.check_record`, :func:`~veil.onion.group.check_access`,
membership and rights) with the same typed errors. Several accounts share one
:class:`MemoryBackend` to share sessions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from veil.client.sessions._core import core_member
from veil.client.sessions.backend.protocol import Actor, StoredMessage
from veil.onion import crypto
from veil.onion import group as core
from veil.onion.errors import NotAMember, RightMissing, UnknownSession
from veil.onion.keys import GroupId

__all__ = ["MemoryBackend"]


@dataclass
class _Group:
    state: core.SessionState
    messages: list[StoredMessage] = field(default_factory=list)
    changed: trio.Event = field(default_factory=trio.Event)


class MemoryBackend:
    """A session store in memory that refuses what a node refuses (the module note).
    ``clock`` gives the time in ms (default: the wall clock)."""

    def __init__(self, clock: Any = None) -> None:
        from veil.onion.wallclock import wall_clock_ms

        self._clock = clock or wall_clock_ms
        self._groups: dict[bytes, _Group] = {}

    def _group(self, session_id: GroupId) -> _Group:
        group = self._groups.get(session_id.ed25519_public)
        if group is None:
            raise UnknownSession("no such session")
        return group

    def _check(self, actor: Actor, group: _Group, method: str, right: str | None) -> None:
        state = group.state
        core.check_access(state, method=method, namespace=None)
        if actor.session_key is not None and actor.session_key.ed25519_public == state.session:
            return
        me = core_member(actor.account.id, actor.account)
        now = self._clock()
        if not state.live_chains(me, now_ms=now):
            raise NotAMember("not a live member of the session")
        if right is not None and right not in state.rights_of(me, now_ms=now):
            raise RightMissing(f"the member does not hold {right}", right=right)

    async def store_records(
        self, actor: Actor, state: core.SessionState, records: Sequence[bytes]
    ) -> None:
        await trio.lowlevel.checkpoint()
        for data in records:
            record = core.decode_record(data)
            group = self._groups.get(state.session)
            if group is None:
                if not isinstance(record, core.GenesisRecord):
                    raise UnknownSession("the session's genesis is not known")
                group = self._groups[state.session] = _Group(core.SessionState(state.session_id))
            elif not isinstance(record, core.MemberRecord) or group.state.live_chains(
                core_member(actor.account.id, actor.account), now_ms=self._clock()
            ):
                # A member record may be the adder's own first one (the creator's).
                self._check(actor, group, "store", None)
            core.check_record(group.state, record, now_ms=self._clock())
            group.state = group.state.add(record)
            if group.state.ended:
                group.messages.clear()
            group.changed.set()
            group.changed = trio.Event()

    async def fetch_records(
        self, actor: Actor, session_id: GroupId, known: core.SessionState | None = None
    ) -> list[bytes]:
        await trio.lowlevel.checkpoint()
        group = self._group(session_id)
        self._check(actor, group, "retrieve", None)
        return group.state.encoded()

    async def post_message(
        self, actor: Actor, state: core.SessionState, data: bytes, *, ttl_ms: int
    ) -> bytes:
        await trio.lowlevel.checkpoint()
        group = self._group(state.session_id)
        self._check(actor, group, "store", core.READ)
        digest = crypto.hash32(data)
        if all(m.hash != digest for m in group.messages):
            group.messages.append(StoredMessage(digest, data))
            group.changed.set()
            group.changed = trio.Event()
        return digest

    async def fetch_messages(
        self,
        actor: Actor,
        state: core.SessionState,
        *,
        after: bytes | None,
        wait_s: float = 0,
    ) -> list[StoredMessage]:
        group = self._group(state.session_id)
        with trio.move_on_after(wait_s):
            while True:
                self._check(actor, group, "retrieve", core.READ)
                out = self._after(group, after)
                if out or wait_s <= 0:
                    await trio.lowlevel.checkpoint()
                    return out
                await group.changed.wait()
        self._check(actor, group, "retrieve", core.READ)
        return self._after(group, after)

    @staticmethod
    def _after(group: _Group, after: bytes | None) -> list[StoredMessage]:
        hashes = [m.hash for m in group.messages]
        start = hashes.index(after) + 1 if after in hashes else 0
        return list(group.messages[start:])

    async def delete_all(self, actor: Actor, state: core.SessionState) -> None:
        await trio.lowlevel.checkpoint()
        group = self._group(state.session_id)
        group.messages.clear()

    async def invite(
        self, actor: Actor, state: core.SessionState, records: Sequence[core.MemberRecord]
    ) -> None:
        """Nothing to do: this store finds a member by its account."""
        await trio.lowlevel.checkpoint()
