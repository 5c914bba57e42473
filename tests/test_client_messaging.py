"""The client library and ``veil send``/``veil inbox`` on a real devnet.

One devnet (an authority and six ``veil-node`` processes, swarms of three) serves every
test of this module; each test makes its own accounts and homes, so they do not see
each other's messages. Everything goes through onion paths of three relays to real
nodes; nothing is mocked.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.devnetutil import devnet
from veil.client.devnet import Devnet
from veil.client.home import Home
from veil.client.veil_client import open_client
from veil.onion import rpc
from veil.onion.keys import Account

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    with devnet(tmp_path_factory.mktemp("msg"), nodes=6, swarm_size=3) as running:
        yield running


def new_home(tmp_path: Path, name: str) -> tuple[Home, Account]:
    home = Home(tmp_path / name)
    account = Account.generate()
    home.save_identity(account)
    return home, account


async def collect(client, count: int, timeout: float = 60) -> list:  # type: ignore[no-untyped-def]
    got = []
    with trio.fail_after(timeout):
        async for message in client.messages():
            got.append(message)
            if len(got) == count:
                break
    return got


# --- the command line, end to end ---------------------------------------------------------


def _veil(home: Path, network: Path, *args: str) -> list[str]:
    veil = [sys.executable, "-m", "veil.client"]
    return [*veil, "--home", str(home), "--network", str(network), *args]


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    """One line of the process's stdout, or fail after ``timeout`` seconds."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buf = b""
    fd = proc.stdout.fileno()
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr and proc.poll() is not None else b""
            raise AssertionError(f"no line from veil inbox (got {buf!r}, stderr {err!r})")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 1)
            if not chunk:
                continue
            buf += chunk
    return buf


def test_inbox_follow_with_limit_0_still_shows_what_waited(net: Devnet, tmp_path: Path) -> None:
    # --limit 0 lists none of the history, but a message that was waiting when the
    # follower started is new to it: the first fetch takes it, so it must be printed
    # (it used to be recorded and never shown).
    home_a, a = new_home(tmp_path, "a")
    home_b, b = new_home(tmp_path, "b")
    sent = subprocess.run(
        _veil(home_a.path, net.network_file, "send", str(b.id), "waiting for you"),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert sent.returncode == 0, sent.stderr
    follower = subprocess.Popen(
        _veil(home_b.path, net.network_file, "inbox", "--follow", "--limit", "0", "--json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        line = json.loads(_read_line(follower, timeout=60))
        assert line["text"] == "waiting for you"
        assert line["from"] == str(a.id)
    finally:
        follower.send_signal(signal.SIGINT)
        try:
            follower.wait(90)
        except subprocess.TimeoutExpired:
            follower.kill()
            follower.wait()
            raise


def test_send_and_inbox_follow_through_the_cli(net: Devnet, tmp_path: Path) -> None:
    home_a, a = new_home(tmp_path, "a")
    home_b, b = new_home(tmp_path, "b")
    follower = subprocess.Popen(
        _veil(home_b.path, net.network_file, "inbox", "--follow", "--json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        sent = subprocess.run(
            _veil(home_a.path, net.network_file, "send", str(b.id), "hello through the onion"),
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
            check=False,
        )
        assert sent.returncode == 0, sent.stderr
        assert str(b.id) in sent.stdout

        line = json.loads(_read_line(follower, timeout=60))
        assert line["text"] == "hello through the onion"
        assert line["from"] == str(a.id)
        assert len(line["hash"]) == 64

        # Stdin, a TTL, and --json on the sender's side too.
        sent = subprocess.run(
            _veil(home_a.path, net.network_file, "send", str(b.id), "-", "--ttl", "60", "--json"),
            input="second\nline",
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
            check=False,
        )
        assert sent.returncode == 0, sent.stderr
        receipt = json.loads(sent.stdout)
        line = json.loads(_read_line(follower, timeout=60))
        assert line["text"] == "second\nline"
        assert line["hash"] == receipt["hash"]
    finally:
        follower.send_signal(signal.SIGINT)
        try:
            code = follower.wait(90)  # a hang guard (a loaded CI machine once needed > 20 s)
        except subprocess.TimeoutExpired:
            follower.kill()
            follower.wait()
            raise
    assert code == 130  # Ctrl-C, no traceback
    assert b"Traceback" not in (follower.stderr.read() if follower.stderr else b"")

    # The messages were recorded in B's home: a plain `veil inbox` lists them again.
    listed = subprocess.run(
        _veil(home_b.path, net.network_file, "inbox", "--json"),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    texts = [json.loads(x)["text"] for x in listed.stdout.splitlines()]
    assert texts == ["hello through the onion", "second\nline"]


def test_status_through_the_cli(net: Devnet, tmp_path: Path) -> None:
    home, account = new_home(tmp_path, "a")
    for args in (["status", "--json"], ["status"]):
        done = subprocess.run(
            _veil(home.path, net.network_file, *args),
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        if "--json" in args:
            status = json.loads(done.stdout)
            assert status["account_id"] == str(account.id)
            assert status["network"]["nodes"] == 6
            assert len(status["guards"]) == 2
            assert status["probe"]["ok"] and status["probe"]["hops"] == 4
        else:
            assert "guards" in done.stdout and "probe     ok" in done.stdout


# --- the library ---------------------------------------------------------------------------


async def test_many_senders_exactly_once_in_order(net: Devnet, tmp_path: Path) -> None:
    home_r, recipient = new_home(tmp_path, "r")
    senders = [new_home(tmp_path, f"s{i}") for i in range(5)]
    per_sender = 20

    async def send_all(home: Home, index: int) -> None:
        async with open_client(home, net.network_file) as client:
            for n in range(per_sender):
                await client.send(recipient.id, f"{index}:{n}", ttl_s=600)

    async with open_client(home_r, net.network_file) as receiver:
        async with trio.open_nursery() as nursery:
            for i, (home, _) in enumerate(senders):
                nursery.start_soon(send_all, home, i)
            got = await collect(receiver, 5 * per_sender, timeout=120)
        # Nothing more is waiting: no duplicate came late.
        assert await receiver.fetch() == []

    assert len({m.hash for m in got}) == len(got) == 100
    by_sender: dict[str, list[int]] = {}
    for m in got:
        index, n = m.text.split(":")
        assert m.sender == senders[int(index)][1].id  # verified sender matches the content
        by_sender.setdefault(index, []).append(int(n))
    assert by_sender == {str(i): list(range(per_sender)) for i in range(5)}


async def test_restarted_receiver_loses_and_repeats_nothing(net: Devnet, tmp_path: Path) -> None:
    home_s, _ = new_home(tmp_path, "s")
    home_r, recipient = new_home(tmp_path, "r")
    total = 30
    got: list[str] = []

    async def sender() -> None:
        async with open_client(home_s, net.network_file) as client:
            for n in range(total):
                await client.send(recipient.id, str(n), ttl_s=600)
                await trio.sleep(0.02)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        # Receive in runs of 7, closing the client (and its state file) in between, so
        # that restarts land mid-page, mid-stream, while messages keep coming.
        while len(got) < total:
            async with open_client(home_r, net.network_file) as client:
                batch = await collect(client, min(7, total - len(got)))
            got.extend(m.text for m in batch)

    assert got == [str(n) for n in range(total)]
    async with open_client(home_r, net.network_file) as client:
        assert await client.fetch() == []
        recorded = client.inbox(limit=1000)
    assert [m.text for m in recorded] == got


async def test_position_unknown_to_the_node_repeats_nothing(net: Devnet, tmp_path: Path) -> None:
    """A node that does not know our position answers from the start (as Session's do):
    every message is then a duplicate, dropped by hash, and the loop moves on."""
    home_s, _ = new_home(tmp_path, "s")
    home_r, recipient = new_home(tmp_path, "r")
    async with open_client(home_s, net.network_file) as sender:
        for n in range(3):
            await sender.send(recipient.id, f"old {n}", ttl_s=600)
        async with open_client(home_r, net.network_file) as receiver:
            assert [m.text for m in await collect(receiver, 3)] == ["old 0", "old 1", "old 2"]
            # Forget where we were: a hash no node has.
            receiver.state.save_messages_and_position(recipient.id, rpc.INBOX, [], b"\x01" * 32)
            await sender.send(recipient.id, "new", ttl_s=600)
            assert [m.text for m in await collect(receiver, 1)] == ["new"]
            assert [m.text for m in receiver.inbox()] == ["old 0", "old 1", "old 2", "new"]


@pytest.mark.parametrize("skew_ms", [300_000, -300_000])
async def test_client_with_clock_minutes_off(net: Devnet, tmp_path: Path, skew_ms: int) -> None:
    def off_clock() -> float:
        return time.time() * 1000 + skew_ms

    home_a, _ = new_home(tmp_path, "a")
    home_b, b = new_home(tmp_path, "b")
    # A fresh home (no cached consensus, no known offset) whose clock is 5 minutes off:
    # the consensus does not verify on it at first, packets and signatures would be
    # refused; the client measures the network's clock and carries on.
    async with open_client(home_a, net.network_file, clock=off_clock) as a:
        assert abs(a.clock.offset_ms + skew_ms) < 5_000
        await a.send(b.id, "sent from a skewed clock", ttl_s=600)
    async with open_client(home_b, net.network_file, clock=off_clock) as client_b:
        (message,) = await collect(client_b, 1)
        assert message.text == "sent from a skewed clock"
        # A stamped the envelope with the network's time, not its own clock's.
        assert abs(message.sent_ms - time.time() * 1000) < 60_000
    # The offset was kept: the next start needs no correction.
    async with open_client(home_b, net.network_file, clock=off_clock) as client_b:
        assert abs(client_b.clock.offset_ms + skew_ms) < 5_000


async def test_fetch_is_one_shot_and_records(net: Devnet, tmp_path: Path) -> None:
    home_a, a = new_home(tmp_path, "a")
    home_b, b = new_home(tmp_path, "b")
    async with open_client(home_a, net.network_file) as client_a:
        receipts = [await client_a.send(b.id, bytes([n]) * 300, ttl_s=600) for n in range(3)]
    async with open_client(home_b, net.network_file) as client_b:
        with trio.fail_after(30):
            fetched: list = []
            while len(fetched) < 3:  # replication to the polled member may lag a moment
                fetched += await client_b.fetch()
        assert [m.hash for m in fetched] == [r.hash for r in receipts]
        assert [m.content for m in fetched] == [bytes([n]) * 300 for n in range(3)]
        assert all(m.sender == a.id for m in fetched)
        assert await client_b.fetch() == []
        assert [m.hash for m in client_b.inbox()] == [r.hash for r in receipts]


async def test_status_describes_network_guards_and_paths(net: Devnet, tmp_path: Path) -> None:
    home, account = new_home(tmp_path, "a")
    async with open_client(home, net.network_file) as client:
        answer = await client.ping()
        assert answer.reply.ok
        assert len(answer.path.relays) == 3  # a guard and two others, then the node
        status = client.status()
    assert status["account_id"] == str(account.id)
    assert status["network"]["nodes"] == 6
    assert len(status["guards"]) == 2
    assert all(g["listed"] for g in status["guards"])
    assert status["paths"] and all(len(p["relays"]) == 3 for p in status["paths"])
    assert len(status["swarm"]["members"]) >= 3


async def test_guards_and_consensus_persist_across_restarts(net: Devnet, tmp_path: Path) -> None:
    home, _ = new_home(tmp_path, "a")
    async with open_client(home, net.network_file) as client:
        await client.ping()
        guards = {g.node_id for g in client.paths.guards}
        fetches = client.directory.fetches
    assert fetches >= 1 and len(guards) == 2
    async with open_client(home, net.network_file) as client:
        assert {g.node_id for g in client.paths.guards} == guards
        await client.ping()
        path = client.paths.paths[0]
        assert path.guard.node_id in guards


async def test_sealed_seed_needs_its_passphrase(net: Devnet, tmp_path: Path) -> None:
    from veil.client.errors import PassphraseRequired, WrongPassphrase
    from veil.client.home import KDF_MIN

    home = Home(tmp_path / "sealed")
    account = Account.generate()
    home.save_identity(account, passphrase="correct horse", kdf=KDF_MIN)
    with pytest.raises(PassphraseRequired):
        async with open_client(home, net.network_file):
            pass
    with pytest.raises(WrongPassphrase):
        async with open_client(home, net.network_file, passphrase="wrong"):
            pass
    async with open_client(home, net.network_file, passphrase="correct horse") as client:
        assert client.account_id == account.id
        assert (await client.ping()).reply.ok


async def test_store_rpc_errors_are_typed(net: Devnet, tmp_path: Path) -> None:
    """A destination's verdict that retrying cannot change is raised as its typed error."""
    home, account = new_home(tmp_path, "a")
    async with open_client(home, net.network_file) as client:
        other = Account.generate()

        def bad(now_ms: int) -> bytes:
            # Signed by us, for another account's namespace: the node refuses it.
            params = rpc.make_retrieve(account, now_ms=now_ms)
            return params.replace(str(account.id).encode(), str(other.id).encode())

        from veil.onion.errors import Unauthorized

        with pytest.raises(Unauthorized):
            await client.call(bad, account=other.id)
