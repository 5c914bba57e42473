"""Who may fill an authority's registry: floods of forged descriptors against a real one.

A descriptor costs nothing to forge (a fresh key signs it, for any address), so these
tests post hundreds of them, for random identities at dead addresses, to a real
authority process (tests/authorityutil.py) with a small registry and a short check
period, and show that real nodes are not harmed: they still register and get into the
consensus, the dead entries leave after ``max_failed_checks`` failed checks, one source
gets no more than ``max_per_source`` places, and no identity can take a live node's
address:port. The rules are in node/authority/registry.py and liveness.py.

The first tests drive the registry of a :class:`DirectoryAuthority` in process (no
network), for the rules honest nodes rely on: renewals, a live node's address change, a
node whose keys were recreated at its address. Waits poll with a deadline; nothing
asserts on timing.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import httpx

from veil.node.authority import DirectoryAuthority
from veil.node.config import AuthorityConfig, NodeConfig
from veil.onion.directory import Authority as PinnedAuthority
from veil.onion.directory import NetworkFile, make_descriptor, parse_descriptor
from veil.onion.keys import NodeKeys

from .authorityutil import (
    AuthorityHandle,
    make_network,
    node_config,
    start_authority,
    wait_for,
    wait_for_consensus,
)
from .nodeutil import node_process, now_ms

#: A loopback address nothing listens on: a check of a descriptor there fails at once
#: (connection refused), as for a dead host that answers with resets.
DEAD_HOST = "127.0.0.2"


def forged(host: str = DEAD_HOST, port: int = 9, keys: NodeKeys | None = None) -> bytes:
    """A valid self-signed descriptor for a fresh identity (or ``keys``) at host:port."""
    return make_descriptor(keys or NodeKeys.generate(), host, port, "0.1.0", now_ms())


def post_all(
    authority: AuthorityHandle, descriptors: list[bytes], *, source: str = "127.0.0.1"
) -> list[httpx.Response]:
    """POST each descriptor from the local address ``source`` (the authority's peer)."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=10) as client:
        return [client.post(f"{authority.url}/descriptor", content=d) for d in descriptors]


def flood(count: int, *, first_port: int = 1000) -> list[bytes]:
    """``count`` descriptors for random identities, each at its own dead address:port."""
    return [forged(port=first_port + i) for i in range(count)]


def ids(consensus: object) -> set[str]:
    return {n.node_id_hex for n in consensus.nodes}  # type: ignore[attr-defined]


def stop(handle: AuthorityHandle) -> None:
    code = handle.stop()
    assert code == 0, handle.log_text()


# --- the registry's rules, in process ------------------------------------------------------


def local_authority(tmp_path: Path, **authority: object) -> DirectoryAuthority:
    keys = NodeKeys.generate()
    network = NetworkFile((PinnedAuthority(keys.identity_public, "127.0.0.1", 1),), 1)
    config = NodeConfig(authority=AuthorityConfig(**authority))  # type: ignore[arg-type]
    return DirectoryAuthority(keys=keys, network=network, config=config, data_dir=tmp_path)


def register(a: DirectoryAuthority, raw: bytes, source: str | None = "192.0.2.1") -> int:
    return a.register(parse_descriptor(raw, now_ms=now_ms()), raw, source).status


def pass_check(a: DirectoryAuthority, raw: bytes) -> None:
    """What a passing check records (liveness.py)."""
    reg = a.registry[parse_descriptor(raw, now_ms=now_ms()).node_id]
    reg.live, reg.last_ok_ms, reg.failures, reg.checked_ms = True, now_ms(), 0, now_ms()


def fail_check(a: DirectoryAuthority, raw: bytes) -> None:
    reg = a.registry[parse_descriptor(raw, now_ms=now_ms()).node_id]
    reg.live, reg.failures, reg.checked_ms = False, reg.failures + 1, now_ms()


def test_honest_renewals_and_moves_pass_every_limit(tmp_path: Path) -> None:
    a = local_authority(tmp_path, max_descriptors=2, max_per_source=1)
    keys = NodeKeys.generate()
    first = make_descriptor(keys, "192.0.2.10", 4000, "0.1.0", now_ms() - 2000)
    assert register(a, first) == 200
    pass_check(a, first)
    # Its source is at its share and the registry is full of live nodes: a renewal, and
    # a move to another address, are not new registrations.
    other = forged("192.0.2.11", 4000)
    assert register(a, other, source="192.0.2.2") == 200
    pass_check(a, other)
    renewal = make_descriptor(keys, "192.0.2.10", 4000, "0.1.0", now_ms() - 1000)
    assert register(a, renewal) == 200
    moved = make_descriptor(keys, "192.0.2.12", 4001, "0.1.0", now_ms())
    assert register(a, moved, source="198.51.100.7") == 200
    assert a.by_address == {
        ("192.0.2.12", 4001): keys.identity_public,
        ("192.0.2.11", 4000): parse_descriptor(other, now_ms=now_ms()).node_id,
    }
    assert a.per_source == Counter({"192.0.2.1": 1, "192.0.2.2": 1})
    # The old address is free again; a full registry of live nodes still refuses.
    assert register(a, forged("192.0.2.10", 4000), source="192.0.2.3") == 503


def test_a_node_whose_keys_were_recreated_takes_its_address_back(tmp_path: Path) -> None:
    a = local_authority(tmp_path)
    old = forged("192.0.2.10", 4000)
    assert register(a, old) == 200
    pass_check(a, old)
    new = forged("192.0.2.10", 4000)
    assert register(a, new, source="192.0.2.9") == 409  # the holder is live
    fail_check(a, old)  # the node there now answers with its new keys
    assert register(a, new, source="192.0.2.9") == 200
    assert list(a.registry) == [parse_descriptor(new, now_ms=now_ms()).node_id]
    assert a.per_source == Counter({"192.0.2.9": 1})


def test_saved_descriptors_are_not_evicted_before_their_first_check(tmp_path: Path) -> None:
    a = local_authority(tmp_path, max_descriptors=1)
    saved = forged("192.0.2.10", 4000)
    assert register(a, saved, source=None) == 200  # as load_saved registers
    assert register(a, forged("192.0.2.11", 4000)) == 503
    fail_check(a, saved)
    assert register(a, forged("192.0.2.11", 4000)) == 200


# --- floods against a real authority --------------------------------------------------------


#: The authority of the flood tests: a one-second consensus, checks every 200 ms, a
#: registry of 40, and loopback held to the per-source share like any address.
FLOOD_CONFIG = {
    "authority": {
        "check_interval_ms": 200,
        "max_descriptors": 40,
        "max_failed_checks": 3,
        "per_source_exempt": [],
    },
}


def test_a_flood_of_dead_descriptors_fills_nothing_for_long(tmp_path: Path) -> None:
    """Three hundred dead descriptors from one source into a registry of 40 (the source
    may hold them all): a genuine node still registers and gets into the consensus, and
    every dead entry leaves after three failed checks."""
    net = make_network(tmp_path / "net", count=1)
    config = {"authority": {**FLOOD_CONFIG["authority"], "max_per_source": 1000}}
    handle = start_authority(net, 0, config=config)
    try:
        responses = post_all(handle, flood(300))
        assert {r.status_code for r in responses} <= {200, 503}
        assert handle.info()["nodes"] <= 40
        with node_process(tmp_path / "real", config=node_config(net)) as real:
            c = wait_for_consensus(net, lambda c: real.node_id in ids(c))
            assert c.node(real.node_id) is not None
            # The dead entries leave; the live node stays.
            wait_for("the dead entries to leave", lambda: handle.info()["nodes"] == 1)
            assert real.node_id in ids(wait_for_consensus(net, lambda x: x.epoch > c.epoch))
        log = handle.log_text()
        assert "node_dropped" in log
        dropped = re.findall(r"node_dropped.*?failed_checks=(\d+)", log)
        assert dropped and set(dropped) == {"3"}, dropped
    finally:
        stop(handle)


def test_one_source_gets_only_its_share(tmp_path: Path) -> None:
    """A source holds at most max_per_source registrations: the rest of its flood is
    refused, while other sources and a genuine node still register."""
    net = make_network(tmp_path / "net", count=1)
    # Checks a minute apart: the flood's entries fail only their first check while the
    # test runs, so none leaves (and frees its place) before the count below.
    config = {
        "authority": {
            **FLOOD_CONFIG["authority"],
            "max_per_source": 10,
            "check_interval_ms": 60_000,
        }
    }
    handle = start_authority(net, 0, config=config)
    try:
        responses = post_all(handle, flood(60), source=DEAD_HOST)
        codes = Counter(r.status_code for r in responses)
        assert codes == Counter({200: 10, 429: 50}), codes
        refused = next(r for r in responses if r.status_code == 429)
        assert refused.text.startswith("rate_limited:")
        assert handle.info()["nodes"] == 10
        # Another source is not held to the first one's share.
        assert post_all(handle, [forged(port=2000)], source="127.0.0.3")[0].status_code == 200
        with node_process(tmp_path / "real", config=node_config(net)) as real:
            wait_for_consensus(net, lambda c: real.node_id in ids(c))
    finally:
        stop(handle)


def test_no_identity_can_take_a_live_nodes_address(tmp_path: Path) -> None:
    """A second identity claiming a live node's address:port is refused and the node
    stays listed; a full registry makes room from dead entries, never from it."""
    net = make_network(tmp_path / "net", count=1)
    # Dead entries stay (a thousand failed checks): the test counts them.
    config = {
        "authority": {
            **FLOOD_CONFIG["authority"],
            "max_descriptors": 2,
            "max_failed_checks": 1000,
        }
    }
    handle = start_authority(net, 0, config=config)
    try:
        with node_process(tmp_path / "real", config=node_config(net)) as real:
            c = wait_for_consensus(net, lambda c: real.node_id in ids(c))
            squat = post_all(handle, [forged(real.host, real.port)])[0]
            assert squat.status_code == 409, squat.text
            assert squat.text.startswith("conflict:")
            # The registry is full with one dead entry; each new one takes its place.
            for port in (3000, 3001, 3002):
                r = post_all(handle, [forged(port=port)])[0]
                assert r.status_code == 200, r.text
            assert handle.info()["nodes"] == 2
            later = wait_for_consensus(net, lambda x: x.epoch > c.epoch + 1)
            assert ids(later) == {real.node_id}
    finally:
        stop(handle)


def test_saved_dead_entries_leave_after_a_restart_and_live_nodes_stay(tmp_path: Path) -> None:
    """The registry is saved to disk: dead entries saved with it are checked again after
    a restart and leave after max_failed_checks failed checks, while the live node saved
    with them stays listed."""
    net = make_network(tmp_path / "net", count=1)
    keep = {"authority": {**FLOOD_CONFIG["authority"], "max_failed_checks": 1000}}
    handle = start_authority(net, 0, config=keep)
    try:
        with node_process(tmp_path / "real", config=node_config(net)) as real:
            wait_for_consensus(net, lambda c: real.node_id in ids(c))
            responses = post_all(handle, flood(30))
            assert {r.status_code for r in responses} == {200}
            assert handle.info()["nodes"] == 31
            stop(handle)
            handle = start_authority(net, 0, config=FLOOD_CONFIG)
            assert handle.info()["nodes"] == 31  # the saved registry, dead entries too
            wait_for("the dead entries to leave", lambda: handle.info()["nodes"] == 1)
            c = wait_for_consensus(net, lambda c: real.node_id in ids(c))
            assert ids(c) == {real.node_id}
    finally:
        stop(handle)
