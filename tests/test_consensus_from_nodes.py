"""Issue #11, item 4: clients fetch the consensus from their guards, not the authorities.

* A node serves ``GET /consensus``: the authority's signed document byte for byte once
  it has adopted it, 503 before, 304 for ``?after=`` its epoch, 400 for another query;
  rate limited and counted like its other routes (real node and authority processes).
* The attack: an authority sees the address and timing of every client that fetches
  from it. A client's refreshes must not reach any authority (a recording proxy stands
  between the client and the authority); only a first start, with nothing cached, does.
* Hostile nodes: a guard that serves a forged, below-threshold, old, expired, garbage or
  oversized document does not make the client accept it, and the client gets the
  consensus from another source (in-process servers on loopback, the node's own
  ``GET /consensus`` route serving the honest copy).
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import httpx
import pytest
import trio

from tests.authorityutil import make_network, node_config, start_authority, wait_for
from tests.devnetutil import running_devnet
from tests.nodeutil import running_node
from veil.client.consensus import Directory, DirectoryPolicy
from veil.client.errors import AuthorityUnreachable
from veil.client.home import Home
from veil.client.network_clock import NetworkClock
from veil.client.state import ClientState
from veil.client.transport import HttpxTransport
from veil.client.veil_client import open_client
from veil.node.config import HttpConfig
from veil.node.consensus_route import consensus_route, parse_after
from veil.node.metrics import NodeMetrics
from veil.node.network_view import NetworkView
from veil.node.server import HttpServer, Request, Response, Route
from veil.onion.directory import (
    MAX_CONSENSUS_SIZE,
    Authority,
    Consensus,
    ConsensusNode,
    NetworkFile,
    NodeDescriptor,
    assemble,
    make_consensus_body,
    sign_consensus,
    verify_consensus,
)
from veil.onion.keys import Account, NodeKeys
from veil.onion.wallclock import wall_clock_ms as now_ms

# --- a node serves its consensus (real processes) ------------------------------------------


def _get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=10)


def _counted(metrics: str, status: int) -> float:
    labels = f'method="GET",path="/consensus",status="{status}"'
    pattern = r"^veil_http_requests_total\{" + labels + r"\} (\S+)$"
    found = re.search(pattern, metrics, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.mark.slow
async def test_a_node_serves_the_authoritys_consensus_byte_for_byte(tmp_path: Path) -> None:
    net = await trio.to_thread.run_sync(lambda: make_network(tmp_path / "net", count=1))
    config = node_config(net)
    # Rate limited per address like /onion: a burst of 3 for a client at 127.0.0.3
    # (127.0.0.1, where the authority checks the node from, is exempt).
    config["rate_limit"] = {"rate": 0.01, "burst": 3, "exempt": ["127.0.0.1/32"]}
    async with running_node(tmp_path / "n1", config=config) as node:
        url = f"{node.url}/consensus"

        def burst() -> list[httpx.Response]:
            from_elsewhere = httpx.HTTPTransport(local_address="127.0.0.3")
            with httpx.Client(transport=from_elsewhere, timeout=10) as http:
                return [http.get(url) for _ in range(4)]

        # No authority yet: no consensus, a clear 503; then the limit.
        answers = await trio.to_thread.run_sync(burst)
        r = answers[0]
        assert r.status_code == 503 and r.text.startswith("unavailable: ")
        assert "no consensus" in r.text
        assert [a.status_code for a in answers] == [503, 503, 503, 429]
        metrics = await trio.to_thread.run_sync(node.metrics)
        assert _counted(metrics, 503) == 3 and _counted(metrics, 429) == 1
        assert re.search(r"^veil_rate_limited_total 1\.0$", metrics, re.M)

        authority = await trio.to_thread.run_sync(lambda: start_authority(net, 0))
        try:

            def adopted() -> int | None:
                return node.info().get("epoch")

            epoch = await trio.to_thread.run_sync(lambda: wait_for("a consensus", adopted))
            served = await trio.to_thread.run_sync(_get, url)
            assert served.status_code == 200
            assert served.headers["content-type"] == "application/cbor"
            held = verify_consensus(
                served.content, pinned=net.file.pinned_keys, threshold=1, now_ms=now_ms()
            )
            assert held.epoch >= epoch
            original = await trio.to_thread.run_sync(
                _get, f"{net.url(0)}/consensus?epoch={held.epoch}"
            )
            assert original.status_code == 200
            assert served.content == original.content  # every byte, signatures included

            # Conditional: nothing newer than the epoch the client has.
            same = await trio.to_thread.run_sync(_get, f"{url}?after={held.epoch}")
            assert same.status_code in (304, 200)  # 200 only if a newer one came meanwhile
            if same.status_code == 304:
                assert same.content == b""
            older = await trio.to_thread.run_sync(_get, f"{url}?after={held.epoch - 1}")
            assert older.status_code == 200 and len(older.content) > 0
            bad = await trio.to_thread.run_sync(_get, f"{url}?epoch=1")
            assert bad.status_code == 400 and bad.text.startswith("bad_request: ")
            metrics = await trio.to_thread.run_sync(node.metrics)
            assert _counted(metrics, 200) >= 2 and _counted(metrics, 400) == 1
        finally:
            assert await trio.to_thread.run_sync(authority.stop) == 0


# --- the attack: a refreshing client must not reach the authorities ------------------------


class RecordingProxy:
    """A TCP relay to an authority that counts the consensus requests passing through
    it: what the authority learns about clients is what passes here."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.requests = 0
        self.connections = 0
        self.port = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._relay, listeners)

    async def _relay(self, client: trio.SocketStream) -> None:
        self.connections += 1
        try:
            upstream = await trio.open_tcp_stream(*self.target)
        except OSError:
            await client.aclose()
            return
        async with client, upstream, trio.open_nursery() as nursery:

            async def pump(src: trio.SocketStream, dst: trio.SocketStream, count: bool) -> None:
                try:
                    async for chunk in src:
                        if count:
                            self.requests += chunk.count(b"GET /consensus")
                        await dst.send_all(chunk)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(pump, client, upstream, True)
            nursery.start_soon(pump, upstream, client, False)


def _new_home(path: Path) -> Home:
    home = Home(path)
    home.save_identity(Account.generate())
    return home


@pytest.mark.slow
async def test_a_client_refreshes_from_its_guards_and_never_asks_the_authorities(
    tmp_path: Path,
) -> None:
    """The attack (#11 item 4): before the fix, every refresh went to an authority, which
    thus saw each client's address every interval; now only a first start does."""
    async with running_devnet(
        tmp_path,
        nodes=3,
        swarm_size=3,
        # Two-second epochs: a refresh every two seconds, and guards (nodes retry every
        # quarter second) well ahead of the point where a client would ask others.
        interval_ms=2000,
        node_config={"network": {"retry_interval": 0.25}},
    ) as net:
        real = net.network.authorities[0]
        proxy = RecordingProxy((real.host, real.port))
        async with trio.open_nursery() as nursery:
            await nursery.start(proxy.serve)
            watched = NetworkFile((Authority(real.key, "127.0.0.1", proxy.port),), 1)
            home = _new_home(tmp_path / "client")

            # First start: nothing cached, so the consensus comes from an authority.
            async with open_client(home, watched) as client:
                assert proxy.requests >= 1
                at_start = proxy.requests
                first = client.directory
                assert first.last_source == "authority" and first.authority_fetches == 1
                start_epoch = client.consensus.epoch
                guards = {n.node_id for n in await client.paths.ensure_guards()}
                assert len(guards) == 2
                # Three refreshes, each from a guard.
                with trio.fail_after(20):
                    while client.consensus.epoch < start_epoch + 3:
                        await trio.sleep(0.1)
                # What the authority saw: nothing after the first start.
                assert proxy.requests == at_start, "a refresh reached the authority"
                assert client.directory.last_source == "guard"
                assert client.directory.authority_fetches == 1, client.directory.last_error

            # A restart with a usable cache: no authority either.
            async with open_client(home, watched) as client:
                assert client.directory.last_source in ("cache", "guard")
                epoch = client.consensus.epoch
                with trio.fail_after(10):
                    while client.consensus.epoch < epoch + 1:
                        await trio.sleep(0.1)
                assert client.directory.authority_fetches == 0
                valid_until_ms = client.consensus.valid_until_ms
            assert proxy.requests == at_start

            # A restart after the cache expired (a consensus lives three intervals): the
            # expired document still says where the guards are; they are asked first.
            await trio.sleep(max(0.0, (valid_until_ms - now_ms()) / 1000) + 0.2)
            async with open_client(home, watched) as client:
                assert client.directory.last_source == "guard"
                assert client.directory.authority_fetches == 0
            assert proxy.requests == at_start
            nursery.cancel_scope.cancel()


# --- hostile nodes (in-process servers) ----------------------------------------------------

AUTHORITY = NodeKeys.generate()
OTHER_AUTHORITY = NodeKeys.generate()
FORGER = NodeKeys.generate()
INTERVAL_MS = 60_000


def document(
    ports: Sequence[int],
    keys: Sequence[NodeKeys],
    epoch: int,
    valid_after: int,
    signers: Sequence[NodeKeys] = (AUTHORITY,),
) -> bytes:
    descriptors = [
        NodeDescriptor(
            k.identity_public,
            k.onion_public,
            "127.0.0.1",
            port,
            "t",
            valid_after,
            valid_after + 3_600_000,
        )
        for k, port in zip(keys, ports, strict=True)
    ]
    body = make_consensus_body(
        descriptors, epoch=epoch, valid_after_ms=valid_after, interval_ms=INTERVAL_MS
    )
    return assemble(body, [sign_consensus(body, s) for s in signers])


class Clock:
    """The client's clock, moved by the test (ms added to the wall clock)."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def __call__(self) -> float:
        return time.time() * 1000 + self.offset_ms


Handler = Callable[[Request], Awaitable[Response]]


async def serve(nursery: trio.Nursery, handler: Handler) -> tuple[int, list[str]]:
    """An in-process HTTP server answering ``GET /consensus`` with ``handler``; its port
    and the list of the queries it was asked."""
    asked: list[str] = []

    async def record(request: Request) -> Response:
        asked.append(request.query)
        return await handler(request)

    server = HttpServer(
        {"/consensus": Route(("GET",), record)}, HttpConfig(), metrics=NodeMetrics()
    )
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await nursery.start(server.serve, listeners)
    return port, asked


def fixed(status: int, body: bytes) -> Handler:
    async def handler(request: Request) -> Response:
        return Response(status, body, b"application/cbor")

    return handler


_states: list[ClientState] = []


@pytest.fixture(autouse=True)
def _close_states() -> Iterator[None]:
    yield
    while _states:
        _states.pop().close()


class Scene:
    """A client holding epoch 10, whose one guard is hostile; an honest node serving epoch
    11 through the node's own route; an authority that counts its requests."""

    def __init__(self, tmp_path: Path, nursery: trio.Nursery) -> None:
        self.tmp_path = tmp_path
        self.nursery = nursery
        self.keys = [NodeKeys.generate() for _ in range(3)]  # guard, honest, authority's
        self.clock = Clock()
        self.hostile: Handler = fixed(503, b"unavailable\n")

    async def start(self, *, threshold: int = 1) -> Directory:
        async def hostile(request: Request) -> Response:
            return await self.hostile(request)

        self.guard_port, self.guard_asked = await serve(self.nursery, hostile)
        self.view = NetworkView(b"\0" * 32, standalone=False)
        route = consensus_route(self.view, lambda: int(self.clock()))
        self.honest_port, self.honest_asked = await serve(self.nursery, route.handler)
        self.authority_port, self.authority_asked = await serve(self.nursery, self._authority)
        ports = [self.guard_port, self.honest_port]
        self.signers = (AUTHORITY, OTHER_AUTHORITY)[:threshold]
        pinned = (AUTHORITY, OTHER_AUTHORITY)[: max(threshold, 1)]
        self.network = NetworkFile(
            tuple(Authority(k.identity_public, "127.0.0.1", self.authority_port) for k in pinned),
            threshold,
        )
        self.ports = ports
        t = now_ms()
        self.old = document(ports, self.keys[:2], 9, t - 3000, self.signers)
        self.held = document(ports, self.keys[:2], 10, t - 2000, self.signers)
        self.newer = document(ports, self.keys[:2], 11, t - 1000, self.signers)
        newer = self.verify(self.newer)
        self.view.update(newer, self.newer)
        state = ClientState.open(self.tmp_path / "state.sqlite3")
        _states.append(state)
        d = Directory(
            self.network,
            state,
            HttpxTransport(),
            NetworkClock(self.clock),
            policy=DirectoryPolicy(timeout_s=5),
            guards=self._guards,
        )
        self.directory = d
        assert d.install(self.verify(self.held), self.held)
        return d

    def verify(self, raw: bytes) -> Consensus:
        return verify_consensus(
            raw,
            pinned=self.network.pinned_keys,
            threshold=self.network.threshold,
            now_ms=now_ms(),
        )

    async def _guards(self) -> list[ConsensusNode]:
        held = self.directory.current
        assert held is not None
        guard = held.node(self.keys[0].identity_public)
        assert guard is not None and guard.port == self.guard_port
        return [guard]

    async def _authority(self, request: Request) -> Response:
        return Response(200, self.newer, b"application/cbor")

    def move_past_fresh_until(self, fraction: float) -> None:
        """Move the client's clock ``fraction`` of the way from ``fresh_until`` to
        ``valid_until`` of the held consensus."""
        held = self.directory.current
        assert held is not None
        window = held.valid_until_ms - held.fresh_until_ms
        target = held.fresh_until_ms + fraction * window
        self.clock.offset_ms = int(target - now_ms())


def _forged(scene: Scene) -> bytes:
    return document(scene.ports, scene.keys[:2], 11, now_ms() - 500, (FORGER,))


def _expired(scene: Scene) -> bytes:
    return document(scene.ports, scene.keys[:2], 12, now_ms() - 10 * INTERVAL_MS)


def _garbage(scene: Scene) -> bytes:
    return b"\xa1\x61v\x01" + b"\0" * 500


def _oversized(scene: Scene) -> bytes:
    return b"\0" * (MAX_CONSENSUS_SIZE + 64 * 1024 + 1)


@pytest.mark.parametrize(
    "make", [_forged, _expired, _garbage, _oversized], ids=lambda f: f.__name__[1:]
)
async def test_a_guard_serving_a_bad_consensus_is_refused_and_another_node_asked(
    tmp_path: Path, make: Callable[[Scene], bytes]
) -> None:
    async with trio.open_nursery() as nursery:
        scene = Scene(tmp_path, nursery)
        d = await scene.start()
        scene.hostile = fixed(200, make(scene))
        got = await d.fetch()
        # Refused; the honest node (the node's own route) gave epoch 11.
        assert got.epoch == 11 and d.last_source == "node"
        assert scene.guard_asked == ["after=10"] and scene.honest_asked == ["after=10"]
        assert scene.authority_asked == []
        cached = d.state.load_consensus()
        assert cached is not None and cached.raw == scene.newer
        await d.transport.aclose()
        nursery.cancel_scope.cancel()


async def test_below_threshold_from_a_guard_is_refused(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        scene = Scene(tmp_path, nursery)
        d = await scene.start(threshold=2)
        one = document(scene.ports, scene.keys[:2], 11, now_ms() - 500, (AUTHORITY,))
        scene.hostile = fixed(200, one)
        got = await d.fetch()
        assert got.epoch == 11 and d.last_source == "node"
        assert len(got.signers) == 2
        assert scene.authority_asked == []
        await d.transport.aclose()
        nursery.cancel_scope.cancel()


async def test_a_guard_serving_an_old_consensus_is_waited_for_then_bypassed(
    tmp_path: Path,
) -> None:
    """A guard that serves an old (validly signed) epoch is a guard with nothing newer:
    the client waits for it at first (it may just lag), asks other nodes half-way to
    ``valid_until``, and never accepts the old one."""
    async with trio.open_nursery() as nursery:
        scene = Scene(tmp_path, nursery)
        d = await scene.start()

        async def old(request: Request) -> Response:
            return Response(200, scene.old, b"application/cbor")

        scene.hostile = old
        scene.move_past_fresh_until(0.1)
        assert (await d.fetch()).epoch == 10  # held: nothing newer from the guard
        assert scene.honest_asked == [] and scene.authority_asked == []
        scene.move_past_fresh_until(0.55)
        got = await d.fetch()
        assert got.epoch == 11 and d.last_source == "node"
        assert scene.authority_asked == []
        await d.transport.aclose()
        nursery.cancel_scope.cancel()


async def test_authorities_are_the_last_resort(tmp_path: Path) -> None:
    """Nodes that withhold the next consensus (304) or fail: the authorities are asked
    only when the held one is about to become unusable, or when there is none."""
    async with trio.open_nursery() as nursery:
        scene = Scene(tmp_path, nursery)
        d = await scene.start()
        scene.hostile = fixed(304, b"")
        scene.view.document = None  # the honest node has nothing either (503)
        scene.move_past_fresh_until(0.6)
        assert (await d.fetch()).epoch == 10
        assert scene.honest_asked == ["after=10"] and scene.authority_asked == []
        assert d.authority_fetches == 0
        scene.move_past_fresh_until(0.8)
        got = await d.fetch()
        assert got.epoch == 11 and d.last_source == "authority"
        assert scene.authority_asked == [""] and d.authority_fetches == 1
        await d.transport.aclose()

        # No usable consensus (first start): straight to the authorities.
        state = ClientState.open(tmp_path / "fresh.sqlite3")
        _states.append(state)
        fresh = Directory(scene.network, state, HttpxTransport(), NetworkClock(Clock()))
        fresh.use_guards(scene._guards)
        guard_asked = len(scene.guard_asked)
        assert (await fresh.fetch()).epoch == 11 and fresh.last_source == "authority"
        assert len(scene.guard_asked) == guard_asked  # no guard asked: nothing usable held
        await fresh.transport.aclose()
        nursery.cancel_scope.cancel()


async def test_every_source_failing_leaves_the_held_consensus(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        scene = Scene(tmp_path, nursery)
        d = await scene.start()
        scene.hostile = fixed(200, b"junk")
        scene.view.document = None
        scene.move_past_fresh_until(0.1)
        assert (await d.fetch()).epoch == 10 and d.authority_fetches == 0
        assert d.last_error is not None and "guard 127.0.0.1" in d.last_error
        # Near the end, the authorities; if they fail too, the error says who failed.
        scene.move_past_fresh_until(0.9)
        scene.newer = b"junk"
        with pytest.raises(Exception, match="no usable consensus") as info:
            await d.fetch()
        assert not isinstance(info.value, AuthorityUnreachable)
        assert d.current is not None and d.current.epoch == 10
        await d.transport.aclose()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("guard", ["honest", "hostile", "none", "too_old"])
async def test_a_restart_with_an_expired_cache_asks_the_last_guards(
    tmp_path: Path, guard: str
) -> None:
    """A cache that expired less than a day ago names the guards of the last run: they
    are asked before the authorities; a bad answer there, no guard, or a cache expired
    too long ago, and the authorities are asked (as at a first start)."""
    async with trio.open_nursery() as nursery:
        scene = Scene(tmp_path, nursery)
        await scene.start()
        scene.hostile = fixed(200, _forged(scene))
        age = 2 * 24 * 3600_000 if guard == "too_old" else 200_000
        expired = document(scene.ports, scene.keys[:2], 8, now_ms() - age)
        state = ClientState.open(tmp_path / "restarted.sqlite3")
        _states.append(state)
        state.save_consensus(expired, 8, now_ms())
        guard_id = scene.keys[0 if guard == "hostile" else 1].identity_public
        d = Directory(
            scene.network,
            state,
            HttpxTransport(),
            NetworkClock(Clock()),
            guards=scene._guards,
            guard_ids=lambda: [] if guard == "none" else [guard_id],
        )
        assert await d.load_cached() is None  # expired: not installed
        got = await d.fetch(tentative_ok=True)
        assert got.epoch == 11
        if guard == "honest":
            assert d.last_source == "guard" and d.authority_fetches == 0
            assert scene.honest_asked == ["after=8"] and scene.authority_asked == []
        else:
            assert d.last_source == "authority" and scene.authority_asked == [""]
            assert scene.guard_asked == (["after=8"] if guard == "hostile" else [])
        await d.transport.aclose()
        nursery.cancel_scope.cancel()


def test_parse_after_is_strict() -> None:
    assert parse_after("") is None
    assert parse_after("after=0") == 0
    assert parse_after("after=123") == 123
    for bad in ("after=", "after=-1", "after=1&after=2", "epoch=1", "after", "after=1x"):
        with pytest.raises(ValueError):
            parse_after(bad)
    with pytest.raises(ValueError):
        parse_after("after=" + "9" * 40)


# --- the race: a silent guard first, a hostile one second (in-process servers) -------------


@pytest.mark.parametrize("hostile", ["forged", "rolled_back", "below_threshold"])
async def test_a_silent_guard_and_a_hostile_one_do_not_win_or_hold_up_the_race(
    tmp_path: Path, hostile: str
) -> None:
    """The first guard accepts connections and never answers (a frozen host); the second
    answers at once with a forged, rolled-back or below-threshold document. The race
    goes on past both, to the honest node, long before the silent guard's timeout; the
    bad document is never installed and the authority never asked."""
    threshold = 2 if hostile == "below_threshold" else 1
    signers = (AUTHORITY, OTHER_AUTHORITY)[:threshold]
    keys = [NodeKeys.generate() for _ in range(3)]  # silent guard, hostile guard, honest
    async with trio.open_nursery() as nursery:
        with trio.socket.socket() as silent:
            await silent.bind(("127.0.0.1", 0))
            silent.listen(16)  # the kernel takes the request; nobody ever answers
            silent_port = silent.getsockname()[1]
            view = NetworkView(b"\0" * 32, standalone=False)
            clock = Clock()
            honest_port, honest_asked = await serve(
                nursery, consensus_route(view, lambda: int(clock())).handler
            )
            authority_port, authority_asked = await serve(nursery, fixed(503, b"no\n"))
            network = NetworkFile(
                tuple(Authority(k.identity_public, "127.0.0.1", authority_port) for k in signers),
                threshold,
            )
            hostile_port = 0  # known once its server is up; documents list it
            t = now_ms()

            def doc(epoch: int, age_ms: int, by: Sequence[NodeKeys] = signers) -> bytes:
                ports = [silent_port, hostile_port, honest_port]
                return document(ports, keys, epoch, t - age_ms, by)

            bad: list[bytes] = []
            hostile_port, hostile_asked = await serve(
                nursery, lambda request: fixed(200, bad[0])(request)
            )
            held, newer = doc(10, 2000), doc(11, 1000)
            bad.append(
                {
                    "forged": doc(12, 500, (FORGER,)),
                    "rolled_back": doc(9, 3000),
                    "below_threshold": doc(12, 500, (AUTHORITY,)),
                }[hostile]
            )

            def verified(raw: bytes) -> Consensus:
                return verify_consensus(
                    raw, pinned=network.pinned_keys, threshold=threshold, now_ms=now_ms()
                )

            view.update(verified(newer), newer)
            state = ClientState.open(tmp_path / "state.sqlite3")
            _states.append(state)

            async def guards() -> list[ConsensusNode]:
                current = d.current
                assert current is not None
                found = [current.node(k.identity_public) for k in keys[:2]]
                return [n for n in found if n is not None]

            d = Directory(
                network,
                state,
                HttpxTransport(),
                NetworkClock(clock),
                policy=DirectoryPolicy(stagger_s=0.5),
                guards=guards,
            )
            assert d.install(verified(held), held)
            # A rolled-back document is "nothing newer" (a guard that lags), for which
            # the client waits while it may: past the half-way point, others are asked.
            if hostile == "rolled_back":
                current = d.current
                assert current is not None
                window = current.valid_until_ms - current.fresh_until_ms
                clock.offset_ms = int(current.fresh_until_ms + 0.55 * window - now_ms())
            started = trio.current_time()
            got = await d.fetch()
            took_s = trio.current_time() - started
            assert got.epoch == 11 and d.last_source == "node"
            assert took_s < d.policy.timeout_s / 2, took_s  # not the silent guard's timeout
            assert hostile_asked == ["after=10"] and honest_asked == ["after=10"]
            assert authority_asked == [] and d.authority_fetches == 0
            cached = state.load_consensus()
            assert cached is not None and cached.raw == newer
            await d.transport.aclose()
        nursery.cancel_scope.cancel()
