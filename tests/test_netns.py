"""A network of hosts with their own addresses, run as the systemd units run it, that
loses an authority and two nodes and carries on.

Every authority and node is a "host": its own Linux network namespace with one address
of 10.231.0.0/24 on a private switch (tests/netnsutil.py), and its own directory tree
standing for its file system. Each is started with its unit's ``ExecStart``
(``contrib/systemd/veil-node.service``, ``veil-authority.service``): the same arguments,
``/etc/veil``, ``/var/lib`` and ``/opt/veil`` mapped into that tree and this run's venv,
listening on the unit's ``0.0.0.0`` with the config's ``[network] advertise`` saying
where it is reached, as the README's operator sets it up. Two clients of the client
library (a sender and a follower) run in a client host's namespace. Nothing is added to
the namespace the test runs in, and no packet goes anywhere but between the lab's hosts.

The scenario: 3 authorities (threshold 2) and 6 nodes (two swarms of 3) form a network;
the clients measure onion round trips and deliveries. Then one authority's cable is
pulled, one node is killed (SIGKILL) in the follower's swarm and another node's cable
pulled in the other swarm: the two remaining authorities sign a consensus without the
two nodes, every node adopts it, the swarm members left still serve every message
acknowledged before, and the clients' messages are still delivered, every one. The
cables go back in: the authority signs again and the node, listed again, serves by
anti-entropy what its swarm took while it was away.

Beside the lab's figures the test measures the same ones on a loopback devnet of the
same shape in the same run (``veil devnet``: every process on 127.0.0.1) and prints
both, with the time from the loss to a consensus without it (the table is printed
whatever pytest captures; the figures are also recorded as properties of the test for
the JUnit report). Only delivery is asserted; timings are reported, never judged
(``./scripts/bench`` measures performance). What the figures show after a silent loss:
a request whose reply was to come back through the lost node waits until the client
installs a consensus without that node, which ends the wait and sends the request again
on another path (client/onion_client.py, "Nodes that leave"); before that, the
follower's long-poll in flight at the loss held the next message until the client's
limit for a long-poll try (45 s), and "delivery max" after the loss was 21-31 s.

Needs root and iproute2 and a kernel that allows network namespaces, bridges and veth
pairs; elsewhere the test is skipped with the reason (the failing command and its
error). Waits poll with deadlines.
"""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import trio

from veil.client.veil_client import VeilClient, open_client
from veil.onion import rpc
from veil.onion.directory import (
    Authority,
    Consensus,
    NetworkFile,
    split_consensus,
    verify_consensus,
)
from veil.onion.errors import VeilError
from veil.onion.keys import Account
from veil.onion.packet import Hop, build_packet

from .devnetutil import devnet
from .netnsutil import Host, Lab, NetnsThread, NetnsTrio, UnitFile, unavailable
from .nodeutil import REPO, now_ms, write_toml

pytestmark = pytest.mark.slow

T = TypeVar("T")
NODE_UNIT = UnitFile.read(REPO / "contrib/systemd/veil-node.service")
AUTHORITY_UNIT = UnitFile.read(REPO / "contrib/systemd/veil-authority.service")
#: The ports the units listen on (``0.0.0.0:PORT``), which the network then uses.
NODE_PORT = int(NODE_UNIT.environment()["VEIL_NODE_LISTEN"].rpartition(":")[2])
AUTHORITY_PORT = int(AUTHORITY_UNIT.environment()["VEIL_AUTHORITY_LISTEN"].rpartition(":")[2])
AUTHORITIES = 3
THRESHOLD = 2
NODES = 6
SWARM_SIZE = 3
#: The lab's consensus interval and liveness timeout: the devnet's interval and the
#: authority's default check_timeout, which a cut-off authority's requests run into
#: (each peer's signature is merged as it arrives, node/authority/epochs.py, so the two
#: remaining authorities sign every epoch while it is fresh).
LAB_INTERVAL_MS = 1000
CHECK_TIMEOUT_S = 5.0
#: The loopback devnet's (nothing is lost there: the usual test interval).
LOOPBACK_INTERVAL_MS = 1000
#: Round trips and messages measured in each phase.
PINGS = 30
MESSAGES = 10
#: How long a message may take to reach the follower. After a silent loss, the
#: follower's long-poll in flight may have had its reply on a path through a lost
#: relay; the client gives that try up when it installs a consensus without the relay
#: (client/onion_client.py, "Nodes that leave"), which the test waits for before it
#: measures, and polls again on another path: a delivery takes milliseconds, as before
#: the loss. 10 s is room for a loaded machine, and far under the long-poll try's limit
#: (LONG_POLL_MIN_TIMEOUT_S, 45 s), which a try left to run out would take.
DELIVERY_DEADLINE_S = 10.0
#: The whole test's budget (s); each wait gets what is left, at most WAIT.
BUDGET = 300.0
WAIT = 60.0
AUTHORITY_CONFIG = {
    "authority": {
        "interval_ms": LAB_INTERVAL_MS,
        "swarm_size": SWARM_SIZE,
        "check_timeout": CHECK_TIMEOUT_S,
    }
}
#: What both networks' nodes share (the devnet's own anti-entropy interval).
NODE_TABLES = {"replication": {"sync_interval": 1.0}}


def node_config(network_file: Path, address: str) -> dict[str, dict[str, Any]]:
    return {
        **NODE_TABLES,
        "network": {
            "file": str(network_file),
            "advertise": f"{address}:{NODE_PORT}",
            "retry_interval": 0.2,
        },
        # Every node and the clients share one /24: one address each, none of them NATed,
        # but the limit is not what this test is about.
        "rate_limit": {"exempt": ["10.231.0.0/24"]},
        # The test reads a node's counters from the lab's own namespace, as an
        # operator's scraper on the private network would.
        "http": {"metrics_allow": ["10.231.0.0/24"]},
    }


# --- figures --------------------------------------------------------------------------------


@dataclass
class Figures:
    """What one phase measured, in milliseconds."""

    rtt_ms: list[float] = field(default_factory=list)
    floor_ms: list[float] = field(default_factory=list)
    delivery_ms: list[float] = field(default_factory=list)
    sent: int = 0
    delivered: int = 0
    hashes: set[bytes] = field(default_factory=set)

    def row(self) -> dict[str, float]:
        return {
            "onion round trip p50 (ms)": percentile(self.rtt_ms, 50),
            "onion round trip p90 (ms)": percentile(self.rtt_ms, 90),
            "onion round trip max (ms)": percentile(self.rtt_ms, 100),
            "plain GET /info p50 (ms)": percentile(self.floor_ms, 50),
            "delivery p50 (ms)": percentile(self.delivery_ms, 50),
            "delivery max (ms)": percentile(self.delivery_ms, 100),
            "delivered (%)": 100.0 * self.delivered / max(1, self.sent),
        }


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (NaN for no values)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * p / 100)) - 1]


class Probe:
    """A sender and a follower (the client library), measuring as ``./scripts/bench
    client`` does: ``ping`` round trips over the default path beside a plain GET, and
    the time from ``send`` returning to the follower's iterator yielding the message."""

    def __init__(self, sender: VeilClient, follower: VeilClient) -> None:
        self.sender = sender
        self.follower = follower
        self.arrived: dict[bytes, float] = {}
        self._events: dict[bytes, trio.Event] = {}

    async def follow(self) -> None:
        async for message in self.follower.messages():
            self.arrived[message.hash] = time.perf_counter()
            self._events.setdefault(message.hash, trio.Event()).set()

    async def measure(self, targets: list[bytes], floor_url: str) -> Figures:
        """Round trips to ``targets`` (node IDs), GETs of ``floor_url``, then messages."""
        figures = Figures()
        async with httpx.AsyncClient(trust_env=False, timeout=10.0) as http:
            for i in range(PINGS + 3):  # the first three warm up
                t0 = time.perf_counter()
                await self.sender.ping(targets[i % len(targets)])
                t1 = time.perf_counter()
                (await http.get(floor_url)).raise_for_status()
                if i >= 3:
                    figures.rtt_ms.append((t1 - t0) * 1000)
                    figures.floor_ms.append((time.perf_counter() - t1) * 1000)
        for i in range(MESSAGES):
            sent = await self.sender.send(self.follower.account_id, f"m{i}", ttl_s=3600)
            t1 = time.perf_counter()
            figures.sent += 1
            figures.hashes.add(sent.hash)
            event = self._events.setdefault(sent.hash, trio.Event())
            with trio.move_on_after(DELIVERY_DEADLINE_S):
                await event.wait()
            if event.is_set():
                figures.delivered += 1
                figures.delivery_ms.append((self.arrived[sent.hash] - t1) * 1000)
        return figures

    async def holds_without(self, gone: set[bytes]) -> bool:
        """Whether both clients' consensus has dropped the nodes ``gone``."""
        return all(
            not gone & {n.node_id for n in c.consensus.nodes} for c in (self.sender, self.follower)
        )


@contextlib.asynccontextmanager
async def open_probe(home: Path, network_file: Path, follower: Account) -> AsyncIterator[Probe]:
    async with (
        open_client(home / "sender", network_file, account=Account.generate()) as s,
        open_client(home / "follower", network_file, account=follower) as f,
        trio.open_nursery() as nursery,
    ):
        probe = Probe(s, f)
        nursery.start_soon(probe.follow)
        yield probe
        nursery.cancel_scope.cancel()


async def run_probe(home: Path, network_file: Path, follower: Account, *, task_status: Any) -> None:
    """A probe for :meth:`NetnsTrio.start`: open until the loop is closed."""
    async with open_probe(home, network_file, follower) as probe:
        task_status.started(probe)
        await trio.sleep_forever()


def loopback_figures(root: Path) -> Figures:
    """The same measurement on a loopback devnet of the same shape (stopped after)."""
    with devnet(
        root,
        nodes=NODES,
        swarm_size=SWARM_SIZE,
        authorities=AUTHORITIES,
        threshold=THRESHOLD,
        interval_ms=LOOPBACK_INTERVAL_MS,
        node_config=NODE_TABLES,
        name="loopback",
    ) as net:
        consensus = net.consensus()

        async def measure() -> Figures:
            async with open_probe(
                root / "loopback-clients", net.network_file, Account.generate()
            ) as p:
                return await p.measure(
                    [n.node_id for n in consensus.nodes], f"{net.node(0).url}/info"
                )

        return trio.run(measure)


def report(
    record_property: Callable[[str, object], None],
    capsys: pytest.CaptureFixture[str],
    phases: dict[str, Figures],
    recovery_s: float,
) -> None:
    rows = {name: figures.row() for name, figures in phases.items()}
    names = list(rows)
    lines = [
        f"network namespaces: {AUTHORITIES} authorities (threshold {THRESHOLD}), {NODES} nodes "
        f"in swarms of {SWARM_SIZE}, a host each; {PINGS} round trips, {MESSAGES} messages",
        f"{'figure':<28}" + "".join(f"{n:>16}" for n in names) + f"{'lab/loopback':>14}",
    ]
    for figure in rows[names[0]]:
        values = [rows[n][figure] for n in names]
        ratio = values[0] / values[-1] if values[-1] else float("nan")
        lines.append(f"{figure:<28}" + "".join(f"{v:>16.2f}" for v in values) + f"{ratio:>14.2f}")
    lines.append(
        f"consensus without the lost authority and nodes {recovery_s:.1f} s after the loss"
    )
    for name, row in rows.items():
        for figure, value in row.items():
            record_property(f"{name}: {figure}", round(value, 3))
    record_property("recovery (s)", round(recovery_s, 2))
    with capsys.disabled():
        print("\n" + "\n".join(lines))


# --- the lab --------------------------------------------------------------------------------


class Member:
    """An authority or node process in its host, and what it wrote about itself."""

    def __init__(self, host: Host, root: Path, unit: UnitFile, info_file: str) -> None:
        self.host = host
        self.root = root  # the host's file system
        self.unit = unit
        self.info_file = info_file
        self.argv = unit.command(
            {"/opt/veil": sys.prefix, "/etc/veil": root / "etc/veil", "/var/lib": root / "var/lib"}
        )
        self.data_dir = Path(self.argv[self.argv.index("--data-dir") + 1])
        self.config = Path(self.argv[self.argv.index("--config") + 1])
        self.config.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = root / "journal.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.doc: dict[str, Any] = {}

    @property
    def port(self) -> int:
        return int(self.doc["port"])

    @property
    def url(self) -> str:
        return f"http://{self.host.address}:{self.port}"

    def hop(self) -> Hop:
        return Hop(self.node_id, bytes.fromhex(self.doc["onion_key"]), self.host.address, self.port)

    @property
    def node_id(self) -> bytes:
        return bytes.fromhex(self.doc["node_id"])

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Scenario:
    """The lab, its processes, and the client host's thread, with a budget for waits."""

    def __init__(self, lab: Lab, inside: NetnsThread) -> None:
        self.lab = lab
        self.inside = inside
        self.deadline = time.monotonic() + BUDGET
        self.members: list[Member] = []
        self.http: httpx.Client = inside.call(lambda: httpx.Client(trust_env=False, timeout=5.0))
        self.network: NetworkFile | None = None
        #: Why the last consensus fetched was refused (for a wait that times out).
        self.last_error = ""

    def spawn(self, member: Member) -> None:
        """Run the member's unit command line in its host, as systemd would."""
        self.members.append(member)
        member.process = self.lab.spawn(
            member.host, member.argv, member.log_path, cwd=Path("/"), env=member.unit.environment()
        )

    def started(self, member: Member) -> None:
        """Wait for the member's info file, naming the process it started."""
        process = member.process
        assert process is not None

        def ready() -> dict[str, Any] | None:
            if process.poll() is not None:
                raise AssertionError(f"exited with {process.returncode}\n{member.log_tail()}")
            try:
                doc = json.loads((member.data_dir / member.info_file).read_text())
            except (FileNotFoundError, ValueError):
                return None
            return doc if doc.get("pid") == process.pid else None

        member.doc = self.wait(f"{member.host.name} to start", ready)

    def wait(self, what: str, check: Callable[[], T | None]) -> T:
        """Poll ``check`` until it returns something truthy (within the budget)."""
        until = min(time.monotonic() + WAIT, self.deadline)
        while True:
            found = check()
            if found:
                return found
            if time.monotonic() > until:
                tails = "\n".join(f"--- {m.host.name}\n{m.log_tail()}" for m in self.members)
                raise AssertionError(f"timed out waiting for {what} ({self.last_error})\n{tails}")
            time.sleep(0.2)

    # --- from inside the client host -------------------------------------------------

    def consensus_document(self, authority: int = 0) -> bytes | None:
        network = self.network
        assert network is not None
        entry = network.authorities[authority]

        def fetch() -> bytes | None:
            try:
                r = self.http.get(f"http://{entry.host}:{entry.port}/consensus")
            except httpx.HTTPError:
                return None
            return r.content if r.status_code == 200 else None

        return self.inside.call(fetch)

    def consensus(self) -> Consensus | None:
        network = self.network
        assert network is not None
        raw = self.consensus_document()
        if raw is None:
            return None
        try:
            return verify_consensus(
                raw, pinned=network.pinned_keys, threshold=THRESHOLD, now_ms=now_ms()
            )
        except VeilError as exc:
            self.last_error = f"consensus of {network.authorities[0].host}: {exc}"
            return None  # forming: no node listed yet, or not a threshold of signatures

    def epoch_of(self, member: Member) -> int | None:
        def get() -> int | None:
            try:
                doc = self.http.get(f"{member.url}/info", timeout=2.0).json()
            except (httpx.HTTPError, ValueError):
                return None
            epoch = doc.get("epoch")
            return epoch if isinstance(epoch, int) else None

        return self.inside.call(get)

    def metric(self, member: Member, name: str) -> float:
        """The sum of a counter's samples in ``member``'s ``GET /metrics``."""

        def get() -> str:
            r = self.http.get(f"{member.url}/metrics")
            r.raise_for_status()
            return r.text

        lines = self.inside.call(get).splitlines()
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name))

    def answers(self, member: Member) -> bool:
        return self.epoch_of(member) is not None

    def rpc(self, path: list[Hop], request: bytes) -> dict[str, Any]:
        """A storage request through ``path``; the reply's result (raises its error)."""

        def send() -> rpc.Reply:
            packet, opener = build_packet(path, request, now_ms=now_ms())
            entry = path[0]
            r = self.http.post(
                f"http://{entry.host}:{entry.port}/onion", content=packet, timeout=30.0
            )
            assert r.status_code == 200, r.text
            return rpc.decode_reply(opener.open(r.content))

        return self.inside.call(send).raise_for_status()

    def store(self, path: list[Hop], account: Account, data: bytes) -> bytes:
        request = rpc.make_store(account.id, data, 3_600_000, now_ms=now_ms())
        result = rpc.StoreResult.from_wire(self.rpc(path, request))
        assert result.created
        return result.hash

    def held(self, path: list[Hop], account: Account) -> set[bytes]:
        result = rpc.RetrieveResult.from_wire(
            self.rpc(path, rpc.make_retrieve(account, now_ms=now_ms()))
        )
        assert not result.more
        return {m.hash for m in result.messages}

    def held_or_none(self, path: list[Hop], account: Account) -> set[bytes] | None:
        try:
            return self.held(path, account)
        except (VeilError, AssertionError, httpx.HTTPError):
            return None  # not listed again yet, not adopted yet, ...


def listing(scenario: Scenario, present: list[Member], absent: list[Member]) -> Consensus:
    """Wait for a consensus (signed by a threshold of authorities) listing ``present``
    and none of ``absent``, then for every node of ``present`` to hold it (or a later
    one)."""
    want = {m.node_id for m in present}
    gone = {m.node_id for m in absent}

    def check() -> Consensus | None:
        c = scenario.consensus()
        if c is None:
            return None
        ids = {n.node_id for n in c.nodes}
        return c if want <= ids and not (gone & ids) else None

    names = ", ".join(m.host.name for m in present)
    gone_names = ", ".join(m.host.name for m in absent) or "-"
    c = scenario.wait(f"a consensus with [{names}], without [{gone_names}]", check)
    for member in present:
        scenario.wait(
            f"{member.host.name} to adopt epoch {c.epoch}",
            lambda m=member: (scenario.epoch_of(m) or -1) >= c.epoch,
        )
    return c


def signers(scenario: Scenario) -> set[bytes]:
    """The keys that signed the consensus authority 0 serves now."""
    raw = scenario.consensus_document()
    assert raw is not None
    return {s.key for s in split_consensus(raw)[1]}


def test_a_network_loses_an_authority_and_two_nodes_and_carries_on(
    tmp_path: Path,
    record_property: Callable[[str, object], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    loopback = loopback_figures(tmp_path)
    with Lab() as lab:
        auth_hosts = [lab.add_host(f"a{i}", 1 + i) for i in range(AUTHORITIES)]
        node_hosts = [lab.add_host(f"n{i}", 11 + i) for i in range(NODES)]
        client_host = lab.add_host("client", 100)
        with NetnsThread(client_host.netns) as inside:
            scenario = Scenario(lab, inside)
            try:
                with NetnsTrio(client_host.netns) as clients:
                    lab_phases, recovery_s, killed = run_scenario(
                        scenario, clients, auth_hosts, node_hosts, tmp_path
                    )
            finally:
                inside.call(scenario.http.close)
        codes = lab.stop_all()
        # The node killed on purpose aside, every process stopped cleanly.
        assert codes.pop(killed) == -9
        assert set(codes.values()) == {0}, "\n".join(
            f"--- {m.host.name}\n{m.log_tail()}" for m in scenario.members
        )
    assert lab.leftovers() == []
    report(record_property, capsys, {**lab_phases, "loopback": loopback}, recovery_s)


def run_scenario(
    scenario: Scenario,
    clients: NetnsTrio,
    auth_hosts: list[Host],
    node_hosts: list[Host],
    root: Path,
) -> tuple[dict[str, Figures], float, int]:
    """The scenario of the module docstring: the lab's figures before and after the
    loss, the seconds from the loss to a consensus without it, the killed node's pid."""
    # --- the authorities: keys first (veil-node authority-init), then network.json
    auths = [Member(h, root / h.name, AUTHORITY_UNIT, "authority.json") for h in auth_hosts]
    keys = []
    for auth in auths:
        init = subprocess.run(
            [*auth.argv[:1], "authority-init", "--data-dir", str(auth.data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        keys.append(bytes.fromhex(json.loads(init.stdout)["key"]))
    network = NetworkFile(
        tuple(
            Authority(k, h.address, AUTHORITY_PORT) for k, h in zip(keys, auth_hosts, strict=True)
        ),
        THRESHOLD,
    )
    scenario.network = network
    network_file = root / "network.json"
    network_file.write_text(network.to_json())
    nodes = [Member(h, root / h.name, NODE_UNIT, "node.json") for h in node_hosts]
    for member in auths + nodes:
        (member.root / "etc/veil/network.json").write_text(network.to_json())
    for auth in auths:
        write_toml(auth.config, AUTHORITY_CONFIG)
    for node in nodes:
        write_toml(node.config, node_config(node.root / "etc/veil/network.json", node.host.address))
    # The README's step before starting a unit: `veil-node check` on its config.
    for member, extra in ((auths[0], ["--authority"]), (nodes[0], [])):
        listen = member.argv[member.argv.index("--listen") + 1]
        done = subprocess.run(
            [member.argv[0], "check", "--config", str(member.config), *extra, "--listen", listen],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0 and ": OK (" in done.stdout, done.stderr

    # --- the network forms
    for member in auths + nodes:
        scenario.spawn(member)
    for member in auths + nodes:
        scenario.started(member)
    formed = listing(scenario, nodes, [])
    assert len(formed.nodes) == NODES and len(formed.swarms) == 2
    assert {n.host for n in formed.nodes} == {h.address for h in node_hosts}
    scenario.wait("every authority to sign", lambda: signers(scenario) == set(keys))

    # --- the clients measure; each message is delivered
    follower = Account.generate()
    probe: Probe = clients.start(run_probe, root / "clients", network_file, follower)
    everyone = [n.node_id for n in nodes]
    before = clients.run(probe.measure, everyone, f"{nodes[0].url}/info")
    assert before.delivered == before.sent == MESSAGES

    # --- a message for an account of the other swarm, through a three-hop path
    home = formed.swarm_of(follower.id)
    other = next(s for s in formed.swarms.values() if s.swarm_id != home.swarm_id)
    by_id = {n.node_id: n for n in nodes}
    account = Account.generate()
    while formed.swarm_of(account.id).swarm_id != other.swarm_id:
        account = Account.generate()
    victim, dead = by_id[other.members[0].node_id], by_id[home.members[0].node_id]
    relays = [n for n in nodes if n not in (victim, dead)]
    first = scenario.store([relays[0].hop(), relays[1].hop(), victim.hop()], account, b"first")
    for node_id in other.node_ids:
        assert scenario.held([by_id[node_id].hop()], account) == {first}

    # --- the loss: an authority's cable, a node killed, another node's cable
    lost_authority = auths[-1]
    loss_at = time.monotonic()
    scenario.lab.cut(lost_authority.host)
    assert dead.process is not None
    dead.process.kill()
    scenario.lab.cut(victim.host)
    assert not scenario.answers(victim)  # the cut is real: no answer from it
    alive = [n for n in nodes if n not in (victim, dead)]
    after_loss = listing(scenario, alive, [victim, dead])
    recovery_s = time.monotonic() - loss_at
    # Signed by the two authorities left, and by them alone.
    remaining = set(keys[:-1])
    assert signers(scenario) == remaining
    raw = scenario.consensus_document()
    assert raw is not None
    verify_consensus(raw, pinned=remaining, threshold=THRESHOLD, now_ms=now_ms())
    assert after_loss.epoch > formed.epoch
    # Every message acknowledged before is still served by the members left.
    for node_id in home.node_ids:
        if node_id != dead.node_id:
            assert before.hashes <= scenario.held([by_id[node_id].hop()], follower)
    for node_id in other.node_ids:
        if node_id != victim.node_id:
            assert scenario.held([by_id[node_id].hop()], account) == {first}

    # --- the clients carry on: every message delivered
    gone = {victim.node_id, dead.node_id}
    scenario.wait(
        "the clients to drop the lost nodes", lambda: clients.run(probe.holds_without, gone)
    )
    after = clients.run(probe.measure, [n.node_id for n in alive], f"{alive[0].url}/info")
    assert after.delivered == after.sent == MESSAGES
    keepers = [by_id[i] for i in other.node_ids if i != victim.node_id]
    away = {
        scenario.store([alive[i].hop(), keepers[i % 2].hop()], account, f"away {i}".encode())
        for i in range(len(alive))
    }

    # --- the cables go back in: the authority signs again; the node, listed again,
    # serves what its swarm took while it was away (it pulled it: anti-entropy)
    scenario.lab.rejoin(lost_authority.host)
    scenario.lab.rejoin(victim.host)
    back = [n for n in nodes if n is not dead]
    listing(scenario, back, [dead])
    scenario.wait("all three authorities to sign again", lambda: signers(scenario) == set(keys))
    rejoined = scenario.consensus()
    assert rejoined is not None
    # A returning node joins the smallest swarm (swarm.py), which may be either: it
    # must serve the accounts of the one it is in now.
    entry = rejoined.node(victim.node_id)
    assert entry is not None
    if rejoined.swarm_of(account.id).swarm_id == entry.swarm_id:
        whose, expected, had = account, {first} | away, {first}
    else:
        whose, expected, had = follower, before.hashes | after.hashes, set()
    scenario.wait(
        "the rejoined node to serve what its swarm took while it was away",
        lambda: (scenario.held_or_none([alive[0].hop(), victim.hop()], whose) or set()) >= expected,
    )
    pulled = scenario.metric(victim, "veil_replication_pulled_total")
    assert pulled >= len(expected - had)
    assert dead.process is not None
    return {"lab": before, "lab, after loss": after}, recovery_s, dead.process.pid
