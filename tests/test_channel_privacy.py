"""Issue 14, on real node processes: what following a channel gives away.

1. **No follower's address or identity anywhere but where it must be.** The follower's
   connections come from their own loopback address (:data:`FOLLOWER_ADDRESS`, through
   :attr:`TransportConfig.local_address`; Linux routes all of 127.0.0.0/8 to ``lo``),
   while every node and the publisher use 127.0.0.1; so after it has followed a
   channel and received its posts, that address (as text and as packed bytes) must be
   in no node's data directory (SQLite files, logs, everything), except possibly its
   guards' (a guard sees its client's address by design; the test says which guard,
   if any, wrote it down), and nowhere in the publisher's home. Its identity (the
   throwaway account its client runs with; it has none in its home) must be nowhere
   either, nor in any request it sent: every poll is an unsigned retrieve naming the
   channel only.

2. **Two channels, two sets of paths, polls that do not line up.** The real path of
   every poll (guard, relay, relay, destination) is recorded by peeling each packet with
   the nodes' own keys, as tests/test_path_rules_on_devnet.py does, and the path
   *object* each poll was routed on by recording each follower's path selector's
   routes. Over several polls of each channel: the channels' sets of relay chains
   differ, no path object serves both, and the gaps between a poll of one channel and
   the nearest poll of the other are spread, not constant.

The devnet: 10 nodes, swarms of 3, quick replication (a post stored at one member wakes
a long-poll at another within a second).
"""

from __future__ import annotations

import functools
import socket
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from tests.devnetutil import GROUP_NODE_CONFIG, devnet
from veil.client.channels import Follower, create_channel
from veil.client.devnet import Devnet
from veil.client.home import Home
from veil.client.paths import OnionPath, Route
from veil.client.transport import HttpxTransport, Transport, TransportConfig
from veil.client.veil_client import VeilClient, open_client
from veil.node.keystore import load_or_create_keys
from veil.onion.channel import CHANNEL_NAMESPACE
from veil.onion.keys import Account, NodeKeys
from veil.onion.packet import Deliver, Hop, process_packet
from veil.onion.rpc.request_codec import decode_request
from veil.onion.rpc.requests import RetrieveRequest

pytestmark = pytest.mark.slow

#: The follower's own source address (every devnet process is on 127.0.0.1).
FOLLOWER_ADDRESS = "127.0.0.77"
#: Polls of each channel recorded before the paths are compared.
POLLS = 8


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    with devnet(
        tmp_path_factory.mktemp("chanpriv"), nodes=10, swarm_size=3, node_config=GROUP_NODE_CONFIG
    ) as running:
        yield running


@dataclass(frozen=True, slots=True)
class Poll:
    """One onion request the follower sent: when, its chain of node IDs (guard first,
    destination last) and the request the destination read."""

    at: float
    chain: tuple[bytes, ...]
    request: object
    payload: bytes


class ObservingTransport:
    """A :class:`Transport` that peels a copy of every packet with the nodes' keys (as
    the nodes do) and records it; the packet itself goes out unchanged, from
    :data:`FOLLOWER_ADDRESS`. A request that names the follower ``me`` (signed, or
    carrying its key) fails the test at once, from inside the follow."""

    def __init__(self, keys: dict[bytes, NodeKeys], me: Account) -> None:
        self.keys = keys
        self.me = me
        self.seen: list[Poll] = []
        self.inner: Transport = HttpxTransport(TransportConfig(local_address=FOLLOWER_ADDRESS))

    def _peel(self, guard: Hop, packet: bytes) -> Poll:
        chain = [guard.node_id]
        for _ in range(8):
            keys = self.keys[chain[-1]]
            step = process_packet(packet, keys.onion_secret, keys.onion_public)
            if isinstance(step, Deliver):
                payload = bytes(step.payload)
                return Poll(trio.current_time(), tuple(chain), decode_request(payload), payload)
            chain.append(step.next_node_id)
            packet = step.packet
        raise AssertionError(f"a packet of more than 8 hops: {chain}")

    async def post_onion(self, guard: Hop, packet: bytes, *, timeout_s: float) -> bytes:
        poll = self._peel(guard, packet)
        self.seen.append(poll)
        assert_polls_anonymous([poll], self.me)
        return await self.inner.post_onion(guard, packet, timeout_s=timeout_s)

    async def get(
        self, host: str, port: int, path: str, *, timeout_s: float, max_bytes: int
    ) -> bytes:
        return await self.inner.get(host, port, path, timeout_s=timeout_s, max_bytes=max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


def node_keys(net: Devnet) -> dict[bytes, NodeKeys]:
    out = {}
    for member in net.nodes:
        keys, created = load_or_create_keys(member.data_dir)
        assert not created
        out[keys.identity_public] = keys
    return out


def publisher_home(tmp_path: Path) -> Home:
    home = Home(tmp_path / "publisher")
    home.save_identity(Account.generate())
    return home


def channel_polls(seen: list[Poll], channel: object) -> list[Poll]:
    return [
        p
        for p in seen
        if isinstance(p.request, RetrieveRequest)
        and p.request.namespace == CHANNEL_NAMESPACE
        and p.request.account == channel
    ]


def assert_polls_anonymous(seen: list[Poll], me: Account) -> None:
    """Every request the follower sent is an unsigned channel retrieve that does not
    carry its key."""
    assert seen
    key = me.id.x25519_public
    for poll in seen:
        assert isinstance(poll.request, RetrieveRequest), poll.request
        assert poll.request.namespace == CHANNEL_NAMESPACE
        assert poll.request.auth is None, "a signed poll names the follower"
        assert key not in poll.payload and me.ed25519_public not in poll.payload


def files_under(root: Path) -> Iterator[Path]:
    return (p for p in root.rglob("*") if p.is_file())


async def test_no_node_and_not_the_publisher_hold_the_followers_address_or_identity(
    net: Devnet, tmp_path: Path
) -> None:
    keys = node_keys(net)
    pub_home = publisher_home(tmp_path)
    async with open_client(pub_home, net.network_file) as pub:
        channel = create_channel(pub, "watched")
        await channel.post("before")

    me = Account.generate()  # a follower needs no identity: an unused throwaway key
    observed = ObservingTransport(keys, me)
    fol_home = Home(tmp_path / "follower")
    got: list[str] = []
    async with (
        open_client(pub_home, net.network_file) as pub,
        open_client(fol_home, net.network_file, account=me, transport=observed) as client,
    ):
        follower = Follower(client, channel.id)
        with trio.fail_after(40):
            async with trio.open_nursery() as nursery:

                async def consume() -> None:
                    async for post in follower.posts():
                        got.append(post.text)

                nursery.start_soon(consume)
                while not got:
                    await trio.sleep(0.05)
                await channel_of(pub, "watched").post("after")
                while len(got) < 2:
                    await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
        guards = {g.node_id.hex() for g in follower.paths.guards}
    assert got == ["before", "after"]
    assert_polls_anonymous(observed.seen, me)
    # The packets really left from the follower's own address (the guards saw it).
    assert {p.chain[0].hex() for p in observed.seen} <= guards

    address = FOLLOWER_ADDRESS.encode()
    packed = socket.inet_aton(FOLLOWER_ADDRESS)
    identity = [
        me.id.x25519_public,
        me.ed25519_public,
        me.id.x25519_public.hex().encode(),
        me.ed25519_public.hex().encode(),
        str(me.id).encode(),
    ]
    assert not fol_home.identity_path.exists()
    at_guards: list[str] = []
    # The scan reads what the nodes wrote (their own address is in their files).
    assert any(b"127.0.0.1" in p.read_bytes() for p in files_under(net.nodes[0].data_dir))
    for member in net.members:
        for path in files_under(member.data_dir):
            data = path.read_bytes()
            for form in identity:
                assert form not in data, f"the follower's identity in {path}"
            if address in data or packed in data:
                assert member.id in guards, f"the follower's address in {path}"
                at_guards.append(f"{member.name}: {path.name}")
    for path in files_under(pub_home.path):
        data = path.read_bytes()
        assert address not in data and packed not in data, path
        for form in identity:
            assert form not in data, path
    # A guard sees its client's address; it should not write it down either.
    assert not at_guards, f"a guard stored or logged its client's address: {at_guards}"


async def test_the_transport_connects_from_its_local_address() -> None:
    """The option the tests above rely on: a connection's source is ``local_address``."""
    seen: list[str] = []

    async def answer(stream: trio.SocketStream) -> None:
        seen.append(stream.socket.getpeername()[0])
        await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(
            functools.partial(trio.serve_tcp, answer, 0, host="127.0.0.1")
        )
        port = listener.socket.getsockname()[1]
        transport = HttpxTransport(TransportConfig(local_address=FOLLOWER_ADDRESS))
        try:
            body = await transport.get("127.0.0.1", port, "/", timeout_s=5, max_bytes=10)
        finally:
            await transport.aclose()
        nursery.cancel_scope.cancel()
    assert body == b"ok" and seen == [FOLLOWER_ADDRESS]


def channel_of(client: VeilClient, name: str):  # type: ignore[no-untyped-def]
    from veil.client.channels import open_channel

    return open_channel(client, name)


async def test_two_channels_followed_by_one_client_use_different_paths(
    net: Devnet, tmp_path: Path
) -> None:
    keys = node_keys(net)
    pub_home = publisher_home(tmp_path)
    me = Account.generate()
    observed = ObservingTransport(keys, me)
    async with open_client(pub_home, net.network_file) as pub:
        one = create_channel(pub, "one")
        two = create_channel(pub, "two")
        async with open_client(
            Home(tmp_path / "follower"),
            net.network_file,
            account=me,
            transport=observed,
        ) as client:
            followers = {"one": Follower(client, one.id), "two": Follower(client, two.id)}
            routes: dict[str, list[OnionPath]] = {"one": [], "two": []}
            for name, f in followers.items():
                choose = f.paths.choose_route

                async def recording(*args, _choose=choose, _name=name, **kwargs) -> Route:  # type: ignore[no-untyped-def]
                    route = await _choose(*args, **kwargs)
                    routes[_name].append(route.path)
                    return route

                f.paths.choose_route = recording  # type: ignore[method-assign]
            got: dict[str, list[str]] = {"one": [], "two": []}
            channels = {"one": one, "two": two}

            def polls(name: str) -> list[Poll]:
                return channel_polls(observed.seen, channels[name].id)

            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:

                    async def consume(name: str) -> None:
                        async for post in followers[name].posts():
                            got[name].append(post.text)

                    async def publish(name: str) -> None:
                        # Posts at this channel's own random times: each wakes a poll.
                        n = 0
                        while len(polls(name)) < POLLS:
                            await trio.sleep(followers[name].rng.uniform(0.2, 0.9))
                            await channels[name].post(f"{name} {n}")
                            n += 1
                            with trio.move_on_after(5):
                                while len(got[name]) < n:
                                    await trio.sleep(0.02)

                    for name in followers:
                        nursery.start_soon(consume, name)
                    async with trio.open_nursery() as publishers:
                        for name in followers:
                            publishers.start_soon(publish, name)
                    nursery.cancel_scope.cancel()
            f1, f2 = followers["one"], followers["two"]
            assert f1.paths is not f2.paths and f1.paths is not client.paths

    assert_polls_anonymous(observed.seen, me)
    a, b = polls("one"), polls("two")
    assert len(a) >= POLLS and len(b) >= POLLS
    assert len(a) + len(b) == len(observed.seen)
    # No path object serves both channels (each follower routes on its own).
    assert len(routes["one"]) >= len(a) and len(routes["two"]) >= len(b)
    assert not {id(p) for p in routes["one"]} & {id(p) for p in routes["two"]}
    # What the network saw: the relay chains each channel's polls took differ.
    chains_a = {p.chain[:-1] for p in a}
    chains_b = {p.chain[:-1] for p in b}
    assert chains_a != chains_b, [c.hex()[:8] for chain in chains_a for c in chain]
    # The polls do not line up: the gap from each poll of one channel to the nearest
    # poll of the other varies.
    gaps = [min(abs(p.at - q.at) for q in b) for p in a]
    assert statistics.pstdev(gaps) > 0.05, gaps
    assert sum(g < 0.01 for g in gaps) < len(gaps) // 2, gaps
