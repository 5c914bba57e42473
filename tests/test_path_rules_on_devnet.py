"""Issue 11, item 1, on real node processes: a follower's destination was its own guard.

A long-polling receiver prefers the swarm member whose order its saved position follows;
the path selector used to return that member before checking the path, so a poll that
went through the other guard's path could have that member as guard (it saw the
client's address and the account in one request), as a middle relay, or next to
itself. The rule for every request: the destination is never on the path, and no node
is on the path twice.

**The observer.** What the network really did is recorded, not what the client meant
to do: the client's transport (client/transport.py's ``Transport``, the one the
client is given) hands every packet on to the guard unchanged, and first peels a copy
hop by hop with the devnet nodes' own onion keys, exactly as the nodes do
(:func:`veil.onion.packet.process_packet`). So each record is the chain of links the
packet takes, guard to destination, as the nodes on it (all colluding) would see it.
Nothing is mocked: the packets go to ``veil-node`` processes, which answer them.

**The network.** Four nodes, one swarm of four: every node holds every account, and a
path of three relays holds three of the four. A follower's preferred member is then
always on one of its two stored paths (it is the other guard), so without the rule
every poll through that guard breaks it; a follower that polls 24 times without going
through it once does so with a probability of 2**-24.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from tests.devnetutil import devnet
from veil.client.devnet import Devnet
from veil.client.home import Home
from veil.client.transport import HttpxTransport, Transport
from veil.client.veil_client import ClientConfig, open_client
from veil.node.keystore import load_or_create_keys
from veil.onion.keys import Account, NodeKeys
from veil.onion.packet import Deliver, Hop, process_packet

pytestmark = pytest.mark.slow

#: Messages the sender sends, one at a time: the follower polls once for each at least.
MESSAGES = 24


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    with devnet(tmp_path_factory.mktemp("rules"), nodes=4, swarm_size=4) as running:
        yield running


@dataclass(frozen=True, slots=True)
class Observed:
    """One packet's chain of nodes, guard first, destination last (node IDs)."""

    who: str
    chain: tuple[bytes, ...]

    @property
    def relays(self) -> tuple[bytes, ...]:
        return self.chain[:-1]

    @property
    def destination(self) -> bytes:
        return self.chain[-1]


class ObservingTransport:
    """A :class:`Transport` that peels every packet it sends with the nodes' keys, as
    the nodes do, and records the chain; the packet itself goes out unchanged."""

    def __init__(self, who: str, keys: dict[bytes, NodeKeys], seen: list[Observed]) -> None:
        self.who = who
        self.keys = keys
        self.seen = seen
        self.inner: Transport = HttpxTransport()

    def _peel(self, guard: Hop, packet: bytes) -> tuple[bytes, ...]:
        chain = [guard.node_id]
        for _ in range(8):  # at most 5 relays and a destination
            keys = self.keys[chain[-1]]
            step = process_packet(packet, keys.onion_secret, keys.onion_public)
            if isinstance(step, Deliver):
                return tuple(chain)
            chain.append(step.next_node_id)
            packet = step.packet
        raise AssertionError(f"a packet of more than 8 hops: {chain}")

    async def post_onion(self, guard: Hop, packet: bytes, *, timeout_s: float) -> bytes:
        self.seen.append(Observed(self.who, self._peel(guard, packet)))
        return await self.inner.post_onion(guard, packet, timeout_s=timeout_s)

    async def get(
        self, host: str, port: int, path: str, *, timeout_s: float, max_bytes: int
    ) -> bytes:
        return await self.inner.get(host, port, path, timeout_s=timeout_s, max_bytes=max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


def new_home(tmp_path: Path, name: str) -> tuple[Home, Account]:
    home = Home(tmp_path / name)
    account = Account.generate()
    home.save_identity(account)
    return home, account


def node_keys(net: Devnet) -> dict[bytes, NodeKeys]:
    out = {}
    for member in net.nodes:
        keys, created = load_or_create_keys(member.data_dir)
        assert not created
        out[keys.identity_public] = keys
    return out


def broken(seen: list[Observed]) -> list[str]:
    """Every request that breaks the rule, said in words."""
    out = []
    for n, obs in enumerate(seen):
        if obs.destination in obs.relays:
            where = "guard" if obs.destination == obs.relays[0] else "relay"
            out.append(f"{obs.who} #{n}: destination {obs.destination.hex()[:8]} is its {where}")
        if len(set(obs.relays)) != len(obs.relays):
            out.append(f"{obs.who} #{n}: a node twice in {[r.hex()[:8] for r in obs.relays]}")
    return out


async def test_follower_and_sender_never_put_the_destination_on_the_path(
    net: Devnet, tmp_path: Path
) -> None:
    keys = node_keys(net)
    seen: list[Observed] = []
    home_a, _ = new_home(tmp_path, "sender")
    home_b, b = new_home(tmp_path, "follower")
    # A short long-poll: an idle poll comes back soon (the sender waits for each
    # message to arrive, so polls end on a message, not on the wait).
    config = ClientConfig(wait_s=2)
    async with (
        open_client(
            home_a, net.network_file, transport=ObservingTransport("sender", keys, seen)
        ) as sender,
        open_client(
            home_b,
            net.network_file,
            config=config,
            transport=ObservingTransport("follower", keys, seen),
        ) as follower,
    ):
        arrived = trio.Semaphore(0)
        got: list[str] = []

        async def follow() -> None:
            async for message in follower.messages():
                got.append(message.text)
                arrived.release()

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(follow)
                for n in range(MESSAGES):
                    await sender.send(b.id, f"m{n}", ttl_s=600)
                    await arrived.acquire()  # one poll at least per message
                nursery.cancel_scope.cancel()
        guards = {
            "sender": {g.node_id for g in sender.paths.guards},
            "follower": {g.node_id for g in follower.paths.guards},
        }
        follower_paths = follower.paths.paths

    assert got == [f"m{n}" for n in range(MESSAGES)]
    polls = [o for o in seen if o.who == "follower"]
    sends = [o for o in seen if o.who == "sender"]
    assert len(polls) >= MESSAGES and len(sends) >= MESSAGES
    # The situation of the attack: the follower kept to one destination (the member its
    # position follows; another only after a failed try), and it is a node of the
    # follower's own paths (its other guard, here).
    ((kept, times),) = Counter(o.destination for o in polls).most_common(1)
    assert times >= len(polls) // 2
    assert kept in guards["follower"] or any(kept in p.node_ids for p in follower_paths)

    problems = broken(seen)
    assert not problems, f"{len(problems)} of {len(seen)} requests:\n" + "\n".join(problems)
    for obs in seen:
        assert obs.relays[0] in guards[obs.who]
