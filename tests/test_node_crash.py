"""An acknowledged store survives ``kill -9`` of the node.

Several clients store messages through onion packets as fast as the node answers; once
enough stores are acknowledged (their reply says ok), the node is killed with SIGKILL in
the middle of that load, restarted on the same data directory, and every acknowledged
message must be there. Stores in flight at the kill may or may not have been kept; they
were not acknowledged, so either is correct.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from veil.onion import rpc
from veil.onion.keys import Account

from .nodeutil import NodeHandle, now_ms, onion_rpc, running_node, start_node

WRITERS = 6
KILL_AFTER = 150


async def retrieve_all(client: httpx.AsyncClient, node: NodeHandle, account: Account) -> set[bytes]:
    hashes: set[bytes] = set()
    last: bytes | None = None
    while True:
        request = rpc.make_retrieve(account, now_ms=now_ms(), last_hash=last)
        reply = await onion_rpc(client, [node.hop()], request)
        page = rpc.RetrieveResult.from_wire(reply.raise_for_status())
        hashes.update(m.hash for m in page.messages)
        if not page.more:
            return hashes
        last = page.messages[-1].hash


async def test_acknowledged_stores_survive_kill_9(tmp_path: Path) -> None:
    data = tmp_path / "crash"
    # The inbox rate limit is per recipient; this test floods one inbox on purpose.
    config = {"storage": {"inbox_rate": 100_000.0, "inbox_burst": 100_000}}
    account = Account.generate()
    acknowledged: set[bytes] = set()
    node = await trio.to_thread.run_sync(lambda: start_node(data, config=config))
    enough = trio.Event()

    async def writer(client: httpx.AsyncClient, index: int) -> None:
        n = 0
        while True:
            body = f"writer {index} message {n}".encode()
            n += 1
            request = rpc.make_store(account.id, body, 3_600_000, now_ms=now_ms())
            try:
                reply = await onion_rpc(client, [node.hop()], request, timeout=30)
            except httpx.HTTPError:
                return  # the node is gone: this store was not acknowledged
            result = rpc.StoreResult.from_wire(reply.raise_for_status())
            assert result.hash == rpc.message_hash(account.id, 0, body)
            acknowledged.add(result.hash)
            if len(acknowledged) >= KILL_AFTER:
                enough.set()

    try:
        async with httpx.AsyncClient() as client, trio.open_nursery() as nursery:
            for i in range(WRITERS):
                nursery.start_soon(writer, client, i)
            await enough.wait()
            node.kill()  # SIGKILL while the writers are still storing
        assert node.process.returncode == -9
    finally:
        node.kill()

    assert len(acknowledged) >= KILL_AFTER
    async with running_node(data, config=config) as again, httpx.AsyncClient() as client:
        assert again.node_id == node.node_id
        stored = await retrieve_all(client, again, account)
    missing = acknowledged - stored
    assert not missing, f"{len(missing)} acknowledged messages lost"
