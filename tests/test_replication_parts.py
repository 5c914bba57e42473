"""The parts of replication that need no network: the sealed frame format
(onion/replication_frames.py), with hypothesis properties for hostile bytes, and the
store's replication methods (node/store/) on real SQLite files."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.swarmutil import owner_proof
from veil.node.replication import ring_position
from veil.node.replication.held import HeldHashes
from veil.node.store import (
    ReplicaMessage,
    ReplicaPage,
    deletion_digest,
    deletion_until,
    open_store,
)
from veil.node.store.schema import SCHEMA_VERSION
from veil.onion import crypto, rpc
from veil.onion import replication_frames as wire
from veil.onion.cbor import encode
from veil.onion.errors import (
    ClockSkew,
    DecodeError,
    MalformedCapability,
    ProtocolError,
    RateLimited,
    SchemaError,
    TooLarge,
    Unauthorized,
    VeilError,
)
from veil.onion.keys import Account, NodeKeys
from veil.onion.replication_frames import padding, sealing

T0 = 1_700_000_000_000
DAY = 86_400_000
A = NodeKeys(bytes([1]) * 32, bytes([2]) * 32)
B = NodeKeys(bytes([3]) * 32, bytes([4]) * 32)
A_PEER = wire.Peer(A.identity_public, A.onion_public)
B_PEER = wire.Peer(B.identity_public, B.onion_public)
ALICE = Account(bytes([7]) * 32)
BOB = Account(bytes([8]) * 32)


def lookup(*peers: wire.Peer) -> Any:
    known = {p.node_id: p for p in peers}
    return known.get


def msg(
    data: bytes, who: Account = ALICE, ns: int = 0, ts: int = T0, exp: int = T0 + DAY
) -> ReplicaMessage:
    """A message as a member holds it: outside the inbox with its owner's proof (signed
    at ``ts`` for the TTL that gives ``exp``, within the namespace's limits)."""
    h = rpc.message_hash(who.id, ns, data)
    proof = None
    if ns != rpc.INBOX:
        ttl = min(max(exp - ts, rpc.MIN_TTL_MS), rpc.max_ttl_ms(ns))
        proof = owner_proof(who, ns, h, ts, ttl)
    return ReplicaMessage(who.id.x25519_public, ns, h, data, ts, exp, proof)


class Clock:
    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


# --- frames ------------------------------------------------------------------------------


def test_push_and_its_answer_round_trip() -> None:
    messages = [msg(b"one"), msg(b"two", ns=5), msg(b"three", who=BOB)]
    frame, digest = wire.seal_push(A, B_PEER, messages, now_ms=T0)
    push = wire.open_push(frame, B, lookup(A_PEER), now_ms=T0 + 1000)
    assert (push.sender, push.messages, push.digest) == (A.identity_public, messages, digest)
    answer = wire.seal_pushed(B, A_PEER, push.digest, 2, [messages[2].hash], now_ms=T0)
    ack = wire.open_pushed(answer, A, B_PEER, digest, now_ms=T0)
    assert ack == wire.PushAck(2, frozenset({messages[2].hash}))


def test_pull_and_its_page_round_trip() -> None:
    frame, digest = wire.seal_pull(A, B_PEER, 41, bytes(range(24)), now_ms=T0)
    pull = wire.open_pull(frame, B, lookup(A_PEER), now_ms=T0)
    assert (pull.sender, pull.after, pull.scope, pull.digest) == (
        A.identity_public,
        41,
        bytes(range(24)),
        digest,
    )
    page = ReplicaPage([msg(b"x")], 57, True)
    answer = wire.seal_page(B, A_PEER, digest, page, now_ms=T0)
    assert wire.open_page(answer, A, B_PEER, digest, now_ms=T0) == page


def test_frames_are_refused_for_the_right_reasons() -> None:
    frame, digest = wire.seal_push(A, B_PEER, [msg(b"x")], now_ms=T0)
    with pytest.raises(Unauthorized, match="not in this node's consensus"):
        wire.open_push(frame, B, lookup(), now_ms=T0)
    with pytest.raises(Unauthorized, match="addressed to another node"):
        wire.open_push(frame, A, lookup(A_PEER), now_ms=T0)  # A is not the receiver
    with pytest.raises(ClockSkew):
        wire.open_push(frame, B, lookup(A_PEER), now_ms=T0 + 61_000)
    with pytest.raises(SchemaError, match="expected a pull"):
        wire.open_pull(frame, B, lookup(A_PEER), now_ms=T0)
    # An impostor that knows A's ID but not its onion secret cannot make a frame open.
    impostor = NodeKeys(bytes([1]) * 32, bytes([9]) * 32)  # A's identity, another onion key
    forged, _ = wire.seal_push(impostor, B_PEER, [msg(b"x")], now_ms=T0)
    with pytest.raises(Unauthorized, match="does not open"):
        wire.open_push(forged, B, lookup(A_PEER), now_ms=T0)
    # A reply must answer our request.
    answer = wire.seal_pushed(B, A_PEER, bytes(32), 1, [], now_ms=T0)
    with pytest.raises(Unauthorized, match="another request"):
        wire.open_pushed(answer, A, B_PEER, digest, now_ms=T0)
    with pytest.raises(TooLarge):
        wire.open_push(b"\xa0" + bytes(wire.MAX_FRAME), B, lookup(A_PEER), now_ms=T0)


def test_batches_over_the_limits() -> None:
    with pytest.raises(ValueError):
        wire.seal_push(
            A, B_PEER, [msg(bytes([i])) for i in range(wire.MAX_MESSAGES + 1)], now_ms=T0
        )
    big = [msg(os.urandom(60_000)), msg(os.urandom(60_000))]
    with pytest.raises(ValueError):
        wire.seal_push(A, B_PEER, big, now_ms=T0)
    # A peer that sends one anyway is refused (the frame is sealed by hand, as a
    # misbehaving node would).
    fields = {
        "n": bytes(16),
        "messages": [
            {"a": m.account, "ns": 0, "h": m.hash, "d": m.data, "ts": T0, "exp": T0 + DAY}
            for m in big
        ],
    }
    frame, _ = wire._seal(A, B_PEER, "push", fields, T0)
    with pytest.raises(ProtocolError, match="over"):
        wire.open_push(frame, B, lookup(A_PEER), now_ms=T0)
    # One full-size message always fits.
    frame, _ = wire.seal_push(A, B_PEER, [msg(os.urandom(rpc.MAX_BODY))], now_ms=T0)
    assert len(frame) == wire.MAX_FRAME


def test_check_message() -> None:
    good = msg(b"hello")
    assert wire.check_message(good, now_ms=T0) == ALICE.id
    bad = [
        ReplicaMessage(good.account, 0, bytes(32), good.data, T0, T0 + DAY),  # hash
        ReplicaMessage(good.account, 1, good.hash, good.data, T0, T0 + DAY),  # namespace
        ReplicaMessage(bytes(32), 0, good.hash, good.data, T0, T0 + DAY),  # account key
        msg(b"hello", ts=T0 + 120_000),  # stored in the future
        msg(b"hello", exp=T0 + 14 * DAY + 61_000),  # past the inbox TTL
    ]
    for m in bad:
        with pytest.raises(ProtocolError):
            wire.check_message(m, now_ms=T0)
    assert wire.check_message(msg(b"p", ns=3, exp=T0 + 30 * DAY), now_ms=T0) == ALICE.id
    assert wire.check_message(msg(b"old", exp=T0 - 1), now_ms=T0)  # expired: the store skips it


_FRAME = wire.seal_push(A, B_PEER, [msg(b"x" * 50), msg(b"y", who=BOB)], now_ms=T0)[0]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(_FRAME) - 1), st.integers(1, 255))
def test_any_altered_byte_is_refused_with_a_typed_error(index: int, xor: int) -> None:
    altered = bytearray(_FRAME)
    altered[index] ^= xor
    with pytest.raises(VeilError):
        wire.open_push(bytes(altered), B, lookup(A_PEER), now_ms=T0)


@settings(max_examples=300)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_typed_errors(data: bytes) -> None:
    for opener in (wire.open_push, wire.open_pull):
        with pytest.raises((DecodeError, SchemaError, TooLarge, Unauthorized)):
            opener(data, B, lookup(A_PEER), now_ms=T0)
    with pytest.raises(VeilError):
        wire.open_page(data, A, B_PEER, bytes(32), now_ms=T0)


# --- padding to size classes ----------------------------------------------------------------

CLASSES = frozenset(wire.SIZE_CLASSES)
CLASSES_SORTED = sorted(wire.SIZE_CLASSES)
_SIZE = st.sampled_from([1, 2, 300, 1500, 1600, 1700, 6831, 16_000, 40_000, rpc.MAX_BODY])


def _data(size: int, fill: int) -> bytes:
    return bytes([fill % 255 + 1]) * size


@st.composite
def batches(draw: st.DrawFn) -> list[ReplicaMessage]:
    """Batches within the limits: up to 40 messages of very different sizes."""
    sizes = draw(st.lists(_SIZE | st.integers(1, 3000), min_size=0, max_size=40))
    out: list[ReplicaMessage] = []
    for i, size in enumerate(sizes):
        m = msg(_data(size, i), ns=draw(st.sampled_from([-5, 0, 3])))
        if out and sum(wire.batch_cost(x) for x in [*out, m]) > wire.BATCH_MAX_BYTES:
            break
        out.append(m)
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(), st.integers(0, 2**40), st.binary(min_size=24, max_size=24), st.booleans())
def test_every_frame_is_a_size_class_long_and_opens_to_exactly_its_content(
    messages: list[ReplicaMessage], seq: int, scope: bytes, more: bool
) -> None:
    frame, digest = wire.seal_push(A, B_PEER, messages, now_ms=T0)
    assert len(frame) in CLASSES
    push = wire.open_push(frame, B, lookup(A_PEER), now_ms=T0)
    assert push.messages == messages and push.digest == digest
    refused = [m.hash for m in messages]
    answer = wire.seal_pushed(B, A_PEER, digest, len(messages), refused, now_ms=T0)
    assert len(answer) in CLASSES
    ack = wire.open_pushed(answer, A, B_PEER, digest, now_ms=T0)
    assert ack == wire.PushAck(len(messages), frozenset(refused))

    frame, digest = wire.seal_pull(A, B_PEER, seq, scope, now_ms=T0)
    assert len(frame) in CLASSES
    pull = wire.open_pull(frame, B, lookup(A_PEER), now_ms=T0)
    assert (pull.after, pull.scope) == (seq, scope)
    page = ReplicaPage(messages, seq, more)
    answer = wire.seal_page(B, A_PEER, digest, page, now_ms=T0)
    assert len(answer) in CLASSES
    assert wire.open_page(answer, A, B_PEER, digest, now_ms=T0) == page

    request = b"".join(m.data for m in messages)[: rpc.MAX_REQUEST_SIZE] or b"r"
    frame, digest = wire.seal_forward(A, B_PEER, request, now_ms=T0)
    assert len(frame) in CLASSES
    assert wire.open_forward(frame, B, lookup(A_PEER), now_ms=T0).request == request
    reply = request[: rpc.MAX_REPLY_SIZE]
    answer = wire.seal_forwarded(B, A_PEER, digest, reply, now_ms=T0)
    assert len(answer) in CLASSES
    assert wire.open_forwarded(answer, A, B_PEER, digest, now_ms=T0) == reply


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 20_000) | st.sampled_from([1595, 1596, 1597, 15_932, 15_933, 15_934]))
def test_the_size_depends_only_on_the_class(size: int) -> None:
    # Two pushes of the same class are the same length whatever their content, and the
    # class is the smallest that holds the content (here one message of ``size`` bytes).
    one = wire.seal_push(A, B_PEER, [msg(_data(size, 1))], now_ms=T0)[0]
    other = wire.seal_push(A, B_PEER, [msg(_data(1, 2))], now_ms=T0 + 5)[0]
    assert len(other) == wire.SIZE_CLASSES[0]
    need = len(_inner(size)[0]) + 4
    smallest = min(
        c for c, n in zip(CLASSES_SORTED, wire._PLAINTEXT_SIZES, strict=True) if need <= n
    )
    assert len(one) == smallest
    assert (size <= 1596) == (smallest == 2048) and (size <= 15_932) == (smallest <= 16_384)


def _reseal(padded: bytes, *, version: int = wire.FORMAT_VERSION) -> bytes:
    """A frame from A to B whose box holds ``padded`` as it is (forged from the module
    note's layout: a correct box and signature around bad padding)."""
    nonce = os.urandom(24)
    ad = b"veil/replicate" + bytes([version]) + A.identity_public + B.identity_public
    box = crypto.aead_seal(wire._box_key(A, B_PEER), nonce, padded, ad)
    fields = {"v": version, "from": A.identity_public, "to": B.identity_public}
    return encode({**fields, "nonce": nonce, "box": box})


def _inner(size: int) -> tuple[bytes, list[ReplicaMessage]]:
    """The signed inner CBOR of a push of one message of ``size`` bytes, and the batch."""
    messages = [msg(_data(size, 3))]
    body = encode(
        {
            "kind": "push",
            "from": A.identity_public,
            "to": B.identity_public,
            "t": T0,
            "n": bytes(16),
            "messages": [wire._message_wire(m) for m in messages],
        }
    )
    return encode({"body": body, "sig": A.sign(wire.DOMAIN, body)}), messages


def _padded(inner: bytes, length: int | None = None, *, class_index: int | None = None) -> bytes:
    sizes = wire._PLAINTEXT_SIZES
    if class_index is None:
        class_index = next(i for i, n in enumerate(sizes) if len(inner) + 4 <= n)
    field = len(inner) if length is None else length
    return field.to_bytes(4, "big") + inner + bytes(sizes[class_index] - 4 - len(inner))


_SMALL = st.integers(1, 1500)


@settings(max_examples=60, deadline=None)
@given(_SMALL)
def test_a_hand_padded_frame_opens(size: int) -> None:
    # The forging helpers follow the format: a correct frame built by hand opens.
    inner, messages = _inner(size)
    frame = _reseal(_padded(inner))
    assert len(frame) == wire.SIZE_CLASSES[0]
    assert wire.open_push(frame, B, lookup(A_PEER), now_ms=T0).messages == messages


@settings(max_examples=100, deadline=None)
@given(_SMALL, st.data(), st.integers(1, 255))
def test_a_non_zero_pad_byte_is_refused(size: int, data: st.DataObject, byte: int) -> None:
    inner, _ = _inner(size)
    padded = bytearray(_padded(inner))
    at = data.draw(st.integers(4 + len(inner), len(padded) - 1))
    padded[at] = byte
    with pytest.raises(DecodeError, match="padding is not all zero"):
        wire.open_push(_reseal(bytes(padded)), B, lookup(A_PEER), now_ms=T0)


@settings(max_examples=100, deadline=None)
@given(_SMALL, st.integers(0, 2**32 - 1))
def test_a_wrong_length_field_is_refused(size: int, length: int) -> None:
    inner, _ = _inner(size)
    if length == len(inner):
        length += 1
    with pytest.raises(DecodeError):
        wire.open_push(_reseal(_padded(inner, length)), B, lookup(A_PEER), now_ms=T0)


@settings(max_examples=20, deadline=None)
@given(_SMALL, st.sampled_from([1, 2]))
def test_padding_to_a_larger_class_than_needed_is_refused(size: int, index: int) -> None:
    inner, _ = _inner(size)
    frame = _reseal(_padded(inner, class_index=index))
    assert len(frame) == wire.SIZE_CLASSES[index]
    with pytest.raises(DecodeError, match="larger size class"):
        wire.open_push(frame, B, lookup(A_PEER), now_ms=T0)


def test_frames_off_the_classes_and_of_version_1_are_refused() -> None:
    inner, _ = _inner(100)
    unpadded = _reseal(len(inner).to_bytes(4, "big") + inner)
    with pytest.raises(DecodeError, match="not one of"):
        wire.open_push(unpadded, B, lookup(A_PEER), now_ms=T0)
    # A version 1 frame (unpadded, as a node before padding sends it) is refused on its
    # version, before any crypto; a version 1 node refuses ours the same way (v: {1}).
    with pytest.raises(SchemaError, match="v"):
        wire.open_push(_reseal(inner, version=1), B, lookup(A_PEER), now_ms=T0)


def test_ring_position_matches_account_ids() -> None:
    for account in (ALICE, BOB, Account.generate()):
        assert ring_position(account.id.x25519_public) == account.id.ring_position


# --- the store's replication methods -------------------------------------------------------


async def test_store_replicated_keeps_times_and_deduplicates(tmp_path: Path) -> None:
    clock = Clock()
    async with open_store(tmp_path / "m.db", clock=clock) as store:
        first = msg(b"a", ts=T0 - 5000, exp=T0 + DAY)
        with store.watch(ALICE.id, 0) as woken:
            assert await store.store_replicated([first]) == [True]
            assert woken.is_set()  # long-polls wake up for replicated messages too
        got = await store.get(ALICE.id, 0, first.hash)
        assert got is not None and (got.timestamp_ms, got.expiry_ms) == (T0 - 5000, T0 + DAY)
        # Again, with a later and then an earlier expiry: kept once, at the later one.
        later = msg(b"a", exp=T0 + 2 * DAY)
        earlier = msg(b"a", exp=T0 + 1000)
        assert await store.store_replicated([later, earlier]) == [False, False]
        got = await store.get(ALICE.id, 0, first.hash)
        assert got is not None and got.expiry_ms == T0 + 2 * DAY
        # Already expired: skipped. An expired copy here is replaced by a live one.
        assert await store.store_replicated([msg(b"gone", exp=T0)]) == [False]
        assert await store.get(ALICE.id, 0, msg(b"gone").hash) is None
        await store.store_replicated([msg(b"b", exp=T0 + 10)])
        clock.now = T0 + 20
        assert await store.store_replicated([msg(b"b", exp=T0 + DAY)]) == [True]
        assert store.stats().messages == 2


async def test_replica_pages_filter_paginate_and_never_reuse_a_seq(tmp_path: Path) -> None:
    clock = Clock()
    async with open_store(tmp_path / "m.db", clock=clock) as store:
        mine = [msg(f"a{i}".encode()) for i in range(5)]
        theirs = [msg(f"b{i}".encode(), who=BOB) for i in range(5)]
        for a, b in zip(mine, theirs, strict=True):
            await store.store_replicated([a, b])
        await store.store_replicated([msg(b"soon", exp=T0 + 1)])
        clock.now = T0 + 2  # that one has expired: never listed
        alice_key = ALICE.id.x25519_public

        def only_alice(key: bytes) -> bool:
            return key == alice_key

        seen: list[ReplicaMessage] = []
        after = 0
        while True:
            page = await store.replica_page(after, accept=only_alice, limit=2, max_bytes=10_000)
            seen += page.messages
            assert page.next_seq >= after
            after = page.next_seq
            if not page.more:
                break
        assert seen == mine
        # The scan limit bounds the rows looked at: a page may be empty but say "more".
        page = await store.replica_page(
            0, accept=lambda k: False, limit=10, max_bytes=1, scan_limit=3
        )
        assert page.messages == [] and page.more and page.next_seq > 0
        # The byte budget: the first message always, then only what fits.
        page = await store.replica_page(0, accept=only_alice, limit=10, max_bytes=1)
        assert page.messages == mine[:1] and page.more

        # Deleting the newest row does not make its seq available again.
        top = (
            await store.replica_page(0, accept=lambda k: True, limit=100, max_bytes=10**6)
        ).next_seq
        assert await store.delete_replicas(BOB.id.x25519_public, [(0, theirs[-1].hash)]) == 1
        await store.store_replicated([msg(b"new")])
        page = await store.replica_page(top, accept=lambda k: True, limit=10, max_bytes=10**6)
        assert [m.data for m in page.messages] == [b"new"]


async def test_a_replica_summary_names_the_rows_of_the_page_it_stands_for(tmp_path: Path) -> None:
    # Anti-entropy's summaries read no data, but must name exactly the rows (and stop at
    # exactly the seq) that a page pulled with the same bounds would carry: the asker
    # pulls a chunk after its start and counts on finding the whole chunk in one page.
    clock = Clock()
    async with open_store(tmp_path / "m.db", clock=clock) as store:
        sizes = [1, 700, 30, 4000, 5, 900, 2500, 60, 10, 3000]
        for i, size in enumerate(sizes):
            who = ALICE if i % 3 else BOB
            await store.store_replicated([msg(bytes([i]) * size, who=who)])
        await store.store_replicated([msg(b"soon", exp=T0 + 1)])
        clock.now = T0 + 2
        alice_key = ALICE.id.x25519_public
        filters = {"all": lambda k: True, "alice": lambda k: k == alice_key}
        for name, accept in filters.items():
            for limit, max_bytes, scan_limit in [
                (3, 10**6, 1024),
                (10, 5000, 1024),
                (10, 10**6, 4),
            ]:
                after = 0
                while True:
                    page = await store.replica_page(
                        after,
                        accept=accept,
                        limit=limit,
                        max_bytes=max_bytes,
                        scan_limit=scan_limit,
                    )
                    rows, next_seq, more = await store.replica_summary(
                        after,
                        accept=accept,
                        limit=limit,
                        max_bytes=max_bytes,
                        scan_limit=scan_limit,
                    )
                    where = (name, limit, max_bytes, scan_limit, after)
                    assert rows == [
                        (m.account, m.namespace, m.hash, m.expiry_ms) for m in page.messages
                    ], where
                    assert (next_seq, more) == (page.next_seq, page.more), where
                    after = page.next_seq
                    if not page.more:
                        break


async def test_handover_reads_and_sync_cursors(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    async with open_store(db, clock=Clock()) as store:
        batch = [msg(f"m{i}".encode(), ns=ns) for i in range(3) for ns in (-1, 0, 4)]
        await store.store_replicated([*batch, msg(b"bob", who=BOB)])
        keys = await store.accounts(limit=10)
        assert keys == sorted([ALICE.id.x25519_public, BOB.id.x25519_public])
        assert await store.accounts(keys[0], limit=10) == keys[1:]
        got: list[ReplicaMessage] = []
        cursor = (-(2**15) - 1, 0)
        while True:
            page, cursor, more = await store.account_replicas(
                ALICE.id.x25519_public, cursor, limit=4, max_bytes=10**6
            )
            got += page
            if not more:
                break
        assert sorted(got, key=lambda m: m.hash) == sorted(batch, key=lambda m: m.hash)
        assert [m.namespace for m in got] == sorted(m.namespace for m in got)
        n = await store.delete_replicas(
            ALICE.id.x25519_public, [(m.namespace, m.hash) for m in got]
        )
        assert n == len(batch)
        assert await store.accounts(limit=10) == [BOB.id.x25519_public]

        peer = bytes(32)
        assert await store.sync_cursor(peer, b"s1") == 0
        await store.set_sync_cursor(peer, b"s1", 17)
        await store.set_sync_cursor(peer, b"s1", 21)
        assert await store.sync_cursor(peer, b"s1") == 21
        await store.set_sync_cursor(peer, b"s2", 3)  # a new scope replaces the old one
        assert await store.sync_cursor(peer, b"s1") == 0
    async with open_store(db, clock=Clock()) as store:
        assert await store.sync_cursor(peer, b"s2") == 3  # kept across a restart


async def test_a_version_1_store_is_migrated(tmp_path: Path) -> None:
    db = tmp_path / "v1.db"
    conn = sqlite3.connect(db)
    conn.executescript(
        """
        PRAGMA journal_mode=WAL;
        CREATE TABLE messages (
            seq INTEGER PRIMARY KEY, account BLOB NOT NULL, namespace INTEGER NOT NULL,
            hash BLOB NOT NULL, data BLOB NOT NULL, timestamp INTEGER NOT NULL,
            expiry INTEGER NOT NULL, UNIQUE (account, namespace, hash));
        CREATE INDEX messages_by_owner ON messages (account, namespace, seq);
        CREATE INDEX messages_by_expiry ON messages (expiry);
        PRAGMA user_version=1;
        """
    )
    old = msg(b"old")
    conn.execute(
        "INSERT INTO messages VALUES (40, ?, 0, ?, ?, ?, ?)",
        (old.account, old.hash, old.data, old.timestamp_ms, old.expiry_ms),
    )
    conn.commit()
    conn.close()
    async with open_store(db, clock=Clock()) as store:
        page = await store.replica_page(0, accept=lambda k: True, limit=10, max_bytes=10**6)
        assert page.messages == [old] and page.next_seq == 40
        await store.store_replicated([msg(b"next")])
        page = await store.replica_page(40, accept=lambda k: True, limit=10, max_bytes=10**6)
        assert [m.data for m in page.messages] == [b"next"]
    conn = sqlite3.connect(db)
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'messages'").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    conn.close()
    assert "AUTOINCREMENT" in sql and version == SCHEMA_VERSION
    await trio.lowlevel.checkpoint()


# --- replay protection (issue 11, item 5) ---------------------------------------------------


def test_replay_guard_accepts_a_frame_once_for_its_window() -> None:
    guard = wire.ReplayGuard(window_ms=60_000, max_per_peer=3, not_before_ms=T0)
    frame, _ = wire.seal_push(A, B_PEER, [msg(b"x")], now_ms=T0 + 10)
    push = wire.open_push(frame, B, lookup(A_PEER), now_ms=T0 + 10)
    guard.check(push.sender, push.digest, push.sent_ms, T0 + 10)
    with pytest.raises(wire.ReplayedFrame) as replayed:
        guard.check(push.sender, push.digest, push.sent_ms, T0 + 59_000)
    assert replayed.value.status == "replayed" and replayed.value.http_status == 409
    # Another sender's frame with the same digest is another frame.
    guard.check(B.identity_public, push.digest, push.sent_ms, T0 + 20)
    # Once the window is over the frame is stale: refused on its time, and forgotten.
    with pytest.raises(ClockSkew):
        guard.check(push.sender, push.digest, push.sent_ms, T0 + 10 + 60_001)
    assert len(guard) == 2
    guard.check(push.sender, b"new" * 11, T0 + 70_000, T0 + 70_100)
    assert len(guard) == 2  # the first sender's old digest went
    # Stamped before the guard's start (a frame that may have come before a restart).
    with pytest.raises(ClockSkew, match="start"):
        guard.check(push.sender, b"old" * 11, T0 - 1, T0 + 100)
    # A sender's share is bounded: full of live digests, its next frame is refused.
    for i in range(2):
        guard.check(push.sender, bytes([i]) * 32, T0 + 70_000, T0 + 70_100)
    with pytest.raises(RateLimited):
        guard.check(push.sender, b"z" * 32, T0 + 70_000, T0 + 70_100)
    guard.check(B.identity_public, b"z" * 32, T0 + 70_000, T0 + 70_100)  # others are not


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 50_000)), max_size=60))
def test_replay_guard_never_accepts_a_frame_twice(events: list[tuple[int, int]]) -> None:
    # A frame is (its time); the digest covers the time, so one frame has one time.
    guard = wire.ReplayGuard(window_ms=60_000, max_per_peer=1000, not_before_ms=0)
    sent_of = {tag: T0 + tag * 20_000 for tag in range(6)}
    accepted: set[int] = set()
    now = T0
    for tag, step in events:
        now += step
        try:
            guard.check(b"p" * 32, bytes([tag]) * 32, sent_of[tag], now)
        except wire.ReplayedFrame:
            assert tag in accepted  # refused as a replay only if it was accepted
            continue
        except ClockSkew:
            assert abs(sent_of[tag] - now) > 60_000
            continue
        assert tag not in accepted  # never accepted twice
        accepted.add(tag)


# --- owner proofs (issue 11, item 6) ----------------------------------------------------------


def test_a_message_outside_the_inbox_needs_its_owners_proof() -> None:
    good = msg(b"post", ns=-3)
    assert wire.check_message(good, now_ms=T0) == ALICE.id
    assert wire.check_message(msg(b"private", ns=7), now_ms=T0) == ALICE.id
    h = good.hash
    base = (good.account, -3, h, good.data, T0, T0 + DAY)
    refused: dict[str, tuple[ReplicaMessage, type[Exception], str]] = {
        "no proof": (ReplicaMessage(*base), Unauthorized, "must carry"),
        "another account's key": (
            ReplicaMessage(*base, owner_proof(BOB, -3, h, T0, DAY)),
            Unauthorized,
            "not signed by the account",
        ),
        "another message": (
            ReplicaMessage(*base, owner_proof(ALICE, -3, bytes(32), T0, DAY)),
            Unauthorized,
            "does not verify",
        ),
        "another namespace": (
            ReplicaMessage(*base, owner_proof(ALICE, -4, h, T0, DAY)),
            Unauthorized,
            "does not verify",
        ),
        "an expiry beyond the signed TTL": (
            ReplicaMessage(*base[:5], T0 + DAY + rpc.CLOCK_SKEW_MS + 1, good.proof),
            Unauthorized,
            "signed TTL",
        ),
        "a capability that is not a chain": (
            ReplicaMessage(
                *base,
                rpc.StoreProof(ALICE.ed25519_public, T0, DAY, bytes(64), b"chain").encode(),
            ),
            MalformedCapability,
            "chain",
        ),
        "a proof on an inbox message": (
            ReplicaMessage(
                good.account,
                0,
                rpc.message_hash(ALICE.id, 0, b"post"),
                b"post",
                T0,
                T0 + DAY,
                good.proof,
            ),
            ProtocolError,
            "inbox",
        ),
        "not a proof": (ReplicaMessage(*base, b"\xa0"), SchemaError, "store_proof"),
    }
    for name, (m, error, match) in refused.items():
        with pytest.raises(error, match=match):
            wire.check_message(m, now_ms=T0)
        assert name
    # A shorter expiry than the proof allows (an owner's expire) is fine; so is the
    # skew a storing node may have had.
    shorter = ReplicaMessage(*base[:5], T0 + 60_000, good.proof)
    assert wire.check_message(shorter, now_ms=T0) == ALICE.id
    skewed = ReplicaMessage(*base[:5], T0 + DAY + rpc.CLOCK_SKEW_MS, good.proof)
    assert wire.check_message(skewed, now_ms=T0) == ALICE.id


def test_proofs_travel_in_frames_and_count_in_batches() -> None:
    messages = [msg(b"a", ns=-1), msg(b"b"), msg(b"c", ns=9)]
    frame, _ = wire.seal_push(A, B_PEER, messages, now_ms=T0)
    opened = wire.open_push(frame, B, lookup(A_PEER), now_ms=T0).messages
    assert opened == messages and opened[1].proof is None and opened[0].proof
    assert wire.batch_cost(messages[0]) == 1 + wire.ITEM_OVERHEAD + len(messages[0].proof or b"")


_PROOF_FIELDS = st.fixed_dictionaries(
    {
        "v": st.sampled_from([1, 1, 2]),
        "k": st.binary(min_size=31, max_size=33),
        "t": st.integers(-1, 2**64 - 1),
        "ttl": st.integers(0, 40 * DAY),
        "sig": st.binary(min_size=63, max_size=65),
    },
    optional={"cap": st.binary(max_size=3000), "x": st.integers(-100, 100)},
)


@settings(max_examples=300)
@given(st.binary(max_size=3000) | _PROOF_FIELDS.map(encode))
def test_decode_proof_takes_outside_bytes(blob: bytes) -> None:
    # Anything from a peer: a proof of the right shape, or a typed error, never another.
    try:
        proof = rpc.decode_proof(blob)
    except (DecodeError, SchemaError, TooLarge):
        return
    assert len(blob) <= rpc.MAX_PROOF_BYTES
    assert proof.encode() == blob  # one proof, one encoding (canonical CBOR)
    with pytest.raises(VeilError):
        rpc.verify_store_proof(ALICE.id, -1, bytes(32), T0, blob)


def test_a_proof_over_the_size_limit_is_refused_before_parsing() -> None:
    big = rpc.StoreProof(
        ALICE.ed25519_public, T0, DAY, bytes(64), bytes(rpc.MAX_PROOF_BYTES)
    ).encode()
    with pytest.raises(TooLarge):
        rpc.decode_proof(big)


# --- tombstones (issue 11, item 5) ---------------------------------------------------------


async def test_deleted_messages_are_not_brought_back_by_replication(tmp_path: Path) -> None:
    clock = Clock(T0 + 1000)
    db = tmp_path / "m.db"
    inbox, post, other = msg(b"inbox"), msg(b"post", ns=-2), msg(b"other", ns=-2)
    async with open_store(db, clock=clock) as store:
        assert await store.store_replicated([inbox, post, other]) == [True, True, True]
        assert await store.delete(ALICE.id, 0, [inbox.hash]) == [inbox.hash]
        assert await store.delete_all(ALICE.id, None) == 2
        # A push or pull of the same copies (a replay, a member that missed the delete).
        assert await store.store_replicated([inbox, post, other]) == [False, False, False]
        # A message never held here, deleted by hash (its copy was still on its way).
        late = msg(b"late", ns=-2)
        assert await store.delete(ALICE.id, -2, [late.hash]) == []
        assert await store.store_replicated([late]) == [False]
    async with open_store(db, clock=clock) as store:  # across a restart
        assert await store.store_replicated([inbox, post, other, late]) == [False] * 4
        # The same bytes stored again later (a new signed store) are a new message.
        clock.now = T0 + 5 * 60_000
        again = msg(b"post", ns=-2, ts=clock.now, exp=clock.now + DAY)
        assert await store.store_replicated([again]) == [True]
        # Tombstones go once no copy could still be alive; then they are swept.
        clock.now = T0 + 31 * DAY
        await store.sweep()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM tombstones").fetchone()[0] == 0


async def test_a_signed_request_is_executed_once(tmp_path: Path) -> None:
    clock = Clock()
    async with open_store(tmp_path / "m.db", clock=clock) as store:
        assert await store.remember_request(b"d" * 32, T0 + 60_000)
        assert not await store.remember_request(b"d" * 32, T0 + 60_000)
        clock.now = T0 + 60_001
        assert await store.remember_request(b"d" * 32, T0 + 120_000)  # long stale anyway


async def test_rows_without_a_proof_from_version_2_stay_local(tmp_path: Path) -> None:
    db = tmp_path / "v2.db"
    async with open_store(db, clock=Clock()) as store:
        await store.store_replicated([msg(b"x")])
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version=2")
        conn.execute("ALTER TABLE messages DROP COLUMN proof")
        conn.execute("DROP TABLE tombstones")
        conn.execute("DROP TABLE executed_requests")
        old_post = msg(b"old post", ns=-1)
        conn.execute(
            "INSERT INTO messages (account, namespace, hash, data, timestamp, expiry)"
            " VALUES (?, -1, ?, ?, ?, ?)",
            (old_post.account, old_post.hash, old_post.data, T0, T0 + DAY),
        )
    async with open_store(db, clock=Clock()) as store:
        assert await store.get(ALICE.id, -1, old_post.hash) is not None  # still served
        page = await store.replica_page(0, accept=lambda k: True, limit=10, max_bytes=10**6)
        assert [m.data for m in page.messages] == [b"x"]  # but never replicated
        found, _, more = await store.account_replicas(
            ALICE.id.x25519_public, limit=10, max_bytes=10**6
        )
        assert [m.data for m in found] == [b"x"] and not more


# --- deletions carried by anti-entropy --------------------------------------------------------


async def test_a_missed_deletion_is_applied_as_of_its_signed_time(tmp_path: Path) -> None:
    clock = Clock(T0 + 10 * 60_000)
    async with open_store(tmp_path / "m.db", clock=clock) as store:
        old, new = msg(b"old", ns=-2), msg(b"new", ns=-2, ts=T0 + 5 * 60_000)
        inbox_old = msg(b"inbox")
        await store.store_replicated([old, new, inbox_old])
        request = rpc.make_delete_all(ALICE, namespace=None, now_ms=T0 + 60_000)
        req = rpc.decode_request(request)
        assert isinstance(req, rpc.DeleteAllRequest)

        async def apply() -> int:
            return await store.apply_deletion(
                ALICE.id,
                None,
                None,
                signed_ms=T0 + 60_000,
                digest=deletion_digest(req),
                request=request,
                until_ms=deletion_until(req),
            )

        assert await apply() == 2  # old and inbox_old: stored before it was signed
        assert await apply() == 0  # once
        assert await store.get(ALICE.id, -2, new.hash) is not None  # stored after it
        assert await store.store_replicated([old, inbox_old]) == [False, False]  # tombstones
        # The deletion is kept for the next member that pulls it.
        page = await store.deletion_page(0, accept=lambda k: True, limit=10, max_bytes=10**6)
        assert page.deletes == (request,) and not page.messages and not page.more
        nobody = await store.deletion_page(0, accept=lambda k: False, limit=10, max_bytes=10**6)
        assert nobody.deletes == () and nobody.next_seq == page.next_seq
        # A delete by hash of a message not held here: its copy is refused when it comes.
        late = msg(b"late", ns=-2)
        by_hash = rpc.make_delete(ALICE, [late.hash], namespace=-2, now_ms=T0 + 60_000)
        dreq = rpc.decode_request(by_hash)
        assert isinstance(dreq, rpc.DeleteRequest)
        await store.apply_deletion(
            ALICE.id,
            -2,
            dreq.hashes,
            signed_ms=T0 + 60_000,
            digest=deletion_digest(dreq),
            request=by_hash,
            until_ms=deletion_until(dreq),
        )
        assert await store.store_replicated([late]) == [False]


def test_pages_of_deletions_round_trip_and_carry_no_messages() -> None:
    frame, digest = wire.seal_pull(A, B_PEER, 3, bytes(24), now_ms=T0, deletions=True)
    pull = wire.open_pull(frame, B, lookup(A_PEER), now_ms=T0)
    assert pull.deletions and pull.after == 3
    plain = wire.open_pull(
        wire.seal_pull(A, B_PEER, 3, bytes(24), now_ms=T0)[0], B, lookup(A_PEER), now_ms=T0
    )
    assert not plain.deletions
    request = rpc.make_delete_all(ALICE, namespace=None, now_ms=T0)
    page = ReplicaPage([], 9, False, (request,))
    answer = wire.seal_page(B, A_PEER, digest, page, now_ms=T0)
    assert wire.open_page(answer, A, B_PEER, digest, now_ms=T0) == page
    with pytest.raises(ValueError):
        wire.seal_page(B, A_PEER, digest, ReplicaPage([msg(b"x")], 9, False, (request,)), now_ms=T0)


# --- summaries (version 5, issue 17) ------------------------------------------------------


def _summary(*entries: tuple[int, ReplicaMessage]) -> tuple[wire.SummaryEntry, ...]:
    return tuple(
        wire.SummaryEntry(start, m.account, m.namespace, m.hash, m.expiry_ms)
        for start, m in entries
    )


def test_a_summary_pull_and_its_page_round_trip() -> None:
    frame, digest = wire.seal_pull(A, B_PEER, 41, bytes(24), now_ms=T0, summary=True)
    pull = wire.open_pull(frame, B, lookup(A_PEER), now_ms=T0)
    assert pull.summary and not pull.deletions and not pull.revocations and pull.after == 41
    summary = _summary((41, msg(b"one")), (41, msg(b"two", ns=5)), (73, msg(b"three", who=BOB)))
    page = ReplicaPage([], 90, False, summary=summary)
    answer = wire.seal_page(B, A_PEER, digest, page, now_ms=T0)
    assert len(answer) == wire.SIZE_CLASSES[0]  # the steady state: 2 KiB frames
    assert wire.open_page(answer, A, B_PEER, digest, now_ms=T0) == page
    # A full summary fits the largest class.
    full = _summary(*[(i, msg(i.to_bytes(4, "big"), ns=5)) for i in range(wire.MAX_SUMMARY)])
    answer = wire.seal_page(
        B, A_PEER, digest, ReplicaPage([], wire.MAX_SUMMARY, True, summary=full), now_ms=T0
    )
    assert wire.open_page(answer, A, B_PEER, digest, now_ms=T0).summary == full
    with pytest.raises(ValueError):
        wire.seal_pull(A, B_PEER, 0, bytes(24), now_ms=T0, summary=True, deletions=True)


def _lying_page(fields: dict[str, Any]) -> tuple[bytes, bytes]:
    """A page a listed peer (B) seals by hand, past seal_page's checks: (frame, digest
    of the pull it answers)."""
    _, digest = wire.seal_pull(A, B_PEER, 10, bytes(24), now_ms=T0, summary=True)
    body = encode(
        {
            "kind": "page",
            "from": B.identity_public,
            "to": A.identity_public,
            "t": T0,
            "re": digest,
            "messages": [],
            "next": 100,
            "more": False,
            **fields,
        }
    )
    inner = padding._pad(encode({"body": body, "sig": B.sign(wire.DOMAIN, body)}))
    nonce = os.urandom(crypto.XNONCE_BYTES)
    ad = sealing._ad(B.identity_public, A.identity_public)
    box = crypto.aead_seal(wire._box_key(B, A_PEER), nonce, inner, ad)
    outer = {
        "v": wire.FORMAT_VERSION,
        "from": B.identity_public,
        "to": A.identity_public,
        "nonce": nonce,
        "box": box,
    }
    return encode(outer), digest


def _entry(start: int, m: ReplicaMessage) -> dict[str, Any]:
    return {"s": start, "a": m.account, "ns": m.namespace, "h": m.hash, "exp": m.expiry_ms}


def test_a_peer_that_lies_in_a_summary_is_refused_with_a_typed_error() -> None:
    m = msg(b"x")
    # The hand-made page opens when it tells the truth ...
    frame, digest = _lying_page({"summary": [_entry(20, m), _entry(52, m)]})
    assert [e.start for e in wire.open_page(frame, A, B_PEER, digest, now_ms=T0).summary] == [
        20,
        52,
    ]
    # ... and each lie is refused.
    lies: list[tuple[dict[str, Any], type[Exception]]] = [
        # A start at or past the page's next seq: a pull after it could never reach it.
        ({"summary": [_entry(100, m)]}, ProtocolError),
        ({"summary": [_entry(150, m)], "next": 100}, ProtocolError),
        # Starts that go back: the asker's pulls after them would go back too.
        ({"summary": [_entry(50, m), _entry(20, m)]}, ProtocolError),
        # A summary with rows, deletions or revocations beside it.
        ({"summary": [_entry(20, m)], "messages": [wire._message_wire(m)]}, ProtocolError),
        ({"summary": [_entry(20, m)], "deletes": [b"\x01"]}, ProtocolError),
        # Over the limit, or entries of the wrong shape.
        ({"summary": [_entry(20, m)] * (wire.MAX_SUMMARY + 1)}, SchemaError),
        ({"summary": [{**_entry(20, m), "h": bytes(31)}]}, SchemaError),
        ({"summary": [{**_entry(20, m), "x": 1}]}, SchemaError),
    ]
    for fields, error in lies:
        frame, digest = _lying_page(fields)
        with pytest.raises(error):
            wire.open_page(frame, A, B_PEER, digest, now_ms=T0)


def test_a_version_4_frame_is_refused_on_its_version() -> None:
    inner, _ = _inner(100)
    with pytest.raises(SchemaError, match="v"):
        wire.open_push(_reseal(_padded(inner), version=4), B, lookup(A_PEER), now_ms=T0)


def test_the_box_key_follows_a_peers_new_onion_key() -> None:
    """Box keys are derived once per pair and kept: a peer listed with a new onion key
    gets a new one, and frames sealed under the old one no longer open."""
    frame, _ = wire.seal_push(A, B_PEER, [msg(b"x")], now_ms=T0)
    wire.open_push(frame, B, lookup(A_PEER), now_ms=T0)  # B keeps the key of (B, A)
    rotated = NodeKeys(bytes([1]) * 32, bytes([5]) * 32)  # A, with a new onion key
    listed = wire.Peer(rotated.identity_public, rotated.onion_public)
    with pytest.raises(Unauthorized, match="does not open"):
        wire.open_push(frame, B, lookup(listed), now_ms=T0)
    fresh, _ = wire.seal_push(rotated, B_PEER, [msg(b"y")], now_ms=T0)
    assert wire.open_push(fresh, B, lookup(listed), now_ms=T0).messages == [msg(b"y")]
    assert wire._box_key(A, B_PEER) == wire._box_key(B, A_PEER)
    assert wire._box_key(rotated, B_PEER) != wire._box_key(A, B_PEER)


def test_held_hashes_answer_for_what_was_stored_within_their_bound() -> None:
    """Anti-entropy skips a summary's row from memory only for a message noted as stored
    here expiring no earlier than the copy; memory stays bounded (oldest dropped)."""
    held = HeldHashes(max_entries=3)
    one, two = msg(b"one"), msg(b"two", exp=T0 + 2 * DAY)
    held.note([one, two])
    assert held.holds(one.hash, one.expiry_ms) and held.holds(two.hash, T0 + DAY)
    assert not held.holds(one.hash, one.expiry_ms + 1)  # a copy that would extend ours
    assert not held.holds(msg(b"never stored").hash, 0)
    held.note([msg(b"three"), msg(b"four")])
    assert len(held) == 3 and not held.holds(one.hash, 0)  # the oldest went first
    held.note([dataclasses.replace(two, expiry_ms=T0 + 3 * DAY)])  # a later expiry
    assert held.holds(two.hash, T0 + 3 * DAY)
