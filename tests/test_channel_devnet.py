"""Channels on a real devnet (issue 14): a follower receives a public channel's posts,
verified, drops a forged one (and counts it), resumes exactly once after a restart; two
channels followed by one client use their own path selectors; the follower's identity
is in no node's files; a posting job with a delegated ``post`` key; the CLI end to end.
(What the network really sees, the follower's address and the two channels' real
paths and poll times, is checked in tests/test_channel_privacy.py.)

Private channels: a follower with the invite reads the posts; one with the public ID
only reads nothing and does not crash; after the invite is revoked, the old invite's
follower cannot read the new posts (and is told, once) while the new invite's can; the
invite key is in no node's files; the CLI flow (create --private, post, invite,
follow, revoke-invite).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import cbor2
import pytest
import trio

from tests.devnetutil import devnet
from veil.client.channels import (
    Channel,
    Follower,
    create_channel,
    follow,
    list_channels,
    open_channel,
)
from veil.client.devnet import Devnet
from veil.client.home import Home
from veil.client.veil_client import VeilClient, open_client
from veil.onion import rpc
from veil.onion.capability import DelegatedSigner, SessionKey, delegate, parse_resources
from veil.onion.channel import (
    CHANNEL_NAMESPACE,
    POST_DOMAIN,
    Post,
    format_channel_invite,
    make_post,
    parse_channel_invite,
)
from veil.onion.keys import Account

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    with devnet(tmp_path_factory.mktemp("chan"), nodes=5, swarm_size=3) as running:
        yield running


def new_home(tmp_path: Path, name: str) -> tuple[Home, Account]:
    home = Home(tmp_path / name)
    account = Account.generate()
    home.save_identity(account)
    return home, account


async def take(iterator, count: int, timeout: float = 60) -> list:  # type: ignore[no-untyped-def]
    got = []
    with trio.fail_after(timeout):
        async for post in iterator:
            got.append(post)
            if len(got) == count:
                break
    return got


async def run_until(
    iterator: AsyncIterator[Post], done: Callable[[list[Post]], bool], timeout: float = 60
) -> list[Post]:
    """Posts of ``iterator`` until ``done(posts)`` (checked also when none come)."""
    got: list[Post] = []
    with trio.fail_after(timeout):
        async with trio.open_nursery() as nursery:

            async def consume() -> None:
                async for post in iterator:
                    got.append(post)

            nursery.start_soon(consume)
            while not done(got):
                await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
    return got


def key_forms(key: bytes) -> list[bytes]:
    """The ways a key could be written down: raw, hex, base64url (the invite's)."""
    return [key, key.hex().encode(), base64.urlsafe_b64encode(key).rstrip(b"=")]


def assert_nowhere(root: Path, secret: bytes) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for form in key_forms(secret):
                assert form not in data, path


async def store_raw(client: VeilClient, channel: Account, data: bytes) -> None:
    """What a forging node would serve: bytes in the channel's namespace that are not a
    post the channel signed (stored here with the channel's key, the only way onto a
    devnet whose nodes check the store's signature)."""
    await client.call(
        lambda now: rpc.make_store(
            channel, data, 3_600_000, now_ms=now, namespace=CHANNEL_NAMESPACE
        ),
        account=channel.id,
    )


async def test_follow_verifies_drops_forgeries_and_resumes_exactly_once(
    net: Devnet, tmp_path: Path
) -> None:
    pub_home, _ = new_home(tmp_path, "publisher")
    fol_home, follower_account = new_home(tmp_path, "follower")
    async with open_client(pub_home, net.network_file) as pub:
        channel = create_channel(pub, "alerts")
        assert channel.invite == f"veil://channel/{channel.id}"
        await channel.post("first", title="One", priority=5, tags=["a"])
        # Forgeries: mallory's post naming the channel, garbage, another channel's post.
        mallory = Account.generate()
        forged = cbor2.loads(make_post(mallory, "forged", now_ms=pub.clock.now()).encoded)
        forged["ch"] = channel.id.x25519_public
        del forged["sig"]
        forged["sig"] = mallory.sign(POST_DOMAIN, cbor2.dumps(forged, canonical=True))
        assert isinstance(channel.signer, Account)
        await store_raw(pub, channel.signer, cbor2.dumps(forged, canonical=True))
        await store_raw(pub, channel.signer, b"\xa1garbage")
        await store_raw(
            pub, channel.signer, make_post(mallory, "elsewhere", now_ms=pub.clock.now()).encoded
        )
        await channel.post("second")
    # The channel's seed is kept sealed under the home account's key.
    stored = b"".join(p.read_bytes() for p in pub_home.path.glob("channels.sqlite*"))
    assert channel.signer.seed not in stored and channel.signer.seed.hex().encode() not in stored

    async with open_client(fol_home, net.network_file) as client:
        follower = Follower(client, channel.id)
        got = await take(follower.posts(), 2)
        assert [p.text for p in got] == ["first", "second"]
        assert (got[0].title, got[0].priority, got[0].tags) == ("One", 5, ("a",))
        assert follower.dropped == 3

    async with open_client(pub_home, net.network_file) as pub:
        from veil.client.channels import open_channel

        await open_channel(pub, "alerts").post("third")

    async with open_client(fol_home, net.network_file) as client:  # a restart
        got = await take(follow(client, str(channel.id)), 1)
        assert [p.text for p in got] == ["third"]
        infos = {i.id: i for i in list_channels(client)}
        assert (infos[channel.id].taken, infos[channel.id].dropped) == (3, 3)

    # Nothing in any node's files names the follower (its key, as bytes or hex).
    key = follower_account.id.x25519_public
    for path in net.dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert key not in data and key.hex().encode() not in data, path


async def test_two_channels_followed_by_one_client_use_their_own_paths(
    net: Devnet, tmp_path: Path
) -> None:
    pub_home, _ = new_home(tmp_path, "publisher")
    fol_home, _ = new_home(tmp_path, "follower")
    async with open_client(pub_home, net.network_file) as pub:
        one = create_channel(pub, "one")
        two = create_channel(pub, "two")
        await one.post("from one")
        await two.post("from two")
    async with open_client(fol_home, net.network_file) as client:
        f1, f2 = Follower(client, one.id), Follower(client, two.id)
        async with trio.open_nursery() as nursery:
            got: dict[str, list] = {}  # type: ignore[type-arg]

            async def run(name: str, f: Follower) -> None:
                got[name] = await take(f.posts(), 1)

            nursery.start_soon(run, "one", f1)
            nursery.start_soon(run, "two", f2)
        assert got["one"][0].text == "from one" and got["two"][0].text == "from two"
        # Each follow has its own path selector and onion client, apart from the
        # client's own (the relays may still coincide by chance on a 5-node devnet).
        assert f1.paths is not f2.paths and f1.paths is not client.paths
        assert f1.onion is not f2.onion and f1.onion is not client.onion
        assert f1.paths.paths and f2.paths.paths
        assert not {id(p) for p in f1.paths.paths} & {id(p) for p in f2.paths.paths}


async def test_a_posting_job_with_a_delegated_post_key(net: Devnet, tmp_path: Path) -> None:
    pub_home, _ = new_home(tmp_path, "publisher")
    fol_home, _ = new_home(tmp_path, "follower")
    async with open_client(pub_home, net.network_file) as pub:
        channel = create_channel(pub, "jobs")
        assert isinstance(channel.signer, Account)
        key = SessionKey.generate()
        chain = delegate(
            channel.signer,
            key.ed25519_public,
            list(parse_resources("self:-1:post", self_owner=channel.id)),
            now_ms=pub.clock.now(),
            lifetime_ms=3_600_000,
        )
        job = Channel.delegated(pub, DelegatedSigner(key, chain))
        await job.post("posted by the job")
    async with open_client(fol_home, net.network_file) as client:
        (post,) = await take(follow(client, channel.id), 1)
        assert post.text == "posted by the job" and post.delegated


async def test_a_private_channels_posting_job_holds_the_invite(net: Devnet, tmp_path: Path) -> None:
    pub_home, _ = new_home(tmp_path, "publisher")
    async with open_client(pub_home, net.network_file) as pub:
        channel = create_channel(pub, "private-jobs", private=True)
        assert isinstance(channel.signer, Account)
        key = SessionKey.generate()
        chain = delegate(
            channel.signer,
            key.ed25519_public,
            list(parse_resources("self:-1:post", self_owner=channel.id)),
            now_ms=pub.clock.now(),
            lifetime_ms=3_600_000,
        )
        job = Channel.delegated(pub, DelegatedSigner(key, chain), invite=channel.invite)
        assert job.private
        await job.post("posted privately by the job")
    async with open_client(Home(tmp_path / "f"), net.network_file, account=Account.generate()) as c:
        (post,) = await take(follow(c, channel.invite), 1)
        assert post.text == "posted privately by the job" and post.delegated and post.private


def _veil(
    home: Path, network: Path, *args: str, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "veil.client",
            "--home",
            str(home),
            "--network",
            str(network),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO,
    )


def test_the_channel_commands(net: Devnet, tmp_path: Path) -> None:
    pub_home, _ = new_home(tmp_path, "publisher")
    follower_home = tmp_path / "follower"  # no identity needed to follow
    made = _veil(pub_home.path, net.network_file, "--json", "channel", "create", "news")
    assert made.returncode == 0, made.stderr
    info = json.loads(made.stdout)
    posted = _veil(
        pub_home.path,
        net.network_file,
        "--json",
        "channel",
        "post",
        "news",
        "hello",
        "--title",
        "Hi",
        "--priority",
        "4",
        "--tag",
        "x",
    )
    assert posted.returncode == 0, posted.stderr
    invite = _veil(pub_home.path, net.network_file, "--json", "channel", "invite", "news")
    assert json.loads(invite.stdout)["invite"] == info["invite"]
    followed = _veil(
        follower_home,
        net.network_file,
        "--json",
        "channel",
        "follow",
        info["invite"],
        "--count",
        "1",
    )
    assert followed.returncode == 0, followed.stderr
    post = json.loads(followed.stdout.splitlines()[0])
    assert (post["text"], post["title"], post["priority"], post["tags"]) == (
        "hello",
        "Hi",
        4,
        ["x"],
    )
    listed = _veil(follower_home, net.network_file, "--json", "channel", "list")
    assert json.loads(listed.stdout)["channels"][0]["taken"] == 1
    revoke = _veil(pub_home.path, net.network_file, "channel", "revoke-invite", "news")
    assert revoke.returncode == 1 and "public" in revoke.stderr


async def test_a_private_channel_and_its_revoked_invite(net: Devnet, tmp_path: Path) -> None:
    pub_home, _ = new_home(tmp_path, "publisher")
    async with open_client(pub_home, net.network_file) as pub:
        channel = create_channel(pub, "inner", private=True)
        assert channel.private and channel.key is not None
        old_invite = channel.invite
        assert old_invite == format_channel_invite(channel.id, channel.key)
        assert parse_channel_invite(old_invite).key == channel.key
        old_key = channel.key
        await channel.post("before", title="Old", priority=5, tags=["t"])
    # The key is sealed in the publisher's home (as the channel's seed).
    stored = b"".join(p.read_bytes() for p in pub_home.path.glob("channels.sqlite*"))
    for form in key_forms(old_key):
        assert form not in stored

    # A follower with the invite, and no identity at all, reads the post.
    old_home = Home(tmp_path / "old-follower")
    async with open_client(old_home, net.network_file, account=Account.generate()) as client:
        (post,) = await take(follow(client, old_invite), 1)
        assert (post.text, post.title, post.priority, post.tags) == ("before", "Old", 5, ("t",))
        assert post.private

    # A follower with the public ID only reads nothing, counts the post, does not crash.
    nokey_home = Home(tmp_path / "nokey-follower")
    notices: list[str] = []
    async with open_client(nokey_home, net.network_file, account=Account.generate()) as client:
        blind = Follower(client, channel.id, on_notice=lambda kind, _: notices.append(kind))
        got = await run_until(blind.posts(), lambda _: blind.locked >= 1)
        assert got == [] and blind.dropped == 0 and notices == ["no_key"]

    # Revoke: a new key for the posts from now on.
    async with open_client(pub_home, net.network_file) as pub:
        channel = open_channel(pub, "inner")
        assert channel.key == old_key
        new_invite = channel.revoke_invite()
        assert new_invite != old_invite and channel.key != old_key
        assert open_channel(pub, "inner").invite == new_invite  # persisted
        new_key = channel.key
        assert new_key is not None
        await channel.post("after")
        await channel.post("after, again")

    # The old invite's follower: the new posts are locked, said once: revoked.
    notices = []
    async with open_client(old_home, net.network_file, account=Account.generate()) as client:
        old = Follower(
            client,
            channel.id,
            key=old_key,
            on_notice=lambda kind, _: notices.append(kind),
        )
        got = await run_until(old.posts(), lambda _: old.locked >= 2)
        assert got == [] and old.revoked and notices == ["revoked"]
        assert old.dropped == 0 and old.taken == 1

    # The new invite's follower reads the new posts (the old one is locked for it).
    fresh_home = Home(tmp_path / "new-follower")
    notices = []
    async with open_client(fresh_home, net.network_file, account=Account.generate()) as client:
        got = await take(
            follow(client, new_invite, on_notice=lambda kind, _: notices.append(kind)), 2
        )
        assert [p.text for p in got] == ["after", "after, again"]
        assert notices == ["other_key"]

    # The old follower, given the new invite later, reads what it could not open.
    async with open_client(old_home, net.network_file, account=Account.generate()) as client:
        got = await take(follow(client, new_invite), 2)
        assert [p.text for p in got] == ["after", "after, again"]

    # No key in any node's store or log.
    for key in (old_key, new_key):
        assert_nowhere(net.dir, key)


def _follow_until(home: Path, network: Path, invite: str, needle: str) -> tuple[str, str]:
    """``veil channel follow INVITE`` until ``needle`` is on its stderr; then stopped."""
    out, err = home.parent / f"{home.name}.out", home.parent / f"{home.name}.err"
    with out.open("w") as o, err.open("w") as e:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "veil.client",
                "--home",
                str(home),
                "--network",
                str(network),
                "channel",
                "follow",
                invite,
            ],
            stdout=o,
            stderr=e,
            cwd=REPO,
        )
        try:
            deadline = time.monotonic() + 90
            while needle not in err.read_text() and time.monotonic() < deadline:
                assert proc.poll() is None, err.read_text()
                time.sleep(0.2)
        finally:
            proc.kill()
            proc.wait()
    return out.read_text(), err.read_text()


def test_the_private_channel_commands(net: Devnet, tmp_path: Path) -> None:
    pub_home, _ = new_home(tmp_path, "publisher")
    made = _veil(
        pub_home.path, net.network_file, "--json", "channel", "create", "club", "--private"
    )
    assert made.returncode == 0, made.stderr
    info = json.loads(made.stdout)
    assert info["private"] and "#" in info["invite"]
    posted = _veil(pub_home.path, net.network_file, "channel", "post", "club", "members only")
    assert posted.returncode == 0, posted.stderr
    invite = _veil(pub_home.path, net.network_file, "--json", "channel", "invite", "club")
    assert invite.returncode == 0, invite.stderr
    old_invite = json.loads(invite.stdout)["invite"]
    assert old_invite == info["invite"]
    listed = _veil(pub_home.path, net.network_file, "--json", "channel", "list")
    assert "#" not in listed.stdout and json.loads(listed.stdout)["channels"][0]["private"]

    follower = tmp_path / "follower"  # no identity
    followed = _veil(follower, net.network_file, "channel", "follow", old_invite, "--count", "1")
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout == "[3] members only\n"

    revoked = _veil(pub_home.path, net.network_file, "channel", "revoke-invite", "club")
    assert revoked.returncode == 0, revoked.stderr
    new_invite = revoked.stdout.strip()
    assert new_invite.startswith(f"veil://channel/{info['id']}#") and new_invite != old_invite
    again = _veil(pub_home.path, net.network_file, "channel", "invite", "club")
    assert again.stdout.strip() == new_invite
    posted = _veil(pub_home.path, net.network_file, "channel", "post", "club", "new era")
    assert posted.returncode == 0, posted.stderr

    out, err = _follow_until(follower, net.network_file, old_invite, "invite was revoked")
    assert out == "" and err.count("invite was revoked") == 1
    listed = _veil(follower, net.network_file, "channel", "list")
    assert "1 locked" in listed.stdout, listed.stdout
    followed = _veil(
        tmp_path / "newcomer", net.network_file, "channel", "follow", new_invite, "--count", "1"
    )
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout == "[3] new era\n"
    public = _veil(pub_home.path, net.network_file, "channel", "revoke-invite", "nope")
    assert public.returncode == 1
    for link in (old_invite, new_invite):
        key = parse_channel_invite(link).key
        assert key is not None
        assert_nowhere(net.dir, key)
