"""Delegated sessions through the client library and the ``veil`` command, on a real
devnet (issue #12): a worker that reads an account's inbox without its seed, refused
once its session expired or was revoked (on every member of the swarm), a narrower
re-delegation that works and a widened one that does not, a session restored from its
string, and the CLI (``veil id delegate``, ``--delegated FILE inbox [--follow]``,
``veil id delegations``, ``veil id revoke-delegate``).

One devnet (an authority and six ``veil-node`` processes, swarms of three) serves the
module; each test makes its own accounts and homes. The worker's home holds no identity:
the session string is all it has. Swarm scenarios with a member down while a revocation
is stored are the node's (tests/test_revocations.py).
"""

from __future__ import annotations

import base64
import json
import os
import select
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.devnetutil import devnet
from veil.client import (
    DelegatedSession,
    NotAuthorized,
    NotRevocable,
    SessionExpired,
    authorize,
    list_issued,
    open_client,
    open_sealed,
)
from veil.client.devnet import Devnet
from veil.client.home import Home
from veil.client.messaging import InboxMessage
from veil.onion import rpc
from veil.onion.capability import (
    Chain,
    DelegatedSigner,
    Resource,
    SessionKey,
    issue_link,
)
from veil.onion.errors import ResourcesWidened, Unauthorized
from veil.onion.keys import Account
from veil.onion.wallclock import wall_clock_ms

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
HOUR = 3600
NODE_CONFIG = {"replication": {"sync_interval": 0.5, "ack_timeout": 10.0}}


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    with devnet(
        tmp_path_factory.mktemp("delegated"), nodes=6, swarm_size=3, node_config=NODE_CONFIG
    ) as running:
        yield running


def new_home(tmp_path: Path, name: str) -> tuple[Home, Account]:
    home = Home(tmp_path / name)
    account = Account.generate()
    home.save_identity(account)
    return home, account


async def send(net: Devnet, tmp_path: Path, to: Account, *texts: str) -> None:
    home, _ = new_home(tmp_path, f"sender-{wall_clock_ms()}")
    async with open_client(home, net.network_file) as sender:
        for text in texts:
            await sender.send(to.id, text, ttl_s=600)


async def retrieve_at(client, signer: DelegatedSigner, member) -> None:  # type: ignore[no-untyped-def]
    """A retrieve signed by ``signer`` at one node, past the client's own checks."""

    def build(now_ms: int) -> bytes:
        return rpc.make_retrieve(signer, now_ms=now_ms)

    await client.call(build, destination=member.as_hop())


# --- the library -------------------------------------------------------------------------


async def test_a_worker_reads_and_deletes_the_inbox_with_a_one_hour_session_and_no_seed(
    net: Devnet, tmp_path: Path
) -> None:
    owner_home, alice = new_home(tmp_path, "alice")
    async with open_client(owner_home, net.network_file) as owner:
        session = await owner.authorize(["self:0:retrieve,delete"], expires_in=HOUR)
    await send(net, tmp_path, alice, "first", "second")

    # The worker has the session's string only: no identity in its home.
    worker_home = Home(tmp_path / "worker")
    text = session.serialize()
    async with open_client(worker_home, net.network_file, delegated=text) as worker:
        assert not worker_home.has_identity()
        assert worker.account_id == alice.id and worker.account is None
        got = await worker.fetch()
        assert len(got) == 2 and all(m.sealed and m.sender is None for m in got)
        # Sealed to alice: only her seed opens them.
        assert sorted(open_sealed(alice, m).text for m in got) == ["first", "second"]
        assert worker.inbox() and all(m.sealed for m in worker.inbox())
        # A message that arrives while the worker follows the inbox.
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send, net, tmp_path, alice, "third")
                async for m in worker.messages():
                    assert m.sealed and open_sealed(alice, m).text == "third"
                    break
        # It may delete (it holds delete in the inbox), and nothing else.
        deleted = await worker.delete([got[0].hash])
        assert deleted.deleted
        with pytest.raises(NotAuthorized) as info:
            await worker.post(b"not mine to publish")
        assert info.value.action == "post"
    async with open_client(owner_home, net.network_file) as owner:
        page = await owner.retrieve()
        assert got[0].hash not in {m.hash for m in page.messages}
        assert got[1].hash in {m.hash for m in page.messages}


async def test_an_expired_session_is_refused_by_the_client_and_by_the_nodes(
    net: Devnet, tmp_path: Path
) -> None:
    _, alice = new_home(tmp_path, "alice")
    # Issued two hours ago for one hour: past the node's clock skew too.
    old = authorize(alice, ["self:0:retrieve"], expires_in=HOUR, now_ms=wall_clock_ms() - 7_200_000)
    async with open_client(Home(tmp_path / "w"), net.network_file, delegated=old) as worker:
        with pytest.raises(SessionExpired):
            await worker.fetch()
        member = worker.consensus.swarm_of(alice.id).members[0]
        with pytest.raises(Unauthorized, match="expired"):
            await retrieve_at(worker, old.signer, member)


async def test_a_revoked_session_is_refused_on_every_member_of_the_swarm(
    net: Devnet, tmp_path: Path
) -> None:
    owner_home, alice = new_home(tmp_path, "alice")
    async with open_client(owner_home, net.network_file) as owner:
        session = await owner.authorize(["self:0:retrieve,delegate"], expires_in=HOUR)
    child = session.delegate(["self:0:retrieve"], expires_in=600)
    await send(net, tmp_path, alice, "before")

    async with open_client(Home(tmp_path / "w"), net.network_file, delegated=session) as worker:
        assert len(await worker.fetch()) == 1
        members = worker.consensus.swarm_of(alice.id).members
        for member in members:  # the child works everywhere before the revocation
            await retrieve_at(worker, child.signer, member)

        async with open_client(owner_home, net.network_file) as owner:
            (revoked,) = await owner.revoke(session.did)
            assert revoked.did == session.did and revoked.link_hash == session.link_hash
            assert revoked.accepted == revoked.members == len(members)
            with pytest.raises(NotRevocable):
                await owner.revoke(session.link_hash)
        (listed,) = list_issued(owner_home)
        assert listed.revoked

        for member in members:  # the session and the one below it, on every member
            with pytest.raises(Unauthorized, match="revoked"):
                await retrieve_at(worker, session.signer, member)
            with pytest.raises(Unauthorized, match="revoked"):
                await retrieve_at(worker, child.signer, member)
        # The worker's inbox loop ends instead of retrying forever.
        with pytest.raises(Unauthorized), trio.fail_after(60):
            async for _ in worker.messages():
                pass


async def test_a_narrower_redelegation_works_and_a_widened_one_does_not(
    net: Devnet, tmp_path: Path
) -> None:
    _, alice = new_home(tmp_path, "alice")
    parent = authorize(alice, ["self:0:retrieve,delegate"], expires_in=HOUR)
    child = parent.delegate(["self:0:retrieve"], expires_in=600)
    await send(net, tmp_path, alice, "hello")
    restored = DelegatedSession.from_string(child.serialize())
    async with open_client(Home(tmp_path / "child"), net.network_file, delegated=restored) as c:
        (m,) = await c.fetch()
        assert open_sealed(alice, m).text == "hello"
        with pytest.raises(NotAuthorized):
            await c.delete([m.hash])

        # Widening is refused before signing...
        with pytest.raises(ResourcesWidened):
            parent.delegate(["self:0:retrieve,delete"])
        # ... and a chain widened by hand is refused by the node.
        key = SessionKey.generate()
        now = wall_clock_ms()
        widened = issue_link(
            parent.key,
            key.ed25519_public,
            [Resource.single(alice.id, 0, {"retrieve", "delete"})],
            now_ms=now,
            expires_ms=now + 600_000,
            proof=parent.chain.links[-1].digest,
        )
        chain = Chain.from_links((*parent.chain.links, widened))
        member = c.consensus.swarm_of(alice.id).members[0]

        def build(now_ms: int) -> bytes:
            return rpc.make_delete(DelegatedSigner(key, chain), [m.hash], now_ms=now_ms)

        with pytest.raises(Unauthorized):
            await c.call(build, destination=member.as_hop())


# --- the command line ---------------------------------------------------------------------


def veil(home: Path, net: Devnet, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "veil.client",
            "--home",
            str(home),
            "--network",
            str(net.network_file),
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=90,
        check=False,
    )


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buf = b""
    fd = proc.stdout.fileno()
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise AssertionError(f"no line from veil (got {buf!r})")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 1)
            if chunk:
                buf += chunk
    return buf


async def test_the_cli_delegates_reads_under_delegated_and_revokes(
    net: Devnet, tmp_path: Path
) -> None:
    owner_home, alice = new_home(tmp_path, "alice")
    worker = tmp_path / "worker"
    file = tmp_path / "session.txt"

    made = await trio.to_thread.run_sync(
        lambda: veil(
            owner_home.path,
            net,
            "--json",
            "id",
            "delegate",
            "-r",
            "self:0:retrieve",
            "--expires",
            "1h",
            "--statement",
            "inbox worker",
            "-o",
            str(file),
        )
    )
    assert made.returncode == 0, made.stderr
    doc = json.loads(made.stdout)
    assert doc["resources"] == [f"{alice.id}:0:retrieve"] and "session" not in doc
    assert stat.S_IMODE(os.stat(file).st_mode) == 0o600
    session = DelegatedSession.from_string(file.read_text())
    assert session.did == doc["did"] and session.statement == "inbox worker"

    await send(net, tmp_path, alice, "to the worker")
    listed = await trio.to_thread.run_sync(
        lambda: veil(worker, net, "--delegated", str(file), "inbox", "--json")
    )
    assert listed.returncode == 0, listed.stderr
    (line,) = [json.loads(x) for x in listed.stdout.splitlines()]
    assert "sealed" in line and "text" not in line
    assert not (worker / "identity.json").exists()

    follower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "veil.client",
            "--home",
            str(worker),
            "--network",
            str(net.network_file),
            "--delegated",
            str(file),
            "inbox",
            "--follow",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        await send(net, tmp_path, alice, "while following")
        texts = []
        with trio.fail_after(90):
            while "while following" not in texts:
                got = json.loads(await trio.to_thread.run_sync(_read_line, follower, 60))
                envelope = base64.b64decode(got["sealed"])
                sealed = InboxMessage(
                    bytes.fromhex(got["hash"]), None, b"", 0, 0, envelope=envelope
                )
                texts.append(open_sealed(alice, sealed).text)
        assert texts[0] == "to the worker"
    finally:
        follower.terminate()
        follower.wait(timeout=30)

    shown = await trio.to_thread.run_sync(
        lambda: veil(owner_home.path, net, "--json", "id", "delegations")
    )
    (entry,) = json.loads(shown.stdout)["delegations"]
    assert entry["did"] == session.did and not entry["revoked"]

    revoked = await trio.to_thread.run_sync(
        lambda: veil(owner_home.path, net, "id", "revoke-delegate", session.link_hash[:16])
    )
    assert revoked.returncode == 0, revoked.stderr
    assert session.did in revoked.stdout

    refused = await trio.to_thread.run_sync(
        lambda: veil(worker, net, "--delegated", str(file), "inbox")
    )
    assert refused.returncode == 1 and refused.stdout == ""
    (error,) = refused.stderr.splitlines()
    assert error.startswith("veil: error: ") and "revoked" in error

    shown = await trio.to_thread.run_sync(
        lambda: veil(owner_home.path, net, "--json", "id", "delegations")
    )
    assert json.loads(shown.stdout)["delegations"][0]["revoked"] is True


async def test_a_posting_job_publishes_and_nothing_more(net: Devnet, tmp_path: Path) -> None:
    _, alice = new_home(tmp_path, "alice")
    poster = authorize(alice, ["self:-1:post"], expires_in=HOUR)
    async with open_client(Home(tmp_path / "poster"), net.network_file, delegated=poster) as job:
        stored = await job.post("news", namespace=-1, ttl_s=600)
        # Anyone reads a public-read namespace: unsigned, as the session holds no retrieve.
        page = await job.retrieve(namespace=-1)
        assert [m.data for m in page.messages] == [b"news"]
        assert page.messages[0].hash == stored.hash
        for refused, action in (
            (job.store(b"private", namespace=1, ttl_s=600), "store"),
            (job.post(b"elsewhere", namespace=-2), "post"),
            (job.retrieve(), "retrieve"),
            (job.delete([stored.hash], namespace=-1), "delete"),
        ):
            with pytest.raises(NotAuthorized) as info:
                await refused
            assert info.value.action == action
        status = job.status()
        assert status["delegated"]["did"] == poster.did
