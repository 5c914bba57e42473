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

Why one module of over 500 lines: a quarter of it is the example below, every key with
its default and meaning, which ``tests/test_node_process.py`` parses and compares with
``NodeConfig()``; the rest is one small dataclass per table and the reader. Split by
table, the example would sit apart from the values it documents and the tables would
import the same checks back from each other.

Example, with the defaults::

    [http]
    max_header_bytes = 8192      # request line + headers (h11 max_incomplete_event_size)
    max_connections = 1024       # open client connections; beyond it: 503 and close
    max_connections_per_address = 256  # of those, from one IP (IPv6: one /64); beyond: 503
    idle_timeout = 30.0          # s a keep-alive connection may sit between requests
    request_timeout = 10.0       # s to receive one whole request, from its first byte
    write_timeout = 10.0         # s to hand one response to a client that reads slowly
    shutdown_grace = 5.0         # s in-flight requests get on SIGTERM before a 503

    [onion]
    hop_timeout = 40.0           # s a relay waits for the next hop's reply
    deliver_timeout = 35.0       # s the destination gives the storage RPC
    replay_window_ms = 120000    # a packet's timestamp may be this far from our clock
    replay_max_entries = 1000000 # replay tags kept at most (then: rate_limited)

    [peers]                      # node-to-node connections (node/peers.py)
    max_per_peer = 4             # open connections to one next hop
    max_waiters = 64             # requests queued for a busy next hop (then: rate_limited)
    connect_timeout = 5.0        # s for one TCP connect
    idle_timeout = 20.0          # s before an unused connection is closed (keep it below
                                 # the peers' http.idle_timeout)

    [link]                       # node-to-node links for onion packets (node/link/)
    enabled = true               # send packets to next hops over multiplexed links
                                 # (false: one POST /onion per packet, as above)
    max_streams = 256            # packets in flight on one link, either direction
    idle_timeout = 60.0          # s before a link we opened and do not use is closed
    accept_idle_timeout = 300.0  # s before a link a peer opened and does not use is
                                 # closed (keep it above the peers' link.idle_timeout)
    fallback_ttl = 600.0         # s a peer that refused the upgrade gets POST /onion

    [rate_limit]                 # token bucket per client IP address, /onion only
    rate = 500.0                 # requests per second (0 turns the limit off)
    burst = 1000.0               # bucket size
    max_clients = 65536          # buckets kept (least recently used dropped first)
    exempt = []                  # networks never limited, e.g. ["127.0.0.0/8"]

    [log]
    level = "info"               # debug, info, warning, error
    format = "kv"                # "kv" (key=value lines) or "json" (one object a line)

    [storage]                    # node.service.ServiceConfig, same names and defaults:
    clock_skew_ms = 60000        # signed requests' accepted skew
    inbox_rate = 10.0            # inbox stores per second per recipient
    inbox_burst = 100
    max_buckets = 100000
    max_waiters = 10000          # long-polls waiting at once (signed ones evict unsigned)
    max_waiters_per_source = 1000  # of them, from one previous hop (signed, unsigned apart)
    synchronous = "FULL"         # or "NORMAL" (see node/store/)
    queue_size = 1024
    max_batch = 512
    sweep_interval = 30.0
    sweep_batch = 1000
    max_cached_chains = 10000    # verified capability chains kept (delegated keys)
    max_group_states = 1024      # encryption sessions' states kept in memory (LRU)
    max_group_records = 2000     # records one session may hold at this node
    max_group_bytes = 8388608    # and their bytes
    max_group_cache_bytes = 67108864  # records' bytes of all the states kept in memory

    [debug]
    clock_control = false        # tests only: POST /debug/clock moves the node's clock

    [network]                    # veil-node run: the directory client (node/directory_client.py)
    file = ""                    # absolute path of network.json; empty: standalone (one
                                 # node that holds every account, no directory)
    advertise = ""               # "HOST:PORT" put in the descriptor; empty: the bound
                                 # address (which must then not be 0.0.0.0 or ::)
    descriptor_lifetime_ms = 10800000  # 3 h; the node republishes at half of it
    fetch_timeout = 10.0         # s for one request to an authority
    retry_interval = 1.0         # s between fetches while no fresh consensus is held

    [authority]                  # veil-node authority (node/authority/); every
                                 # authority of a network must use the same values
    interval_ms = 60000          # consensus interval: epoch E starts at E * interval_ms
                                 # (ms since the Unix epoch); a devnet uses about 2000
    swarm_size = 5               # target nodes per swarm
    check_timeout = 5.0          # s for one liveness check of a node (GET /info and a
                                 # one-hop onion `info` request) or one request to a peer
    check_interval_ms = 0        # how often every node is checked; 0: interval_ms / 2
                                 # (at least 500 ms, at most 5 min)
    vote_delay_ms = 0            # after an epoch starts, when to fetch the peers' votes
                                 # (they may answer until twice that); 0: interval_ms / 5
                                 # (at most 10 s)
    max_descriptors = 10000      # registered nodes at most; when full, a new one may
                                 # push out one that never answered or is failing (never
                                 # a live one), else 503
    max_failed_checks = 3        # failed checks in a row after which a descriptor that
                                 # never passed one leaves the registry
    max_per_source = 64          # nodes registered from one address (IPv6: its /64) at
                                 # most, held at once (then 429)
    per_source_exempt = []       # networks not held to max_per_source, e.g.
                                 # ["127.0.0.0/8"] (a loopback devnet does so)

    [replication]                # swarm replication (node/replication/)
    ack_timeout = 2.0            # s a store waits for the swarm peers' acks before it
                                 # answers the client (see the ack rule there)
    request_timeout = 10.0       # s for one push or pull request to a peer
    sync_interval = 10.0         # s between anti-entropy pulls from each swarm peer
    max_pages = 64               # pages pulled from one peer in one round
    handover_interval = 300.0    # s between scans for accounts that left this swarm
                                 # (a consensus change also starts one)
    queue_messages = 4096        # messages queued for one peer, at most
    queue_bytes = 16777216       # bytes of message data queued for one peer, at most
    retry_max = 30.0             # s, longest wait between pushes to a failing peer
    give_up = 300.0              # s of failures after which a peer's queue is dropped
                                 # (it catches up by pulling)
    clock_skew_ms = 60000        # accepted skew of a peer's frame time

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
import ipaddress
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    "load_config",
    "parse_config",
]

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

    def __post_init__(self) -> None:
        _at_least(self, "max_header_bytes", 1024)
        _at_least(self, "max_connections", 1)
        _at_least(self, "max_connections_per_address", 1)
        for name in ("idle_timeout", "request_timeout", "write_timeout"):
            _positive(self, name)
        _at_least(self, "shutdown_grace", 0)


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
                raise ConfigError(f"rate_limit.exempt: {net!r} is not a network") from None


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"
    format: str = "kv"

    def __post_init__(self) -> None:
        if self.level not in ("debug", "info", "warning", "error"):
            raise ConfigError(
                f"log.level must be debug, info, warning or error, not {self.level!r}"
            )
        if self.format not in ("kv", "json"):
            raise ConfigError(f"log.format must be 'kv' or 'json', not {self.format!r}")


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
                    f"authority.per_source_exempt: {net!r} is not a network"
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


def load_config(path: str | Path | None) -> NodeConfig:
    """Read the TOML file at ``path`` (``None``: the defaults).

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
        return parse_config(data)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


def parse_config(data: Mapping[str, Any]) -> NodeConfig:
    """A :class:`NodeConfig` from an already parsed TOML document (a dict of tables)."""
    tables: dict[str, Any] = {}
    for name, value in data.items():
        cls = _TABLES.get(name)
        if cls is None:
            known = ", ".join(_TABLES)
            raise ConfigError(f"unknown table [{name}] (known tables: {known})")
        if not isinstance(value, dict):
            raise ConfigError(f"[{name}] must be a table")
        tables[name] = _build(name, cls, value)
    if "storage" in tables:
        _check_storage(tables["storage"])
    return NodeConfig(**tables)


def _check_storage(config: ServiceConfig) -> None:
    # ServiceConfig (node/service.py) is a plain record; its numbers must be positive.
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value <= 0:
            raise ConfigError(f"[storage] {f.name} must be positive, not {value!r}")


def _build(table: str, cls: type, values: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in names:
            known = ", ".join(names)
            raise ConfigError(f"unknown key {table}.{key} (known keys of [{table}]: {known})")
        kwargs[key] = _coerce(f"{table}.{key}", hints[key], value)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"[{table}] {exc}") from None


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
