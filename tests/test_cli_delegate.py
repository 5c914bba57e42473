"""``veil id delegate|delegations|revoke-delegate`` and ``--delegated FILE`` without a
network: what each prints, the session file's mode, and the errors a user can act on,
each one line (real subprocesses, real files). On a devnet: tests/test_delegated_devnet.py.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from veil.client import DelegatedSession, SessionStore
from veil.client.home import KDF_MIN, Home
from veil.onion.keys import Account

REPO = Path(__file__).resolve().parent.parent


def veil(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "veil.client", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(home.parent), **(env or {})},
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("veil: error: ")
    return lines[0]


@pytest.fixture
def owner(tmp_path: Path) -> tuple[Path, Account]:
    account = Account.generate()
    home = Home(tmp_path / "home")
    home.save_identity(account)
    return home.path, account


def test_delegate_prints_the_session_and_records_it(owner: tuple[Path, Account]) -> None:
    home, account = owner
    out = veil(home, "id", "delegate", "-r", "self:0:retrieve,delete", "-r", "self:-1:post")
    assert out.returncode == 0, out.stderr
    session = DelegatedSession.from_string(out.stdout)
    assert session.account == account.id
    assert set(session.authorizations) == {
        f"{account.id}:0:delete,retrieve",
        f"{account.id}:-1:post",
    }
    assert 7 * 86_400 - 60 <= session.expires_in_secs <= 7 * 86_400
    doc = json.loads(
        veil(home, "--json", "id", "delegate", "-r", "self:*:retrieve", "--expires", "12h").stdout
    )
    assert doc["resources"] == [f"{account.id}:*:retrieve"]
    assert DelegatedSession.from_string(doc["session"]).did == doc["did"]
    listed = json.loads(veil(home, "id", "delegations", "--json").stdout)["delegations"]
    assert [d["did"] for d in listed] == [session.did, doc["did"]]
    assert all(not d["revoked"] and not d["expired"] for d in listed)
    text = veil(home, "id", "delegations").stdout
    assert session.did in text and "active" in text and "-1:post" in text


def test_delegate_writes_a_private_file(owner: tuple[Path, Account], tmp_path: Path) -> None:
    home, _ = owner
    file = tmp_path / "worker.session"
    made = veil(home, "id", "delegate", "-r", "self:0:retrieve", "--expires", "1h", "-o", str(file))
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(os.stat(file).st_mode) == 0o600
    session = DelegatedSession.from_string(file.read_text())
    assert session.did in made.stdout and session.serialize() not in made.stdout
    line = one_line_error(veil(home, "id", "delegate", "-r", "self:0:retrieve", "-o", str(file)))
    assert "exists" in line and "--force" in line
    again = veil(home, "id", "delegate", "-r", "self:0:retrieve", "-o", str(file), "--force")
    assert again.returncode == 0
    assert DelegatedSession.from_string(file.read_text()).did != session.did


def test_redelegating_under_delegated(owner: tuple[Path, Account], tmp_path: Path) -> None:
    home, account = owner
    file = tmp_path / "parent.session"
    veil(
        home, "id", "delegate", "-r", "self:0:retrieve,delegate", "--expires", "1h", "-o", str(file)
    )
    worker = tmp_path / "worker"  # no identity here
    child = veil(worker, "--delegated", str(file), "id", "delegate", "-r", "self:0:retrieve")
    assert child.returncode == 0, child.stderr
    session = DelegatedSession.from_string(child.stdout)
    assert session.depth == 2 and session.account == account.id
    line = one_line_error(
        veil(worker, "--delegated", str(file), "id", "delegate", "-r", "self:0:delete")
    )
    assert "does not hold delete" in line
    line = one_line_error(
        veil(
            worker,
            "--delegated",
            str(file),
            "id",
            "delegate",
            "-r",
            "self:0:retrieve",
            "--expires",
            "2h",
        )
    )
    assert "expire" in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-r", "self:0:fly"], "unknown action fly"),
        (["-r", "self:0"], "OWNER:NAMESPACES:ACTIONS"),
        (["-r", "self:0..x:retrieve"], "namespace"),
        (["-r", "05" + "ab" * 32 + ":0:retrieve"], "owner"),
        (["-r", "self:0:retrieve", "--expires", "40d"], "30 days"),
        (["-r", "self:0:retrieve", "--expires", "soon"], "--expires"),
        (["-r", "self:0:retrieve", "--statement", "x" * 300], "statement"),
    ],
)
def test_bad_delegations_are_one_line(
    owner: tuple[Path, Account], args: list[str], expected: str
) -> None:
    home, _ = owner
    assert expected in one_line_error(veil(home, "id", "delegate", *args))


def test_a_tampered_or_exposed_session_file_is_one_line(
    owner: tuple[Path, Account], tmp_path: Path
) -> None:
    home, _ = owner
    file = tmp_path / "s"
    veil(home, "id", "delegate", "-r", "self:0:retrieve", "-o", str(file))
    text = file.read_text().strip()
    i = len(text) // 2
    bad = tmp_path / "bad"
    bad.write_text(text[:i] + ("A" if text[i] != "A" else "B") + text[i + 1 :])
    bad.chmod(0o600)
    network = tmp_path / "none.json"
    for command in (
        ["inbox"],
        ["inbox", "--follow"],
        ["status"],
        ["id", "delegate", "-r", "self:0:retrieve"],
    ):
        line = one_line_error(
            veil(home, "--delegated", str(bad), "--network", str(network), *command)
        )
        assert "serialized session" in line
    file.chmod(0o644)
    line = one_line_error(veil(home, "--delegated", str(file), "--network", str(network), "inbox"))
    assert "others may read" in line and "chmod 600" in line
    line = one_line_error(veil(home, "--delegated", str(tmp_path / "missing"), "inbox"))
    assert "does not exist" in line


def test_send_is_refused_under_delegated(owner: tuple[Path, Account], tmp_path: Path) -> None:
    home, _ = owner
    file = tmp_path / "s"
    veil(home, "id", "delegate", "-r", "self:0:retrieve", "-o", str(file))
    line = one_line_error(
        veil(home, "--delegated", str(file), "send", str(Account.generate().id), "hi")
    )
    assert "seed" in line


def test_revoke_delegate_of_an_unknown_target_fails_before_the_network(
    owner: tuple[Path, Account],
) -> None:
    home, _ = owner
    veil(home, "id", "delegate", "-r", "self:0:retrieve")
    for target in (
        "did:key:z6MkpTHR8VNsBxYAAWHut2Geadd9jSwuBV8xRoAnwWsdvktH",
        "ab" * 32,
        "nonsense",
    ):
        line = one_line_error(veil(home, "id", "revoke-delegate", target))
        assert "delegation" in line or "did:key" in line


def test_changing_the_passphrase_keeps_the_stored_sessions(tmp_path: Path) -> None:
    account = Account.generate()
    home = Home(tmp_path / "home")
    home.save_identity(account, passphrase="old", kdf=KDF_MIN)
    session = SessionStore(home, passphrase="old").get(account, "self:0:retrieve")
    changed = veil(
        home.path,
        "id",
        "passphrase",
        "--kdf",
        "interactive",
        env={"VEIL_PASSPHRASE": "old", "VEIL_NEW_PASSPHRASE": "new"},
    )
    assert changed.returncode == 0, changed.stderr
    assert SessionStore(home, passphrase="new").get(account, "self:0:retrieve").did == session.did
