"""Revoking delegated links before they expire: :meth:`VeilClient.revoke
<veil.client.veil_client.VeilClient.revoke>`'s work.

The record is signed by the client (the account, or the delegated session, which may
revoke the links it issued), sent to every member of the owner's swarm at once (at
least one must take it; replication brings it to the others), and noted in the home.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from veil.client.delegation.issued import RevocationTarget, find
from veil.client.delegation.session import DelegatedSession
from veil.client.errors import InvalidArgument, NotRevocable, UnknownDelegation
from veil.onion import rpc
from veil.onion.capability import Chain, SessionKey
from veil.onion.capability import revoke as sign_revocation
from veil.onion.errors import NetworkError, VeilError
from veil.onion.keys import Account, AccountId
from veil.onion.packet import Hop

if TYPE_CHECKING:
    from veil.client.veil_client.client import VeilClient

__all__ = ["Revoked", "revoke_links", "send_revocation"]


@dataclass(frozen=True, slots=True)
class Revoked:
    """One link revoked by :meth:`VeilClient.revoke`: its hash, the session key's DID,
    and how many members of the owner's swarm took the record (of how many)."""

    link_hash: str
    did: str
    accepted: int
    members: int


async def revoke_links(client: VeilClient, target: RevocationTarget) -> list[Revoked]:
    """Revoke before expiry what ``target`` names: a session's DID (every link
    issued to that key), a link's hash (hex; a unique prefix of 8 or more digits), or
    a :class:`DelegatedSession` (its own link). Links this home issued are found in
    its record; a session object is revoked from its own chain.

    Each revocation is signed by this client (the account, or the delegated
    session, which may revoke the links it issued), sent to every member of the
    owner's swarm (at least one must take it; replication brings it to the others),
    and noted in the home. Links already revoked here or expired are skipped;
    :class:`~veil.client.errors.NotRevocable` if nothing is left;
    :class:`~veil.client.errors.UnknownDelegation` if the target names nothing;
    :class:`~veil.onion.errors.NotEntitledToRevoke` if this client is not upstream.
    """
    revoker: Account | SessionKey
    if client.account is not None:
        revoker = client.account
    else:
        assert client.delegated is not None
        revoker = client.delegated.key
    now = client.clock.now()
    chains: list[tuple[Chain, bytes]] = []
    try:
        rows = find(client.state, target)
    except UnknownDelegation:
        if not isinstance(target, DelegatedSession):
            raise
        chains.append((target.chain, target.chain.links[-1].digest))
    else:
        for row in rows:
            if row.revoked_at_ms is not None or row.expires_at_ms <= now:
                continue
            chains.append((Chain.decode(row.chain), row.link))
    if not chains:
        raise NotRevocable(
            f"nothing left to revoke for {_shown_target(target)}: revoked already, or expired"
        )
    done = []
    for chain, link in chains:
        record = sign_revocation(revoker, chain, link, now_ms=now)
        accepted, members = await send_revocation(client, record.encoded, chain)
        await trio.to_thread.run_sync(client.state.mark_delegation_revoked, link, now)
        audience = next(each.audience for each in chain.links if each.digest == link)
        from veil.onion.capability import did_key

        done.append(Revoked(link.hex(), did_key(audience), accepted, members))
    return done


async def send_revocation(client: VeilClient, record: bytes, chain: Chain) -> tuple[int, int]:
    """Send a revocation record to every member of the owner's swarm; (how many took
    it, how many there are). See :func:`revoke_links`."""
    owner = chain.owner
    if not isinstance(owner, AccountId):
        raise InvalidArgument("revoking a group's links is not built yet")
    members = [m.as_hop() for m in client.consensus.swarm_of(owner).members]
    errors: list[BaseException] = []
    accepted = 0

    async def one(hop: Hop) -> None:
        nonlocal accepted
        try:
            await client.call(lambda _now: rpc.make_revoke(record), destination=hop)
            accepted += 1
        except VeilError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        for hop in members:
            nursery.start_soon(one, hop)
    if not accepted:
        # A member's verdict (e.g. not entitled) is final; a network failure is tried
        # again through the usual retries (another path, wrong_swarm).
        verdicts = [e for e in errors if not isinstance(e, NetworkError)]
        if verdicts:
            raise verdicts[0]
        await client.call(lambda _now: rpc.make_revoke(record), account=owner)
        accepted = 1
    return accepted, len(members)


def _shown_target(target: RevocationTarget) -> str:
    if isinstance(target, DelegatedSession):
        return target.did
    if isinstance(target, bytes):
        return target.hex()
    return str(target)[:80]
