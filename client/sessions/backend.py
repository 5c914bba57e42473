"""Where a session's records and messages live: the swarm of its ID, or memory.

Design note
-----------
A session's state records (namespace 1 of its group ID) and its messages (namespace 2)
live in the swarm of the session's ID, behind the nodes' checks (only members, with the
rights each request needs; nothing after the session's end). The session object
(:mod:`veil.client.sessions.session`) talks to that storage through
:class:`SessionBackend`, five calls, so that what does not need the network (creating a
session to encrypt files, tests, the benchmark) runs on :class:`MemoryBackend`, which
checks what a node checks (:func:`~veil.onion.group.check_record`,
:func:`~veil.onion.group.check_access`, membership and rights) with the same typed
errors. :class:`NetworkBackend` sends each call as an onion request to the session's
swarm through a :class:`~veil.client.veil_client.VeilClient`, signed by the member
with its membership chain (or by the session key, for its creator).

An :class:`Actor` is who acts: the member's account, and the session key when the
actor is the session's creator and holds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import trio

from veil.client.sessions._core import core_member
from veil.onion import crypto
from veil.onion import group as core
from veil.onion.capability import SessionKey
from veil.onion.errors import NotAMember, RightMissing, UnknownSession
from veil.onion.keys import Account, GroupId

if TYPE_CHECKING:
    from veil.client.veil_client import VeilClient

__all__ = ["Actor", "MemoryBackend", "NetworkBackend", "SessionBackend", "StoredMessage"]

#: Records and messages live at most 30 days (a private namespace's TTL).
MAX_TTL_MS = 30 * 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts on a session: a member's account, and the session key if it holds it."""

    account: Account
    session_key: SessionKey | None = None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as the swarm holds it: its hash (the node's name for it) and bytes."""

    hash: bytes
    data: bytes


class SessionBackend(Protocol):
    """The five calls a session makes to its storage (see the module note)."""

    async def store_records(
        self, actor: Actor, state: core.SessionState, records: Sequence[bytes]
    ) -> None: ...

    async def fetch_records(
        self, actor: Actor, session_id: GroupId, known: core.SessionState | None = None
    ) -> list[bytes]: ...

    async def post_message(
        self, actor: Actor, state: core.SessionState, data: bytes, *, ttl_ms: int
    ) -> bytes: ...

    async def fetch_messages(
        self,
        actor: Actor,
        state: core.SessionState,
        *,
        after: bytes | None,
        wait_s: float = 0,
    ) -> list[StoredMessage]: ...

    async def delete_all(self, actor: Actor, state: core.SessionState) -> None: ...


# --- in memory ---------------------------------------------------------------------------


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


# --- through the network ---------------------------------------------------------------


class NetworkBackend:
    """The session's swarm, through ``client``'s onion requests (the module note)."""

    def __init__(self, client: VeilClient) -> None:
        self.client = client

    def _signer(self, actor: Actor, state: core.SessionState, right: str | None) -> Any:
        from veil.onion.capability import DelegatedSigner

        if actor.session_key is not None and actor.session_key.ed25519_public == state.session:
            signer = getattr(DelegatedSigner, "for_session", None)
            if signer is not None:
                return signer(actor.session_key)
        me = core_member(actor.account.id, actor.account)
        now = self.client.clock.now()
        chain = state.chain_for(me, right, now_ms=now) if right else None
        if chain is None:
            chains = state.live_chains(me, now_ms=now)
            if not chains:
                if actor.session_key is not None:
                    return DelegatedSigner.for_session(actor.session_key)  # type: ignore[attr-defined]
                raise NotAMember("not a live member of the session")
            if right is not None:
                raise RightMissing(f"the member does not hold {right}", right=right)
            chain = max(chains, key=lambda c: c.expires_ms)
        return DelegatedSigner.for_member(actor.account, chain)

    async def _call(self, session_id: GroupId, build: Any) -> Any:
        reply = await self.client.call(build, account=session_id)  # type: ignore[arg-type]
        return reply.result

    async def store_records(
        self, actor: Actor, state: core.SessionState, records: Sequence[bytes]
    ) -> None:
        from veil.onion import rpc

        current = state
        for data in records:
            record = core.decode_record(data)
            if not isinstance(record, core.GenesisRecord):
                current = current.add(record) if isinstance(record, core.MemberRecord) else current
            signer = self._signer(actor, current, None)

            def build(now_ms: int, data: bytes = data, signer: Any = signer) -> bytes:
                return rpc.make_store(
                    signer, data, MAX_TTL_MS, now_ms=now_ms, namespace=core.STATE_NAMESPACE
                )

            await self._call(state.session_id, build)
            current = current.add(record)

    async def fetch_records(
        self, actor: Actor, session_id: GroupId, known: core.SessionState | None = None
    ) -> list[bytes]:
        from veil.onion import rpc

        if known is not None and known.genesis is not None:
            signer: Any = self._signer(actor, known, None)
        else:
            # A member that holds no state yet signs with its account: the nodes find
            # its membership among the session's records (contract B).
            signer = actor.account
        out: list[bytes] = []
        last: bytes | None = None
        while True:

            def build(now_ms: int, last: bytes | None = last) -> bytes:
                return rpc.make_retrieve(
                    signer, now_ms=now_ms, namespace=core.STATE_NAMESPACE, last_hash=last
                )

            result = rpc.RetrieveResult.from_wire(await self._call(session_id, build))
            out.extend(m.data for m in result.messages)
            if not result.messages or not getattr(result, "more", False):
                return out
            last = result.messages[-1].hash

    async def post_message(
        self, actor: Actor, state: core.SessionState, data: bytes, *, ttl_ms: int
    ) -> bytes:
        from veil.onion import rpc

        signer = self._signer(actor, state, core.READ)

        def build(now_ms: int) -> bytes:
            return rpc.make_store(
                signer, data, ttl_ms, now_ms=now_ms, namespace=core.MESSAGES_NAMESPACE
            )

        result = rpc.StoreResult.from_wire(await self._call(state.session_id, build))
        return bytes(getattr(result, "hash", b"")) or crypto.hash32(data)

    async def fetch_messages(
        self,
        actor: Actor,
        state: core.SessionState,
        *,
        after: bytes | None,
        wait_s: float = 0,
    ) -> list[StoredMessage]:
        from veil.onion import rpc

        signer = self._signer(actor, state, core.READ)
        wait = int(wait_s)

        def build(now_ms: int) -> bytes:
            return rpc.make_retrieve(
                signer,
                now_ms=now_ms,
                namespace=core.MESSAGES_NAMESPACE,
                last_hash=after,
                wait_s=wait,
            )

        reply = await self.client.call(
            build,
            account=state.session_id,  # type: ignore[arg-type]
            timeout_s=(wait + 15) if wait else None,
        )
        assert reply.result is not None
        result = rpc.RetrieveResult.from_wire(reply.result)
        return [StoredMessage(m.hash, m.data) for m in result.messages]

    async def delete_all(self, actor: Actor, state: core.SessionState) -> None:
        from veil.onion import rpc

        signer = self._signer(actor, state, core.REVOKE_RIGHT)

        def build(now_ms: int) -> bytes:
            return rpc.make_delete_all(signer, namespace=core.MESSAGES_NAMESPACE, now_ms=now_ms)

        await self._call(state.session_id, build)
