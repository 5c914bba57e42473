"""``veil send``, ``veil inbox`` and ``veil status``: errors a user can act on, in one line.

Real subprocesses (``python -m veil.client``), real files; no devnet is needed for these: each
error is found before, or at, the first contact with the network. (Sending and receiving
through a devnet are in tests/test_client_messaging.py.)
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from veil.client.home import Home
from veil.client.messaging import MAX_MESSAGE_BYTES, check_ttl
from veil.onion.directory import Authority, NetworkFile
from veil.onion.errors import InvalidTtl
from veil.onion.keys import Account, NodeKeys

REPO = Path(__file__).resolve().parent.parent


def veil(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "veil.client", "--home", str(home), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(home.parent)},
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("veil: error: ")
    return lines[0]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = Home(tmp_path / "home")
    h.save_identity(Account.generate())
    return h.path


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once it is closed


@pytest.fixture
def dead_network(tmp_path: Path) -> Path:
    """A valid network file whose only authority does not answer."""
    authority = Authority(NodeKeys.generate().identity_public, "127.0.0.1", closed_port())
    path = tmp_path / "network.json"
    path.write_text(NetworkFile((authority,), 1).to_json())
    return path


RECIPIENT = str(Account.generate().id)


@pytest.mark.parametrize("command", [["send", RECIPIENT, "hi"], ["inbox"], ["status"]])
def test_no_network_file(home: Path, command: list[str]) -> None:
    line = one_line_error(veil(home, *command))
    assert "no network given" in line and "--network" in line


def test_missing_network_file(home: Path, tmp_path: Path) -> None:
    line = one_line_error(veil(home, "--network", str(tmp_path / "nope.json"), "status"))
    assert "nope.json does not exist" in line


def test_invalid_network_file(home: Path, tmp_path: Path) -> None:
    bad = tmp_path / "network.json"
    bad.write_text('{"version": 1}')
    line = one_line_error(veil(home, "--network", str(bad), "inbox"))
    assert "network.json" in line and "missing" in line


@pytest.mark.parametrize("command", [["send", RECIPIENT, "hi"], ["inbox"], ["status"]])
def test_unreachable_authority(home: Path, dead_network: Path, command: list[str]) -> None:
    line = one_line_error(veil(home, "--network", str(dead_network), *command))
    assert "directory authority" in line
    assert "connection refused" in line


@pytest.mark.parametrize(
    "recipient",
    [
        "bob",
        "05" + "zz" * 32,
        "03" + RECIPIENT[2:],  # a group ID, not an account
        RECIPIENT[:-2],
        "05" + "00" * 32,  # hex of the right length, not a valid key
    ],
)
def test_bad_recipient(home: Path, dead_network: Path, recipient: str) -> None:
    line = one_line_error(veil(home, "--network", str(dead_network), "send", recipient, "hi"))
    assert "not an account ID" in line


def test_message_too_large(home: Path, dead_network: Path) -> None:
    too_big = "x" * (MAX_MESSAGE_BYTES + 1)
    line = one_line_error(veil(home, "--network", str(dead_network), "send", RECIPIENT, too_big))
    assert "message too large" in line and str(MAX_MESSAGE_BYTES) in line
    # The same from standard input; and a multibyte text counts its bytes.
    line = one_line_error(
        veil(home, "--network", str(dead_network), "send", RECIPIENT, "-", stdin=too_big)
    )
    assert "message too large" in line
    wide = "é" * (MAX_MESSAGE_BYTES // 2 + 1)
    line = one_line_error(veil(home, "--network", str(dead_network), "send", RECIPIENT, wide))
    assert "message too large" in line


@pytest.mark.parametrize("ttl", ["5", "1209601", "nan", "inf"])
def test_ttl_out_of_limits(home: Path, dead_network: Path, ttl: str) -> None:
    line = one_line_error(
        veil(home, "--network", str(dead_network), "send", RECIPIENT, "hi", "--ttl", ttl)
    )
    assert "TTL" in line


@pytest.mark.parametrize("ttl_s", [5, 1_209_601, float("nan"), float("inf"), "60", True])
def test_the_library_refuses_a_bad_ttl_with_a_typed_error(ttl_s: object) -> None:
    with pytest.raises(InvalidTtl):
        check_ttl(ttl_s)  # type: ignore[arg-type]
    assert issubclass(InvalidTtl, ValueError)


def test_no_identity(tmp_path: Path, dead_network: Path) -> None:
    line = one_line_error(veil(tmp_path / "empty", "--network", str(dead_network), "inbox"))
    assert "veil id new" in line
