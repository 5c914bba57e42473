"""Delegated sessions, the client's side (issue #12), without a network: the session
object and its string, re-delegation, the persisted store, the record of what a home
issued, and the refusals a client makes before any request leaves.

The same API against real nodes is in tests/test_delegated_devnet.py.
"""

from __future__ import annotations

import json
import os
import random
import stat
from pathlib import Path
from typing import Any

import pytest

from veil.client import (
    DelegatedSession,
    NotAuthorized,
    SeedRequired,
    SessionExpired,
    SessionStore,
    authorize,
    list_issued,
)
from veil.client.delegation.issued import find
from veil.client.errors import (
    InvalidArgument,
    PassphraseRequired,
    UnknownDelegation,
    WrongPassphrase,
)
from veil.client.home import KDF_MIN, Home
from veil.client.messaging import Receiver
from veil.client.network_clock import NetworkClock
from veil.client.state import open_state
from veil.client.veil_client import ClientConfig, VeilClient
from veil.onion.capability import DelegatedSigner, SessionKey, did_key
from veil.onion.directory import Authority, NetworkFile
from veil.onion.errors import (
    ExpiryExtended,
    InvalidResource,
    InvalidSession,
    ResourcesWidened,
)
from veil.onion.keys import Account, NodeKeys
from veil.onion.wallclock import wall_clock_ms

HOUR = 3600


@pytest.fixture
def account() -> Account:
    return Account.generate()


# --- the session ------------------------------------------------------------------------


def test_authorize_gives_a_session_with_didsessions_fields(account: Account) -> None:
    session = authorize(account, ["self:0:retrieve,delete"], expires_in=HOUR, statement="worker")
    assert session.did.startswith("did:key:z6Mk")
    assert session.did == did_key(session.key.ed25519_public)
    assert session.account == account.id
    assert session.authorizations == (f"{account.id}:0:delete,retrieve",)
    assert session.statement == "worker"
    assert not session.is_expired
    assert HOUR - 5 <= session.expires_in_secs <= HOUR
    assert session.is_authorized("self:0:retrieve")
    assert session.is_authorized(f"{account.id}:0:retrieve,delete")
    assert not session.is_authorized("self:0:store")
    assert not session.is_authorized("self:1:retrieve")
    assert not session.is_authorized(f"{Account.generate().id}:0:retrieve")
    assert session.missing(["self:0:retrieve,store,expire"]) == {"store", "expire"}
    assert session.depth == 1 and len(session.link_hash) == 64
    # The key is never printed.
    assert session.key.seed.hex() not in repr(session)


def test_default_lifetime_is_seven_days(account: Account) -> None:
    session = authorize(account, "self:0:retrieve")
    assert 7 * 86_400 - 5 <= session.expires_in_secs <= 7 * 86_400


@pytest.mark.parametrize("expires_in", [0, -1, 31 * 86_400, float("nan"), "3600", True])
def test_a_bad_lifetime_is_refused(account: Account, expires_in: Any) -> None:
    with pytest.raises(InvalidArgument):
        authorize(account, "self:0:retrieve", expires_in=expires_in)


def test_a_resource_of_another_account_or_an_unknown_action_is_refused(account: Account) -> None:
    with pytest.raises(InvalidResource):
        authorize(account, f"{Account.generate().id}:0:retrieve")
    with pytest.raises(InvalidResource, match="unknown action fly"):
        authorize(account, "self:0:fly")
    with pytest.raises(InvalidArgument):
        authorize(account, [])


def test_an_expired_session_says_so(account: Account) -> None:
    past = wall_clock_ms() - 2 * HOUR * 1000
    session = authorize(account, "self:0:retrieve", expires_in=HOUR, now_ms=past)
    assert session.is_expired
    assert session.expires_in_secs == 0
    assert not session.is_authorized("self:0:retrieve")
    with pytest.raises(SessionExpired) as info:
        session.require("retrieve", 0, now_ms=wall_clock_ms())
    assert info.value.action == "retrieve"


def test_a_session_restored_from_its_string_is_the_same(account: Account) -> None:
    session = authorize(account, ["self:0:retrieve", "self:-1:post"], expires_in=HOUR)
    text = session.serialize()
    assert text.startswith("veil-session-v1:")
    restored = DelegatedSession.from_string(text)
    assert restored.did == session.did
    assert restored.chain.encoded == session.chain.encoded
    assert restored.key.seed == session.key.seed
    assert restored.authorizations == session.authorizations
    assert DelegatedSession.from_string(text + "\n").did == session.did  # a file's newline


def test_a_tampered_session_string_is_a_typed_error(account: Account) -> None:
    text = authorize(account, "self:0:retrieve", expires_in=HOUR).serialize()
    prefix = len("veil-session-v1:")
    refused = 0
    for i in range(prefix, len(text), 7):
        c = "A" if text[i] != "A" else "B"
        tampered = text[:i] + c + text[i + 1 :]
        with pytest.raises(InvalidSession):
            DelegatedSession.from_string(tampered)
        refused += 1
    assert refused > 50
    for bad in ("", "veil-session-v2:" + text[prefix:], text[:-3], text + "AAAA", "x" * 40_000):
        with pytest.raises(InvalidSession):
            DelegatedSession.from_string(bad)
    # A session key swapped for another: not the chain's audience.
    other = authorize(account, "self:0:retrieve", expires_in=HOUR)
    from veil.onion.capability import encode_session

    with pytest.raises(InvalidSession):
        encode_session(SessionKey.generate(), other.chain)


# --- re-delegation ----------------------------------------------------------------------


def test_a_narrower_redelegation_works_and_a_wider_one_is_refused(account: Account) -> None:
    parent = authorize(account, ["self:0:retrieve,delete,delegate"], expires_in=HOUR)
    child = parent.delegate(["self:0:retrieve"], expires_in=600)
    assert child.depth == 2 and child.account == account.id
    assert child.did != parent.did
    assert child.is_authorized("self:0:retrieve")
    assert not child.is_authorized("self:0:delete")
    assert child.expires_ms <= parent.expires_ms
    # By default a child expires with its parent.
    assert parent.delegate("self:0:delete").expires_ms == parent.expires_ms
    with pytest.raises(ResourcesWidened):
        parent.delegate(["self:0:store"])
    with pytest.raises(ResourcesWidened):
        parent.delegate(["self:0..1:retrieve"])
    with pytest.raises(ExpiryExtended):
        parent.delegate(["self:0:retrieve"], expires_in=2 * HOUR)
    # Without 'delegate', nothing can be passed on (not even what it holds).
    with pytest.raises(ResourcesWidened):
        child.delegate(["self:0:retrieve"])
    # The string of a child restores too.
    assert DelegatedSession.from_string(child.serialize()).chain.encoded == child.chain.encoded


# --- the persisted store ----------------------------------------------------------------


def _home(tmp_path: Path, account: Account, passphrase: str | None = None) -> Home:
    home = Home(tmp_path / "home")
    home.save_identity(account, passphrase=passphrase, kdf=KDF_MIN)
    return home


def test_the_store_reuses_a_live_session_keyed_by_account_and_resources(
    tmp_path: Path, account: Account
) -> None:
    home = _home(tmp_path, account)
    store = SessionStore(home)
    assert not store.has_session_for(account.id, ["self:0:retrieve"])
    first = store.get(account, ["self:0:retrieve"], expires_in=HOUR)
    assert store.has_session_for(account, ["self:0:retrieve"])
    assert store.has_session_for(str(account.id), [f"{account.id}:0:retrieve"])
    again = SessionStore(home).get(account, ["self:0:retrieve"])
    assert again.did == first.did
    # Other resources (even fewer) are another key: never more rights than asked for.
    other = store.get(account, ["self:0:retrieve,delete"])
    assert other.did != first.did
    assert not store.has_session_for(account, ["self:0:delete"])
    # Every session the store made is recorded as issued by this home.
    assert {d.did for d in list_issued(home)} == {first.did, other.did}
    # The file is private, and holds the sessions (no passphrase on this home).
    mode = stat.S_IMODE(os.stat(home.sessions_path).st_mode)
    assert mode == 0o600
    assert first.serialize() in home.sessions_path.read_text()
    assert store.remove(account) == 2
    assert not store.has_session_for(account, ["self:0:retrieve"])
    assert store.remove(account.id) == 0


def test_the_store_does_not_reuse_an_expiring_or_revoked_session(
    tmp_path: Path, account: Account
) -> None:
    home = _home(tmp_path, account)
    store = SessionStore(home, min_remaining_s=120)
    short = store.get(account, "self:0:retrieve", expires_in=60)
    assert store.get(account, "self:0:retrieve", expires_in=HOUR).did != short.did
    live = store.get(account, "self:0:retrieve")
    with open_state(home) as state:
        state.mark_delegation_revoked(live.chain.links[-1].digest, wall_clock_ms())
    assert not store.has_session_for(account, "self:0:retrieve")
    assert store.get(account, "self:0:retrieve").did != live.did


def test_the_store_is_sealed_under_the_homes_passphrase(tmp_path: Path, account: Account) -> None:
    home = _home(tmp_path, account, passphrase="correct horse")
    store = SessionStore(home, passphrase="correct horse")
    session = store.get(account, ["self:0:retrieve"], expires_in=HOUR)
    raw = home.sessions_path.read_text()
    assert stat.S_IMODE(os.stat(home.sessions_path).st_mode) == 0o600
    doc = json.loads(raw)
    assert doc["protection"]["kdf"] == "argon2id13" and "sessions" not in doc
    text = session.serialize()
    assert text not in raw and text[16:60] not in raw
    assert session.key.seed.hex() not in raw
    assert str(account.id) not in raw  # not even whose sessions they are
    # Reopened with the passphrase: the same session; without it, or a wrong one: refused.
    assert SessionStore(home, passphrase="correct horse").get(account, ["self:0:retrieve"]).did == (
        session.did
    )
    with pytest.raises(PassphraseRequired):
        SessionStore(home).has_session_for(account, ["self:0:retrieve"])
    with pytest.raises(WrongPassphrase):
        SessionStore(home, passphrase="wrong").has_session_for(account, ["self:0:retrieve"])
    # A first write under a mistyped passphrase is refused (it would lock the file).
    home2 = Home(tmp_path / "home2")
    home2.save_identity(account, passphrase="right", kdf=KDF_MIN)
    with pytest.raises(WrongPassphrase):
        SessionStore(home2, passphrase="typo").get(account, "self:0:retrieve")
    assert not home2.sessions_path.exists()


def test_a_store_readable_by_others_is_refused(tmp_path: Path, account: Account) -> None:
    from veil.client.errors import InsecureFile

    home = _home(tmp_path, account)
    SessionStore(home).get(account, "self:0:retrieve")
    os.chmod(home.sessions_path, 0o644)
    with pytest.raises(InsecureFile):
        SessionStore(home).has_session_for(account, "self:0:retrieve")


# --- the record of what was issued -------------------------------------------------------


def test_targets_find_what_the_home_issued(tmp_path: Path, account: Account) -> None:
    home = _home(tmp_path, account)
    store = SessionStore(home)
    one = store.get(account, "self:0:retrieve")
    with open_state(home) as state:
        assert [r.link for r in find(state, one.did)] == [one.chain.links[-1].digest]
        assert [r.link for r in find(state, one.link_hash)] == [one.chain.links[-1].digest]
        assert [r.link for r in find(state, one.link_hash[:12])] == [one.chain.links[-1].digest]
        assert [r.link for r in find(state, one)] == [one.chain.links[-1].digest]
        for bad in ("did:key:zzz", "not a target", "00" * 32, SessionKey.generate().did):
            with pytest.raises(UnknownDelegation):
                find(state, bad)
    (listed,) = list_issued(home)
    assert listed.did == one.did and not listed.revoked
    assert listed.resources == (f"{account.id}:0:retrieve",)


# --- refused before any request leaves ---------------------------------------------------


class CountingTransport:
    """A transport that sends nothing and counts what it was asked to send."""

    def __init__(self) -> None:
        self.sent = 0

    async def post_onion(self, guard: Any, packet: bytes, *, timeout_s: float) -> bytes:
        self.sent += 1
        raise AssertionError("no request may leave")

    async def get(
        self, host: str, port: int, path: str, *, timeout_s: float, max_bytes: int
    ) -> bytes:
        self.sent += 1
        raise AssertionError("no request may leave")

    async def aclose(self) -> None:
        pass


def _offline_client(
    tmp_path: Path, session: DelegatedSession, transport: CountingTransport
) -> VeilClient:
    home = Home(tmp_path / "worker")
    state = open_state(home)
    authority = Authority(NodeKeys.generate().identity_public, "127.0.0.1", 9)
    return VeilClient(
        account=None,
        delegated=session,
        home=home,
        network=NetworkFile((authority,), 1),
        state=state,
        transport=transport,
        clock=NetworkClock(wall_clock_ms, 0),
        config=ClientConfig(),
        rng=random.Random(1),
    )


async def test_not_authorized_is_raised_before_any_request_leaves(
    tmp_path: Path, account: Account
) -> None:
    session = authorize(account, ["self:0:retrieve"], expires_in=HOUR)
    transport = CountingTransport()
    client = _offline_client(tmp_path, session, transport)
    try:
        with pytest.raises(NotAuthorized) as info:
            await client.delete([b"\x01" * 32])
        assert info.value.action == "delete" and info.value.namespace == 0
        assert "delete" in str(info.value)
        with pytest.raises(NotAuthorized) as info:
            await client.retrieve(namespace=1)
        assert info.value.action == "retrieve" and info.value.namespace == 1
        with pytest.raises(NotAuthorized) as info:
            await client.post(b"hello", namespace=-1)
        assert info.value.action == "post"
        with pytest.raises(NotAuthorized) as info:
            await client.store(b"x", namespace=1, ttl_s=60)
        assert info.value.action == "store"
        with pytest.raises(NotAuthorized) as info:
            await client.delete_all(namespace=None)
        assert info.value.action == "delete" and info.value.namespace is None
        with pytest.raises(NotAuthorized) as info:
            await client.expire([b"\x01" * 32], wall_clock_ms() + 60_000)
        assert info.value.action == "expire"
        # What needs the seed itself.
        with pytest.raises(SeedRequired):
            await client.send(Account.generate().id, "hi")
        with pytest.raises(SeedRequired):
            await client.authorize("self:0:retrieve")
        assert client.account_id == account.id
        assert transport.sent == 0
    finally:
        client.state.close()


async def test_an_expired_session_sends_nothing(tmp_path: Path, account: Account) -> None:
    past = wall_clock_ms() - 2 * HOUR * 1000
    session = authorize(account, ["self:0:retrieve"], expires_in=HOUR, now_ms=past)
    transport = CountingTransport()
    client = _offline_client(tmp_path, session, transport)
    try:
        with pytest.raises(SessionExpired) as info:
            await client.fetch()
        assert info.value.action == "retrieve"
        with pytest.raises(SessionExpired):
            async for _ in client.messages():
                pass
        assert isinstance(info.value, NotAuthorized)
        assert transport.sent == 0
    finally:
        client.state.close()


def test_the_delegated_signer_is_the_onions(account: Account) -> None:
    session = authorize(account, ["self:0:retrieve"], expires_in=HOUR)
    signer = session.signer
    assert isinstance(signer, DelegatedSigner)
    assert signer.account == account.id and signer.did == session.did
    assert signer.missing("retrieve", 0) == frozenset()
    assert signer.missing("delete", 0) == {"delete"}


def test_receiver_takes_a_session(tmp_path: Path, account: Account) -> None:
    session = authorize(account, ["self:0:retrieve"], expires_in=HOUR)

    class Onion:
        clock = NetworkClock(wall_clock_ms, 0)

    with open_state(Home(tmp_path / "w")) as state:
        receiver = Receiver(Onion(), session, state)  # type: ignore[arg-type]
        assert receiver.account is None and receiver.account_id == account.id
        assert receiver.recorded() == []


def test_the_store_follows_a_change_of_passphrase(tmp_path: Path, account: Account) -> None:
    home = _home(tmp_path, account, passphrase="old")
    session = SessionStore(home, passphrase="old").get(account, "self:0:retrieve")
    SessionStore(home, passphrase="old").reseal(
        lambda: home.set_passphrase("old", "new", kdf=KDF_MIN), "new"
    )
    assert SessionStore(home, passphrase="new").get(account, "self:0:retrieve").did == session.did
    with pytest.raises(WrongPassphrase):
        SessionStore(home, passphrase="old").has_session_for(account, "self:0:retrieve")
    # Removing the passphrase stores the sessions in clear (as the seed).
    SessionStore(home, passphrase="new").reseal(lambda: home.set_passphrase("new", None), None)
    assert session.serialize() in home.sessions_path.read_text()
    assert SessionStore(home).has_session_for(account, "self:0:retrieve")
