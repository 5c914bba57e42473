"""The storage RPC in a network of swarms, and the node-to-node replication routes.

Against real processes on 127.0.0.1 (a devnet of 4 nodes in two swarms of 2, shared by
the module; one node alone for "no consensus yet"):

* a request for an account of another swarm is answered ``wrong_swarm`` with that
  swarm, and a client that follows it succeeds; ``get_swarm`` answers from any node;
* before its first consensus a node answers ``unavailable``;
* ``POST /replicate`` and ``/replicate/pull`` refuse garbage, oversize bodies, unknown
  senders, forged frames and signatures, stale frames, wrong hashes and accounts of
  another swarm with a 4xx and a typed status, and accept a correct push from a listed
  node; a pull answers only the asker's swarm's accounts.

Frames are forged here from the wire format's specification (onion/replication_frames.py's
module note), not with its private helpers, so the tests also pin the format down.

Also unit tests of the ``swarm`` schema of onion/rpc/, with hypothesis properties.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.authorityutil import make_network, node_config
from tests.devnetutil import devnet
from tests.nodeutil import now_ms, running_node
from tests.swarmutil import DAY_MS, account_in, call, read_hashes, settled, store
from veil.client.devnet import Devnet
from veil.node.keystore import load_or_create_keys
from veil.node.replication import ring_position, sync_scope
from veil.node.store import ReplicaMessage
from veil.onion import crypto, rpc
from veil.onion import replication_frames as wire
from veil.onion.cbor import encode
from veil.onion.directory import Consensus, ConsensusNode
from veil.onion.errors import SchemaError, Unavailable, VeilError, WrongSwarm
from veil.onion.keys import Account, NodeKeys
from veil.onion.packet import Hop


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    with devnet(tmp_path_factory.mktemp("swarms"), nodes=4, swarm_size=2) as running:
        running.wait_for_consensus(lambda c: len(c.swarms) == 2, what="two swarms")
        yield running


def other_swarm(consensus: Consensus, swarm_id: int) -> int:
    return next(sid for sid in consensus.swarms if sid != swarm_id)


def keys_of(net: Devnet, node: ConsensusNode) -> NodeKeys:
    """A devnet node's keys, read from its data dir (to forge frames as that node)."""
    keys, created = load_or_create_keys(net.node(node.node_id.hex()).data_dir)
    assert not created
    return keys


# --- wrong_swarm and get_swarm -----------------------------------------------------------


@pytest.mark.slow
async def test_wrong_swarm_names_the_swarm_and_a_client_that_follows_it_succeeds(
    net: Devnet,
) -> None:
    consensus = await settled(net)
    home_id = next(iter(consensus.swarms))
    home = consensus.swarms[home_id]
    stranger = consensus.swarms[other_swarm(consensus, home_id)].members[0].as_hop()
    alice = account_in(consensus, home_id)
    async with httpx.AsyncClient(trust_env=False) as client:
        reply = await call(
            client, stranger, rpc.make_store(alice.id, b"hi", DAY_MS, now_ms=now_ms())
        )
        assert reply.status == "wrong_swarm"
        assert abs(reply.t_ms - now_ms()) < 60_000  # every reply carries the node's time
        assert rpc.swarm_of_reply(reply) == rpc.SwarmInfo.of(home)
        with pytest.raises(rpc.SwarmMoved) as moved:
            reply.raise_for_status()
        assert isinstance(moved.value, WrongSwarm)

        # Follow it: store at the first member the reply names, read at the other.
        first, second = moved.value.swarm.members
        stored = await store(client, first.as_hop(), alice.id, b"hi")
        assert await read_hashes(client, second.as_hop(), alice) == {stored.hash}

        # Every account method is refused the same way by a node of the other swarm.
        t = now_ms()
        for request in (
            rpc.make_retrieve(alice, now_ms=t),
            rpc.make_delete(alice, [stored.hash], now_ms=t),
            rpc.make_delete_all(alice, namespace=None, now_ms=t),
            rpc.make_expire(alice, [stored.hash], t + DAY_MS, now_ms=t),
        ):
            refused = await call(client, stranger, request)
            assert refused.status == "wrong_swarm"
            assert rpc.swarm_of_reply(refused) == rpc.SwarmInfo.of(home)
        # ... and nothing was deleted.
        assert await read_hashes(client, first.as_hop(), alice) == {stored.hash}


@pytest.mark.slow
async def test_deletes_and_expiries_reach_every_member(net: Devnet) -> None:
    consensus = await settled(net)
    a, b = next(iter(consensus.swarms.values())).members
    alice = account_in(consensus, a.swarm_id)
    async with httpx.AsyncClient(trust_env=False) as client:
        one = await store(client, a.as_hop(), alice.id, b"one")
        two = await store(client, a.as_hop(), alice.id, b"two")
        assert await read_hashes(client, b.as_hop(), alice) == {one.hash, two.hash}

        # An expiry changed at b is the expiry at a, as soon as b has answered.
        t = now_ms()
        expiry = t + 3_600_000
        reply = await call(client, b.as_hop(), rpc.make_expire(alice, [one.hash], expiry, now_ms=t))
        assert rpc.ExpireResult.from_wire(reply.raise_for_status()).updated == [one.hash]
        reply = await call(client, a.as_hop(), rpc.make_retrieve(alice, now_ms=now_ms()))
        held = rpc.RetrieveResult.from_wire(reply.raise_for_status()).messages
        assert {m.hash: m.expiry_ms for m in held}[one.hash] == expiry

        # A delete at b deletes at a; a delete_all at a empties b.
        reply = await call(client, b.as_hop(), rpc.make_delete(alice, [two.hash], now_ms=now_ms()))
        assert reply.ok
        assert await read_hashes(client, a.as_hop(), alice) == {one.hash}
        request = rpc.make_delete_all(alice, namespace=None, now_ms=now_ms())
        assert (await call(client, a.as_hop(), request)).ok
        assert await read_hashes(client, b.as_hop(), alice) == set()


async def pushes_received(client: httpx.AsyncClient, node: ConsensusNode) -> float:
    """How many pushes ``node`` has answered 200 (its /metrics), on links (method
    ``LINK``, since veil-link/3) and by ``POST /replicate`` (before a link is up)."""
    text = (await client.get(f"http://{node.host}:{node.port}/metrics")).text
    wanted = ('path="/replicate"', 'status="200"')
    methods = ('method="POST"', 'method="LINK"')
    total = 0.0
    for line in text.splitlines():
        if (
            line.startswith("veil_http_requests_total{")
            and all(w in line for w in wanted)
            and any(m in line for m in methods)
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.slow
async def test_concurrent_stores_share_pushes(net: Devnet) -> None:
    consensus = await settled(net)
    a, b = next(iter(consensus.swarms.values())).members
    accounts = [account_in(consensus, a.swarm_id) for _ in range(40)]
    async with httpx.AsyncClient(trust_env=False) as client:
        before = await pushes_received(client, b)
        results: dict[Account, rpc.StoreResult] = {}

        async def one(account: Account) -> None:
            results[account] = await store(client, a.as_hop(), account.id, b"burst")

        async with trio.open_nursery() as nursery:
            for account in accounts:
                nursery.start_soon(one, account)
        pushes = await pushes_received(client, b) - before
        # Every store was acknowledged, so b holds every message (the ack rule) ...
        for account, result in results.items():
            assert await read_hashes(client, b.as_hop(), account) == {result.hash}
        # ... and it took fewer pushes than stores: concurrent stores share a push.
        assert 1 <= pushes < len(accounts), pushes


@pytest.mark.slow
async def test_get_swarm_answers_from_any_node(net: Devnet) -> None:
    consensus = await settled(net)
    bob = Account.generate()
    expected = rpc.SwarmInfo.of(consensus.swarm_of(bob.id))
    async with httpx.AsyncClient(trust_env=False) as client:
        for i, node in enumerate(consensus.nodes):
            relay = consensus.nodes[(i + 1) % len(consensus.nodes)].as_hop()
            reply = await call(client, node.as_hop(), rpc.make_get_swarm(bob.id), relay=relay)
            result = rpc.parse_result("get_swarm", reply.raise_for_status())
            assert isinstance(result, rpc.GetSwarmResult)
            assert result.swarm == expected
            assert result.epoch >= consensus.epoch
            assert [h.node_id for h in result.swarm.hops] == [m.node_id for m in expected.members]


@pytest.mark.slow
async def test_unavailable_before_the_first_consensus(tmp_path: Path) -> None:
    # The network's authority never starts: the node never gets a consensus.
    network = make_network(tmp_path / "net", count=1)
    async with (
        running_node(tmp_path / "node", config=node_config(network)) as node,
        httpx.AsyncClient(trust_env=False) as client,
    ):
        alice = Account.generate()
        t = now_ms()
        for request in (
            rpc.make_store(alice.id, b"hi", DAY_MS, now_ms=t),
            rpc.make_retrieve(alice, now_ms=t),
            rpc.make_get_swarm(alice.id),
        ):
            reply = await call(client, node.hop(), request)
            assert reply.status == "unavailable", reply
            with pytest.raises(Unavailable):
                reply.raise_for_status()
        info = await call(client, node.hop(), rpc.make_info())
        assert info.ok
        r = await client.post(f"{node.url}/replicate", content=b"\xa0")
        assert r.status_code == 503 and r.text.startswith("unavailable:")


# --- the replication routes ------------------------------------------------------------------


def frame_of(
    sender: bytes, receiver: bytes, nonce: bytes, box: bytes, v: int = wire.FORMAT_VERSION
) -> bytes:
    return encode({"v": v, "from": sender, "to": receiver, "nonce": nonce, "box": box})


def box_length(size_class: int) -> int:
    """The box that makes a frame exactly ``size_class`` bytes (its other fields have
    fixed sizes; the box's CBOR length header is the same for both lengths)."""
    around = len(frame_of(bytes(32), bytes(32), bytes(24), bytes(size_class))) - size_class
    return size_class - around


def pad_inner(inner: bytes, *, pad_byte: int = 0) -> bytes:
    """``inner`` padded as the spec says: u32 length, inner, zeros up to the smallest
    class (``pad_byte`` in the last byte, to forge bad padding)."""
    size = next(
        box_length(c) - crypto.AEAD_TAG_BYTES
        for c in wire.SIZE_CLASSES
        if 4 + len(inner) <= box_length(c) - crypto.AEAD_TAG_BYTES
    )
    padded = len(inner).to_bytes(4, "big") + inner + bytes(size - 4 - len(inner))
    return padded[:-1] + bytes([pad_byte])


def forge_frame(
    *,
    onion_secret: bytes,
    sender: bytes,
    receiver: ConsensusNode,
    body: dict[str, Any],
    signer: NodeKeys,
    version: int = wire.FORMAT_VERSION,
    pad_byte: int = 0,
) -> bytes:
    """A frame built from the spec: ``body`` signed by ``signer``, padded to its class
    (not for version 1), boxed with the static X25519 key of ``onion_secret`` and
    ``receiver``'s onion key, claiming ``sender``."""
    body_bytes = encode(body)
    inner = encode({"body": body_bytes, "sig": signer.sign(b"replicate", body_bytes)})
    if version != 1:
        inner = pad_inner(inner, pad_byte=pad_byte)
    shared = crypto.x25519(onion_secret, receiver.onion_key)
    a, b = sorted((sender, receiver.node_id))
    key = crypto.kdf(shared, b"veil/replicate", context=a + b)
    nonce = os.urandom(24)
    ad = b"veil/replicate" + bytes([version]) + sender + receiver.node_id
    box = crypto.aead_seal(key, nonce, inner, ad)
    return frame_of(sender, receiver.node_id, nonce, box, version)


def push_body(
    sender: bytes, receiver: ConsensusNode, messages: list[ReplicaMessage], t: int
) -> dict[str, Any]:
    return {
        "kind": "push",
        "from": sender,
        "to": receiver.node_id,
        "t": t,
        "n": os.urandom(16),
        "messages": [
            {
                "a": m.account,
                "ns": m.namespace,
                "h": m.hash,
                "d": m.data,
                "ts": m.timestamp_ms,
                "exp": m.expiry_ms,
            }
            for m in messages
        ],
    }


def message_for(account: Account, data: bytes) -> ReplicaMessage:
    t = now_ms()
    h = rpc.message_hash(account.id, rpc.INBOX, data)
    return ReplicaMessage(account.id.x25519_public, rpc.INBOX, h, data, t, t + DAY_MS)


@pytest.mark.slow
async def test_replicate_refuses_bad_frames_and_accepts_a_listed_peers_push(net: Devnet) -> None:
    consensus = await settled(net)
    home_id = next(iter(consensus.swarms))
    receiver, peer = consensus.swarms[home_id].members  # same swarm
    outsider = consensus.swarms[other_swarm(consensus, home_id)].members[0]
    peer_keys = keys_of(net, peer)
    alice = account_in(consensus, home_id)
    carol = account_in(consensus, other_swarm(consensus, home_id))
    good = message_for(alice, b"replicated " + os.urandom(8))
    url = f"http://{receiver.host}:{receiver.port}/replicate"
    stranger = NodeKeys.generate()
    t = now_ms()

    def status(frame: bytes) -> tuple[int, str]:
        r = httpx.post(url, content=frame, timeout=10)
        return r.status_code, r.text

    def forged(**changes: Any) -> bytes:
        args: dict[str, Any] = {
            "onion_secret": peer_keys.onion_secret,
            "sender": peer.node_id,
            "receiver": receiver,
            "body": push_body(peer.node_id, receiver, [good], t),
            "signer": peer_keys,
        }
        args.update(changes)
        return forge_frame(**args)

    cases = {
        "not CBOR": (b"\xff\x00garbage", 400, "bad_request"),
        "not a frame": (encode({"v": 2}), 400, "bad_request"),
        "unsigned (no box)": (
            frame_of(peer.node_id, receiver.node_id, bytes(24), bytes(box_length(2048))),
            401,
            "unauthorized",
        ),
        "a length off the size classes": (
            frame_of(peer.node_id, receiver.node_id, bytes(24), bytes(2000)),
            400,
            "bad_request",
        ),
        "version 1 (unpadded: a node from before padding)": (forged(version=1), 400, "bad_request"),
        "a non-zero pad byte": (forged(pad_byte=1), 400, "bad_request"),
        "unknown sender": (
            wire.seal_push(stranger, receiver, [good], now_ms=t)[0],
            401,
            "unauthorized",
        ),
        "box not from the claimed sender": (
            forged(onion_secret=stranger.onion_secret),
            401,
            "unauthorized",
        ),
        "signature by another key": (forged(signer=stranger), 401, "unauthorized"),
        "for another node": (
            forged(receiver=outsider, body=push_body(peer.node_id, outsider, [good], t)),
            401,
            "unauthorized",
        ),
        "stale": (
            forged(body=push_body(peer.node_id, receiver, [good], t - 10 * 60_000)),
            406,
            "clock_skew",
        ),
        "wrong hash": (
            forged(
                body=push_body(
                    peer.node_id,
                    receiver,
                    [ReplicaMessage(good.account, 0, bytes(32), good.data, t, t + DAY_MS)],
                    t,
                )
            ),
            400,
            "bad_request",
        ),
        "TTL over the limit": (
            forged(
                body=push_body(
                    peer.node_id,
                    receiver,
                    [ReplicaMessage(good.account, 0, good.hash, good.data, t, t + 30 * DAY_MS)],
                    t,
                )
            ),
            400,
            "bad_request",
        ),
        "account of another swarm": (
            wire.seal_push(peer_keys, receiver, [message_for(carol, b"x")], now_ms=t)[0],
            421,
            "wrong_swarm",
        ),
    }
    for name, (frame, code, wire_status) in cases.items():
        got, text = await trio.to_thread.run_sync(status, frame)
        assert (got, text.split(":")[0]) == (code, wire_status), f"{name}: {got} {text}"

    oversize = await trio.to_thread.run_sync(status, b"\x00" * (wire.MAX_FRAME + 1))
    assert oversize[0] == 413

    # Forwarded client requests: only from a member of the swarm, only deletes and expiries.
    forward_url = f"http://{receiver.host}:{receiver.port}/replicate/forward"
    delete = rpc.make_delete(alice, [good.hash], now_ms=t)
    store_request = rpc.make_store(alice.id, b"x", DAY_MS, now_ms=t)
    forwards = {
        "from another swarm": (keys_of(net, outsider), delete, 401, "unauthorized"),
        "a store": (peer_keys, store_request, 400, "bad_request"),
    }
    for name, (keys, request, code, wire_status) in forwards.items():
        frame = wire.seal_forward(keys, receiver, request, now_ms=t)[0]
        r = await trio.to_thread.run_sync(lambda f=frame: httpx.post(forward_url, content=f))
        assert (r.status_code, r.text.split(":")[0]) == (code, wire_status), name

    # A correct push from a listed node of the swarm is stored, and serves the owner.
    frame, digest = wire.seal_push(peer_keys, receiver, [good], now_ms=now_ms())
    r = await trio.to_thread.run_sync(lambda: httpx.post(url, content=frame, timeout=10))
    assert r.status_code == 200
    ack = wire.open_pushed(r.content, peer_keys, receiver, digest, now_ms=now_ms())
    assert ack.stored == 1 and not ack.refused
    async with httpx.AsyncClient(trust_env=False) as client:
        assert good.hash in await read_hashes(client, receiver.as_hop(), alice)


@pytest.mark.slow
async def test_pull_answers_only_the_askers_swarm(net: Devnet) -> None:
    consensus = await settled(net)
    home_id = next(iter(consensus.swarms))
    holder, peer = consensus.swarms[home_id].members
    outsider = consensus.swarms[other_swarm(consensus, home_id)].members[0]
    alice = account_in(consensus, home_id)
    async with httpx.AsyncClient(trust_env=False) as client:
        stored = await store(client, holder.as_hop(), alice.id, b"secret " + os.urandom(8))

    def pull_all(asker: ConsensusNode) -> set[bytes]:
        keys = keys_of(net, asker)
        seen: set[bytes] = set()
        after = 0
        while True:
            scope = sync_scope(consensus, asker.swarm_id)
            frame, digest = wire.seal_pull(keys, holder, after, scope, now_ms=now_ms())
            r = httpx.post(f"http://{holder.host}:{holder.port}/replicate/pull", content=frame)
            assert r.status_code == 200, r.text
            page = wire.open_page(r.content, keys, holder, digest, now_ms=now_ms())
            seen.update(m.hash for m in page.messages)
            for m in page.messages:  # every message is one of the asker's swarm's accounts
                assert consensus.swarm_of(ring_position(m.account)).swarm_id == asker.swarm_id
            if not page.more:
                return seen
            after = page.next_seq

    assert stored.hash in await trio.to_thread.run_sync(pull_all, peer)
    assert stored.hash not in await trio.to_thread.run_sync(pull_all, outsider)

    # A pull from a node that is not listed is refused; so is one whose asker sees its
    # range of accounts otherwise (its consensus differs): its cursor must not move.
    pull_url = f"http://{holder.host}:{holder.port}/replicate/pull"
    scope = sync_scope(consensus, peer.swarm_id)
    frame, _ = wire.seal_pull(NodeKeys.generate(), holder, 0, scope, now_ms=now_ms())
    async with httpx.AsyncClient(trust_env=False) as client:
        r = await client.post(pull_url, content=frame)
        assert r.status_code == 401 and r.text.startswith("unauthorized:")
        wrong = sync_scope(consensus, outsider.swarm_id)
        frame, _ = wire.seal_pull(keys_of(net, peer), holder, 0, wrong, now_ms=now_ms())
        r = await client.post(pull_url, content=frame)
        assert r.status_code == 503 and r.text.startswith("unavailable:")


# --- the swarm schema (unit) -------------------------------------------------------------


def _member(i: int) -> rpc.SwarmMember:
    return rpc.SwarmMember(bytes([i]) * 32, bytes([i + 1]) * 32, f"10.0.0.{i}", 7000 + i)


def test_swarm_info_round_trips_and_refuses_bad_members() -> None:
    info = rpc.SwarmInfo(2**64 - 1, (_member(1), _member(2)))
    assert rpc.SwarmInfo.from_wire(info.to_wire()) == info
    wire_form = info.to_wire()
    assert rpc.GetSwarmResult.from_wire({"swarm": wire_form, "epoch": 7}) == rpc.GetSwarmResult(
        info, 7
    )
    # Replies may carry fields a newer node adds: ignored.
    extended = {**wire_form, "note": 1, "members": [{**m, "v": "x"} for m in wire_form["members"]]}
    assert rpc.SwarmInfo.from_wire(extended) == info
    bad_hosts = ["example.com", "010.0.0.1", "0.0.0.0", "224.0.0.1", "::ffff:1.2.3.4x"]
    for host in bad_hosts:
        member = {**wire_form["members"][0], "host": host}
        with pytest.raises(SchemaError):
            rpc.SwarmInfo.from_wire({"id": 1, "members": [member]})
    with pytest.raises(SchemaError, match="twice"):
        rpc.SwarmInfo.from_wire({"id": 1, "members": [wire_form["members"][0]] * 2})
    with pytest.raises(SchemaError):
        rpc.SwarmInfo.from_wire({"id": 2**64, "members": wire_form["members"]})
    with pytest.raises(SchemaError):
        rpc.SwarmInfo.from_wire({"id": 1, "members": []})
    with pytest.raises(SchemaError):
        rpc.SwarmInfo.from_wire({"id": 1, "members": [wire_form["members"][0]] * 128})


def test_wrong_swarm_reply_round_trip() -> None:
    info = rpc.SwarmInfo(5, (_member(1),))
    data = rpc.error_reply(123, rpc.SwarmMoved("elsewhere", info))
    reply = rpc.decode_reply(data)
    assert (reply.status, reply.t_ms) == ("wrong_swarm", 123)
    assert rpc.swarm_of_reply(reply) == info
    with pytest.raises(rpc.SwarmMoved) as moved:
        reply.raise_for_status()
    assert moved.value.swarm == info
    # A malformed swarm field: the plain WrongSwarm, and swarm_of_reply says why.
    bad = rpc.decode_reply(encode({"status": "wrong_swarm", "t": 1, "error": "no", "swarm": [1]}))
    with pytest.raises(WrongSwarm) as plain:
        bad.raise_for_status()
    assert not isinstance(plain.value, rpc.SwarmMoved)
    with pytest.raises(SchemaError):
        rpc.swarm_of_reply(bad)
    assert rpc.swarm_of_reply(rpc.decode_reply(rpc.ok_reply(1, {}))) is None


_cbor = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64 - 1)
    | st.binary(max_size=40)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(["id", "members", "x"]), _cbor, max_size=3))
def test_swarm_from_wire_refuses_anything_else_with_schema_error(obj: dict[str, Any]) -> None:
    try:
        info = rpc.SwarmInfo.from_wire(obj)
    except SchemaError:
        return
    assert rpc.SwarmInfo.from_wire(info.to_wire()) == info


@settings(max_examples=200)
@given(_cbor)
def test_get_swarm_result_parser_raises_only_veil_errors(obj: Any) -> None:
    with contextlib.suppress(VeilError):  # anything else escaping fails the test
        rpc.parse_result("get_swarm", obj if isinstance(obj, dict) else {"swarm": obj, "epoch": 1})


def test_hops_of_a_swarm_reach_its_members() -> None:
    info = rpc.SwarmInfo(1, (_member(3),))
    assert info.hops == (Hop(bytes([3]) * 32, bytes([4]) * 32, "10.0.0.3", 7003),)
