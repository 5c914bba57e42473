"""The storage RPC service through its one entry point, handle(bytes) -> bytes, on a real
SQLite store: methods, authentication, clock skew, rate limits, long-polls, expiry, and
hostile input."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veil.node.service import ServiceConfig, StorageService, open_storage_service
from veil.onion import rpc
from veil.onion.cbor import decode, encode
from veil.onion.errors import STATUS_CODES
from veil.onion.keys import Account

NOW = 1_700_000_000_000
ALICE = Account(bytes([1]) * 32)
BOB = Account(bytes([2]) * 32)
SECRET = b"SECRET-CONTENT-never-logged"


class Clock:
    def __init__(self, now: int = NOW) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def service(tmp_path: Path, clock: Clock) -> AsyncIterator[StorageService]:
    async with open_storage_service(tmp_path / "node.db", clock=clock) as svc:
        yield svc


async def call(service: StorageService, request: bytes) -> rpc.Reply:
    """handle() and decode; every reply must carry the node's current time."""
    out = await service.handle(request)
    assert decode(out, max_size=rpc.MAX_REPLY_SIZE)["t"] == service.clock()
    reply = rpc.decode_reply(out)
    assert reply.t_ms == service.clock()
    return reply


async def ok(service: StorageService, request: bytes) -> dict:  # type: ignore[type-arg]
    reply = await call(service, request)
    assert reply.ok, reply
    return reply.raise_for_status()


async def inbox(service: StorageService, who: Account, **kw: object) -> rpc.RetrieveResult:
    now = service.clock()
    result = await ok(service, rpc.make_retrieve(who, now_ms=now, **kw))  # type: ignore[arg-type]
    parsed = rpc.parse_result("retrieve", result)
    assert isinstance(parsed, rpc.RetrieveResult)
    return parsed


async def send(service: StorageService, to: Account, data: bytes, ttl: int = 60_000) -> bytes:
    result = await ok(service, rpc.make_store(to.id, data, ttl, now_ms=service.clock()))
    return result["hash"]  # type: ignore[no-any-return]


# --- methods --------------------------------------------------------------------------------


async def test_store_then_retrieve(service: StorageService, clock: Clock) -> None:
    stored = rpc.parse_result(
        "store", await ok(service, rpc.make_store(BOB.id, SECRET, 60_000, now_ms=NOW))
    )
    assert stored == rpc.StoreResult(rpc.message_hash(BOB.id, 0, SECRET), NOW + 60_000, True)
    again = await ok(service, rpc.make_store(BOB.id, SECRET, 60_000, now_ms=NOW))
    assert again["created"] is False and again["hash"] == stored.hash
    got = await inbox(service, BOB)
    assert got == rpc.RetrieveResult([rpc.Message(stored.hash, SECRET, NOW, NOW + 60_000)], False)
    assert (await inbox(service, ALICE)).messages == []
    assert service.counters.requests[("store", "ok")] == 2
    assert service.counters.stored == 1
    assert service.stats().messages == 1 and service.stats().size_bytes > 0


async def test_private_and_public_namespaces(service: StorageService) -> None:
    await ok(service, rpc.make_store(ALICE, b"mine", 60_000, namespace=5, now_ms=NOW))
    await ok(service, rpc.make_store(ALICE, b"post", 60_000, namespace=-1, now_ms=NOW))
    assert [m.data for m in (await inbox(service, ALICE, namespace=5)).messages] == [b"mine"]
    # Anyone reads the public-read namespace, unsigned.
    public = await ok(service, rpc.make_retrieve(ALICE.id, namespace=-1, now_ms=NOW))
    assert [m["data"] for m in public["messages"]] == [b"post"]
    # Nobody else reads or writes the private one.
    bob_reads = rpc.make_retrieve(BOB, namespace=5, now_ms=NOW)
    stolen = decode(bob_reads, max_size=rpc.MAX_REQUEST_SIZE)
    stolen["params"]["pubkey"] = str(ALICE.id)
    assert (await call(service, encode(stolen))).status == "unauthorized"
    unsigned = encode(
        {
            "method": "store",
            "params": {"pubkey": str(ALICE.id), "namespace": 5, "data": b"x", "ttl": 60_000},
        }
    )
    assert (await call(service, unsigned)).status == "unauthorized"


async def test_pagination(service: StorageService) -> None:
    hashes = [await send(service, BOB, b"m%d" % i) for i in range(5)]
    pages, last = [], None
    while True:
        page = await inbox(service, BOB, limit=2, last_hash=last)
        pages.append([m.hash for m in page.messages])
        if not page.more:
            break
        last = page.messages[-1].hash
    assert pages == [hashes[0:2], hashes[2:4], hashes[4:5]]


async def test_ttl_expiry_follows_the_node_clock(service: StorageService, clock: Clock) -> None:
    await send(service, BOB, b"short", ttl=10_000)
    await send(service, BOB, b"long", ttl=20_000)
    clock.now += 9_999
    assert [m.data for m in (await inbox(service, BOB)).messages] == [b"short", b"long"]
    clock.now += 1
    assert [m.data for m in (await inbox(service, BOB)).messages] == [b"long"]
    clock.now += 10_000
    assert (await inbox(service, BOB)).messages == []


async def test_delete_delete_all_and_expire(service: StorageService, clock: Clock) -> None:
    h1, h2, h3 = [await send(service, BOB, b"d%d" % i) for i in range(3)]
    await ok(service, rpc.make_store(BOB, b"private", 60_000, namespace=2, now_ms=NOW))

    deleted = await ok(service, rpc.make_delete(BOB, [h1, b"z" * 32], now_ms=NOW))
    assert deleted == {"deleted": [h1]}
    assert [m.hash for m in (await inbox(service, BOB)).messages] == [h2, h3]

    expired = await ok(service, rpc.make_expire(BOB, [h2, h1], NOW + 5_000, now_ms=NOW))
    assert expired == {"updated": [h2], "expiry": NOW + 5_000}
    clock.now += 5_000
    assert [m.hash for m in (await inbox(service, BOB)).messages] == [h3]

    too_late = rpc.make_expire(BOB, [h3], NOW + 15 * rpc.DAY_MS, now_ms=clock.now)
    assert (await call(service, too_late)).status == "bad_request"  # over the inbox's 14 days

    wiped = await ok(service, rpc.make_delete_all(BOB, namespace=0, now_ms=clock.now))
    assert wiped == {"deleted": 2}  # h3, and h2 (expired but not yet swept)
    assert (await inbox(service, BOB)).messages == []
    assert [m.data for m in (await inbox(service, BOB, namespace=2)).messages] == [b"private"]
    everything = await ok(service, rpc.make_delete_all(BOB, namespace=None, now_ms=clock.now))
    assert everything == {"deleted": 1}
    assert service.stats().messages == 0


async def test_deleting_needs_the_owner(service: StorageService) -> None:
    h = await send(service, BOB, b"keep me")
    forged = decode(rpc.make_delete(ALICE, [h], now_ms=NOW), max_size=rpc.MAX_REQUEST_SIZE)
    forged["params"]["pubkey"] = str(BOB.id)
    assert (await call(service, encode(forged))).status == "unauthorized"
    assert [m.hash for m in (await inbox(service, BOB)).messages] == [h]


async def test_unauthorized_retrieve_is_refused(service: StorageService) -> None:
    await send(service, BOB, SECRET)
    unsigned = encode({"method": "retrieve", "params": {"pubkey": str(BOB.id), "namespace": 0}})
    reply = await call(service, unsigned)
    assert reply.status == "unauthorized" and reply.result is None
    assert SECRET not in await service.handle(unsigned)
    assert service.counters.requests[("retrieve", "unauthorized")] == 2


async def test_skewed_client_clock_is_refused_with_the_node_time(
    service: StorageService, clock: Clock
) -> None:
    clock.now = NOW + 61_000
    reply = await call(service, rpc.make_retrieve(BOB, now_ms=NOW))
    assert reply.status == "clock_skew"
    assert reply.t_ms == NOW + 61_000  # the client can correct its clock from this
    clock.now = NOW + 60_000
    assert (await call(service, rpc.make_retrieve(BOB, now_ms=NOW))).ok


async def test_info_and_get_swarm(service: StorageService) -> None:
    info = rpc.parse_result("info", await ok(service, rpc.make_info()))
    assert isinstance(info, rpc.InfoResult) and info.limits["max_body"] == rpc.MAX_BODY
    assert (await call(service, rpc.make_get_swarm(BOB.id))).status == "not_found"


# --- rate limits ----------------------------------------------------------------------------


async def test_inbox_stores_are_rate_limited_per_account(
    tmp_path: Path, clock: Clock, mock_clock: trio.testing.MockClock
) -> None:
    config = ServiceConfig(inbox_rate=1.0, inbox_burst=3, max_buckets=10)
    async with open_storage_service(tmp_path / "n.db", clock=clock, config=config) as svc:
        for i in range(3):
            await send(svc, BOB, b"r%d" % i)
        limited = await call(svc, rpc.make_store(BOB.id, b"one more", 60_000, now_ms=NOW))
        assert limited.status == "rate_limited"
        assert svc.counters.rate_limited == 1
        assert svc.counters.requests[("store", "rate_limited")] == 1
        # Other inboxes, and the owner's own namespaces, are not limited by Bob's bucket.
        await send(svc, ALICE, b"for alice")
        await ok(svc, rpc.make_store(BOB, b"own", 60_000, namespace=1, now_ms=NOW))
        # A second later (trio's clock), one more token.
        mock_clock.jump(1.0)
        await send(svc, BOB, b"r3")
        assert (await call(svc, rpc.make_store(BOB.id, b"r4", 60_000, now_ms=NOW))).status == (
            "rate_limited"
        )
        assert [m.data for m in (await inbox(svc, BOB)).messages] == [b"r0", b"r1", b"r2", b"r3"]
        # The bucket map stays bounded however many inboxes are written to.
        for n in range(30):
            await send(svc, Account(bytes([100 + n]) * 32), b"x")
        assert len(svc._buckets) <= 10


# --- long-polls -----------------------------------------------------------------------------


async def test_long_poll_is_woken_at_once_by_a_store(
    service: StorageService, mock_clock: trio.testing.MockClock
) -> None:
    # mock_clock does not move by itself: if the poll were not woken by the store, it
    # would still be waiting below, and no virtual time passes during this test.
    replies: list[rpc.RetrieveResult] = []
    start = trio.current_time()

    async def poll() -> None:
        replies.append(await inbox(service, BOB, wait_s=30))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll)
        await trio.testing.wait_all_tasks_blocked()
        assert service.counters.waiting_polls == 1 and not replies
        # Stores elsewhere do not wake it.
        await send(service, ALICE, b"not for bob")
        await ok(service, rpc.make_store(BOB, b"other ns", 60_000, namespace=3, now_ms=NOW))
        await trio.testing.wait_all_tasks_blocked()
        assert not replies
        h = await send(service, BOB, b"wake up")
        await trio.testing.wait_all_tasks_blocked()
        assert len(replies) == 1, "the poll was not woken by the store"
        nursery.cancel_scope.cancel()
    assert [(m.hash, m.data) for m in replies[0].messages] == [(h, b"wake up")]
    assert trio.current_time() == start  # well before the 30 s wait
    assert service.counters.waiting_polls == 0


async def test_long_poll_returns_empty_when_the_wait_ends(
    service: StorageService, mock_clock: trio.testing.MockClock
) -> None:
    replies: list[rpc.RetrieveResult] = []

    async def poll() -> None:
        replies.append(await inbox(service, BOB, wait_s=5))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll)
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(4.9)
        await trio.testing.wait_all_tasks_blocked()
        assert not replies
        mock_clock.jump(0.2)
    assert replies == [rpc.RetrieveResult([], False)]


async def test_long_poll_returns_at_once_when_there_is_something(
    service: StorageService, mock_clock: trio.testing.MockClock
) -> None:
    await send(service, BOB, b"already here")
    got = await inbox(service, BOB, wait_s=30)
    assert [m.data for m in got.messages] == [b"already here"]
    # Polling after the last hash waits again.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(inbox, service, BOB, last_hash=got.messages[0].hash, wait_s=30))
        await trio.testing.wait_all_tasks_blocked()
        assert service.counters.waiting_polls == 1
        nursery.cancel_scope.cancel()  # cancel-safe: the waiter is forgotten
    assert service.counters.waiting_polls == 0
    assert not service.store._watches


async def test_waiting_polls_are_bounded(
    tmp_path: Path, clock: Clock, mock_clock: trio.testing.MockClock
) -> None:
    config = ServiceConfig(max_waiters=2)
    async with (
        open_storage_service(tmp_path / "n.db", clock=clock, config=config) as svc,
        trio.open_nursery() as nursery,
    ):
        for who in (ALICE, BOB):
            nursery.start_soon(partial(inbox, svc, who, wait_s=30))
        await trio.testing.wait_all_tasks_blocked()
        third = await call(svc, rpc.make_retrieve(BOB, now_ms=NOW, wait_s=30))
        assert third.status == "rate_limited"
        assert (await call(svc, rpc.make_retrieve(BOB, now_ms=NOW))).ok  # no wait: fine
        nursery.cancel_scope.cancel()


async def poll_public(
    svc: StorageService, source: str, into: list[rpc.Reply], channel: Account = BOB
) -> None:
    """An unsigned long-poll of ``channel``'s public-read namespace -1, from ``source``."""
    request = rpc.make_retrieve(channel.id, namespace=-1, now_ms=NOW, wait_s=30)
    into.append(rpc.decode_reply(await svc.handle(request, source=source)))


async def test_a_signed_poll_is_never_refused_for_unsigned_ones(
    tmp_path: Path, clock: Clock, mock_clock: trio.testing.MockClock
) -> None:
    # mock_clock does not move by itself: every wait below ends only by a store or an
    # eviction, never by its 30 s.
    config = ServiceConfig(max_waiters=3, max_waiters_per_source=3)
    unsigned: list[rpc.Reply] = []
    owners: list[rpc.Reply] = []

    async def owner_polls(namespace: int = rpc.INBOX) -> None:
        request = rpc.make_retrieve(ALICE, namespace=namespace, now_ms=NOW, wait_s=30)
        owners.append(rpc.decode_reply(await svc.handle(request, source="relay-a")))

    async with (
        open_storage_service(tmp_path / "n.db", clock=clock, config=config) as svc,
        trio.open_nursery() as nursery,
    ):
        for _ in range(3):
            nursery.start_soon(poll_public, svc, "relay-a", unsigned)
        await trio.testing.wait_all_tasks_blocked()
        assert svc.counters.waiting_polls == 3
        # Full: one more unsigned poll is refused at once, from any source.
        nursery.start_soon(poll_public, svc, "relay-b", unsigned)
        await trio.testing.wait_all_tasks_blocked()
        assert [r.status for r in unsigned] == ["rate_limited"]
        # The owner's signed poll (same source as the flood) takes the oldest one's place.
        nursery.start_soon(owner_polls)
        await trio.testing.wait_all_tasks_blocked()
        assert svc.counters.waiting_polls == 3 and svc.counters.evicted_polls == 1
        evicted = unsigned[1]
        assert (
            evicted.ok and rpc.RetrieveResult.from_wire(evicted.raise_for_status()).messages == []
        )
        assert not owners
        await send(svc, ALICE, b"for the owner")
        await trio.testing.wait_all_tasks_blocked()
        got = rpc.RetrieveResult.from_wire(owners[0].raise_for_status())
        assert [m.data for m in got.messages] == [b"for the owner"]
        # Signed polls do not evict each other: with the cap all signed, one is refused.
        for _ in range(3):
            nursery.start_soon(owner_polls, 3)  # a private namespace, empty
        await trio.testing.wait_all_tasks_blocked()
        assert svc.counters.evicted_polls == 3 and len(unsigned) == 4
        nursery.start_soon(owner_polls, 3)
        await trio.testing.wait_all_tasks_blocked()
        assert [r.status for r in owners[1:]] == ["rate_limited"]
        nursery.cancel_scope.cancel()
    assert svc.counters.waiting_polls == 0
    assert svc.waiters.waiting == 0 and not svc.waiters._per_source and not svc.waiters._unsigned


async def test_a_source_gets_its_share_of_waiting_polls(
    tmp_path: Path, clock: Clock, mock_clock: trio.testing.MockClock
) -> None:
    config = ServiceConfig(max_waiters=10, max_waiters_per_source=4)
    replies: list[rpc.Reply] = []
    async with (
        open_storage_service(tmp_path / "n.db", clock=clock, config=config) as svc,
        trio.open_nursery() as nursery,
    ):
        for _ in range(4):
            nursery.start_soon(poll_public, svc, "relay-a", replies)
        nursery.start_soon(poll_public, svc, "relay-a", replies)
        await trio.testing.wait_all_tasks_blocked()
        assert [r.status for r in replies] == ["rate_limited"]
        # Another source still can wait; the first one's signed polls have their own share.
        nursery.start_soon(poll_public, svc, "relay-b", replies)
        request = rpc.make_retrieve(ALICE, now_ms=NOW, wait_s=30)
        nursery.start_soon(partial(svc.handle, request, source="relay-a"))
        await trio.testing.wait_all_tasks_blocked()
        assert svc.counters.waiting_polls == 6 and len(replies) == 1
        # A slot given back is taken again.
        await ok(svc, rpc.make_store(BOB, b"news", 60_000, namespace=-1, now_ms=NOW))
        await trio.testing.wait_all_tasks_blocked()
        assert svc.counters.waiting_polls == 1
        nursery.start_soon(poll_public, svc, "relay-a", replies, ALICE)
        await trio.testing.wait_all_tasks_blocked()
        assert svc.counters.waiting_polls == 2
        nursery.cancel_scope.cancel()


# --- errors and logs --------------------------------------------------------------------------


async def test_a_failing_store_is_an_internal_error_logged_without_contents(
    service: StorageService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="veil.node.storage")
    await send(service, BOB, SECRET)
    with sqlite3.connect(service.store.path) as db:  # a real fault: the table is gone
        db.execute("DROP TABLE messages")
    reply = await call(service, rpc.make_retrieve(BOB, now_ms=NOW))
    assert (reply.status, reply.error) == ("internal", "internal error")
    assert service.counters.requests[("retrieve", "internal")] == 1
    assert "internal error in retrieve: OperationalError" in caplog.text
    store = await call(service, rpc.make_store(BOB.id, SECRET + b"2", 60_000, now_ms=NOW))
    assert store.status == "internal"
    assert SECRET.decode() not in caplog.text


async def test_bad_requests_get_their_status(service: StorageService) -> None:
    cases = {
        b"": "bad_request",
        b"\xff\xff": "bad_request",
        encode({"method": "nope", "params": {}}): "bad_request",
        b"\x00" * (rpc.MAX_REQUEST_SIZE + 1): "too_large",
    }
    for data, status in cases.items():
        reply = await call(service, data)
        assert reply.status == status and reply.error
        assert reply.status in STATUS_CODES
    assert service.counters.requests[("invalid", "bad_request")] == 3
    assert service.counters.requests[("invalid", "too_large")] == 1


# --- hostile bytes ------------------------------------------------------------------------------

_VALID = [
    rpc.make_store(BOB.id, b"hello", 60_000, now_ms=NOW),
    rpc.make_store(BOB, b"hello", 60_000, namespace=4, now_ms=NOW),
    rpc.make_retrieve(BOB, now_ms=NOW, limit=2),
    rpc.make_delete(BOB, [bytes(32)], now_ms=NOW),
    rpc.make_expire(BOB, [bytes(32)], NOW + 1000, now_ms=NOW),
    rpc.make_delete_all(BOB, namespace=None, now_ms=NOW),
    rpc.make_info(),
]


def _handle_all(db: Path, requests: list[bytes]) -> list[bytes]:
    async def main() -> list[bytes]:
        async with open_storage_service(db, clock=Clock()) as svc:
            return [await svc.handle(r) for r in requests]

    return trio.run(main)


def _assert_error_or_ok_reply(out: bytes) -> None:
    reply = rpc.decode_reply(out)
    assert reply.t_ms == NOW
    assert reply.status != "internal", reply.error
    if not reply.ok:
        assert reply.error


_hypothesis = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@_hypothesis
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=8))
def test_arbitrary_bytes_always_get_a_decodable_error_reply(
    tmp_path: Path, datas: list[bytes]
) -> None:
    for out in _handle_all(tmp_path / "h.db", datas):
        _assert_error_or_ok_reply(out)


@_hypothesis
@given(
    st.lists(
        st.tuples(
            st.sampled_from(_VALID),
            st.lists(st.tuples(st.integers(0, 10**5), st.integers(0, 255)), max_size=3),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_mutated_requests_get_a_reply_and_never_an_internal_error(
    tmp_path: Path, cases: list[tuple[bytes, list[tuple[int, int]]]]
) -> None:
    requests = []
    for base, edits in cases:
        data = bytearray(base)
        for where, byte in edits:
            data[where % len(data)] = byte
        requests.append(bytes(data))
    for out in _handle_all(tmp_path / "m.db", requests):
        _assert_error_or_ok_reply(out)


# --- issue 11, items 5 and 6: delete_all once, owner proofs kept -------------------------------


async def test_a_signed_delete_all_is_executed_once(service: StorageService, clock: Clock) -> None:
    await send(service, ALICE, b"before")
    request = rpc.make_delete_all(ALICE, namespace=None, now_ms=clock.now)
    assert (await ok(service, request))["deleted"] == 1
    clock.now += 12_000
    later = await send(service, ALICE, b"after")
    # The same signed bytes again (a copy, within the signature's window): nothing more.
    assert (await ok(service, request))["deleted"] == 0
    assert [m.hash for m in (await inbox(service, ALICE)).messages] == [later]
    # A new delete_all (signed anew) does delete it.
    assert (await ok(service, rpc.make_delete_all(ALICE, namespace=None, now_ms=clock.now)))[
        "deleted"
    ] == 1


async def test_stores_outside_the_inbox_keep_the_owners_proof(
    service: StorageService, clock: Clock
) -> None:
    await ok(service, rpc.make_store(ALICE, b"post", 60_000, now_ms=clock.now, namespace=-1))
    await send(service, ALICE, b"inbox")
    page = await service.store.replica_page(0, accept=lambda k: True, limit=10, max_bytes=10**6)
    by_ns = {m.namespace: m for m in page.messages}
    assert by_ns[0].proof is None
    post = by_ns[-1]
    assert post.proof is not None
    proof = rpc.verify_store_proof(ALICE.id, -1, post.hash, post.expiry_ms, post.proof)
    assert proof is not None and (proof.timestamp_ms, proof.ttl_ms) == (clock.now, 60_000)
