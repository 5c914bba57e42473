"""Channels on a real devnet (issue 14): a follower receives a public channel's posts,
verified, drops a forged one (and counts it), resumes exactly once after a restart; two
channels followed by one client use their own path selectors; the follower's identity
is in no node's files; a posting job with a delegated ``post`` key; the CLI end to end.

Private channels are not built yet (they need the encryption-session client).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
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
)
from veil.client.devnet import Devnet
from veil.client.home import Home
from veil.client.veil_client import VeilClient, open_client
from veil.onion import rpc
from veil.onion.capability import DelegatedSigner, SessionKey, delegate, parse_resources
from veil.onion.channel import CHANNEL_NAMESPACE, POST_DOMAIN, make_post
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
    private = _veil(
        follower_home, net.network_file, "channel", "follow", info["invite"] + "#" + "A" * 43
    )
    assert private.returncode == 1 and "private channels" in private.stderr
