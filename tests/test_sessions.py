"""Encryption sessions on the client (issue 13), locally: the session API over a memory
backend that refuses what a node refuses. The same scenarios on a devnet are in
tests/test_group_devnet.py."""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

from veil.client import (
    EncryptionSession,
    MemoryBackend,
    RawMessageHasNoSession,
    SessionRevoked,
    local_sessions,
)
from veil.client.errors import InvalidArgument
from veil.onion.errors import (
    MessageTampered,
    NotAMember,
    RevocationNotAllowed,
    RightMissing,
    UnknownEpoch,
    WrongSession,
)
from veil.onion.keys import Account


def _people(n: int, backend: MemoryBackend | None = None):  # type: ignore[no-untyped-def]
    backend = backend or MemoryBackend()
    accounts = [Account.generate() for _ in range(n)]
    return accounts, [local_sessions(a, backend) for a in accounts]


async def _chain(policy: str):  # type: ignore[no-untyped-def]
    """user1 creates with user2; user2 adds user3."""
    (u1, u2, u3), (m1, m2, m3) = _people(3)
    s1 = await m1.create_encryption_session([u2.id], policy=policy, metadata="chain")
    s2 = await m2.retrieve_encryption_session(s1.id)
    await s2.add_recipients([u3.id])
    s3 = await m3.retrieve_encryption_session(s1.id)
    await s1.refresh()
    return (u1, u2, u3), (s1, s2, s3)


@pytest.mark.trio
async def test_create_encrypt_retrieve_by_id_and_by_message() -> None:
    (u1, u2), (m1, m2) = _people(2)
    s1 = await m1.create_encryption_session([str(u2.id)], metadata="q3 report")
    assert isinstance(s1, EncryptionSession)
    assert str(s1.session_id).startswith("03") and s1.metadata == "q3 report"
    assert s1.creator == u1.id
    assert s1.members == {u1.id: {"read", "forward", "revoke"}, u2.id: {"read", "forward"}}
    text = s1.encrypt_message("hello")
    doc = json.loads(text)
    assert set(doc) == {"sessionId", "data"} and doc["sessionId"] == s1.id
    by_message = await m2.retrieve_encryption_session(encrypted_message=text)
    assert by_message.decrypt_message(text) == "hello"
    by_id = await m2.retrieve_encryption_session(s1.id)
    raw = s1.encrypt_message("raw one", raw=True)
    assert not raw.startswith("{")
    assert by_id.decrypt_message(raw) == "raw one"
    assert await m2.decrypt_message(text) == "hello"
    with pytest.raises(RawMessageHasNoSession):
        await m2.retrieve_encryption_session(encrypted_message=raw)
    with pytest.raises(InvalidArgument):
        await m2.retrieve_encryption_session()


@pytest.mark.trio
async def test_a_non_member_gets_nothing() -> None:
    (_u1, u2, _u3), (m1, _m2, m3) = _people(3)
    s1 = await m1.create_encryption_session([u2.id])
    with pytest.raises(NotAMember):
        await m3.retrieve_encryption_session(s1.id)


@pytest.mark.trio
async def test_a_message_of_another_session_or_tampered_is_refused() -> None:
    (_u1, u2), (m1, _m2) = _people(2)
    a = await m1.create_encryption_session([u2.id])
    b = await m1.create_encryption_session([u2.id])
    with pytest.raises(WrongSession):
        b.decrypt_message(a.encrypt_message("x"))
    raw = bytearray(a.encrypt_message("x", raw=True).encode())
    raw[120] = ord("A") if raw[120] != ord("A") else ord("B")
    with pytest.raises(MessageTampered):
        a.decrypt_message(raw.decode())


@pytest.mark.parametrize("policy", ["rights", "delegation"])
@pytest.mark.trio
async def test_chain_user1_user2_user3(policy: str) -> None:
    (u1, u2, u3), (s1, s2, s3) = await _chain(policy)
    assert set(s1.members) == {u1.id, u2.id, u3.id}
    assert s1.added_by[u3.id] == (u2.id,)
    # user3 can revoke no one, under either policy; no one revokes the creator.
    for target in (u1.id, u2.id):
        with pytest.raises(RevocationNotAllowed):
            await s3.revoke_recipients([target])
    with pytest.raises(RevocationNotAllowed):
        await s2.revoke_recipients([u1.id])
    if policy == "rights":
        with pytest.raises(RevocationNotAllowed):
            await s2.revoke_recipients([u3.id])
        await s1.revoke_recipients([u3.id])
    else:
        await s2.revoke_recipients([u3.id])  # the adder revokes whom it added, and rotates
        # user2 (no revoke right) wrote the new epoch itself, in the same step: before
        # anyone else refreshes, what it encrypts is closed to user3.
        by_user2 = s2.encrypt_message("after user3, by user2")
        with pytest.raises(UnknownEpoch):
            s3.decrypt_message(by_user2)
        epochs = len(s2.state.epochs)
        await s1.refresh()
        assert len(s1.state.epochs) == epochs  # no rotation was left for user1 to do
        assert s1.decrypt_message(by_user2) == "after user3, by user2"
    assert set(s1.members) == {u1.id, u2.id}
    after = s1.encrypt_message("after user3")
    with pytest.raises(UnknownEpoch):
        s3.decrypt_message(after)  # every key it ever held
    with pytest.raises(NotAMember):
        await s3.refresh()  # the nodes refuse it the session's state
    await s2.refresh()
    assert s2.decrypt_message(after) == "after user3"


@pytest.mark.trio
async def test_revoking_a_member_revokes_those_it_added_unless_kept() -> None:
    (u1, u2, u3), (s1, _s2, s3) = await _chain("rights")
    await s1.revoke_recipients([u2.id])
    assert set(s1.members) == {u1.id}
    with pytest.raises(NotAMember):
        await s3.refresh()
    (u1, u2, u3), (s1, _s2, s3) = await _chain("rights")
    await s1.revoke_recipients([u2.id], keep_added=True)
    assert set(s1.members) == {u1.id, u3.id}
    assert u1.id in s1.added_by[u3.id]
    await s3.refresh()
    assert s3.decrypt_message(s1.encrypt_message("still here")) == "still here"


@pytest.mark.trio
async def test_a_member_without_forward_cannot_add() -> None:
    (u1, u2, u3), (m1, m2, _m3) = _people(3)
    s1 = await m1.create_encryption_session({u2.id: ["read"]})
    s2 = await m2.retrieve_encryption_session(s1.id)
    with pytest.raises(RightMissing) as caught:
        await s2.add_recipients([u3.id])
    assert caught.value.right == "forward"
    # ... and one with forward gives no right it lacks.
    s1b = await m1.create_encryption_session([u2.id])
    s2b = await m2.retrieve_encryption_session(s1b.id)
    with pytest.raises(RightMissing):
        await s2b.add_recipients([u3.id], rights=["read", "revoke"])
    assert u1.id in s1b.members


@pytest.mark.trio
async def test_a_revoked_member_reads_nothing_sent_after() -> None:
    (_u1, u2, u3), (m1, m2, m3) = _people(3)
    s1 = await m1.create_encryption_session([u2.id, u3.id])
    s2 = await m2.retrieve_encryption_session(s1.id)
    before = s1.encrypt_message("before")
    await s1.send("chat before")
    seen = [m.text async for m in s2.messages(follow=False)]
    assert seen == ["chat before"]
    kept_keys = dict(s2._keys)
    await s1.revoke_recipients([u2.id])
    after = s1.encrypt_message("after")
    assert s2.decrypt_message(before) == "before"
    with pytest.raises(UnknownEpoch):
        s2.decrypt_message(after)
    assert all(k in kept_keys.values() for k in s2._keys.values())
    with pytest.raises(NotAMember):
        await m2.retrieve_encryption_session(s1.id, use_cache=False)
    with pytest.raises(NotAMember):
        await s2.send("let me in")
    s3 = await m3.retrieve_encryption_session(s1.id)
    assert s3.decrypt_message(after) == "after"


@pytest.mark.trio
async def test_whole_session_revocation() -> None:
    (_u1, u2, u3), (m1, m2, m3) = _people(3)
    s1 = await m1.create_encryption_session([u2.id, u3.id])
    s2 = await m2.retrieve_encryption_session(s1.id)
    s3 = await m3.retrieve_encryption_session(s1.id)
    await s2.send("soon gone")
    await s1.revoke()
    assert s1.ended
    with pytest.raises(SessionRevoked):
        s1.encrypt_message("no")
    with pytest.raises(SessionRevoked):
        await s2.send("no")
    with pytest.raises(SessionRevoked):
        await s3.refresh()
    with pytest.raises(SessionRevoked):
        await m2.retrieve_encryption_session(s1.id, use_cache=False)
    with pytest.raises(SessionRevoked):
        async for _ in s3.messages(follow=False):
            pass


@pytest.mark.trio
async def test_a_creator_that_does_not_encrypt_for_itself() -> None:
    (u1, u2, u3), (m1, m2, _m3) = _people(3)
    s1 = await m1.create_encryption_session([u2.id, u3.id], encrypt_for_self=False)
    assert u1.id not in s1.members
    with pytest.raises(NotAMember):
        s1.encrypt_message("cannot")
    s2 = await m2.retrieve_encryption_session(s1.id)
    text = s2.encrypt_message("for members")
    await s1.revoke_recipients([u3.id])  # with the session key alone
    await s2.refresh()
    assert s2.decrypt_message(text) == "for members"
    assert set(s2.members) == {u2.id}


@pytest.mark.trio
async def test_group_chat_exactly_once_across_restarts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from veil.client.sessions import SessionManager

    backend = MemoryBackend()
    u1, u2 = Account.generate(), Account.generate()
    m1 = local_sessions(u1, backend)
    s1 = await m1.create_encryption_session([u2.id])
    for i in range(3):
        await s1.send(f"m{i}")

    def manager() -> SessionManager:
        return SessionManager(u2, backend, chat_path=tmp_path / "chat.sqlite")

    s2 = await manager().retrieve_encryption_session(s1.id)
    got = []
    async for message in s2.messages():
        got.append(message.text)
        assert message.author == u1.id
        if len(got) == 2:
            break
    s2._manager.chat.close()  # type: ignore[union-attr]
    # A restart: the third comes once, the first two never again.
    await s1.send("m3")
    s2 = await manager().retrieve_encryption_session(s1.id)
    rest = [m.text async for m in s2.messages(follow=False)]
    assert got + rest == ["m0", "m1", "m2", "m3"]
    assert [m.text for m in s2.history()] == ["m0", "m1", "m2", "m3"]


@pytest.mark.trio
async def test_messages_long_poll_wakes_on_send() -> None:
    (_u1, u2), (m1, m2) = _people(2)
    s1 = await m1.create_encryption_session([u2.id])
    s2 = await m2.retrieve_encryption_session(s1.id)
    got: list[str] = []

    async def reader() -> None:
        async for message in s2.messages():
            got.append(message.text)
            return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.sleep(0.05)
        await s1.send("wake up")
    assert got == ["wake up"]


def test_a_stale_session_refreshes_before_it_encrypts_a_file_or_sends() -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def scenario() -> None:
        (_u1, u2, u3), (m1, m2, m3) = _people(3)
        s1 = await m1.create_encryption_session([u2.id, u3.id])
        s2 = await m2.retrieve_encryption_session(s1.id)
        s3 = await m3.retrieve_encryption_session(s1.id)  # will be stale
        await s1.revoke_recipients([u2.id])
        await trio.sleep(11)  # older than refresh_after_s (10 s)
        sealed = await s3.encrypt_file(b"after the revocation", "a.txt")
        with pytest.raises(UnknownEpoch):
            await s2.decrypt_file(sealed)  # u2's keys, all of them: not this epoch
        assert (await s1.decrypt_file(sealed)).data == b"after the revocation"

    trio.run(scenario, clock=clock)
