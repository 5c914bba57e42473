"""``veil room ...`` end to end (issue 16): every command as a real ``veil`` process on
a real devnet: create, info, post, read (once, and --follow), delete, ban
(--delete-past), unban, mod add|remove, list; refusals are one line and exit 1."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.devnetutil import GROUP_NODE_CONFIG, devnet
from veil.client.devnet import Devnet
from veil.client.home import Home
from veil.onion.keys import Account

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    with devnet(
        tmp_path_factory.mktemp("cli-rooms"), nodes=4, swarm_size=3, node_config=GROUP_NODE_CONFIG
    ) as running:
        yield running


def new_home(tmp_path: Path, name: str) -> Path:
    home = Home(tmp_path / name)
    home.save_identity(Account.generate())
    return home.path


def veil(
    home: Path, net: Devnet, *args: str, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
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
        timeout=timeout,
        check=False,
        cwd=REPO,
    )


def ok(home: Path, net: Devnet, *args: str) -> Any:
    done = veil(home, net, "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def lines(home: Path, net: Devnet, *args: str) -> list[dict[str, Any]]:
    done = veil(home, net, "--json", *args)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def account_of(home: Path) -> str:
    return str(Home(home).account_id())


def test_the_room_commands(net: Devnet, tmp_path: Path) -> None:
    owner, alice, mod = (new_home(tmp_path, n) for n in ("owner", "alice", "mod"))
    reader = tmp_path / "reader"  # reading needs no identity
    made = ok(owner, net, "room", "create", "lobby", "--description", "be nice", "--rate", "5")
    room, link = made["id"], made["link"]
    assert link == f"veil://room/{room}" and made["rules"] == {
        "rate": 5,
        "size": 2048,
        "pow_bits": 0,
    }
    info = ok(reader, net, "room", "info", link)
    assert (info["name"], info["description"], info["moderators"], info["owned"]) == (
        "lobby",
        "be nice",
        [],
        False,
    )
    assert ok(owner, net, "room", "info", "lobby")["owned"]  # its home names it by name

    first = ok(alice, net, "room", "post", link, "hello room")
    reply = ok(owner, net, "room", "post", room, "welcome", "--reply-to", first["post_id"])
    assert reply["reply_to"] == first["post_id"] and reply["author"] == account_of(owner)
    read = lines(reader, net, "room", "read", link)
    assert [(e["type"], e["text"]) for e in read] == [("post", "hello room"), ("post", "welcome")]
    assert lines(reader, net, "room", "read", link) == []  # exactly once

    # Moderation: a stranger's is refused (one line, exit 1); a moderator's holds.
    refused = veil(alice, net, "room", "delete", room, first["post_id"])
    assert (
        refused.returncode == 1
        and "moderator" in refused.stderr
        and "Traceback" not in refused.stderr
    )
    added = ok(owner, net, "room", "mod", "add", "lobby", account_of(mod))
    assert added["moderators"] == [account_of(mod)]
    assert ok(mod, net, "room", "delete", room, first["post_id"])["deleted"] == [first["post_id"]]
    banned = ok(mod, net, "room", "ban", room, account_of(alice), "--delete-past")
    assert banned == {"banned": account_of(alice), "delete_past": True}
    shut = veil(alice, net, "room", "post", room, "let me back")
    assert shut.returncode == 1 and "banned" in shut.stderr
    read = lines(reader, net, "room", "read", link)
    assert read == [{"type": "deleted", "room": room, "post_id": first["post_id"]}]
    assert ok(reader, net, "room", "info", room)["banned"] == [account_of(alice)]
    assert ok(mod, net, "room", "unban", room, account_of(alice)) == {"unbanned": account_of(alice)}
    again = ok(alice, net, "room", "post", room, "thanks")
    assert ok(owner, net, "room", "mod", "remove", "lobby", account_of(mod))["moderators"] == []
    stripped = veil(mod, net, "room", "ban", room, account_of(alice))
    assert stripped.returncode == 1 and "moderator" in stripped.stderr

    # --follow prints as posts come, until --count.
    out = tmp_path / "follow.out"
    with out.open("w") as sink:
        follower = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "veil.client",
                "--home",
                str(reader),
                "--network",
                str(net.network_file),
                "--json",
                "room",
                "read",
                room,
                "--follow",
                "--count",
                "2",
            ],
            stdout=sink,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        try:
            deadline = time.monotonic() + 60
            while "thanks" not in out.read_text() and time.monotonic() < deadline:
                assert follower.poll() is None, follower.stderr.read() if follower.stderr else ""
                time.sleep(0.2)
            ok(alice, net, "room", "post", room, "live")
            assert follower.wait(timeout=60) == 0
        finally:
            follower.kill()
    followed = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["text"] for e in followed] == ["thanks", "live"] and followed[0]["post_id"] == again[
        "post_id"
    ]

    listed = ok(owner, net, "room", "list")["rooms"]
    assert [(r["name"], r["owned"]) for r in listed] == [("lobby", True)]
    assert ok(reader, net, "room", "list")["rooms"][0]["taken"] == 4


def test_refusals_are_one_line(net: Devnet, tmp_path: Path) -> None:
    home = new_home(tmp_path, "someone")
    made = ok(home, net, "room", "create", "tiny", "--size", "4")
    for args, words in (
        (("room", "post", made["id"], "too long for four bytes"), "bytes"),
        (("room", "post", "veil://room/nope", "x"), "room link"),
        (("room", "create", "tiny"), "already"),
        (("room", "create", "x", "--pow", "30"), "pow_bits"),
        (("room", "info", str(Account.generate().id)), "metadata"),
        (("room", "mod", "add", made["id"], "not-an-id"), "account ID"),
    ):
        done = veil(home, net, *args)
        assert done.returncode == 1, (args, done.stderr)
        assert words in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
