"""Delegated session keys at a real node (issue 12): onion requests signed by a session
key with its capability chain, and every bad input refused with its typed status.

One standalone ``veil-node`` process (127.0.0.1) shared by the module; every request is
an onion packet to it (tests/nodeutil.py), built with the storage RPC's builders
(:class:`veil.onion.capability.DelegatedSigner`) or, for the hostile cases, by hand
(tests/capabilityutil.py's ``raw_link``: links signed with none of the library's checks).
Times are the node's (the wall clock): a chain "already expired" expired more than the
node's clock skew (60 s) ago.

The swarm scenarios (a revocation reaches every member, one that was down included)
are in tests/test_revocations.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.capabilityutil import chain_bytes, digest_of, raw_link, res
from tests.nodeutil import NodeHandle, node_process, now_ms, onion_request
from tests.swarmutil import call
from veil.onion import capability as cap
from veil.onion import cbor, rpc
from veil.onion.errors import ActionNotCovered
from veil.onion.keys import Account

HOUR = 3_600_000
SKEW = rpc.CLOCK_SKEW_MS


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeHandle]:
    data = tmp_path_factory.mktemp("delegated") / "node"
    with node_process(data, config={"debug": {"clock_control": True}}) as running:
        yield running


def session(
    owner: Account, resources: str, *, lifetime_ms: int = HOUR
) -> tuple[cap.DelegatedSigner, cap.Chain]:
    """A fresh session key of ``owner`` for ``resources`` (``OWNER:NS:ACTIONS``)."""
    key = cap.SessionKey.generate()
    chain = cap.delegate(
        owner,
        key.ed25519_public,
        cap.parse_resources(resources, self_owner=owner.id),
        now_ms=now_ms(),
        lifetime_ms=lifetime_ms,
    )
    return cap.DelegatedSigner(key, chain), chain


def signed_by(
    key: cap.SessionKey,
    chain: bytes,
    method: str,
    params: dict[str, Any],
    *,
    bind: bytes | None = None,
    ts: int | None = None,
) -> bytes:
    """A request signed by ``key`` carrying ``chain``, built by hand (no local check):
    the signature binds ``bind`` (default: ``chain``)."""
    ts = now_ms() if ts is None else ts
    request = rpc.parse_request({"method": method, "params": dict(params)})
    assert not isinstance(request, rpc.InfoRequest | rpc.GetSwarmRequest | rpc.RevokeRequest)
    message = rpc.signing_message(
        method,
        request.account,
        request.namespace,
        ts,
        request.signed_extra(),
        chain if bind is None else bind,
    )
    signed = dict(params)
    signed.update(
        pubkey_ed25519=key.ed25519_public,
        timestamp=ts,
        signature=key.sign(rpc.DOMAIN, message),
        capability=chain,
    )
    return cbor.encode({"method": method, "params": signed})


def inbox_retrieve(owner: Account) -> dict[str, Any]:
    return {"pubkey": str(owner.id), "namespace": 0}


async def send(node: NodeHandle, request: bytes) -> rpc.Reply:
    async with httpx.AsyncClient(trust_env=False) as client:
        return await call(client, node.hop(), request)


async def refused(node: NodeHandle, request: bytes) -> tuple[str, str]:
    reply = await send(node, request)
    assert reply.status != "ok", reply
    return reply.status, reply.error or ""


async def inbox_of(node: NodeHandle, reader: Account | cap.DelegatedSigner) -> set[bytes]:
    reply = await send(node, rpc.make_retrieve(reader, now_ms=now_ms()))
    result = rpc.RetrieveResult.from_wire(reply.raise_for_status())
    return {m.hash for m in result.messages}


# --- the scenario of the issue, at one node ---------------------------------------------------


async def test_a_worker_reads_and_empties_the_inbox_with_a_one_hour_key_and_no_seed(
    node: NodeHandle,
) -> None:
    alice = Account.generate()
    worker, _ = session(alice, "self:0:retrieve,delete")
    sent = await send(
        node, rpc.make_store(alice.id, b"hello " + os.urandom(8), HOUR, now_ms=now_ms())
    )
    h = rpc.StoreResult.from_wire(sent.raise_for_status()).hash
    assert await inbox_of(node, worker) == {h}
    reply = await send(node, rpc.make_delete(worker, [h], now_ms=now_ms()))
    assert rpc.DeleteResult.from_wire(reply.raise_for_status()).deleted == [h]
    assert await inbox_of(node, alice) == set()
    # What it was not given: refused by the builder before anything is sent...
    with pytest.raises(ActionNotCovered) as caught:
        rpc.make_delete_all(worker, namespace=None, now_ms=now_ms())
    assert (caught.value.action, caught.value.namespace) == ("delete", None)
    with pytest.raises(ActionNotCovered):
        rpc.make_retrieve(worker, namespace=5, now_ms=now_ms())
    # ... and by the node when sent anyway.
    status, error = await refused(
        node,
        signed_by(
            worker.key, worker.chain.encoded, "retrieve", {**inbox_retrieve(alice), "namespace": 5}
        ),
    )
    assert status == "unauthorized" and "retrieve" in error
    # The node verified the chain once and answered from its cache since.
    async with httpx.AsyncClient(trust_env=False) as client:
        text = (await client.get(f"{node.url}/metrics", timeout=5)).text
    hits = [line for line in text.splitlines() if line.startswith("veil_storage_chains")]
    assert any('result="hit"' in line and float(line.rsplit(" ", 1)[1]) >= 1 for line in hits)


async def test_a_key_is_refused_once_its_capability_expires(node: NodeHandle) -> None:
    """The node's clock moves past the one-hour capability (and its skew): refused."""
    alice = Account.generate()
    worker, _ = session(alice, "self:0:retrieve")
    assert await inbox_of(node, worker) == set()
    offset = HOUR + SKEW + 1_000
    async with httpx.AsyncClient(trust_env=False) as client:
        moved = await client.post(f"{node.url}/debug/clock", json={"offset_ms": offset})
        assert moved.status_code == 200
        try:
            at = now_ms() + offset  # the packet's time and the request's: the node's clock
            request = rpc.make_retrieve(worker, now_ms=at)
            reply = rpc.decode_reply(await onion_request(client, [node.hop()], request, at_ms=at))
            assert reply.status == "unauthorized" and "expired" in (reply.error or "")
            # The account itself still reads.
            request = rpc.make_retrieve(alice, now_ms=at)
            reply = rpc.decode_reply(await onion_request(client, [node.hop()], request, at_ms=at))
            assert reply.ok
        finally:
            await client.post(f"{node.url}/debug/clock", json={"offset_ms": 0})


async def test_a_delegated_store_is_the_owners_and_a_narrower_redelegation_works(
    node: NodeHandle,
) -> None:
    alice = Account.generate()
    poster, chain = session(alice, "self:3..4:store,retrieve,delegate")
    reply = await send(node, rpc.make_store(poster, b"note", HOUR, namespace=3, now_ms=now_ms()))
    h = rpc.StoreResult.from_wire(reply.raise_for_status()).hash
    held = rpc.RetrieveResult.from_wire(
        (
            await send(node, rpc.make_retrieve(alice, namespace=3, now_ms=now_ms()))
        ).raise_for_status()
    )
    assert [m.hash for m in held.messages] == [h]
    # A narrower key, re-delegated by the session key (not the account), reads namespace 3.
    reader = cap.SessionKey.generate()
    narrower = cap.redelegate(
        chain, poster.key, reader.ed25519_public, res("self:3:retrieve", alice), now_ms=now_ms()
    )
    signer = cap.DelegatedSigner(reader, narrower)
    got = rpc.RetrieveResult.from_wire(
        (
            await send(node, rpc.make_retrieve(signer, namespace=3, now_ms=now_ms()))
        ).raise_for_status()
    )
    assert [m.hash for m in got.messages] == [h]
    # It cannot store (it was not given store), nor read namespace 4.
    for method, params in (
        ("store", {"pubkey": str(alice.id), "namespace": 3, "data": b"x", "ttl": HOUR}),
        ("retrieve", {"pubkey": str(alice.id), "namespace": 4}),
    ):
        status, _ = await refused(node, signed_by(reader, narrower.encoded, method, params))
        assert status == "unauthorized"
    # Publishing needs post, which store does not give.
    status, error = await refused(
        node,
        signed_by(
            poster.key,
            chain.encoded,
            "store",
            {"pubkey": str(alice.id), "namespace": -1, "data": b"x", "ttl": HOUR},
        ),
    )
    assert status == "unauthorized" and "post" in error


# --- bad input: each a typed error with its wire status, the node unharmed -----------------


def _cases(alice: Account, bob: Account) -> dict[str, tuple[cap.SessionKey, bytes, str, str]]:
    """name -> (signing key, chain bytes, expected status, a word of the error)."""
    t = now_ms()
    k1, k2 = cap.SessionKey.generate(), cap.SessionKey.generate()
    mallory = Account.generate()
    everything = res("self:*:*", alice)
    read_only = res("self:0:retrieve,delegate", alice)

    def root(resources: Any = everything, **kw: Any) -> bytes:
        kw.setdefault("iat", t - 60_000)
        kw.setdefault("exp", t + HOUR)
        return raw_link(alice, k1.ed25519_public, resources, **kw)

    def child(parent: bytes, resources: Any, **kw: Any) -> bytes:
        kw.setdefault("iat", t - 60_000)
        kw.setdefault("exp", t + HOUR)
        return raw_link(k1, k2.ed25519_public, resources, proof=digest_of(parent), **kw)

    longest = root()
    links = [longest]
    keys = [k1]
    for _ in range(8):  # nine links: one over the limit
        nxt = cap.SessionKey.generate()
        links.append(
            raw_link(
                keys[-1],
                nxt.ed25519_public,
                everything,
                iat=t - 60_000,
                exp=t + HOUR,
                proof=digest_of(links[-1]),
            )
        )
        keys.append(nxt)
    statement = "x" * cap.MAX_STATEMENT
    big_links = [root(statement=statement)]
    big_keys = [k1]
    while len(chain_bytes(*big_links)) <= cap.MAX_CHAIN_SIZE:
        nxt = cap.SessionKey.generate()
        big_links.append(
            raw_link(
                big_keys[-1],
                nxt.ed25519_public,
                [r.to_wire() for r in res("self:1..16:store", alice)]
                + [
                    {"with": b"\x05" + alice.id.x25519_public, "ns": [n, n], "can": ["retrieve"]}
                    for n in range(100, 115)
                ],
                iat=t - 60_000,
                exp=t + HOUR,
                proof=digest_of(big_links[-1]),
                statement=statement,
            )
        )
        big_keys.append(nxt)
    unknown = [{"with": b"\x05" + alice.id.x25519_public, "ns": [0, 0], "can": ["fly"]}]
    base = root(read_only)
    return {
        "expired": (
            k1,
            chain_bytes(root(iat=t - 2 * HOUR, exp=t - SKEW - 1_000)),
            "unauthorized",
            "expired",
        ),
        "not yet valid": (k1, chain_bytes(root(nbf=t + 3 * SKEW)), "clock_skew", "valid from"),
        "resources widened": (
            k2,
            chain_bytes(base, child(base, res("self:0:retrieve,delete", alice))),
            "unauthorized",
            "grants",
        ),
        "expiry extended": (
            k2,
            chain_bytes(base, child(base, res("self:0:retrieve", alice), exp=t + 2 * HOUR)),
            "unauthorized",
            "expires",
        ),
        "chain too long": (keys[-1], chain_bytes(*links), "too_large", "links"),
        "chain too large": (big_keys[-1], chain_bytes(*big_links), "too_large", "bytes"),
        "link signed by the wrong key": (
            k1,
            chain_bytes(root(sign_as=mallory)),
            "unauthorized",
            "signature",
        ),
        "first link not by the account": (
            k1,
            chain_bytes(raw_link(mallory, k1.ed25519_public, everything, iat=t, exp=t + HOUR)),
            "unauthorized",
            "issued",
        ),
        "a capability for another account": (
            k1,
            chain_bytes(
                raw_link(bob, k1.ed25519_public, res("self:*:*", bob), iat=t, exp=t + HOUR)
            ),
            "unauthorized",
            "not",
        ),
        "an unknown action": (k1, chain_bytes(root(unknown)), "bad_request", "unknown action"),
        "an action not covered": (
            k1,
            chain_bytes(root(res("self:0:delete", alice))),
            "unauthorized",
            "retrieve",
        ),
        "signed by a key the chain does not name": (
            k2,
            chain_bytes(root()),
            "unauthorized",
            "not signed by the key",
        ),
        "not a chain": (k1, b"\x80\x01", "bad_request", "chain"),
    }


async def test_every_bad_capability_is_refused_with_its_status(node: NodeHandle) -> None:
    alice, bob = Account.generate(), Account.generate()
    for name, (key, chain, status, word) in _cases(alice, bob).items():
        got = await refused(node, signed_by(key, chain, "retrieve", inbox_retrieve(alice)))
        assert got[0] == status, (name, got)
        assert word in got[1], (name, got)
    # The node is unharmed and still serves.
    reply = await send(node, rpc.make_info())
    assert reply.ok


async def test_a_signature_cannot_be_moved_to_another_chain(node: NodeHandle) -> None:
    alice = Account.generate()
    key = cap.SessionKey.generate()
    t = now_ms()
    narrow = cap.delegate(alice, key.ed25519_public, res("self:0:retrieve", alice), now_ms=t)
    wide = cap.delegate(alice, key.ed25519_public, res("self:0:retrieve", alice), now_ms=t)
    good = signed_by(key, narrow.encoded, "retrieve", inbox_retrieve(alice))
    assert (await send(node, good)).ok
    # The same key's signature over the narrow chain, presented with another chain of
    # the same key (which a revocation of the first would not reach).
    moved = signed_by(key, wide.encoded, "retrieve", inbox_retrieve(alice), bind=narrow.encoded)
    status, error = await refused(node, moved)
    assert status == "unauthorized" and "signature" in error
    # And the owner's own signature is never taken with a chain that names another key.
    owner_signed = signed_by(alice, narrow.encoded, "retrieve", inbox_retrieve(alice))  # type: ignore[arg-type]
    assert (await refused(node, owner_signed))[0] == "unauthorized"


async def test_a_revoked_key_and_the_keys_below_it_are_refused(node: NodeHandle) -> None:
    alice = Account.generate()
    worker, chain = session(alice, "self:0:retrieve,delegate")
    helper_key = cap.SessionKey.generate()
    below = cap.redelegate(
        chain, worker.key, helper_key.ed25519_public, res("self:0:retrieve", alice), now_ms=now_ms()
    )
    helper = cap.DelegatedSigner(helper_key, below)
    assert await inbox_of(node, worker) == set()
    assert await inbox_of(node, helper) == set()
    record = cap.revoke(alice, chain, now_ms=now_ms())
    kept = rpc.RevokeResult.from_wire(
        (await send(node, rpc.make_revoke(record.encoded))).raise_for_status()
    )
    assert kept.created and kept.expiry_ms > chain.expires_ms
    again = rpc.RevokeResult.from_wire(
        (await send(node, rpc.make_revoke(record.encoded))).raise_for_status()
    )
    assert not again.created  # idempotent
    for signer in (worker, helper):
        status, error = await refused(node, rpc.make_retrieve(signer, now_ms=now_ms()))
        assert status == "unauthorized" and "revoked" in error
    # A fresh key of the same account is unaffected.
    fresh, _ = session(alice, "self:0:retrieve")
    assert await inbox_of(node, fresh) == set()


async def test_bad_revocations_are_refused(node: NodeHandle) -> None:
    alice, bob = Account.generate(), Account.generate()
    worker, chain = session(alice, "self:0:retrieve")
    # A stranger cannot revoke alice's link (the record's signer is not upstream).
    stranger = cap.SessionKey.generate()
    record = cap.revoke(alice, chain, now_ms=now_ms())
    body = cbor.decode(record.encoded, max_size=cap.MAX_REVOCATION_SIZE)
    body["iss"] = stranger.ed25519_public
    del body["sig"]
    body["sig"] = stranger.sign(cap.REVOCATION_DOMAIN, cbor.encode(body))
    forged = cbor.encode(body)
    status, error = await refused(
        node,
        cbor.encode({"method": "revoke", "params": {"pubkey": str(alice.id), "record": forged}}),
    )
    assert status == "unauthorized" and "revoker" in error
    # A record for alice sent as bob's.
    wrong = cbor.encode(
        {"method": "revoke", "params": {"pubkey": str(bob.id), "record": record.encoded}}
    )
    status, error = await refused(node, wrong)
    assert status == "unauthorized"
    # A tampered record (its signature no longer verifies).
    body = cbor.decode(record.encoded, max_size=cap.MAX_REVOCATION_SIZE)
    body["iat"] -= 1
    status, error = await refused(
        node,
        cbor.encode(
            {"method": "revoke", "params": {"pubkey": str(alice.id), "record": cbor.encode(body)}}
        ),
    )
    assert status == "unauthorized" and "signature" in error
    # Not a record.
    status, _ = await refused(
        node,
        cbor.encode({"method": "revoke", "params": {"pubkey": str(alice.id), "record": b"\xa0"}}),
    )
    assert status == "bad_request"
    # None of it revoked anything.
    assert await inbox_of(node, worker) == set()
