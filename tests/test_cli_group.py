"""``veil group ...`` as real subprocesses (issue 13): argument errors without a
network, then a whole session's life on a devnet: create, encrypt/decrypt (JSON and
raw), chat exactly once, files, add, show, revoke, revoke-all, each with --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.devnetutil import group_net_fixture  # noqa: F401 (the shared devnet)
from veil.client.devnet import Devnet
from veil.client.home import Home
from veil.onion.keys import Account

REPO = Path(__file__).resolve().parent.parent


def veil(home: Path, network: Path | None, *args: str) -> subprocess.CompletedProcess[str]:
    head = [sys.executable, "-m", "veil.client", "--home", str(home)]
    if network is not None:
        head += ["--network", str(network)]
    env = {k: v for k, v in os.environ.items() if k not in ("VEIL_NETWORK", "VEIL_HOME")}
    return subprocess.run(
        [*head, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=90,
        check=False,
        env=env,
    )


def person(tmp_path: Path, name: str) -> tuple[Path, str]:
    home = Home(tmp_path / name)
    account = Account.generate()
    home.save_identity(account)
    return home.path, str(account.id)


def ok(result: subprocess.CompletedProcess[str]) -> dict:  # type: ignore[type-arg]
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_help_and_argument_errors_need_no_network(tmp_path: Path) -> None:
    home, me = person(tmp_path, "alice")
    helped = veil(home, None, "group", "--help")
    assert helped.returncode == 0
    for command in (
        "create",
        "show",
        "send",
        "inbox",
        "add",
        "revoke",
        "revoke-all",
        "encrypt-file",
        "decrypt-file",
        "encrypt",
        "decrypt",
    ):
        assert command in helped.stdout
    bad_id = veil(home, None, "group", "create", "--member", "05nothex")
    assert bad_id.returncode == 1 and "not an account ID" in bad_id.stderr
    bad_group = veil(home, None, "group", "show", me)  # an account ID, not a session's
    assert bad_group.returncode == 1 and "not a session ID" in bad_group.stderr
    bad_rights = veil(home, None, "group", "create", "--member", me, "--rights", "read,fly")
    assert bad_rights.returncode == 1 and "--rights" in bad_rights.stderr
    no_net = veil(home, None, "group", "create", "--member", me)
    assert no_net.returncode == 1 and "no network given" in no_net.stderr
    usage = veil(home, None, "group", "encrypt-file", "03" + "00" * 32, "x")
    assert usage.returncode == 2  # -o is required


@pytest.mark.slow
def test_a_session_from_create_to_revoke_all(group_net: Devnet, tmp_path: Path) -> None:
    network = group_net.network_file
    alice, _a = person(tmp_path, "alice")
    bob, b_id = person(tmp_path, "bob")
    carol, c_id = person(tmp_path, "carol")

    created = ok(
        veil(alice, network, "group", "create", "--member", b_id, "--metadata", "team", "--json")
    )
    sid = created["session_id"]
    assert created["metadata"] == "team" and b_id in created["members"]

    message = ok(veil(alice, network, "group", "encrypt", sid, "hello bob", "--json"))["message"]
    assert json.loads(message)["sessionId"] == sid
    assert ok(veil(bob, network, "group", "decrypt", message, "--json"))["text"] == "hello bob"
    raw = ok(veil(alice, network, "group", "encrypt", sid, "raw", "--raw", "--json"))["message"]
    refused = veil(bob, network, "group", "decrypt", raw)
    assert refused.returncode == 1 and "raw message" in refused.stderr
    assert (
        ok(veil(bob, network, "group", "decrypt", raw, "--group", sid, "--json"))["text"] == "raw"
    )

    ok(veil(alice, network, "group", "send", sid, "chat one", "--json"))
    inbox = veil(bob, network, "group", "inbox", sid, "--json")
    assert inbox.returncode == 0, inbox.stderr
    assert [json.loads(line)["text"] for line in inbox.stdout.splitlines()] == ["chat one"]
    again = veil(bob, network, "group", "inbox", sid, "--json")
    assert again.returncode == 0 and again.stdout == ""  # exactly once

    plain = tmp_path / "report.txt"
    plain.write_bytes(os.urandom(200_000))
    enc = ok(
        veil(
            alice,
            network,
            "group",
            "encrypt-file",
            sid,
            str(plain),
            "-o",
            str(tmp_path / "report.veil"),
            "--json",
        )
    )
    assert enc["size"] == 200_000
    dec = ok(
        veil(
            bob,
            network,
            "group",
            "decrypt-file",
            str(tmp_path / "report.veil"),
            "-o",
            str(tmp_path / "bob.txt"),
            "--json",
        )
    )
    assert dec["filename"] == "report.txt" and dec["session_id"] == sid
    assert (tmp_path / "bob.txt").read_bytes() == plain.read_bytes()

    ok(veil(bob, network, "group", "add", sid, c_id, "--rights", "read", "--json"))
    shown = ok(veil(alice, network, "group", "show", sid, "--json"))
    assert shown["members"][c_id] == ["read"] and shown["added_by"][c_id] == [b_id]
    assert ok(veil(carol, network, "group", "show", sid, "--json"))["my_rights"] == ["read"]

    revoked = ok(veil(alice, network, "group", "revoke", sid, c_id, "--json"))
    assert c_id not in revoked["members"] and c_id in revoked["revoked"]
    refused = veil(carol, network, "group", "show", sid)
    assert refused.returncode == 1 and "veil: error:" in refused.stderr

    assert ok(veil(alice, network, "group", "revoke-all", sid, "--json"))["ended"] is True
    gone = veil(bob, network, "group", "send", sid, "anyone?")
    assert gone.returncode == 1 and "revoked" in gone.stderr


def test_a_progress_bar_only_on_a_terminal_for_large_files() -> None:
    import io

    import trio

    from veil.client.cli import group

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    class Ctx:
        json = False
        stderr = Tty()

    seen: list[object] = []

    async def run(progress: object) -> int:
        seen.append(progress)
        if progress is not None:
            progress(group.PROGRESS_MIN_BYTES, group.PROGRESS_MIN_BYTES)  # type: ignore[operator]
        return 0

    big, small = group.PROGRESS_MIN_BYTES, 1000
    trio.run(group._with_progress, Ctx(), big, "encrypting", run)
    trio.run(group._with_progress, Ctx(), small, "encrypting", run)
    Ctx.json = True
    trio.run(group._with_progress, Ctx(), big, "encrypting", run)
    Ctx.json, Ctx.stderr = False, io.StringIO()  # type: ignore[assignment]
    trio.run(group._with_progress, Ctx(), big, "encrypting", run)
    assert [p is not None for p in seen] == [True, False, False, False]
