"""``veil-node config`` and ``veil-node check``, through the installed ``veil-node``.

``config`` prints the configuration file an operator starts from: every key of the
tables the command reads, each at its default and with its meaning. Parsed back, it must
be exactly the defaults and name every key, so the reference cannot drift from the
code. ``check`` must accept what ``config`` prints, and refuse every kind of mistake
with exit code 2 and one line naming the key and what is wrong (never a traceback),
as ``run`` itself does.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.node.config import ROLE_TABLES, NodeConfig, Role, parse_config
from veil.node.errors import ConfigError
from veil.onion.directory import Authority, NetworkFile
from veil.onion.keys import NodeKeys

#: The console script ``pip install`` made, as an operator runs it.
VEIL_NODE = Path(sys.executable).with_name("veil-node")


def veil_node(*args: str) -> subprocess.CompletedProcess[str]:
    assert VEIL_NODE.exists(), f"{VEIL_NODE} is missing: install the project (./scripts/test)"
    return subprocess.run(
        [str(VEIL_NODE), *args], capture_output=True, text=True, timeout=60, check=False
    )


def role_flag(role: Role) -> list[str]:
    return ["--authority"] if role == "authority" else []


def fields_of(role: Role) -> set[str]:
    defaults = NodeConfig()
    return {
        f"{table}.{f.name}"
        for table in ROLE_TABLES[role]
        for f in dataclasses.fields(getattr(defaults, table))
    }


# --- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["node", "authority"])
def test_config_prints_every_key_at_its_default(role: Role) -> None:
    done = veil_node("config", *role_flag(role))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    printed = tomllib.loads(done.stdout)
    # Exactly the defaults, and every key of every table the command reads, no other.
    assert parse_config(printed, role) == NodeConfig()
    assert list(printed) == list(ROLE_TABLES[role])
    assert {f"{t}.{k}" for t, keys in printed.items() for k in keys} == fields_of(role)
    # Every table and every key is preceded by the comment that says what it sets.
    lines = done.stdout.splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith("#"):
            assert lines[i - 1].startswith("# "), f"no comment above {line!r}"


def test_the_two_files_together_cover_every_table() -> None:
    tables = {f.name for f in dataclasses.fields(NodeConfig)}
    assert set(ROLE_TABLES["node"]) | set(ROLE_TABLES["authority"]) == tables


@pytest.mark.parametrize("role", ["node", "authority"])
def test_check_accepts_what_config_prints(role: Role, tmp_path: Path) -> None:
    path = tmp_path / "printed.toml"
    path.write_text(veil_node("config", *role_flag(role)).stdout)
    done = veil_node("check", "--config", str(path), *role_flag(role))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.count("\n") == 1
    assert done.stdout.startswith(f"{path}: OK (")
    assert "every key at its default" in done.stdout


def test_check_names_the_keys_set_and_the_network(tmp_path: Path) -> None:
    network = write_network(tmp_path, threshold=2)
    path = tmp_path / "node.toml"
    path.write_text(
        f'[network]\nfile = "{network}"\nadvertise = "192.0.2.7:7000"\n'
        "[storage]\ninbox_rate = 20.0\n"
    )
    done = veil_node("check", "--config", str(path), "--listen", "0.0.0.0:7000")
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        f"{path}: OK (a node's config; set: network.file, network.advertise, "
        "storage.inbox_rate; network: 3 authorities, threshold 2; "
        "advertises 192.0.2.7:7000)\n"
    )


# --- check: every kind of mistake -----------------------------------------------------------

#: (name, the file's text, role, extra arguments, what the one line must say)
BAD: list[tuple[str, str | bytes, Role, list[str], str]] = [
    (
        "unknown key",
        "[http]\nidle_timout = 5\n",
        "node",
        [],
        "unknown key http.idle_timout (did you mean idle_timeout?)",
    ),
    ("unknown table", "[htp]\n", "node", [], "unknown table [htp] (did you mean http?)"),
    (
        "an authority's table in a node's file",
        "[authority]\nswarm_size = 3\n",
        "node",
        [],
        "[authority] is not read by veil-node run",
    ),
    (
        "a node's table in an authority's file",
        "[storage]\ninbox_rate = 1.0\n",
        "authority",
        [],
        "[storage] is not read by veil-node authority",
    ),
    ("a key outside any table", 'level = "info"\n', "node", [], "level is outside any table"),
    (
        "text for a number",
        '[http]\nidle_timeout = "30"\n',
        "node",
        [],
        "http.idle_timeout must be a number, not '30'",
    ),
    (
        "a boolean for an integer",
        "[http]\nmax_connections = true\n",
        "node",
        [],
        "http.max_connections must be an integer, not True",
    ),
    (
        "a float for an integer",
        "[onion]\nreplay_window_ms = 1.5\n",
        "node",
        [],
        "onion.replay_window_ms must be an integer, not 1.5",
    ),
    (
        "a number for a list",
        "[rate_limit]\nexempt = 8\n",
        "node",
        [],
        "rate_limit.exempt must be a list of strings, not 8",
    ),
    (
        "below the minimum",
        "[http]\nmax_header_bytes = 10\n",
        "node",
        [],
        "http.max_header_bytes must be at least 1024, not 10",
    ),
    (
        "zero where it must be positive",
        "[peers]\nconnect_timeout = 0\n",
        "node",
        [],
        "peers.connect_timeout must be positive, not 0.0",
    ),
    (
        "an infinite timeout",
        "[replication]\nack_timeout = inf\n",
        "node",
        [],
        "replication.ack_timeout must be a finite number, not inf",
    ),
    (
        "not a number",
        "[rate_limit]\nrate = nan\n",
        "node",
        [],
        "rate_limit.rate must be a finite number, not nan",
    ),
    (
        "two keys that disagree",
        "[onion]\nhop_timeout = 10.0\ndeliver_timeout = 20.0\n",
        "node",
        [],
        "onion.deliver_timeout must not exceed hop_timeout",
    ),
    (
        "not one of the choices",
        '[storage]\nsynchronous = "OFF"\n',
        "node",
        [],
        "storage.synchronous must be one of 'FULL', 'NORMAL', not 'OFF'",
    ),
    (
        "a negative storage limit",
        "[storage]\nmax_waiters = -1\n",
        "node",
        [],
        "storage.max_waiters must be positive, not -1",
    ),
    (
        "not a network",
        '[rate_limit]\nexempt = ["10.0.0.0/33"]\n',
        "node",
        [],
        "rate_limit.exempt holds '10.0.0.0/33', which is not a network",
    ),
    (
        "a relative network file",
        '[network]\nfile = "network.json"\n',
        "node",
        [],
        "network.file must be an absolute path, not 'network.json'",
    ),
    (
        "an address nobody can reach",
        '[network]\nadvertise = "0.0.0.0:7000"\n',
        "node",
        [],
        "network.advertise must be HOST:PORT with an IP address, not '0.0.0.0:7000'",
    ),
    (
        "a log level",
        '[log]\nlevel = "loud"\n',
        "authority",
        [],
        "log.level must be 'debug', 'info', 'warning' or 'error', not 'loud'",
    ),
    (
        "an authority's schedule",
        "[authority]\nvote_delay_ms = 40000\n",
        "authority",
        [],
        "authority.vote_delay_ms must be under half of interval_ms",
    ),
    ("not TOML", "[http\n", "node", [], "is not valid TOML: Expected ']'"),
    ("not UTF-8", b"[http]\n# \xff\xfe\n", "node", [], "is not valid TOML"),
    ("too large", "#" * (1 << 20) + "\n", "node", [], "is larger than 1048576 bytes"),
    (
        "a network file that is not there",
        '[network]\nfile = "/nonexistent/veil/network.json"\n',
        "node",
        [],
        "network.file: cannot read network file /nonexistent/veil/network.json",
    ),
    (
        "listening on 0.0.0.0 with nothing to advertise",
        '[network]\nfile = "NETWORK"\n',
        "node",
        ["--listen", "0.0.0.0:7000"],
        'set [network] advertise = "HOST:PORT"',
    ),
]


@pytest.mark.parametrize(
    ("text", "role", "extra", "message"),
    [case[1:] for case in BAD],
    ids=[case[0] for case in BAD],
)
def test_check_refuses_with_one_line_naming_the_key(
    text: str | bytes, role: Role, extra: list[str], message: str, tmp_path: Path
) -> None:
    path = tmp_path / "bad.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text.replace("NETWORK", str(write_network(tmp_path, threshold=1))))
    done = veil_node("check", "--config", str(path), *role_flag(role), *extra)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("veil-node: ")
    assert done.stderr.count("\n") == 1, done.stderr  # one line: no traceback
    assert message in done.stderr


def test_check_refuses_a_file_that_is_not_there(tmp_path: Path) -> None:
    done = veil_node("check", "--config", str(tmp_path / "missing.toml"))
    assert done.returncode == 2
    assert done.stderr == (
        f"veil-node: cannot read config file {tmp_path / 'missing.toml'}: "
        "No such file or directory\n"
    )


def test_check_says_what_run_says(tmp_path: Path) -> None:
    """``check`` is ``run``'s own reader: the same file gets the same line from both, and
    ``run`` creates nothing (no data directory) for a file it refuses."""
    path = tmp_path / "node.toml"
    path.write_text("[authority]\nswarm_size = 3\n")
    check = veil_node("check", "--config", str(path))
    data_dir = tmp_path / "data"
    run = veil_node(
        "run", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0", "--config", str(path)
    )
    assert (check.returncode, run.returncode) == (2, 2)
    assert check.stderr == run.stderr
    assert "[authority] is not read by veil-node run" in run.stderr
    assert not data_dir.exists()


def write_network(directory: Path, *, threshold: int) -> Path:
    authorities = tuple(
        Authority(NodeKeys.generate().identity_public, f"192.0.2.{i + 1}", 7001) for i in range(3)
    )
    path = directory / "network.json"
    path.write_text(NetworkFile(authorities, threshold).to_json())
    return path


# --- the reader, on any document ------------------------------------------------------------

_TABLE_NAMES = [f.name for f in dataclasses.fields(NodeConfig)]
_KEY_NAMES = sorted(
    {f.name for t in _TABLE_NAMES for f in dataclasses.fields(getattr(NodeConfig(), t))}
)
_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(["FULL", "NORMAL", "kv", "json", "debug", "10.0.0.0/8", "1.2.3.4:7000"]),
)
_values = st.one_of(
    _scalars,
    st.lists(_scalars, max_size=3),
    st.dictionaries(st.text(max_size=5), _scalars, max_size=2),
)
_tables = st.dictionaries(
    st.one_of(st.sampled_from(_KEY_NAMES), st.text(max_size=10)), _values, max_size=6
)
_documents = st.dictionaries(
    st.one_of(st.sampled_from(_TABLE_NAMES), st.text(max_size=10)),
    st.one_of(_tables, _scalars),
    max_size=4,
)


@settings(max_examples=400, deadline=None)
@given(document=_documents, role=st.sampled_from([None, "node", "authority"]))
def test_any_document_is_a_config_or_a_config_error(
    document: dict[str, Any], role: Role | None
) -> None:
    """Whatever a TOML file holds, the reader gives a config or a :class:`ConfigError`
    (which ``veil-node`` prints as one line), never another exception."""
    try:
        config = parse_config(document, role)
    except ConfigError as exc:
        assert "\n" not in str(exc)
    else:
        assert isinstance(config, NodeConfig)
