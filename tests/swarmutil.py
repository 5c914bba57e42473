"""Storage RPC on a real devnet through onion packets, as a client that follows swarms.

::

    async with httpx.AsyncClient(trust_env=False) as client:
        stored = await store(client, node.hop(), alice.id, b"hi")        # StoreResult
        held = await read_hashes(client, node.hop(), alice)              # set of hashes
        held, where = await read_following(client, node.hop(), alice)    # follows wrong_swarm

Every request is one onion packet built with :mod:`veil.onion.packet` (``path`` is the
destination alone unless a relay is given) and the storage RPC builders of
:mod:`veil.onion.rpc`. :func:`eventually` polls an async predicate until it holds, with a
generous deadline (never a timed assertion: it only bounds how long a test may hang).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx
import trio

from veil.client.devnet import Devnet
from veil.onion import rpc
from veil.onion.directory import Consensus
from veil.onion.errors import Unavailable, WrongSwarm
from veil.onion.keys import Account, AccountId
from veil.onion.packet import Hop
from veil.onion.rpc.requests import store_signed_extra

from .nodeutil import now_ms, onion_rpc

__all__ = [
    "DAY_MS",
    "call",
    "eventually",
    "owner_proof",
    "read_following",
    "read_hashes",
    "store",
]

DAY_MS = 86_400_000
T = TypeVar("T")


def owner_proof(
    account: Account, namespace: int, hash: bytes, timestamp_ms: int, ttl_ms: int
) -> bytes:
    """The proof (onion/rpc/proof.py) of ``account``'s store of ``hash`` in ``namespace``
    at ``timestamp_ms`` for ``ttl_ms``: the signature its store request would carry."""
    message = rpc.signing_message(
        "store", account.id, namespace, timestamp_ms, store_signed_extra(ttl_ms, hash)
    )
    signature = account.sign(rpc.DOMAIN, message)
    return rpc.StoreProof(account.ed25519_public, timestamp_ms, ttl_ms, signature).encode()


async def call(
    client: httpx.AsyncClient, dest: Hop, request: bytes, *, relay: Hop | None = None
) -> rpc.Reply:
    """``request`` to ``dest``'s storage RPC through an onion path; the decoded reply."""
    path = [dest] if relay is None or relay.node_id == dest.node_id else [relay, dest]
    return await onion_rpc(client, path, request, timeout=30)


async def store(
    client: httpx.AsyncClient,
    dest: Hop,
    to: AccountId,
    data: bytes,
    *,
    ttl_ms: int = DAY_MS,
    relay: Hop | None = None,
) -> rpc.StoreResult:
    """Store ``data`` in ``to``'s inbox at ``dest``; the result (raises the reply's error)."""
    reply = await call(client, dest, rpc.make_store(to, data, ttl_ms, now_ms=now_ms()), relay=relay)
    return rpc.StoreResult.from_wire(reply.raise_for_status())


async def read_hashes(
    client: httpx.AsyncClient, dest: Hop, account: Account, *, relay: Hop | None = None
) -> set[bytes]:
    """Every message hash in ``account``'s inbox at ``dest`` (all pages); raises the
    reply's typed error (e.g. SwarmMoved) if ``dest`` does not serve the account."""
    hashes: set[bytes] = set()
    last: bytes | None = None
    while True:
        request = rpc.make_retrieve(account, now_ms=now_ms(), last_hash=last)
        reply = await call(client, dest, request, relay=relay)
        result = rpc.RetrieveResult.from_wire(reply.raise_for_status())
        hashes.update(m.hash for m in result.messages)
        if not result.more:
            return hashes
        last = result.messages[-1].hash


async def read_following(
    client: httpx.AsyncClient, start: Hop, account: Account, *, attempts: int = 20
) -> tuple[set[bytes], Hop]:
    """Read ``account``'s inbox starting at ``start``, following ``wrong_swarm`` answers
    to the swarm they name, and waiting out ``unavailable``; (hashes, the node read)."""
    dest = start
    for _ in range(attempts):
        try:
            return await read_hashes(client, dest, account), dest
        except rpc.SwarmMoved as moved:
            dest = moved.swarm.members[0].as_hop()
        except WrongSwarm:
            raise AssertionError("a wrong_swarm answer without a usable swarm") from None
        except Unavailable:
            await trio.sleep(0.2)
    raise AssertionError(f"no node served {account.id} after {attempts} redirects")


async def eventually(
    check: Callable[[], Awaitable[T | None]], *, timeout: float = 60.0, what: str = "condition"
) -> T:
    """Poll ``check`` (every 0.2 s) until it returns something other than None/False;
    return it. Fails the test after ``timeout`` seconds."""
    with trio.move_on_after(timeout):
        while True:
            value = await check()
            if value is not None and value is not False:
                return value
            await trio.sleep(0.2)
    raise AssertionError(f"{what}: still not true after {timeout} s")


async def settled(net: Devnet) -> Consensus:
    """The current consensus of ``net``, once every node holds it (or a later one)."""
    consensus = await trio.to_thread.run_sync(net.consensus)

    async def adopted() -> bool:
        async with httpx.AsyncClient(trust_env=False) as client:
            for member in net.nodes:
                info = (await client.get(f"{member.url}/info", timeout=5)).json()
                if info.get("epoch", -1) < consensus.epoch:
                    return False
        return True

    await eventually(adopted, what="every node adopts the consensus")
    return consensus


def account_in(consensus: Consensus, swarm_id: int) -> Account:
    """A new account that ``consensus`` maps to the swarm ``swarm_id``."""
    while True:
        account = Account.generate()
        if consensus.swarm_of(account.id).swarm_id == swarm_id:
            return account
