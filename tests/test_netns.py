"""A network of hosts with their own addresses, one of which is cut off and rejoins.

Every authority and node runs in its own Linux network namespace (a "host" with one
address of 10.231.0.0/24 on a private switch: tests/netnsutil.py), started with ``ip
netns exec HOST python -m veil.node ...``; the test talks to them from a thread inside a
client host's namespace. Nothing is added to the namespace the test runs in, and no
packet goes anywhere but between the lab's hosts.

The scenario: the network forms; a message is stored at one node (the *victim*); the
victim's cable is pulled at the switch; the authority's liveness checks fail and the
consensus drops it; the rest of its swarm still serves the message and takes new ones;
the cable goes back in; the victim is listed again and, by anti-entropy, serves the
messages stored while it was away.

Needs root and iproute2 and a kernel that allows network namespaces, bridges and veth
pairs; elsewhere the test is skipped with the reason (the failing command and its
error). Waits poll with deadlines; nothing asserts on timing.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from veil.onion import rpc
from veil.onion.directory import Authority, Consensus, NetworkFile, verify_consensus
from veil.onion.errors import VeilError
from veil.onion.keys import Account
from veil.onion.packet import Hop, build_packet

from .authorityutil import authority_init
from .netnsutil import Host, Lab, NetnsThread, unavailable
from .nodeutil import REPO, now_ms, write_toml

pytestmark = pytest.mark.slow

T = TypeVar("T")
#: Every process listens on this port of its own host's address.
PORT = 7000
NODES = 4
#: The whole test's budget (s); each wait gets what is left, at most WAIT.
BUDGET = 240.0
WAIT = 60.0
AUTHORITY_CONFIG = {
    "authority": {
        "interval_ms": 1000,
        "swarm_size": NODES,  # one swarm: every node holds every account
        "check_timeout": 2.0,
    }
}


def node_config(network_file: Path) -> dict[str, dict[str, Any]]:
    return {
        "network": {"file": str(network_file), "retry_interval": 0.2},
        # Every node and the client share one /24: one address each, none of them NATed,
        # but the limit is not what this test is about.
        "rate_limit": {"exempt": ["10.231.0.0/24"]},
        "replication": {"sync_interval": 0.5, "ack_timeout": 10.0},
    }


class Member:
    """An authority or node process in its host, and what it wrote about itself."""

    def __init__(self, host: Host, data_dir: Path) -> None:
        self.host = host
        self.data_dir = data_dir
        self.log_path = data_dir.with_name(data_dir.name + ".log")
        self.pid = 0
        self.doc: dict[str, Any] = {}

    @property
    def url(self) -> str:
        return f"http://{self.host.address}:{PORT}"

    def hop(self) -> Hop:
        return Hop(
            bytes.fromhex(self.doc["node_id"]),
            bytes.fromhex(self.doc["onion_key"]),
            self.host.address,
            PORT,
        )

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
    """The lab, its processes, and the client thread, with a budget for every wait."""

    def __init__(self, lab: Lab, inside: NetnsThread) -> None:
        self.lab = lab
        self.inside = inside
        self.deadline = time.monotonic() + BUDGET
        self.members: list[Member] = []
        self.http: httpx.Client = inside.call(lambda: httpx.Client(trust_env=False, timeout=5.0))
        self.network: NetworkFile | None = None

    def start(self, member: Member, args: list[str], info_file: str) -> None:
        """Run ``python -m veil.node ARGS`` in the member's host; wait for its info file."""
        self.members.append(member)
        process = self.lab.spawn(
            member.host, [sys.executable, "-m", "veil.node", *args], member.log_path, cwd=REPO
        )
        member.pid = process.pid

        def ready() -> dict[str, Any] | None:
            if process.poll() is not None:
                raise AssertionError(f"exited with {process.returncode}\n{member.log_tail()}")
            try:
                doc = json.loads((member.data_dir / info_file).read_text())
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
                raise AssertionError(f"timed out waiting for {what}\n{tails}")
            time.sleep(0.2)

    # --- from inside the client host -------------------------------------------------

    def consensus(self) -> Consensus | None:
        network = self.network
        assert network is not None

        def fetch() -> Consensus | None:
            authority = network.authorities[0]
            try:
                r = self.http.get(f"http://{authority.host}:{authority.port}/consensus")
            except httpx.HTTPError:
                return None
            if r.status_code != 200:
                return None
            return verify_consensus(
                r.content, pinned=network.pinned_keys, threshold=1, now_ms=now_ms()
            )

        return self.inside.call(fetch)

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
    """Wait for a consensus listing ``present`` and none of ``absent``, then for every
    node of ``present`` to hold it (or a later one)."""
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


def test_a_host_cut_off_is_dropped_and_catches_up_when_it_rejoins(tmp_path: Path) -> None:
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    with Lab() as lab:
        auth_host = lab.add_host("auth", 1)
        hosts = [lab.add_host(f"n{i}", 11 + i) for i in range(NODES)]
        client_host = lab.add_host("client", 100)
        with NetnsThread(client_host.netns) as inside:
            scenario = Scenario(lab, inside)
            try:
                run_scenario(scenario, auth_host, hosts, tmp_path)
            finally:
                inside.call(scenario.http.close)
        codes = lab.stop_all()
        assert set(codes.values()) == {0}, "\n".join(
            f"--- {m.host.name}\n{m.log_tail()}" for m in scenario.members
        )
    assert lab.leftovers() == []


def run_scenario(scenario: Scenario, auth_host: Host, hosts: list[Host], root: Path) -> None:
    # --- the network forms
    auth = Member(auth_host, root / "auth")
    key, _ = authority_init(auth.data_dir)
    scenario.network = NetworkFile((Authority(bytes.fromhex(key), auth_host.address, PORT),), 1)
    network_file = root / "network.json"
    network_file.write_text(scenario.network.to_json())
    auth_config = write_toml(root / "auth.toml", AUTHORITY_CONFIG)
    scenario.start(
        auth,
        [
            "authority",
            *("--data-dir", str(auth.data_dir), "--listen", f"{auth_host.address}:{PORT}"),
            *("--network", str(network_file), "--config", str(auth_config)),
        ],
        "authority.json",
    )
    nodes = [Member(host, root / host.name) for host in hosts]
    config = write_toml(root / "node.toml", node_config(network_file))
    for node in nodes:
        scenario.start(
            node,
            [
                "run",
                *("--data-dir", str(node.data_dir), "--listen", f"{node.host.address}:{PORT}"),
                *("--config", str(config)),
            ],
            "node.json",
        )
    formed = listing(scenario, nodes, [])
    assert len(formed.nodes) == NODES and len(formed.swarms) == 1
    assert {n.host for n in formed.nodes} == {h.address for h in hosts}

    # --- a message stored at the victim (through a three-hop path) reaches its swarm
    victim, others = nodes[-1], nodes[:-1]
    account = Account.generate()
    first = scenario.store([others[0].hop(), others[1].hop(), victim.hop()], account, b"first")
    for node in nodes:
        assert scenario.held([node.hop()], account) == {first}

    # --- the victim is cut off: the consensus drops it; its swarm serves on
    scenario.lab.cut(victim.host)
    assert not scenario.answers(victim)  # the cut is real: no answer from it
    listing(scenario, others, [victim])
    for node in others:
        assert scenario.held([node.hop()], account) == {first}
    away = {
        scenario.store([others[i - 1].hop(), others[i].hop()], account, f"away {i}".encode())
        for i in range(len(others))
    }
    everything = {first} | away
    for node in others:
        assert scenario.held([node.hop()], account) == everything
    assert not scenario.answers(victim)

    # --- the victim rejoins: listed again, it pulls what it missed
    scenario.lab.rejoin(victim.host)
    listing(scenario, nodes, [])
    scenario.wait(
        "the victim to serve the messages stored while it was away",
        lambda: scenario.held_or_none([others[0].hop(), victim.hop()], account) == everything,
    )
    # By anti-entropy: it pulled them (nothing was stored since, so nothing was pushed).
    assert scenario.metric(victim, "veil_replication_pulled_total") >= len(away)
    # And it relays again: a three-hop path through it to another member.
    assert scenario.held([victim.hop(), others[0].hop(), others[1].hop()], account) == everything
