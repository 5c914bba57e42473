"""The node's configuration: one frozen dataclass per TOML table, with documented defaults.

Design note
-----------
``veil-node run`` takes the data directory and the listen address on its command line
and everything else from an optional TOML file (read with :mod:`tomllib`). Every key has
a default here, so an empty file (or none) gives a working node. A key this module does
not know is refused with :class:`ConfigError` naming it and the keys that table accepts:
a typo must not silently leave a limit at its default. Types are checked too (an integer
is accepted where a float is expected, never the other way round, and never a boolean
for a number).

The reference an operator reads is ``veil-node config`` (:mod:`veil.node.config_doc`):
every key of the tables a node or an authority reads, with its default taken from the
dataclasses below and its meaning. ``veil-node check --config FILE`` runs the same
reader as ``run`` and ``authority`` without starting anything. Each command reads its
own tables (:data:`ROLE_TABLES`): a node's file with an ``[authority]`` table, or an
authority's with a ``[storage]`` one, is refused like an unknown table, for the same
reason. Every message names the key as ``table.key`` and says what is wrong with it.

Timeouts along a path (why ``hop_timeout`` is fixed): a relay does not know its position
on the path (hiding it is the point of the packet format), and packets carry no deadline
that a hop could read, so every relay uses the same fixed budget. The guard starts first,
so it is the first to give up: after at most ``hop_timeout`` (plus the time to reach it)
the client holds a layered ``timeout`` error, however many relays follow (1 to 5). So a
client's own timeout must exceed ``hop_timeout`` plus a few seconds of network time
(e.g. 50 s against the default 40 s). ``deliver_timeout`` is shorter than ``hop_timeout``
so that a destination that gives up still answers before its relays do, and the client
learns which hop was slow; and it is longer than the longest long-poll a retrieve may ask
(:data:`veil.onion.rpc.MAX_WAIT_S`, 30 s), so that a long-poll ends with its own empty answer.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import math
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from veil.onion.directory import (
    DEFAULT_DESCRIPTOR_LIFETIME_MS,
    DEFAULT_INTERVAL_MS,
    MAX_DESCRIPTOR_LIFETIME_MS,
    MAX_NODES,
    MAX_SWARM_TARGET,
)
from veil.onion.hostport import BadHostPort, parse_hostport

from .errors import ConfigError
from .service import ServiceConfig

__all__ = [
    "ROLE_TABLES",
    "AuthorityConfig",
    "DebugConfig",
    "HttpConfig",
    "LinkConfig",
    "LogConfig",
    "NetworkConfig",
    "NodeConfig",
    "OnionConfig",
    "PeersConfig",
    "RateLimitConfig",
    "ReplicationConfig",
    "Role",
    "load_config",
    "parse_config",
]

#: A TOML bare key; any other key is shown quoted.
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")

#: Config files are small; a larger one is a mistake (or not a config file).
MAX_CONFIG_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """Limits of the HTTP face (see the module docstring for each key's meaning)."""

    max_header_bytes: int = 8192
    max_connections: int = 1024
    max_connections_per_address: int = 256
    idle_timeout: float = 30.0
    request_timeout: float = 10.0
    write_timeout: float = 10.0
    shutdown_grace: float = 5.0
    #: Networks whose addresses may read ``GET /metrics`` (others get 403). Loopback by
    #: default, as Tor's MetricsPort policy: counters of requests, waiting polls and
    #: pushes, read often, tell an outsider when this node works for whom.
    metrics_allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128")

    def __post_init__(self) -> None:
        _at_least(self, "max_header_bytes", 1024)
        _at_least(self, "max_connections", 1)
        _at_least(self, "max_connections_per_address", 1)
        for name in ("idle_timeout", "request_timeout", "write_timeout"):
            _positive(self, name)
        _at_least(self, "shutdown_grace", 0)
        for net in self.metrics_allow:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ConfigError(f"metrics_allow holds {net!r}, which is not a network") from None


@dataclass(frozen=True, slots=True)
class OnionConfig:
    """Onion processing: per-hop timeouts and the replay window."""

    hop_timeout: float = 40.0
    deliver_timeout: float = 35.0
    replay_window_ms: int = 120_000
    replay_max_entries: int = 1_000_000

    def __post_init__(self) -> None:
        _positive(self, "hop_timeout")
        _positive(self, "deliver_timeout")
        if self.deliver_timeout > self.hop_timeout:
            raise ConfigError("deliver_timeout must not exceed hop_timeout")
        _at_least(self, "replay_window_ms", 1000)
        _at_least(self, "replay_max_entries", 1)


@dataclass(frozen=True, slots=True)
class PeersConfig:
    """Node-to-node connections: the arguments of :class:`veil.node.peers.PeerPool`."""

    max_per_peer: int = 4
    max_waiters: int = 64
    connect_timeout: float = 5.0
    idle_timeout: float = 20.0

    def __post_init__(self) -> None:
        _at_least(self, "max_per_peer", 1)
        _at_least(self, "max_waiters", 0)
        _positive(self, "connect_timeout")
        _positive(self, "idle_timeout")


@dataclass(frozen=True, slots=True)
class LinkConfig:
    """Node-to-node links (:mod:`veil.node.link`): one multiplexed connection per peer."""

    enabled: bool = True
    max_streams: int = 256
    idle_timeout: float = 60.0
    accept_idle_timeout: float = 300.0
    fallback_ttl: float = 600.0

    def __post_init__(self) -> None:
        _at_least(self, "max_streams", 1)
        for name in ("idle_timeout", "accept_idle_timeout", "fallback_ttl"):
            _positive(self, name)


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """The per-IP token bucket in front of ``POST /onion``.

    The connecting address at a relay is the previous node, which carries many clients'
    packets, so the default is generous; a flood from one host is what it stops.
    """

    rate: float = 500.0
    burst: float = 1000.0
    max_clients: int = 65536
    exempt: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _at_least(self, "rate", 0)
        _at_least(self, "burst", 1)
        _at_least(self, "max_clients", 1)
        for net in self.exempt:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ConfigError(f"exempt holds {net!r}, which is not a network") from None


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"
    format: str = "kv"

    def __post_init__(self) -> None:
        if self.level not in ("debug", "info", "warning", "error"):
            raise ConfigError(
                f"level must be 'debug', 'info', 'warning' or 'error', not {self.level!r}"
            )
        if self.format not in ("kv", "json"):
            raise ConfigError(f"format must be 'kv' or 'json', not {self.format!r}")


@dataclass(frozen=True, slots=True)
class DebugConfig:
    """Switches for tests. Never set them on a real node."""

    clock_control: bool = False


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """The node's directory client: where the network file is, what to advertise."""

    file: str = ""
    advertise: str = ""
    descriptor_lifetime_ms: int = DEFAULT_DESCRIPTOR_LIFETIME_MS
    fetch_timeout: float = 10.0
    retry_interval: float = 1.0

    def __post_init__(self) -> None:
        if self.file and not Path(self.file).is_absolute():
            raise ConfigError(f"file must be an absolute path, not {self.file!r}")
        if self.advertise:
            _check_hostport("advertise", self.advertise)
        _at_least(self, "descriptor_lifetime_ms", 10_000)
        if self.descriptor_lifetime_ms > MAX_DESCRIPTOR_LIFETIME_MS:
            raise ConfigError(
                f"descriptor_lifetime_ms must be at most {MAX_DESCRIPTOR_LIFETIME_MS}, "
                f"not {self.descriptor_lifetime_ms}"
            )
        _positive(self, "fetch_timeout")
        _positive(self, "retry_interval")


@dataclass(frozen=True, slots=True)
class AuthorityConfig:
    """A directory authority's schedule and limits (see the module docstring)."""

    interval_ms: int = DEFAULT_INTERVAL_MS
    swarm_size: int = 5
    check_timeout: float = 5.0
    check_interval_ms: int = 0
    vote_delay_ms: int = 0
    max_descriptors: int = MAX_NODES
    max_failed_checks: int = 3
    max_per_source: int = 64
    per_source_exempt: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _at_least(self, "interval_ms", 500)
        if self.interval_ms > 24 * 3600 * 1000:
            raise ConfigError(f"interval_ms must be at most a day, not {self.interval_ms}")
        _at_least(self, "swarm_size", 1)
        if self.swarm_size > MAX_SWARM_TARGET:
            raise ConfigError(f"swarm_size must be at most {MAX_SWARM_TARGET}")
        _positive(self, "check_timeout")
        _at_least(self, "check_interval_ms", 0)
        _at_least(self, "vote_delay_ms", 0)
        if self.vote_delay_ms * 2 >= self.interval_ms:
            raise ConfigError("vote_delay_ms must be under half of interval_ms")
        _at_least(self, "max_descriptors", 1)
        if self.max_descriptors > MAX_NODES:
            raise ConfigError(f"max_descriptors must be at most {MAX_NODES}")
        _at_least(self, "max_failed_checks", 1)
        _at_least(self, "max_per_source", 1)
        for net in self.per_source_exempt:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ConfigError(
                    f"per_source_exempt holds {net!r}, which is not a network"
                ) from None

    @property
    def check_period_ms(self) -> int:
        """``check_interval_ms``, or its default: interval / 2, within 500 ms .. 5 min."""
        if self.check_interval_ms:
            return self.check_interval_ms
        return min(max(self.interval_ms // 2, 500), 300_000)

    @property
    def effective_vote_delay_ms(self) -> int:
        """``vote_delay_ms``, or its default: interval / 5, at most 10 s."""
        return self.vote_delay_ms or min(self.interval_ms // 5, 10_000)


@dataclass(frozen=True, slots=True)
class ReplicationConfig:
    """Swarm replication: the ack rule's timeout, anti-entropy and handover schedules."""

    ack_timeout: float = 2.0
    request_timeout: float = 10.0
    sync_interval: float = 10.0
    max_pages: int = 64
    handover_interval: float = 300.0
    queue_messages: int = 4096
    queue_bytes: int = 16 * 1024 * 1024
    retry_max: float = 30.0
    give_up: float = 300.0
    clock_skew_ms: int = 60_000

    def __post_init__(self) -> None:
        for name in ("ack_timeout", "request_timeout", "sync_interval", "handover_interval"):
            _positive(self, name)
        for name in ("retry_max", "give_up"):
            _positive(self, name)
        _at_least(self, "max_pages", 1)
        _at_least(self, "queue_messages", 1)
        _at_least(self, "queue_bytes", 100_000)
        _at_least(self, "clock_skew_ms", 1000)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything a node reads from its config file."""

    http: HttpConfig = field(default_factory=HttpConfig)
    onion: OnionConfig = field(default_factory=OnionConfig)
    peers: PeersConfig = field(default_factory=PeersConfig)
    link: LinkConfig = field(default_factory=LinkConfig)
    rate_limit: RateLimitConfig = field(default_factory=RateLimitConfig)
    log: LogConfig = field(default_factory=LogConfig)
    storage: ServiceConfig = field(default_factory=ServiceConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    authority: AuthorityConfig = field(default_factory=AuthorityConfig)
    replication: ReplicationConfig = field(default_factory=ReplicationConfig)


_TABLES: dict[str, type] = {
    "http": HttpConfig,
    "onion": OnionConfig,
    "peers": PeersConfig,
    "link": LinkConfig,
    "rate_limit": RateLimitConfig,
    "log": LogConfig,
    "storage": ServiceConfig,
    "debug": DebugConfig,
    "network": NetworkConfig,
    "authority": AuthorityConfig,
    "replication": ReplicationConfig,
}


#: Which command reads a config file: ``veil-node run`` or ``veil-node authority``.
Role = Literal["node", "authority"]

#: The tables each command reads, in the order ``veil-node config`` prints them.
ROLE_TABLES: dict[Role, tuple[str, ...]] = {
    "node": (
        "network",
        "http",
        "rate_limit",
        "onion",
        "link",
        "peers",
        "replication",
        "storage",
        "log",
        "debug",
    ),
    "authority": ("authority", "http", "rate_limit", "peers", "log"),
}

_COMMANDS: dict[Role, str] = {"node": "veil-node run", "authority": "veil-node authority"}


def load_config(path: str | Path | None, role: Role | None = None) -> NodeConfig:
    """Read the TOML file at ``path`` (``None``: the defaults) for ``role`` (None: any
    table is accepted; otherwise only those of :data:`ROLE_TABLES`).

    Raises :class:`ConfigError` for a missing, unreadable, too large or invalid file, an
    unknown table or key, or a value of the wrong type or out of range.
    """
    if path is None:
        return NodeConfig()
    p = Path(path)
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {p} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
    try:
        return parse_config(data, role)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


def parse_config(data: Mapping[str, Any], role: Role | None = None) -> NodeConfig:
    """A :class:`NodeConfig` from an already parsed TOML document (a dict of tables),
    for ``role`` as :func:`load_config`."""
    known = ROLE_TABLES[role] if role is not None else tuple(_TABLES)
    tables: dict[str, Any] = {}
    for name, value in data.items():
        if not isinstance(value, dict):
            raise ConfigError(
                f"{_key(name)} is outside any table: every key goes under its [table] "
                f"(tables: {', '.join(known)})"
            )
        if name not in known:
            if role is not None and name in _TABLES:
                raise ConfigError(
                    f"[{name}] is not read by {_COMMANDS[role]} (its tables: {', '.join(known)})"
                )
            raise ConfigError(
                f"unknown table [{_key(name)}]{_did_you_mean(name, known)} "
                f"(known tables: {', '.join(known)})"
            )
        tables[name] = _build(name, _TABLES[name], value)
    if "storage" in tables:
        _check_storage(tables["storage"])
    return NodeConfig(**tables)


def _check_storage(config: ServiceConfig) -> None:
    # ServiceConfig (node/service.py) is a plain record; its numbers must be positive.
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value <= 0:
            raise ConfigError(f"storage.{f.name} must be positive, not {value!r}")


def _build(table: str, cls: type, values: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(
                f"unknown key {table}.{_key(key)}{_did_you_mean(key, names)} "
                f"(known keys of [{table}]: {', '.join(names)})"
            )
        kwargs[key] = _coerce(f"{table}.{key}", hints[key], value)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        # The dataclasses' checks name the key alone: "hop_timeout must be positive".
        raise ConfigError(f"{table}.{exc}") from None


def _key(name: str) -> str:
    """``name`` as TOML writes a key: bare if it can be, else quoted (one line, always)."""
    return name if _BARE_KEY.fullmatch(name) else json.dumps(name)


def _did_you_mean(name: str, choices: typing.Sequence[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _coerce(name: str, annotation: Any, value: Any) -> Any:
    # The field types used by the tables above; a new one needs a branch here.
    if typing.get_origin(annotation) is typing.Literal:
        choices = typing.get_args(annotation)
        if value in choices:
            return value
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, choices))}, not {value!r}")
    if annotation == tuple[str, ...]:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(f"{name} must be a list of strings, not {value!r}")
    kind = getattr(annotation, "__name__", "")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name} must be true or false, not {value!r}")
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{name} must be an integer, not {value!r}")
    if kind == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            # TOML has inf and nan; a timeout of inf would wait forever.
            if not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, not {value!r}")
            return float(value)
        raise ConfigError(f"{name} must be a number, not {value!r}")
    if kind == "str":
        if isinstance(value, str):
            return value
        raise ConfigError(f"{name} must be a string, not {value!r}")
    raise AssertionError(f"no coercion for {annotation!r}")  # a field type added above


def _check_hostport(name: str, text: str) -> None:
    """``HOST:PORT`` (``[V6]:PORT``) with an IP literal host others can reach (not
    ``0.0.0.0`` or ``::``) and a port in 1..65535."""
    try:
        host, _ = parse_hostport(text)
    except BadHostPort as exc:  # its message says which part is wrong
        raise ConfigError(f"{name} {exc}") from None
    if ipaddress.ip_address(host).is_unspecified:
        raise ConfigError(f"{name} must be HOST:PORT with an IP address, not {text!r}")


def _positive(obj: Any, name: str) -> None:
    if not getattr(obj, name) > 0:
        raise ConfigError(f"{name} must be positive, not {getattr(obj, name)!r}")


def _at_least(obj: Any, name: str, low: float) -> None:
    if not getattr(obj, name) >= low:
        raise ConfigError(f"{name} must be at least {low}, not {getattr(obj, name)!r}")
