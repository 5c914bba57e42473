"""End-to-end tests of ``veil id new|show|restore|passphrase``, through the real command.

Every test runs ``python -m veil.client`` (the same ``main`` as the ``veil`` console script)
as a subprocess with its own home, given by ``--home`` or by ``VEIL_HOME``, and checks
what a user sees: stdout, one-line errors on stderr, exit codes, and the files and modes
left on disk. The identity file's format (versions 1 and 2, the sealed seed) is also
tested through :class:`veil.client.home.Home`, with the cheapest argon2id so that it is fast.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import select
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mnemonic import Mnemonic

from veil.client.cli.identity import KDF_CHOICES
from veil.client.home import (
    KDF_MIN,
    BadIdentityFile,
    BadPassphrase,
    Home,
    HomeError,
    KdfLimits,
    PassphraseRequired,
    WrongPassphrase,
)
from veil.onion.errors import InvalidPhrase
from veil.onion.keys import Account, AccountId, phrase_to_seed, seed_to_phrase

ROOT = Path(__file__).resolve().parent.parent
WORDS = set(Mnemonic("english").wordlist)
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX modes and ptys")


def veil(
    *args: str,
    home: Path | None = None,
    stdin: str | bytes = b"",
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``veil ARGS`` (with ``--home HOME`` first if given) and capture its output."""
    argv = [sys.executable, "-m", "veil.client"]
    if home is not None:
        argv += ["--home", str(home)]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("VEIL_")}
    full_env.update(env or {})
    data = stdin.encode() if isinstance(stdin, str) else stdin
    proc = subprocess.run(
        argv + list(args), input=data, capture_output=True, env=full_env, cwd=ROOT, timeout=60
    )
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
    )


def assert_one_line_error(r: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("veil: error: "), r.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def new_identity(home: Path) -> tuple[str, str]:
    r = veil("--json", "id", "new", home=home)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    return out["account_id"], out["phrase"]


def seed_hex(home: Path) -> str:
    return json.loads((home / "identity.json").read_text())["seed"]


# --- new and show --------------------------------------------------------------------------


def test_new_then_show_give_the_same_id(tmp_path: Path) -> None:
    home = tmp_path / "home"
    r = veil("id", "new", home=home)
    assert r.returncode == 0, r.stderr
    printed_ids = [w for w in r.stdout.split() if w.startswith("05") and len(w) == 66]
    assert len(printed_ids) == 1
    AccountId.parse(printed_ids[0])  # a valid account ID

    shown = veil("id", "show", home=home)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == printed_ids[0] + "\n"


def test_new_prints_a_24_word_phrase_of_its_seed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    r = veil("id", "new", home=home)
    assert r.returncode == 0, r.stderr
    phrase_lines = [ln.split() for ln in r.stdout.splitlines() if len(ln.split()) == 24]
    assert len(phrase_lines) == 1
    words = phrase_lines[0]
    assert all(w in WORDS for w in words)
    assert "write the recovery phrase down" in r.stdout.lower()
    # The phrase is exactly the stored seed, with its checksum.
    assert phrase_to_seed(" ".join(words)).hex() == seed_hex(home)


def test_two_new_identities_differ(tmp_path: Path) -> None:
    a, phrase_a = new_identity(tmp_path / "a")
    b, phrase_b = new_identity(tmp_path / "b")
    assert a != b and phrase_a != phrase_b


def test_veil_home_env_is_the_home_and_home_option_wins(tmp_path: Path) -> None:
    env_home, opt_home = tmp_path / "env-home", tmp_path / "opt-home"
    r = veil("--json", "id", "new", env={"VEIL_HOME": str(env_home)})
    assert r.returncode == 0, r.stderr
    account_id = json.loads(r.stdout)["account_id"]
    assert (env_home / "identity.json").is_file()

    shown = veil("id", "show", env={"VEIL_HOME": str(env_home)})
    assert shown.stdout.strip() == account_id

    # --home beats VEIL_HOME: that home is empty.
    r = veil("id", "show", home=opt_home, env={"VEIL_HOME": str(env_home)})
    assert_one_line_error(r, str(opt_home))


def test_json_before_or_after_the_subcommand(tmp_path: Path) -> None:
    home = tmp_path / "home"
    r = veil("id", "new", "--json", home=home)
    assert r.returncode == 0, r.stderr
    created = json.loads(r.stdout)
    assert set(created) == {"account_id", "phrase"}
    assert len(created["phrase"].split()) == 24

    for args in (["--json", "id", "show"], ["id", "show", "--json"], ["id", "--json", "show"]):
        r = veil(*args, home=home)
        assert r.returncode == 0, (args, r.stderr)
        assert json.loads(r.stdout) == {"account_id": created["account_id"]}, args

    r = veil("id", "show", "--phrase", "--json", home=home)
    assert json.loads(r.stdout) == created


def test_show_keeps_the_phrase_and_seed_out_unless_asked(tmp_path: Path) -> None:
    home = tmp_path / "home"
    account_id, phrase = new_identity(home)
    seed = seed_hex(home)
    for args in (["id", "show"], ["--json", "id", "show"]):
        r = veil(*args, home=home)
        assert r.returncode == 0, r.stderr
        for secret_part in [seed, phrase, *phrase.split()[:3]]:
            assert secret_part not in r.stdout + r.stderr

    r = veil("id", "show", "--phrase", home=home)
    assert r.returncode == 0, r.stderr
    assert account_id in r.stdout and phrase in r.stdout
    assert seed not in r.stdout


def test_show_without_identity_says_how_to_make_one(tmp_path: Path) -> None:
    home = tmp_path / "empty"
    r = veil("id", "show", home=home)
    assert_one_line_error(r, "no identity", "veil id new")
    assert not home.exists()  # looking does not create the home


# --- files and modes -----------------------------------------------------------------------


@posix_only
def test_home_is_0700_and_seed_file_0600(tmp_path: Path) -> None:
    home = tmp_path / "deep" / "er" / "home"
    new_identity(home)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    seed_file = home / "identity.json"
    assert stat.S_IMODE(seed_file.stat().st_mode) == 0o600
    assert [p.name for p in home.iterdir()] == ["identity.json"]  # no temporary left


@posix_only
@pytest.mark.parametrize("umask", [0o000, 0o277], ids=["umask000", "umask277"])
def test_modes_do_not_depend_on_the_umask(tmp_path: Path, umask: int) -> None:
    # umask 000 would leave naive creations world-readable; umask 277 would leave the
    # home unwritable (0500) and the seed file 0400 unless veil sets the modes exactly.
    home = tmp_path / "home"
    argv = [sys.executable, "-m", "veil.client", "--home", str(home), "id", "new"]
    script = "import os, subprocess, sys; os.umask(int(sys.argv[1])); "
    script += "sys.exit(subprocess.call(sys.argv[2:]))"
    r = subprocess.run([sys.executable, "-c", script, str(umask), *argv], capture_output=True)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "identity.json").stat().st_mode) == 0o600


@posix_only
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_seed_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    home = tmp_path / "home"
    new_identity(home)
    seed_file = home / "identity.json"
    seed_file.chmod(mode)
    r = veil("id", "show", home=home)
    assert_one_line_error(r, str(seed_file), f"{mode:04o}", "chmod 600")
    assert r.stdout == ""

    seed_file.chmod(0o600)
    assert veil("id", "show", home=home).returncode == 0


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("not json at all", "not JSON"),
        ('{"hello": 1}', "not a veil identity file"),
        ('{"format": "veil-identity", "version": 99, "seed": "00"}', "upgrade veil"),
        ('{"format": "veil-identity", "version": 1, "account_id": "05", "seed": "zz"}', "seed"),
    ],
)
def test_damaged_identity_file_is_a_clear_error(
    tmp_path: Path, content: str, fragment: str
) -> None:
    home = tmp_path / "home"
    new_identity(home)
    (home / "identity.json").write_text(content)
    r = veil("id", "show", home=home)
    assert_one_line_error(r, fragment)


def test_a_changed_seed_is_detected(tmp_path: Path) -> None:
    # Any 32 bytes are a seed, so only the stored account ID can tell damage apart.
    home = tmp_path / "home"
    new_identity(home)
    path = home / "identity.json"
    record = json.loads(path.read_text())
    record["seed"] = ("ff" if record["seed"][:2] != "ff" else "00") + record["seed"][2:]
    path.write_text(json.dumps(record))
    r = veil("id", "show", home=home)
    assert_one_line_error(r, "damaged")


# --- overwrite refusal ---------------------------------------------------------------------


def test_new_refuses_to_overwrite_and_force_replaces(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first, _ = new_identity(home)
    seed_file = home / "identity.json"
    before = seed_file.read_bytes()

    r = veil("id", "new", home=home)
    assert_one_line_error(r, "already exists", str(seed_file), "--force")
    assert r.stdout == ""
    assert seed_file.read_bytes() == before

    r = veil("--json", "id", "new", "--force", home=home)
    assert r.returncode == 0, r.stderr
    second = json.loads(r.stdout)["account_id"]
    assert second != first
    assert veil("id", "show", home=home).stdout.strip() == second
    assert "replaced" in r.stderr


def test_restore_refuses_to_overwrite_and_force_replaces(tmp_path: Path) -> None:
    a_id, a_phrase = new_identity(tmp_path / "a")
    home = tmp_path / "b"
    b_id, _ = new_identity(home)

    r = veil("id", "restore", home=home, stdin=a_phrase)
    assert_one_line_error(r, "already exists", "--force")
    assert veil("id", "show", home=home).stdout.strip() == b_id

    r = veil("id", "restore", "--force", home=home, stdin=a_phrase)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == a_id
    assert veil("id", "show", home=home).stdout.strip() == a_id


# --- restore -------------------------------------------------------------------------------


def test_restore_from_phrase_gives_the_same_id_in_another_home(tmp_path: Path) -> None:
    account_id, phrase = new_identity(tmp_path / "a")
    other = tmp_path / "b"
    r = veil("id", "restore", home=other, stdin=phrase + "\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == account_id
    assert veil("id", "show", home=other).stdout.strip() == account_id
    assert seed_hex(other) == seed_hex(tmp_path / "a")

    r = veil("--json", "id", "restore", home=tmp_path / "c", stdin=phrase)
    assert json.loads(r.stdout) == {"account_id": account_id}


def test_restore_forgives_case_and_whitespace(tmp_path: Path) -> None:
    account_id, phrase = new_identity(tmp_path / "a")
    words = phrase.split()
    messy = "\n  " + "  \t".join(w.upper() if i % 2 else w.title() for i, w in enumerate(words))
    messy = messy.replace(words[11].upper(), words[11].upper() + "\n\n", 1) + "  \r\n"
    r = veil("id", "restore", home=tmp_path / "b", stdin=messy)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == account_id


def test_restore_of_a_known_vector(tmp_path: Path) -> None:
    # The all-zero seed's phrase is BIP-39's first vector: ties our phrase to the standard.
    phrase = " ".join(["abandon"] * 23 + ["art"])
    assert seed_to_phrase(bytes(32)) == phrase
    r = veil("--json", "id", "restore", home=tmp_path / "h", stdin=phrase)
    assert r.returncode == 0, r.stderr
    assert seed_hex(tmp_path / "h") == "00" * 32


def _is_valid(phrase: str) -> bool:
    try:
        phrase_to_seed(phrase)
    except InvalidPhrase:
        return False
    return True


def _bad_phrases() -> list[tuple[str, str, str]]:
    good = seed_to_phrase(bytes(range(32))).split()
    # A last word from the list that breaks the checksum (most of them do).
    swapped = next(
        [*good[:-1], w] for w in sorted(WORDS) if not _is_valid(" ".join([*good[:-1], w]))
    )
    return [
        ("23 words", " ".join(good[:23]), "24 words, this one has 23"),
        ("25 words", " ".join([*good, good[0]]), "this one has 25"),
        ("unknown word", " ".join(["zzyzx", *good[1:]]), "zzyzx"),
        ("bad checksum", " ".join(swapped), "checksum"),
        ("empty", "", "no recovery phrase"),
        ("blank", "  \n\t \n", "no recovery phrase"),
    ]


@pytest.mark.parametrize(("case", "text", "fragment"), _bad_phrases(), ids=lambda x: x)
def test_malformed_phrase_is_one_clear_line(
    tmp_path: Path, case: str, text: str, fragment: str
) -> None:
    home = tmp_path / "home"
    r = veil("id", "restore", home=home, stdin=text)
    assert_one_line_error(r, fragment)
    assert r.stdout == ""
    assert not (home / "identity.json").exists()


def test_restore_refuses_oversized_and_non_utf8_input(tmp_path: Path) -> None:
    home = tmp_path / "home"
    r = veil("id", "restore", home=home, stdin="abandon " * 10_000)
    assert_one_line_error(r, "too long")
    r = veil("id", "restore", home=home, stdin=b"\xff\xfe abandon")
    assert_one_line_error(r, "UTF-8")
    assert not (home / "identity.json").exists()


def test_phrase_is_not_accepted_on_the_command_line(tmp_path: Path) -> None:
    _, phrase = new_identity(tmp_path / "a")
    r = veil("id", "restore", *phrase.split(), home=tmp_path / "b")
    assert r.returncode == 2
    assert not (tmp_path / "b" / "identity.json").exists()


# --- the command skeleton ------------------------------------------------------------------


@pytest.mark.parametrize(
    "args", [[], ["id"], ["id", "bogus"], ["bogus"], ["id", "show", "--no-such-option"]]
)
def test_usage_errors_exit_2_without_traceback(tmp_path: Path, args: list[str]) -> None:
    r = veil(*args, home=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    assert "usage:" in r.stderr
    assert r.stdout == ""


def test_help_and_version(tmp_path: Path) -> None:
    r = veil("--help")
    assert r.returncode == 0
    assert "id" in r.stdout and "--home" in r.stdout and "--network" in r.stdout
    r = veil("id", "restore", "--help")
    assert r.returncode == 0 and "stdin" in r.stdout
    r = veil("--version")
    assert r.returncode == 0 and r.stdout.startswith("veil ")


def test_global_options_are_accepted_before_the_subcommand(tmp_path: Path) -> None:
    net = tmp_path / "network.json"
    r = veil("--network", str(net), "--json", "id", "new", home=tmp_path / "h")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["account_id"].startswith("05")
    r = veil("id", "show", home=tmp_path / "h", env={"VEIL_NETWORK": str(net)})
    assert r.returncode == 0, r.stderr


def test_startup_does_not_import_heavy_modules(tmp_path: Path) -> None:
    heavy = ["trio", "httpx", "sqlite3", "nacl"]
    script = (
        "import sys\n"
        "from veil.client.cli import main\n"
        "code = main(sys.argv[1:])\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", script, "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"

    # id show needs the keys (nacl) but no network stack.
    new_identity(tmp_path / "h")
    r = subprocess.run(
        [sys.executable, "-c", script, "--home", str(tmp_path / "h"), "id", "show"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    loaded = ast.literal_eval(r.stdout.strip().splitlines()[-1])
    assert "trio" not in loaded and "httpx" not in loaded and "sqlite3" not in loaded


# --- a real terminal -----------------------------------------------------------------------


def _read_until(fd: int, needle: bytes, deadline: float, *more: bytes) -> bytes:
    """Read from ``fd`` until ``needle`` (then each of ``more``, in that order) shows up,
    or fail at ``deadline``. Ask for every text that may arrive in one write together:
    what one call reads past its needle is not seen by the next."""
    seen = b""
    while not _in_order(seen, (needle, *more)):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"never saw {needle!r}; got {seen!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 4096)
            assert chunk, f"stream closed before {needle!r}; got {seen!r}"
            seen += chunk
    return seen


def _in_order(data: bytes, needles: tuple[bytes, ...]) -> bool:
    at = 0
    for needle in needles:
        found = data.find(needle, at)
        if found < 0:
            return False
        at = found + len(needle)
    return True


def _spawn_on_pty(home: Path, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    """Run ``veil --home HOME ARGS`` (default ``id restore``) with a pty as its stdin."""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "veil.client", "--home", str(home), *(args or ("id", "restore"))],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("VEIL_")},
        start_new_session=True,  # no controlling terminal: getpass uses the pty on stdin
    )
    os.close(slave)
    return proc, master


@posix_only
def test_restore_prompts_on_a_terminal_without_echo(tmp_path: Path) -> None:
    account_id, phrase = new_identity(tmp_path / "a")
    proc, master = _spawn_on_pty(tmp_path / "b")
    try:
        assert proc.stderr is not None
        # The prompt is written after echo is turned off, so typing after it is safe.
        _read_until(proc.stderr.fileno(), b"ecovery phrase", time.monotonic() + 30)
        os.write(master, phrase.encode() + b"\n")
        out, err = proc.communicate(timeout=30)
        echoed = b""
        while select.select([master], [], [], 0)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child side is closed
                break
            if not chunk:
                break
            echoed += chunk
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out.decode().strip() == account_id
    assert phrase.split()[0].encode() not in echoed


@posix_only
def test_ctrl_c_exits_130_quietly(tmp_path: Path) -> None:
    proc, master = _spawn_on_pty(tmp_path / "home")
    try:
        assert proc.stderr is not None
        # Hang guards, not timings: a loaded 2-core CI machine once needed more than 30 s.
        prompt = _read_until(proc.stderr.fileno(), b"ecovery phrase", time.monotonic() + 90)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=90)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert b"Traceback" not in prompt + err
    assert b"KeyboardInterrupt" not in prompt + err
    assert out == b""
    assert not (tmp_path / "home" / "identity.json").exists()


# --- passphrase: the identity file (veil.client.home) ----------------------------------------


def _home_with(tmp_path: Path, record: dict[str, object]) -> Home:
    home = Home(tmp_path / "home")
    home.ensure()
    home.identity_path.write_text(json.dumps(record))
    home.identity_path.chmod(0o600)
    return home


def test_sealed_seed_round_trip(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    account = Account.generate()
    home.save_identity(account, passphrase="correct horse", kdf=KDF_MIN)
    record = json.loads(home.identity_path.read_text())
    assert record["version"] == 2 and "seed" not in record
    assert record["account_id"] == str(account.id)
    assert record["protection"]["kdf"] == "argon2id13"
    assert account.seed.hex() not in home.identity_path.read_text()

    assert home.is_protected()
    assert home.account_id() == account.id  # no passphrase needed
    with pytest.raises(PassphraseRequired):
        home.load_identity()
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        home.load_identity("correct horse ")
    assert home.load_identity("correct horse").seed == account.seed


def test_passphrase_is_unicode_normalized(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    account = Account.generate()
    home.save_identity(account, passphrase="caf\u00e9 \u00c5ngstr\u00f6m", kdf=KDF_MIN)
    # The same text typed as base letters plus combining accents opens it.
    assert home.load_identity("cafe\u0301 A\u030angstro\u0308m").seed == account.seed


def test_set_change_and_remove_the_passphrase(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    account = Account.generate()
    home.save_identity(account)
    assert not home.is_protected()

    home.set_passphrase(None, "one", kdf=KDF_MIN)
    first = json.loads(home.identity_path.read_text())["protection"]
    home.set_passphrase("one", "two", kdf=KDF_MIN)
    second = json.loads(home.identity_path.read_text())["protection"]
    assert first["salt"] != second["salt"] and first["nonce"] != second["nonce"]
    with pytest.raises(WrongPassphrase):
        home.load_identity("one")
    assert home.load_identity("two").seed == account.seed

    before = home.identity_path.read_bytes()
    with pytest.raises(WrongPassphrase):
        home.set_passphrase("one", None)  # a wrong current passphrase changes nothing
    assert home.identity_path.read_bytes() == before

    home.set_passphrase("two", None)
    assert not home.is_protected()
    assert home.load_identity().seed == account.seed
    assert stat.S_IMODE(home.identity_path.stat().st_mode) == 0o600


def test_empty_or_overlong_passphrase_is_refused_and_nothing_written(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    for bad in ("", "x" * 1025):
        with pytest.raises(BadPassphrase):
            home.save_identity(Account.generate(), passphrase=bad, kdf=KDF_MIN)
    assert not home.has_identity()


def test_version_1_files_still_load(tmp_path: Path) -> None:
    account = Account(bytes(range(32)))
    record = {"format": "veil-identity", "version": 1, "account_id": str(account.id)}
    home = _home_with(tmp_path, {**record, "seed": account.seed.hex()})
    assert home.load_identity().seed == account.seed
    assert home.account_id() == account.id
    assert not home.is_protected()
    home.set_passphrase(None, "pw", kdf=KDF_MIN)  # upgrades the file to version 2
    assert json.loads(home.identity_path.read_text())["version"] == 2
    assert home.load_identity("pw").seed == account.seed


def test_a_sealed_seed_is_bound_to_its_account_and_parameters(tmp_path: Path) -> None:
    a, b = Account.generate(), Account.generate()
    home = Home(tmp_path / "home")
    home.save_identity(a, passphrase="pw", kdf=KDF_MIN)
    record = json.loads(home.identity_path.read_text())

    # The sealed seed moved under another account ID does not open (associated data).
    moved = _home_with(tmp_path / "moved", {**record, "account_id": str(b.id)})
    assert moved.account_id() == b.id
    with pytest.raises(WrongPassphrase):
        moved.load_identity("pw")
    # Changed KDF parameters derive another key: refused, never another seed.
    for field, value in (("opslimit", 2), ("salt", "00" * 16)):
        changed = {**record, "protection": {**record["protection"], field: value}}
        with pytest.raises(WrongPassphrase):
            _home_with(tmp_path / field, changed).load_identity("pw")


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"memlimit": 1 << 40}, "memlimit"),  # would allocate 1 TiB: refused before
        ({"opslimit": 10**9}, "opslimit"),
        ({"opslimit": 0}, "opslimit"),
        ({"memlimit": "big"}, "limits"),
        ({"kdf": "scrypt"}, "unknown KDF"),
        ({"nonce": "00"}, "nonce"),
        ({"ciphertext": "zz" * 48}, "sealed seed"),
    ],
)
def test_damaged_protection_record_is_a_clear_error(
    tmp_path: Path, change: dict[str, object], fragment: str
) -> None:
    home = Home(tmp_path / "home")
    home.save_identity(Account.generate(), passphrase="pw", kdf=KDF_MIN)
    record = json.loads(home.identity_path.read_text())
    record["protection"].update(change)
    with pytest.raises(BadIdentityFile, match=fragment):
        _home_with(tmp_path / "bad", record).load_identity("pw")


def test_a_record_with_both_a_clear_and_a_sealed_seed_is_refused(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    account = Account.generate()
    home.save_identity(account, passphrase="pw", kdf=KDF_MIN)
    record = json.loads(home.identity_path.read_text())
    with pytest.raises(BadIdentityFile, match="both"):
        _home_with(tmp_path / "both", {**record, "seed": account.seed.hex()}).load_identity()


def test_kdf_constants_match_libsodium() -> None:
    import nacl.pwhash.argon2id as argon2id

    from veil.client import home as h

    assert h.MIN_OPSLIMIT == argon2id.OPSLIMIT_MIN
    assert h.MIN_MEMLIMIT == argon2id.MEMLIMIT_MIN
    assert h.SALT_BYTES == argon2id.SALTBYTES
    presets = {
        "interactive": (argon2id.OPSLIMIT_INTERACTIVE, argon2id.MEMLIMIT_INTERACTIVE),
        "moderate": (argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE),
        "sensitive": (argon2id.OPSLIMIT_SENSITIVE, argon2id.MEMLIMIT_SENSITIVE),
    }
    for name, (ops, mem) in presets.items():
        assert h.KDF_PRESETS[name] == KdfLimits(ops, mem), name
    assert h.DEFAULT_KDF == h.KDF_MODERATE  # real use gets at least MODERATE by default
    assert set(KDF_CHOICES) == set(h.KDF_PRESETS)  # what --kdf offers


# --- passphrase: the command -----------------------------------------------------------------

# INTERACTIVE (64 MiB, about 0.1 s) keeps these subprocess tests fast; the default is
# MODERATE, checked above.
FAST = ("--kdf", "interactive")


def new_sealed_identity(home: Path, passphrase: str = "hunter2 hunter2") -> tuple[str, str]:
    env = {"VEIL_PASSPHRASE": passphrase}
    r = veil("--json", "id", "new", "--passphrase", *FAST, home=home, env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    return out["account_id"], out["phrase"]


def test_new_with_passphrase_show_works_and_seed_needs_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    account_id, phrase = new_sealed_identity(home, "hunter2 hunter2")
    record = json.loads((home / "identity.json").read_text())
    assert "seed" not in record and record["protection"]["memlimit"] == 64 << 20

    # The account ID needs no passphrase.
    r = veil("id", "show", home=home)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == account_id

    # The seed does: without it, one clear line that says how to give it.
    r = veil("id", "show", "--phrase", home=home)
    assert_one_line_error(r, "passphrase", "VEIL_PASSPHRASE")
    assert phrase.split()[0] not in r.stdout

    r = veil("id", "show", "--phrase", home=home, env={"VEIL_PASSPHRASE": "hunter3 hunter2"})
    assert_one_line_error(r, "wrong passphrase")
    assert r.stdout == ""

    r = veil(
        "--json", "id", "show", "--phrase", env={"VEIL_PASSPHRASE": "hunter2 hunter2"}, home=home
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"account_id": account_id, "phrase": phrase}


def test_new_with_passphrase_and_no_way_to_ask_fails_before_writing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    r = veil("id", "new", "--passphrase", *FAST, home=home)  # stdin is not a terminal
    assert_one_line_error(r, "VEIL_PASSPHRASE")
    assert not (home / "identity.json").exists()


def test_restore_with_passphrase(tmp_path: Path) -> None:
    account_id, phrase = new_identity(tmp_path / "a")
    home = tmp_path / "b"
    r = veil(
        "id",
        "restore",
        "--passphrase",
        *FAST,
        home=home,
        stdin=phrase,
        env={"VEIL_PASSPHRASE": "pw one"},
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == account_id
    assert "seed" not in json.loads((home / "identity.json").read_text())
    r = veil("id", "show", "--phrase", home=home, env={"VEIL_PASSPHRASE": "pw one"})
    assert r.returncode == 0, r.stderr
    assert phrase in r.stdout


def test_change_and_remove_the_passphrase(tmp_path: Path) -> None:
    home = tmp_path / "home"
    account_id, phrase = new_sealed_identity(home, "old one")

    # Changing needs the current passphrase.
    r = veil("id", "passphrase", *FAST, home=home, env={"VEIL_NEW_PASSPHRASE": "new one"})
    assert_one_line_error(r, "VEIL_PASSPHRASE")
    r = veil(
        "id",
        "passphrase",
        *FAST,
        home=home,
        env={"VEIL_PASSPHRASE": "wrong", "VEIL_NEW_PASSPHRASE": "new one"},
    )
    assert_one_line_error(r, "wrong passphrase")
    r = veil(
        "--json",
        "id",
        "passphrase",
        *FAST,
        home=home,
        env={"VEIL_PASSPHRASE": "old one", "VEIL_NEW_PASSPHRASE": "new one"},
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"account_id": account_id, "passphrase": True}

    r = veil("id", "show", "--phrase", home=home, env={"VEIL_PASSPHRASE": "old one"})
    assert_one_line_error(r, "wrong passphrase")
    r = veil("id", "show", "--phrase", home=home, env={"VEIL_PASSPHRASE": "new one"})
    assert r.returncode == 0 and phrase in r.stdout

    # Removing it stores the seed in clear again; no passphrase is asked afterwards.
    r = veil("id", "passphrase", "--remove", home=home, env={"VEIL_PASSPHRASE": "new one"})
    assert r.returncode == 0, r.stderr
    assert phrase_to_seed(phrase).hex() == seed_hex(home)
    r = veil("id", "show", "--phrase", home=home)
    assert r.returncode == 0 and phrase in r.stdout

    # And setting one on a clear seed.
    r = veil("id", "passphrase", *FAST, home=home, env={"VEIL_NEW_PASSPHRASE": "third"})
    assert r.returncode == 0, r.stderr
    r = veil("id", "show", "--phrase", home=home, env={"VEIL_PASSPHRASE": "third"})
    assert r.returncode == 0 and phrase in r.stdout


def test_version_1_identity_file_works_with_the_command(tmp_path: Path) -> None:
    account = Account(bytes(range(32)))
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    v1 = {
        "format": "veil-identity",
        "version": 1,
        "account_id": str(account.id),
        "seed": account.seed.hex(),
    }
    (home / "identity.json").write_text(json.dumps(v1))
    (home / "identity.json").chmod(0o600)
    r = veil("--json", "id", "show", "--phrase", home=home)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"account_id": str(account.id), "phrase": account.phrase}


@posix_only
def test_passphrase_prompts_on_a_terminal(tmp_path: Path) -> None:
    home = tmp_path / "home"
    deadline = time.monotonic() + 60

    # id new --passphrase: asked twice; two different entries change nothing.
    proc, master = _spawn_on_pty(home, "--json", "id", "new", "--passphrase", *FAST)
    try:
        assert proc.stderr is not None
        _read_until(proc.stderr.fileno(), b"ew passphrase (not shown)", deadline)
        os.write(master, b"first try\n")
        _read_until(proc.stderr.fileno(), b"again", deadline)
        os.write(master, b"first trx\n")
        out, err = proc.communicate(timeout=30)
    finally:
        os.close(master)
    assert proc.returncode == 1 and b"differ" in err and out == b""
    assert not (home / "identity.json").exists()

    proc, master = _spawn_on_pty(home, "--json", "id", "new", "--passphrase", *FAST)
    try:
        assert proc.stderr is not None
        _read_until(proc.stderr.fileno(), b"ew passphrase (not shown)", deadline)
        os.write(master, b"s3cret words\n")
        _read_until(proc.stderr.fileno(), b"again", deadline)
        os.write(master, b"s3cret words\n")
        out, err = proc.communicate(timeout=30)
    finally:
        os.close(master)
    assert proc.returncode == 0, err
    created = json.loads(out)

    # A command that needs the seed asks; a mistyped passphrase may be typed again.
    proc, master = _spawn_on_pty(home, "--json", "id", "show", "--phrase")
    try:
        assert proc.stderr is not None
        _read_until(proc.stderr.fileno(), b"assphrase of the seed", deadline)
        os.write(master, b"s3cret wordz\n")
        # The refusal and the next prompt are written back to back.
        _read_until(proc.stderr.fileno(), b"try again", deadline, b"assphrase of the seed")
        os.write(master, b"s3cret words\n")
        out, err = proc.communicate(timeout=30)
    finally:
        os.close(master)
    assert proc.returncode == 0, err
    assert json.loads(out) == created


def test_passphrase_in_the_environment_without_the_flag_is_noted(tmp_path: Path) -> None:
    # A service that sets VEIL_PASSPHRASE but forgets --passphrase is told its seed is
    # stored in clear, rather than finding out later.
    home = tmp_path / "home"
    r = veil("id", "new", home=home, env={"VEIL_PASSPHRASE": "unused"})
    assert r.returncode == 0, r.stderr
    assert "--passphrase is not given" in r.stderr
    assert len(seed_hex(home)) == 64


_json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=80)
_json = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
_protections = st.fixed_dictionaries(
    {},
    optional={
        "kdf": st.just("argon2id13") | _json_scalars,
        "opslimit": st.integers(-2, 2**40) | _json_scalars,
        "memlimit": st.integers(-2, 2**50) | _json_scalars,
        "salt": st.sampled_from(["00" * 16, "zz" * 16, ""]) | _json_scalars,
        "nonce": st.sampled_from(["00" * 24, "0" * 47]) | _json_scalars,
        "ciphertext": st.sampled_from(["00" * 48, "00" * 47]) | _json_scalars,
    },
)
_account_ids = st.just(str(Account(bytes(32)).id)) | st.text(max_size=70) | _json_scalars
# Records close to valid ones, so that every check of the parser is reached.
_near_records = st.fixed_dictionaries(
    {"format": st.just("veil-identity"), "version": st.integers(-1, 3)},
    optional={"account_id": _account_ids, "seed": _json_scalars, "protection": _json},
) | st.fixed_dictionaries(
    {
        "format": st.just("veil-identity"),
        "version": st.just(2),
        "account_id": _account_ids,
        "protection": _protections,
    }
)


@settings(max_examples=300, deadline=None)
@given(
    content=st.binary(max_size=300)
    | _json.map(lambda v: json.dumps(v).encode())
    | _near_records.map(lambda v: json.dumps(v).encode())
)
def test_any_identity_file_gives_an_account_or_a_typed_error(content: bytes) -> None:
    # Without a passphrase no key is derived, so a hostile record costs nothing here.
    with tempfile.TemporaryDirectory() as d:
        home = Home(Path(d))
        home.identity_path.write_bytes(content)
        home.identity_path.chmod(0o600)
        for read in (home.account_id, home.is_protected, home.load_identity):
            with contextlib.suppress(HomeError):
                read()
