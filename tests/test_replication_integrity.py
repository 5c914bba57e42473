"""Replication integrity (issue 11, items 5 and 6) against real node processes.

A devnet of 4 nodes in two swarms of 2 (127.0.0.1), shared by the module. The test acts
as a listed node (it reads a devnet node's keys from its data directory and seals frames
as that node, exactly as the node would) and tries the attacks of the issue:

* a replication frame copied off the wire and sent again (push, forward) is refused
  ``replayed`` (409), so a replayed forwarded ``delete_all`` deletes nothing stored
  after it, and a replayed push does not bring back a message its owner deleted;
* a listed node of another swarm, or a member of the account's swarm without the
  owner's key, cannot push a message into an owner-written namespace (private or
  public-read): without the owner's proof, or with a proof by another key, the push is
  refused ``unauthorized``; nor can a member stretch a message's life past the TTL the
  owner signed;
* an account outside the receiver's swarm is refused on a push (``wrong_swarm``) and
  on a forward (the storage reply says ``wrong_swarm``, nothing is deleted);
* in a devnet of its own (one swarm of 2, with a restart): a member that missed a
  delete learns it by anti-entropy and drops the message, which is not brought back
  by pulls from it meanwhile, nor by a push, also after the node restarted
  (tombstones are in SQLite); rows forged into a member's store file (no proof, or a
  proof by another key) are not spread by pulls.

No timed assertions: waits on the network are polls with generous deadlines.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio

from tests.devnetutil import devnet, running_devnet
from tests.nodeutil import now_ms
from tests.swarmutil import (
    DAY_MS,
    account_in,
    call,
    eventually,
    owner_proof,
    read_hashes,
    settled,
    store,
)
from veil.client.devnet import Devnet
from veil.node.keystore import load_or_create_keys
from veil.node.replication import sync_scope
from veil.onion import replication_frames as wire
from veil.onion import rpc
from veil.onion.directory import ConsensusNode
from veil.onion.keys import Account, NodeKeys

pytestmark = pytest.mark.slow

NODE_CONFIG = {"replication": {"sync_interval": 0.5, "ack_timeout": 10.0}}


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    with devnet(
        tmp_path_factory.mktemp("integrity"), nodes=4, swarm_size=2, node_config=NODE_CONFIG
    ) as running:
        running.wait_for_consensus(lambda c: len(c.swarms) == 2, what="two swarms")
        yield running


def keys_of(net: Devnet, node: ConsensusNode) -> NodeKeys:
    """A devnet node's keys, read from its data dir (to seal frames as that node)."""
    keys, created = load_or_create_keys(net.node(node.node_id.hex()).data_dir)
    assert not created
    return keys


async def post(node: ConsensusNode, path: str, frame: bytes) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False) as client:
        return await client.post(f"http://{node.host}:{node.port}{path}", content=frame, timeout=10)


def refusal(r: httpx.Response) -> tuple[int, str]:
    return r.status_code, r.text.split(":")[0]


# --- item 5: replayed frames -----------------------------------------------------------------


async def test_a_replayed_forward_delete_all_deletes_nothing_stored_after_it(net: Devnet) -> None:
    consensus = await settled(net)
    swarm_id = next(iter(consensus.swarms))
    receiver, peer = consensus.swarms[swarm_id].members
    alice = account_in(consensus, swarm_id)
    peer_keys = keys_of(net, peer)
    async with httpx.AsyncClient(trust_env=False) as client:
        first = await store(client, receiver.as_hop(), alice.id, b"before " + os.urandom(8))
        # A member forwards alice's delete_all (as the peer does after executing it); a
        # watcher of the link keeps a copy of the frame.
        request = rpc.make_delete_all(alice, namespace=None, now_ms=now_ms())
        frame, _ = wire.seal_forward(peer_keys, receiver, request, now_ms=now_ms())
        assert (await post(receiver, "/replicate/forward", frame)).status_code == 200
        assert first.hash not in await read_hashes(client, receiver.as_hop(), alice)
        # Alice stores a new message; the copy of the forward is sent again.
        later = await store(client, receiver.as_hop(), alice.id, b"after " + os.urandom(8))
        replayed = await post(receiver, "/replicate/forward", frame)
        assert refusal(replayed) == (409, "replayed")
        # A member that wraps the same signed request in a new frame gets it executed
        # once only: nothing stored since is deleted.
        frame, digest = wire.seal_forward(peer_keys, receiver, request, now_ms=now_ms())
        answer = await post(receiver, "/replicate/forward", frame)
        reply = wire.open_forwarded(answer.content, peer_keys, receiver, digest, now_ms=now_ms())
        assert (
            rpc.DeleteAllResult.from_wire(rpc.decode_reply(reply).raise_for_status()).deleted == 0
        )
        assert later.hash in await read_hashes(client, receiver.as_hop(), alice)
        assert later.hash in await read_hashes(client, peer.as_hop(), alice)


async def test_a_replayed_push_is_refused(net: Devnet) -> None:
    consensus = await settled(net)
    swarm_id = next(iter(consensus.swarms))
    receiver, peer = consensus.swarms[swarm_id].members
    alice = account_in(consensus, swarm_id)
    t = now_ms()
    data = b"pushed " + os.urandom(8)
    h = rpc.message_hash(alice.id, rpc.INBOX, data)
    m = wire.ReplicaMessage(alice.id.x25519_public, rpc.INBOX, h, data, t, t + DAY_MS)
    frame, _ = wire.seal_push(keys_of(net, peer), receiver, [m], now_ms=t)
    assert (await post(receiver, "/replicate", frame)).status_code == 200
    assert refusal(await post(receiver, "/replicate", frame)) == (409, "replayed")
    # The owner deletes it; the copy of the push, sent again, does not bring it back.
    async with httpx.AsyncClient(trust_env=False) as client:
        reply = await call(client, receiver.as_hop(), rpc.make_delete(alice, [h], now_ms=now_ms()))
        reply.raise_for_status()
        assert refusal(await post(receiver, "/replicate", frame)) == (409, "replayed")
        assert h not in await read_hashes(client, receiver.as_hop(), alice)


# --- item 6: who may write an owner-written namespace ------------------------------------------


def post_in(account: Account, namespace: int, data: bytes, proof: bytes | None, ttl: int = DAY_MS):
    """A message of ``account`` in ``namespace`` as a member would push it, stored now
    for ``ttl``, carrying ``proof``."""
    t = now_ms()
    h = rpc.message_hash(account.id, namespace, data)
    return wire.ReplicaMessage(account.id.x25519_public, namespace, h, data, t, t + ttl, proof)


def signed_post(account: Account, namespace: int, data: bytes, ttl: int = DAY_MS):
    t = now_ms()
    h = rpc.message_hash(account.id, namespace, data)
    proof = owner_proof(account, namespace, h, t, ttl)
    return wire.ReplicaMessage(account.id.x25519_public, namespace, h, data, t, t + ttl, proof)


async def public_posts(node: ConsensusNode, account: Account, namespace: int) -> set[bytes]:
    """The hashes anyone reads in ``account``'s public-read ``namespace`` at ``node``."""
    async with httpx.AsyncClient(trust_env=False) as client:
        request = rpc.make_retrieve(account.id, namespace=namespace, now_ms=now_ms())
        reply = await call(client, node.as_hop(), request)
        return {m.hash for m in rpc.RetrieveResult.from_wire(reply.raise_for_status()).messages}


async def test_no_node_writes_into_an_owners_namespace_without_the_owners_proof(
    net: Devnet,
) -> None:
    consensus = await settled(net)
    swarm_id = next(iter(consensus.swarms))
    receiver, peer = consensus.swarms[swarm_id].members
    outsider = next(s for sid, s in consensus.swarms.items() if sid != swarm_id).members[0]
    alice, mallory = account_in(consensus, swarm_id), Account.generate()
    for namespace in (-5, 5):  # public-read, private
        data = b"forged " + os.urandom(8)
        h = rpc.message_hash(alice.id, namespace, data)
        forged = {
            "no proof": post_in(alice, namespace, data, None),
            "another key's proof": post_in(
                alice, namespace, data, owner_proof(mallory, namespace, h, now_ms(), DAY_MS)
            ),
        }
        for sender in (outsider, peer):  # a listed node of another swarm; a member
            for name, m in forged.items():
                frame, _ = wire.seal_push(keys_of(net, sender), receiver, [m], now_ms=now_ms())
                got = refusal(await post(receiver, "/replicate", frame))
                assert got == (401, "unauthorized"), (namespace, name, got)
        # Nor may a member stretch a real post's life past the TTL its owner signed.
        short = signed_post(alice, namespace, b"an hour " + os.urandom(8), ttl=3_600_000)
        stretched = dataclasses.replace(short, expiry_ms=short.timestamp_ms + 20 * DAY_MS)
        frame, _ = wire.seal_push(keys_of(net, peer), receiver, [stretched], now_ms=now_ms())
        assert refusal(await post(receiver, "/replicate", frame)) == (401, "unauthorized")
        # The owner's own post, with its proof, is taken.
        real = signed_post(alice, namespace, b"real " + os.urandom(8))
        frame, digest = wire.seal_push(keys_of(net, peer), receiver, [real, short], now_ms=now_ms())
        r = await post(receiver, "/replicate", frame)
        assert r.status_code == 200
        ack = wire.open_pushed(r.content, keys_of(net, peer), receiver, digest, now_ms=now_ms())
        assert ack.stored == 2 and not ack.refused
        if namespace == -5:  # what anyone reads there: alice's two posts, nothing forged
            posts = await public_posts(receiver, alice, -5)
            assert posts == {real.hash, short.hash} and h not in posts


async def test_a_batch_with_one_forged_message_stores_the_others_and_refuses_it(
    net: Devnet,
) -> None:
    """A push carries several clients' stores (issue 17): one message that breaks a rule
    (here a post with another key's proof) is refused alone, named in the ack, and never
    served; the batch's other messages are stored. The batch sent again is refused whole
    (``replayed``), and a batch of forged messages only is refused as one was."""
    consensus = await settled(net)
    swarm_id = next(iter(consensus.swarms))
    receiver, peer = consensus.swarms[swarm_id].members
    alice, mallory = account_in(consensus, swarm_id), Account.generate()
    peer_keys = keys_of(net, peer)
    data = b"forged in a batch " + os.urandom(8)
    h = rpc.message_hash(alice.id, -5, data)
    forged = post_in(alice, -5, data, owner_proof(mallory, -5, h, now_ms(), DAY_MS))
    real = [signed_post(alice, -5, b"real %d " % i + os.urandom(8)) for i in range(3)]
    batch = [real[0], forged, real[1], real[2]]
    frame, digest = wire.seal_push(peer_keys, receiver, batch, now_ms=now_ms())
    r = await post(receiver, "/replicate", frame)
    assert r.status_code == 200
    ack = wire.open_pushed(r.content, peer_keys, receiver, digest, now_ms=now_ms())
    assert ack.stored == 3 and ack.refused == {forged.hash}
    posts = await public_posts(receiver, alice, -5)
    assert {m.hash for m in real} <= posts and forged.hash not in posts
    # The same batch again, off the wire: refused whole, nothing changes.
    assert refusal(await post(receiver, "/replicate", frame)) == (409, "replayed")
    # Forged messages only: refused as a single forged push is.
    frame, _ = wire.seal_push(peer_keys, receiver, [forged, forged], now_ms=now_ms())
    assert refusal(await post(receiver, "/replicate", frame)) == (401, "unauthorized")
    assert forged.hash not in await public_posts(receiver, alice, -5)


async def test_a_summary_pull_names_what_is_held_and_is_accepted_once(net: Devnet) -> None:
    """A member's summary (frame version 5) names the rows of the asker's swarm after
    the cursor without their data, each with a start a pull of rows reaches it from; the
    pull sent again is refused ``replayed``."""
    consensus = await settled(net)
    swarm_id = next(iter(consensus.swarms))
    receiver, peer = consensus.swarms[swarm_id].members
    alice = account_in(consensus, swarm_id)
    peer_keys = keys_of(net, peer)
    posts = [signed_post(alice, -5, b"summarised %d " % i + os.urandom(8)) for i in range(3)]
    frame, _ = wire.seal_push(peer_keys, receiver, posts, now_ms=now_ms())
    assert (await post(receiver, "/replicate", frame)).status_code == 200
    scope = sync_scope(consensus, swarm_id)
    frame, digest = wire.seal_pull(peer_keys, receiver, 0, scope, now_ms=now_ms(), summary=True)
    r = await post(receiver, "/replicate/pull", frame)
    assert r.status_code == 200
    page = wire.open_page(r.content, peer_keys, receiver, digest, now_ms=now_ms())
    assert not page.messages
    named = {e.hash: e for e in page.summary}
    for m in posts:
        assert named[m.hash].expiry_ms == m.expiry_ms and named[m.hash].account == m.account
        # One page of rows after the entry's start holds the row itself.
        pull, d = wire.seal_pull(peer_keys, receiver, named[m.hash].start, scope, now_ms=now_ms())
        rows = wire.open_page(
            (await post(receiver, "/replicate/pull", pull)).content,
            peer_keys,
            receiver,
            d,
            now_ms=now_ms(),
        )
        assert m.hash in {row.hash for row in rows.messages}
    assert refusal(await post(receiver, "/replicate/pull", frame)) == (409, "replayed")


async def test_a_round_pulls_only_the_rows_a_member_lacks(net: Devnet) -> None:
    """Anti-entropy asks for a summary first (issue 17): rows both members hold are named
    and skipped (``summary_held``), never pulled again; a row one of them lacks still
    reaches it by the next rounds."""
    consensus = await settled(net)
    swarm_id = next(iter(consensus.swarms))
    a, b = consensus.swarms[swarm_id].members
    name_a, name_b = net.node(a.node_id.hex()).name, net.node(b.node_id.hex()).name
    keys_a, keys_b = keys_of(net, a), keys_of(net, b)
    alice = account_in(consensus, swarm_id)
    await pull_rounds(net, name_a)  # what earlier tests left is pulled by now
    await pull_rounds(net, name_b)
    url_a = net.node(name_a).url
    held_before = await metric(url_a, "veil_replication_summary_held_total")
    pulled_before = await metric(url_a, "veil_replication_pulled_total")
    both = [signed_post(alice, -5, b"held by both %d " % i + os.urandom(8)) for i in range(4)]
    for sender, receiver in ((keys_b, a), (keys_a, b)):
        frame, _ = wire.seal_push(sender, receiver, both, now_ms=now_ms())
        assert (await post(receiver, "/replicate", frame)).status_code == 200
    await pull_rounds(net, name_a)
    assert await metric(url_a, "veil_replication_summary_held_total") >= held_before + len(both)
    assert await metric(url_a, "veil_replication_pulled_total") == pulled_before
    # A post only b holds reaches a by pulling.
    lacking = signed_post(alice, -5, b"only at b " + os.urandom(8))
    frame, _ = wire.seal_push(keys_a, b, [lacking], now_ms=now_ms())
    assert (await post(b, "/replicate", frame)).status_code == 200

    async def a_has_it() -> bool:
        return lacking.hash in await public_posts(a, alice, -5)

    await eventually(a_has_it, what="a pulls the row it lacks")
    assert await metric(url_a, "veil_replication_pulled_total") >= pulled_before + 1


async def test_accounts_of_another_swarm_are_refused_on_every_path(net: Devnet) -> None:
    consensus = await settled(net)
    swarm_id = next(iter(consensus.swarms))
    receiver, peer = consensus.swarms[swarm_id].members
    alice = account_in(consensus, swarm_id)
    carol = account_in(consensus, next(sid for sid in consensus.swarms if sid != swarm_id))
    peer_keys = keys_of(net, peer)
    # A push (or a handover: the same route) of carol's messages, with a valid proof.
    theirs = signed_post(carol, -1, b"carol " + os.urandom(8))
    frame, _ = wire.seal_push(peer_keys, receiver, [theirs], now_ms=now_ms())
    assert refusal(await post(receiver, "/replicate", frame)) == (421, "wrong_swarm")
    # Mixed with alice's, carol's is named refused and not stored.
    mine = signed_post(alice, -1, b"alice " + os.urandom(8))
    frame, digest = wire.seal_push(peer_keys, receiver, [mine, theirs], now_ms=now_ms())
    r = await post(receiver, "/replicate", frame)
    ack = wire.open_pushed(r.content, peer_keys, receiver, digest, now_ms=now_ms())
    assert ack.stored == 1 and ack.refused == {theirs.hash}
    # A forward of carol's delete: executed nowhere here, answered wrong_swarm.
    request = rpc.make_delete_all(carol, namespace=None, now_ms=now_ms())
    frame, digest = wire.seal_forward(peer_keys, receiver, request, now_ms=now_ms())
    r = await post(receiver, "/replicate/forward", frame)
    reply = wire.open_forwarded(r.content, peer_keys, receiver, digest, now_ms=now_ms())
    assert rpc.decode_reply(reply).status == "wrong_swarm"


# --- tombstones and pulls, with a restart (a devnet of its own) --------------------------------


async def metric(node_url: str, name: str) -> float:
    async with httpx.AsyncClient(trust_env=False) as client:
        text = (await client.get(f"{node_url}/metrics", timeout=5)).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


async def pull_rounds(net: Devnet, name: str, rounds: int = 3) -> None:
    """Wait until ``name`` has made ``rounds`` more pulls (so at least one started after
    now and finished)."""
    url = net.node(name).url
    start = await metric(url, "veil_replication_pulls_total")

    async def done() -> bool:
        return await metric(url, "veil_replication_pulls_total") >= start + rounds

    await eventually(done, what=f"{name} pulls")


async def test_deletes_survive_pulls_and_restarts_and_forged_rows_do_not_spread(
    tmp_path: Path,
) -> None:
    async with running_devnet(tmp_path, nodes=2, swarm_size=2, node_config=NODE_CONFIG) as net:
        consensus = await settled(net)
        a, b = next(iter(consensus.swarms.values())).members
        name_a, name_b = net.node(a.node_id.hex()).name, net.node(b.node_id.hex()).name
        keys_a, keys_b = keys_of(net, a), keys_of(net, b)
        alice = Account.generate()
        m = signed_post(alice, -3, b"to be deleted " + os.urandom(8))

        # Both hold m; alice's delete reaches a only (b misses it: it was down, or the
        # forward was lost). b gets the message again meanwhile (a late push).
        for sender, receiver in ((keys_b, a), (keys_a, b)):
            frame, _ = wire.seal_push(sender, receiver, [m], now_ms=now_ms())
            assert (await post(receiver, "/replicate", frame)).status_code == 200
        applied = await metric(net.node(name_b).url, "veil_replication_deletions_applied_total")
        delete = rpc.make_delete(alice, [m.hash], namespace=-3, now_ms=now_ms())
        frame, _ = wire.seal_forward(keys_b, a, delete, now_ms=now_ms())
        assert (await post(a, "/replicate/forward", frame)).status_code == 200

        # a's pulls of b's rows (which still hold m) do not bring it back (its
        # tombstone), and b learns the delete by pulling a's deletions.
        async def b_deleted() -> bool:
            return m.hash not in await public_posts(b, alice, -3)

        await eventually(b_deleted, what="b applies the delete it missed")
        assert (
            await metric(net.node(name_b).url, "veil_replication_deletions_applied_total")
            >= applied + 1
        )
        await pull_rounds(net, name_a)
        assert m.hash not in await public_posts(a, alice, -3)
        # Nor does a push of m bring it back to either (a replay, a late handover).
        for sender, receiver in ((keys_b, a), (keys_a, b)):
            frame, digest = wire.seal_push(sender, receiver, [m], now_ms=now_ms())
            r = await post(receiver, "/replicate", frame)
            ack = wire.open_pushed(r.content, sender, receiver, digest, now_ms=now_ms())
            assert ack.stored == 0

        # a restarts (the authority is stopped, so the consensus keeps it listed); while
        # it is down, two forged posts are written into its store file, as by a node
        # whose store was tampered with: one without a proof, one with mallory's.
        mallory = Account.generate()
        no_proof = post_in(alice, -3, b"forged, no proof " + os.urandom(8), None)
        h = rpc.message_hash(alice.id, -3, b"forged, bad proof")
        bad = post_in(
            alice, -3, b"forged, bad proof", owner_proof(mallory, -3, h, now_ms(), DAY_MS)
        )
        refused = await metric(net.node(name_b).url, "veil_replication_pull_refused_total")
        await trio.to_thread.run_sync(net.stop_authority, 0)
        await trio.to_thread.run_sync(net.stop_node, name_a)
        with sqlite3.connect(net.node(name_a).data_dir / "store.sqlite") as db:
            for f in (no_proof, bad):
                db.execute(
                    "INSERT INTO messages (account, namespace, hash, data, timestamp, expiry,"
                    " proof) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (f.account, f.namespace, f.hash, f.data, f.timestamp_ms, f.expiry_ms, f.proof),
                )
        await trio.to_thread.run_sync(lambda: net.start_node(name_a, wait=False))
        await trio.to_thread.run_sync(net.start_authority, 0)
        await settled(net)

        # After the restart, a push of m (a new frame) still does not bring it back.
        frame, digest = wire.seal_push(keys_b, a, [m], now_ms=now_ms())
        r = await post(a, "/replicate", frame)
        assert r.status_code == 200
        assert wire.open_pushed(r.content, keys_b, a, digest, now_ms=now_ms()).stored == 0
        assert m.hash not in await public_posts(a, alice, -3)

        # b pulls a's rows (the forged ones are after its cursor): neither spreads.
        await pull_rounds(net, name_b)
        held_by_b = await public_posts(b, alice, -3)
        assert no_proof.hash not in held_by_b and bad.hash not in held_by_b
        after = await metric(net.node(name_b).url, "veil_replication_pull_refused_total")
        assert after >= refused + 1  # the one with a proof was sent, and refused
