"""A session's storage in its swarm, through onion requests: :class:`NetworkBackend`.

Design note
-----------
Each call is an onion request to the swarm of the session's ID through a
:class:`~veil.client.veil_client.VeilClient`, signed by the member with its membership
chain (or by the session key, for its creator): who signs is the class's note. A node's
refusal comes back as the session error it stands for (a revoked member, an ended
session). Consecutive member records are stored a few at a time
(:data:`STORE_CONCURRENCY`), the rest in order (a node judges each record against what
it already holds); new members are sent their chains (:data:`INVITE_CONCURRENCY` at
once). Records and messages live at most :data:`MAX_TTL_MS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio

from veil.client.sessions._core import core_member
from veil.client.sessions.backend.protocol import Actor, StoredMessage
from veil.onion import group as core
from veil.onion.errors import NotAMember, RightMissing, SessionRevoked
from veil.onion.keys import GroupId

if TYPE_CHECKING:
    from veil.client.veil_client import VeilClient

__all__ = [
    "INVITE_CONCURRENCY",
    "MAX_TTL_MS",
    "STORE_CONCURRENCY",
    "NetworkBackend",
    "core_member_account",
]

#: Records and messages live at most 30 days (a private namespace's TTL).
MAX_TTL_MS = 30 * 24 * 3600 * 1000


class NetworkBackend:
    """The session's swarm, through ``client``'s onion requests (the module note).

    Who signs: the session key when the actor holds it (the creator's administrator
    key acts for its group directly); else the member's own account with its membership
    chain that holds the right the request needs (``read`` to read and to post,
    ``forward`` to store a member record, ``revoke`` for revocations, epochs and the
    end); a member that holds no state yet signs with its account alone, and the nodes
    find its membership among the session's records."""

    def __init__(self, client: VeilClient) -> None:
        self.client = client
        #: Per session: the swarm member whose order our chat position follows.
        self._synced: dict[bytes, bytes] = {}

    def _signer(self, actor: Actor, state: core.SessionState | None, *rights: str) -> Any:
        from veil.onion.capability import DelegatedSigner

        if actor.session_key is not None:
            return actor.session_key
        if state is None or state.genesis is None:
            return actor.account
        me = core_member(actor.account.id, actor.account)
        now = self.client.clock.now()
        for right in rights:
            chain = state.chain_for(me, right, now_ms=now)
            if chain is not None:
                return DelegatedSigner.for_member(actor.account, chain)
        if not state.live_chains(me, now_ms=now):
            raise NotAMember("not a live member of the session")
        raise RightMissing(f"the member does not hold {rights[0]}", right=rights[0])

    @staticmethod
    def _build(
        method: str, signer: Any, group: GroupId, params: dict[str, Any], now_ms: int
    ) -> bytes:
        from veil.onion import rpc

        full = {"pubkey": str(group), **params}
        rpc.sign_params(full, signer, method, now_ms)
        return rpc.encode_request(method, full)

    async def _call(
        self,
        method: str,
        signer: Any,
        group: GroupId,
        params: dict[str, Any],
        timeout_s: float | None = None,
        prefer: bytes | None = None,
    ) -> Any:
        return (await self._answer(method, signer, group, params, timeout_s, prefer)).reply.result

    async def _answer(
        self,
        method: str,
        signer: Any,
        group: GroupId,
        params: dict[str, Any],
        timeout_s: float | None = None,
        prefer: bytes | None = None,
    ) -> Any:
        from veil.client.errors import OnionRequestFailed
        from veil.onion.errors import ProtocolError

        def build(now_ms: int) -> bytes:
            return self._build(method, signer, group, params, now_ms)

        try:
            return await self.client.onion.call(
                build, account=group, timeout_s=timeout_s, prefer=prefer
            )
        except OnionRequestFailed as exc:
            # A node's verdict (a revoked member, an ended session) is the error to give.
            verdicts = [e for e in getattr(exc, "errors", []) if isinstance(e, ProtocolError)]
            if verdicts:
                raise _typed(verdicts[-1]) from None
            raise
        except ProtocolError as exc:
            raise _typed(exc) from None

    async def store_records(
        self, actor: Actor, state: core.SessionState, records: Sequence[bytes]
    ) -> None:
        current = state
        decoded = [core.decode_record(data) for data in records]
        i = 0
        while i < len(decoded):
            # Consecutive member records depend on nothing but what came before them
            # (the genesis, the adder's chain): they are stored a few at a time. The
            # rest in order: a node judges each record against what it already holds.
            j = i + 1
            if isinstance(decoded[i], core.MemberRecord):
                while j < len(decoded) and isinstance(decoded[j], core.MemberRecord):
                    j += 1
            batch = decoded[i:j]

            async def one(
                record: core.Record, state_now: core.SessionState, limit: trio.CapacityLimiter
            ) -> None:
                async with limit:
                    await self._store_one(actor, state_now, record)

            if len(batch) == 1:
                await self._store_one(actor, current, batch[0])
            else:
                limiter = trio.CapacityLimiter(STORE_CONCURRENCY)
                async with trio.open_nursery() as nursery:
                    for record in batch:
                        nursery.start_soon(one, record, current, limiter)
            current = current.add(*batch)
            i = j

    async def _store_one(
        self, actor: Actor, current: core.SessionState, record: core.Record
    ) -> None:
        if isinstance(record, core.MemberRecord):
            rights: tuple[str, ...] = (core.FORWARD,)
        elif isinstance(record, core.RevokeRecord) or (
            isinstance(record, core.EpochRecord) and record.follows
        ):
            # Under the delegation policy an adder revokes whom it added, and writes the
            # epoch that follows: storing needs only the store that forward also grants.
            rights = (core.REVOKE_RIGHT, core.FORWARD)
        else:
            rights = (core.REVOKE_RIGHT,)
        signer = self._signer(actor, current, *rights)
        params = {"namespace": core.STATE_NAMESPACE, "data": record.encoded, "ttl": MAX_TTL_MS}
        await self._call("store", signer, current.session_id, params)

    async def fetch_records(
        self, actor: Actor, session_id: GroupId, known: core.SessionState | None = None
    ) -> list[bytes]:
        signer = self._signer(actor, known, core.READ)
        if signer is actor.account:
            try:
                return await self._fetch_records(signer, session_id)
            except NotAMember:
                # The nodes did not find our membership by our account: an invitation
                # in our inbox holds our chain (veil.client.sessions.invites).
                from veil.client.sessions.invites import find_chain
                from veil.onion.capability import DelegatedSigner

                chain = await find_chain(self.client, actor.account, session_id)
                if chain is None:
                    raise
                signer = DelegatedSigner.for_member(actor.account, chain)
        return await self._fetch_records(signer, session_id)

    async def _fetch_records(self, signer: Any, session_id: GroupId) -> list[bytes]:
        from veil.onion import rpc

        out: list[bytes] = []
        last: bytes | None = None
        while True:
            params: dict[str, Any] = {"namespace": core.STATE_NAMESPACE}
            if last is not None:
                params["last_hash"] = last
            result = rpc.RetrieveResult.from_wire(
                await self._call("retrieve", signer, session_id, params)
            )
            out.extend(m.data for m in result.messages)
            if not result.messages or not result.more:
                return out
            last = result.messages[-1].hash

    async def post_message(
        self, actor: Actor, state: core.SessionState, data: bytes, *, ttl_ms: int
    ) -> bytes:
        from veil.onion import rpc

        signer = self._signer(actor, state, core.READ)
        params = {"namespace": core.MESSAGES_NAMESPACE, "data": data, "ttl": ttl_ms}
        result = rpc.StoreResult.from_wire(
            await self._call("store", signer, state.session_id, params)
        )
        return result.hash

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
        wait = int(min(wait_s, rpc.MAX_WAIT_S))
        # Swarm members may hold the messages in different orders (replication), so a
        # position saved while reading one can skip messages at another: as the 1:1
        # receiver does, read a member from the start the first time (the chat store
        # drops by hash what it holds), then follow the position while it answers.
        synced = self._synced.get(state.session)
        params: dict[str, Any] = {"namespace": core.MESSAGES_NAMESPACE}
        if after is not None and synced is not None:
            params["last_hash"] = after
        if wait:
            params["wait"] = wait
        try:
            answer = await self._answer(
                "retrieve",
                signer,
                state.session_id,
                params,
                timeout_s=(wait + 15) or None,
                prefer=synced,
            )
        except BaseException:
            self._synced.pop(state.session, None)
            raise
        node = answer.node.node_id
        if "last_hash" not in params:
            self._synced[state.session] = node
        elif node != synced:
            self._synced.pop(state.session, None)  # another member answered: re-read it
        assert answer.reply.result is not None
        result = rpc.RetrieveResult.from_wire(answer.reply.result)
        return [StoredMessage(m.hash, m.data) for m in result.messages]

    async def delete_all(self, actor: Actor, state: core.SessionState) -> None:
        # Only the session key deletes a session's messages (no right grants delete);
        # on the end record the nodes drop them anyway.
        if actor.session_key is None:
            return
        params = {"namespace": core.MESSAGES_NAMESPACE}
        await self._call("delete_all", actor.session_key, state.session_id, params)

    async def invite(
        self, actor: Actor, state: core.SessionState, records: Sequence[core.MemberRecord]
    ) -> None:
        """Send each new member its chain (:mod:`veil.client.sessions.invites`), a few
        at a time; a member that cannot be reached still finds the nodes may serve it."""
        from veil.client.sessions.invites import INVITE_TTL_S, invite_content

        me = actor.account.id
        todo = [r for r in records if core_member_account(r) != me]
        limit = trio.CapacityLimiter(INVITE_CONCURRENCY)
        failures: list[BaseException] = []

        async def one(record: core.MemberRecord) -> None:
            async with limit:
                try:
                    await self.client.send(
                        core_member_account(record),
                        invite_content(state.session_id, record.chain),
                        ttl_s=INVITE_TTL_S,
                    )
                except Exception as exc:
                    failures.append(exc)

        async with trio.open_nursery() as nursery:
            for record in todo:
                nursery.start_soon(one, record)
        if failures and len(failures) == len(todo):
            raise failures[0]


#: Member records stored at once (creating or adding many members).
STORE_CONCURRENCY = 16
#: Invitations sent at once (each is one onion request to the member's swarm).
INVITE_CONCURRENCY = 16


def core_member_account(record: core.MemberRecord) -> Any:
    """The account a member record adds."""
    from veil.client.sessions._core import account_of

    return account_of(record.member)


def _typed(error: Exception) -> Exception:
    """A node's refusal as the session error it stands for (a node answers a wire
    status; the client knows what a session request refused that way means)."""
    from veil.onion.errors import GroupError

    if isinstance(error, GroupError):
        return error
    status = getattr(error, "status", "")
    text = str(error)
    if status == "gone" or (status == "not_found" and "session was revoked" in text):
        return SessionRevoked(text)
    if status == "unauthorized":
        return NotAMember(f"the session's nodes refused: {text}")
    return error
