"""The five calls a session makes to its storage, and who makes them.

Design note
-----------
:class:`SessionBackend` is what the session object (:mod:`veil.client.sessions.session`)
asks of the storage of its records and messages: store and fetch records, post and
fetch messages, delete them all, and invite new members. An :class:`Actor` is who
acts: the member's account, and the session key when the actor is the session's
creator and holds it. A :class:`StoredMessage` is a message as the storage holds it:
the node's hash and the bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from veil.onion import group as core
from veil.onion.capability import SessionKey
from veil.onion.keys import Account, GroupId

__all__ = ["Actor", "SessionBackend", "StoredMessage"]


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

    async def invite(
        self, actor: Actor, state: core.SessionState, records: Sequence[core.MemberRecord]
    ) -> None: ...
