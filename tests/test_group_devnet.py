"""Encryption sessions through the client library on a real devnet (issue 13): the
user1/user2/user3 chains under both policies, a revoked member that kept every key and
byte (it reads nothing newer; the nodes refuse it the session's state), whole-session
revocation, retrieval by ID and by message (raw refused), forward needed to add, group
chat between members, a file found by its header. One devnet serves the module; each
test makes its own accounts and homes. The same rules without a network are in
tests/test_sessions*.py; the CLI in tests/test_cli_group.py."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.devnetutil import group_net_fixture  # noqa: F401 (the shared devnet)
from veil.client import RawMessageHasNoSession, SessionRevoked, VeilClient, open_client
from veil.client.devnet import Devnet
from veil.client.home import Home
from veil.onion.errors import (
    NotAMember,
    RevocationNotAllowed,
    RightMissing,
    UnknownEpoch,
)
from veil.onion.keys import Account

pytestmark = [pytest.mark.slow, pytest.mark.trio]


@contextlib.asynccontextmanager
async def clients(group_net: Devnet, tmp_path: Path, n: int) -> AsyncIterator[list[VeilClient]]:
    async with contextlib.AsyncExitStack() as stack:
        out = []
        for i in range(n):
            home = Home(tmp_path / f"user{i + 1}")
            account = Account.generate()
            home.save_identity(account)
            out.append(await stack.enter_async_context(open_client(home, group_net.network_file)))
        yield out


def ids(*cs: VeilClient) -> list[Any]:
    return [c.account_id for c in cs]


async def test_retrieval_by_id_and_by_message_and_raw_refused(
    group_net: Devnet, tmp_path: Path
) -> None:
    async with clients(group_net, tmp_path, 3) as (c1, c2, c3):
        s1 = await c1.create_encryption_session([c2.account_id], metadata="by id")
        text = s1.encrypt_message("hello over the swarm")
        s2 = await c2.retrieve_encryption_session(encrypted_message=text)
        assert s2.metadata == "by id" and s2.decrypt_message(text) == "hello over the swarm"
        same = await c2.retrieve_encryption_session(s1.id, use_cache=False)
        assert set(same.members) == set(ids(c1, c2))
        with pytest.raises(RawMessageHasNoSession):
            await c2.retrieve_encryption_session(
                encrypted_message=s1.encrypt_message("r", raw=True)
            )
        with pytest.raises(NotAMember):
            await c3.retrieve_encryption_session(s1.id)


@pytest.mark.parametrize("policy", ["rights", "delegation"])
async def test_chain_user1_user2_user3(group_net: Devnet, tmp_path: Path, policy: str) -> None:
    async with clients(group_net, tmp_path, 3) as (c1, c2, c3):
        s1 = await c1.create_encryption_session([c2.account_id], policy=policy)
        s2 = await c2.retrieve_encryption_session(s1.id)
        await s2.add_recipients([c3.account_id])
        s3 = await c3.retrieve_encryption_session(s1.id)
        await s1.refresh()
        assert set(s1.members) == set(ids(c1, c2, c3))
        for target in ids(c1, c2):
            with pytest.raises(RevocationNotAllowed):
                await s3.revoke_recipients([target])
        with pytest.raises(RevocationNotAllowed):
            await s2.revoke_recipients([c1.account_id])
        if policy == "rights":
            with pytest.raises(RevocationNotAllowed):
                await s2.revoke_recipients([c3.account_id])
            await s1.revoke_recipients([c3.account_id])
        else:
            # user2 (no revoke right) revokes whom it added and writes the next epoch
            # itself, naming its revocation; the nodes accept both.
            await s2.revoke_recipients([c3.account_id])
            by_user2 = s2.encrypt_message("after user3, by user2")
            with pytest.raises(UnknownEpoch):
                s3.decrypt_message(by_user2)
            epochs = len(s2.state.epochs)
            await s1.refresh()
            assert len(s1.state.epochs) == epochs  # nothing left for user1 to rotate
            assert s1.decrypt_message(by_user2) == "after user3, by user2"
        after = s1.encrypt_message("after user3")
        with pytest.raises(UnknownEpoch):
            s3.decrypt_message(after)
        with pytest.raises(NotAMember):
            await c3.retrieve_encryption_session(s1.id, use_cache=False)
        await s2.refresh()
        assert s2.decrypt_message(after) == "after user3"


async def test_members_added_by_a_revoked_member_lose_access_through_it(
    group_net: Devnet, tmp_path: Path
) -> None:
    async with clients(group_net, tmp_path, 3) as (c1, c2, c3):
        s1 = await c1.create_encryption_session([c2.account_id])
        s2 = await c2.retrieve_encryption_session(s1.id)
        await s2.add_recipients([c3.account_id])
        await s1.refresh()
        await s1.revoke_recipients([c2.account_id])
        assert set(s1.members) == {c1.account_id}
        with pytest.raises(NotAMember):
            await c3.retrieve_encryption_session(s1.id, use_cache=False)


async def test_a_revoked_member_with_every_key_and_byte_reads_nothing_newer(
    group_net: Devnet, tmp_path: Path
) -> None:
    async with clients(group_net, tmp_path, 3) as (c1, c2, c3):
        s1 = await c1.create_encryption_session([c2.account_id, c3.account_id])
        s2 = await c2.retrieve_encryption_session(s1.id)
        await s1.send("before")
        seen = [m.text async for m in s2.messages(follow=False)]
        assert seen == ["before"]
        hoard = dict(s2._keys)
        await s1.revoke_recipients([c2.account_id])
        after = s1.encrypt_message("after")
        await s1.send("chat after")
        with pytest.raises(UnknownEpoch):
            s2.decrypt_message(after)
        assert set(s2._keys) == set(hoard)
        with pytest.raises(NotAMember):
            await c2.retrieve_encryption_session(s1.id, use_cache=False)
        with pytest.raises(NotAMember):
            async for _ in s2.messages(follow=False):
                pass
        s3 = await c3.retrieve_encryption_session(s1.id)
        assert s3.decrypt_message(after) == "after"
        assert [m.text async for m in s3.messages(follow=False)] == ["before", "chat after"]


async def test_whole_session_revocation(group_net: Devnet, tmp_path: Path) -> None:
    async with clients(group_net, tmp_path, 3) as (c1, c2, c3):
        s1 = await c1.create_encryption_session([c2.account_id, c3.account_id])
        s2 = await c2.retrieve_encryption_session(s1.id)
        s3 = await c3.retrieve_encryption_session(s1.id)
        await s2.send("gone soon")
        await s1.revoke()
        with pytest.raises(SessionRevoked):
            await s2.send("no")
        with pytest.raises(SessionRevoked):
            await s3.refresh()
        with pytest.raises(SessionRevoked):
            await c2.retrieve_encryption_session(s1.id, use_cache=False)


async def test_forward_is_needed_to_add(group_net: Devnet, tmp_path: Path) -> None:
    async with clients(group_net, tmp_path, 3) as (c1, c2, c3):
        s1 = await c1.create_encryption_session({c2.account_id: ["read"]})
        s2 = await c2.retrieve_encryption_session(s1.id)
        with pytest.raises(RightMissing):
            await s2.add_recipients([c3.account_id])


async def test_a_file_is_found_by_its_header_and_chat_flows(
    group_net: Devnet, tmp_path: Path
) -> None:
    async with clients(group_net, tmp_path, 2) as (c1, c2):
        s1 = await c1.create_encryption_session([c2.account_id])
        data = b"a file for the group" * 5000
        sealed = await s1.encrypt_file(data, "notes.txt")
        result = await c2.decrypt_file(sealed)
        assert (result.data, result.filename, result.session_id) == (
            data,
            "notes.txt",
            s1.session_id,
        )
        s2 = await c2.retrieve_encryption_session(s1.id)
        got: list[str] = []

        async def follow() -> None:
            async for m in s2.messages():
                got.append(m.text)
                if len(got) == 2:
                    return

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(follow)
                await s1.send("one")
                await s1.send("two")
        assert got == ["one", "two"]


async def test_invitations_never_reach_the_application(group_net: Devnet, tmp_path: Path) -> None:
    async with clients(group_net, tmp_path, 2) as (c1, c2):
        s1 = await c1.create_encryption_session([c2.account_id])
        await c1.send(c2.account_id, "a plain 1:1 message", ttl_s=600)
        fetched = await c2.fetch()
        assert [m.text for m in fetched] == ["a plain 1:1 message"]
        # The invitation was recorded but not shown, and the member still finds it.
        s2 = await c2.retrieve_encryption_session(s1.id)
        assert s2.decrypt_message(s1.encrypt_message("found")) == "found"


async def test_a_creator_for_others_only_administers_after_a_restart(
    group_net: Devnet, tmp_path: Path
) -> None:
    home = Home(tmp_path / "service")
    home.save_identity(Account.generate())
    async with clients(group_net, tmp_path, 2) as (c2, c3):
        async with open_client(home, group_net.network_file) as service:
            session = await service.create_encryption_session(
                [c2.account_id, c3.account_id], encrypt_for_self=False
            )
            assert service.account_id not in session.members
        # A restart: the session key was kept, sealed, in the home.
        async with open_client(home, group_net.network_file) as service:
            again = await service.retrieve_encryption_session(session.id)
            assert again.rights == {"read", "forward", "revoke"}
            seed = again._session_key.seed  # type: ignore[union-attr]
            await again.revoke_recipients([c3.account_id])
        s2 = await c2.retrieve_encryption_session(session.id)
        text = s2.encrypt_message("after the service revoked user3")
        with pytest.raises(NotAMember):
            await c3.retrieve_encryption_session(session.id, use_cache=False)
        assert s2.decrypt_message(text) == "after the service revoked user3"
    keys = (home.path / "session-keys").iterdir()
    raw = b"".join(p.read_bytes() for p in keys)
    assert str(session.id).encode() in raw  # named, sealed: the key is not in clear
    assert seed not in raw and seed.hex().encode() not in raw


async def test_a_member_reads_its_session_without_an_invitation(
    group_net: Devnet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No invitation is sent, and none is looked for: the nodes find the member's
    membership among the records they hold, for a retrieve signed by its account."""
    from veil.client.sessions import backend, invites

    async def no_invite(*args: Any, **kwargs: Any) -> None:
        return None

    looked: list[Any] = []

    async def no_chain(client: Any, account: Any, session_id: Any) -> None:
        looked.append(account.id)  # the fallback, for a node that does not know it
        return None

    monkeypatch.setattr(backend.NetworkBackend, "invite", no_invite)
    monkeypatch.setattr(invites, "find_chain", no_chain)
    async with clients(group_net, tmp_path, 3) as (c1, c2, c3):
        s1 = await c1.create_encryption_session([c2.account_id])
        text = s1.encrypt_message("no invitation needed")
        s2 = await c2.retrieve_encryption_session(encrypted_message=text)
        assert s2.decrypt_message(text) == "no invitation needed"
        # Added later by a member, the same.
        await s2.add_recipients([c3.account_id])
        s3 = await c3.retrieve_encryption_session(s1.id)
        assert s3.decrypt_message(s2.encrypt_message("and later")) == "and later"
        assert looked == []
        # A stranger is refused, and so is a revoked member (by its account alone too).
        async with clients(group_net, tmp_path / "x", 1) as (c4,):
            with pytest.raises(NotAMember):
                await c4.retrieve_encryption_session(s1.id)
        await s1.refresh()
        await s1.revoke_recipients([c3.account_id])
        with pytest.raises((NotAMember, SessionRevoked)):
            await c3.retrieve_encryption_session(s1.id, use_cache=False)
