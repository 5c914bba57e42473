"""``veil-node config``: the configuration file, every key with its default and meaning.

Design note
-----------
An operator who installed veil from a wheel has no ``node/config.py`` to read, so the
program prints its own reference: a complete TOML file, each table and key preceded by a
comment saying what it sets, each value the default of :mod:`veil.node.config`'s
dataclasses. The values are read from those dataclasses (``NodeConfig()``) when the text
is made, so the printed file cannot drift from the code; the meanings live in
:data:`KEY_DOCS` beside them, and :func:`render` refuses to print a key that has none
(``tests/test_node_config_cli.py`` prints both files through the real command, parses
them back with :mod:`tomllib` and compares them with the defaults, key by key).

Each role gets the tables it reads (:data:`veil.node.config.ROLE_TABLES`): ``veil-node
config`` the node's, ``veil-node config --authority`` the directory authority's. A table
that both read may say something different to each (the authority's rate limit guards
``POST /descriptor``, the node's ``POST /onion``): :data:`TABLE_DOCS` is keyed by role.
"""

from __future__ import annotations

import dataclasses
import json
import math
import textwrap
from typing import Any

from veil.onion import __version__

from .config import ROLE_TABLES, NodeConfig, Role

__all__ = ["KEY_DOCS", "TABLE_DOCS", "render"]

#: Width of the printed comments.
_WIDTH = 88

#: What each table is for, by role (a table a role does not read has no entry there).
TABLE_DOCS: dict[Role, dict[str, str]] = {
    "node": {
        "http": "The node's HTTP face: clients' onion packets, peers' links and replication, "
        "GET /metrics. Each limit is answered with a short text/plain body naming it.",
        "onion": "Onion packets: how long a hop waits, and the replay window.",
        "peers": "Node-to-node HTTP connections (replication, liveness checks, and onion "
        "packets to a node that takes no link): a few persistent connections per peer.",
        "link": "Node-to-node links: one multiplexed connection per next hop carries the "
        "onion packets to it.",
        "rate_limit": "A token bucket per client IP address (IPv6: per /64) on POST /onion "
        "and GET /consensus; the listed nodes' addresses (relays, which carry many "
        "clients' packets) are exempt. Over it: 429 at once, never a queue.",
        "log": "Logs, to stderr (the journal, under systemd). They never hold message "
        "contents, seeds or client addresses.",
        "storage": "The storage service and its SQLite store (DATA_DIR/store.sqlite).",
        "debug": "Switches for tests. Never set them on a real node.",
        "network": "The network this node joins: the authorities' network.json and the "
        "address to publish in the node's descriptor.",
        "replication": "Swarm replication: a store is acknowledged once pushed to the other "
        "members of its swarm (or after ack_timeout); members pull what they lack from each "
        "other; accounts that leave the swarm are handed over.",
    },
    "authority": {
        "http": "The authority's HTTP face: nodes' descriptors, the consensus, votes and "
        "signatures for its peers, GET /metrics.",
        "peers": "Connections to the nodes it checks and to the other authorities.",
        "rate_limit": "A token bucket per client IP address (IPv6: per /64) on POST "
        "/descriptor. Over it: 429 at once, never a queue.",
        "log": "Logs, to stderr (the journal, under systemd).",
        "authority": "The directory authority. Every authority of a network must use the "
        "same interval_ms, swarm_size and vote_delay_ms: they compute the same consensus "
        "and sign it.",
    },
}

#: What each key sets: ``KEY_DOCS[table][key]``.
KEY_DOCS: dict[str, dict[str, str]] = {
    "http": {
        "max_header_bytes": "Bytes a request's line and headers may take (h11's "
        "max_incomplete_event_size); a larger head gets 431.",
        "max_connections": "Open connections in all; beyond it a new one is answered 503 "
        "and closed.",
        "max_connections_per_address": "Of those, open from one IP address (IPv6: one "
        "/64); beyond it: 503.",
        "idle_timeout": "Seconds a keep-alive connection may sit idle between requests.",
        "request_timeout": "Seconds to receive one whole request from its first byte (a "
        "client sending a byte a second is cut off: 408).",
        "write_timeout": "Seconds to hand one response to a client that reads slowly.",
        "shutdown_grace": "Seconds requests in flight get after SIGTERM before they are "
        "answered 503 and the process exits (keep a systemd unit's TimeoutStopSec above "
        "it). Waiting long-polls are answered at once.",
        "metrics_allow": "Networks (CIDR) whose addresses may read GET /metrics; others "
        "get 403. Add your Prometheus scraper's address; loopback only by default.",
    },
    "onion": {
        "hop_timeout": "Seconds a relay waits for the next hop's reply. A relay cannot "
        "know its place on a path, so every relay has the same budget: a client's own "
        "timeout must exceed it by a few seconds.",
        "deliver_timeout": "Seconds the destination gives a storage request: at most "
        "hop_timeout (a destination that gives up answers before its relays do), and "
        "above the longest long-poll (30 s).",
        "replay_window_ms": "How far a packet's timestamp may be from this node's clock "
        "(ms); a packet's replay tag is kept as long.",
        "replay_max_entries": "Replay tags kept at most; when full, new packets are "
        "refused (rate_limited).",
    },
    "peers": {
        "max_per_peer": "Open connections to one peer, at most.",
        "max_waiters": "Requests queued for a busy peer, at most; beyond it: rate_limited.",
        "connect_timeout": "Seconds for one TCP connect to a peer.",
        "idle_timeout": "Seconds before an unused connection is closed (keep it below the "
        "peers' http.idle_timeout).",
    },
    "link": {
        "enabled": "Send onion packets to next hops over links (false: one POST /onion "
        "per packet).",
        "max_streams": "Packets in flight on one link, either direction.",
        "idle_timeout": "Seconds before a link this node opened and does not use is closed.",
        "accept_idle_timeout": "Seconds before a link a peer opened and does not use is "
        "closed (keep it above the peers' link.idle_timeout).",
        "fallback_ttl": "Seconds a peer that refused the link upgrade gets POST /onion "
        "before it is asked again.",
    },
    "rate_limit": {
        "rate": "Requests a second per address, sustained (0 turns the limit off).",
        "burst": "Requests one address may make at once (the bucket's size).",
        "max_clients": "Buckets kept at most (the least recently used is dropped first).",
        "exempt": 'Networks never limited, e.g. ["127.0.0.0/8"].',
    },
    "log": {
        "level": '"debug", "info", "warning" or "error".',
        "format": '"kv" (key=value lines) or "json" (one object a line).',
    },
    "storage": {
        "clock_skew_ms": "Accepted distance between a signed request's timestamp and the "
        "node's clock (ms); beyond it: clock_skew, with the node's time.",
        "inbox_rate": "Inbox stores a second per recipient account, sustained.",
        "inbox_burst": "Inbox stores per recipient account in a burst.",
        "max_buckets": "Recipients' buckets kept at most (one per recently written inbox).",
        "max_waiters": "Long-polls waiting at once, at most (signed ones evict unsigned ones).",
        "max_waiters_per_source": "Of them, held by one previous hop (an address or a "
        "link), signed and unsigned counted apart.",
        "synchronous": 'SQLite\'s synchronous: "FULL" (an acknowledged store survives a '
        'power cut) or "NORMAL" (it survives a crash of the process, not of the machine).',
        "queue_size": "Writes queued for the store's one writer task, at most (then writers wait).",
        "max_batch": "Writes committed in one transaction, at most.",
        "sweep_interval": "Seconds between sweeps of expired messages.",
        "sweep_batch": "Expired rows deleted in one transaction, at most.",
        "max_cached_chains": "Verified capability chains (delegated keys) kept, the least "
        "recently used dropped first.",
        "max_group_states": "Encryption sessions' states kept in memory (least recently "
        "used dropped first).",
        "max_group_records": "Records one encryption session may hold at this node.",
        "max_group_bytes": "And their bytes.",
        "max_group_cache_bytes": "Records' bytes of all the sessions' states kept in memory.",
    },
    "debug": {
        "clock_control": "Tests only: POST /debug/clock moves the node's clock.",
    },
    "network": {
        "file": "Absolute path of the network's network.json (the authorities' addresses "
        "and keys). Empty: a standalone node that holds every account, with no directory.",
        "advertise": '"HOST:PORT" published in the node\'s descriptor, where clients and '
        "peers reach it. Empty: the --listen address, which must then not be 0.0.0.0 or "
        "[::] (the systemd unit listens on 0.0.0.0:7000, so set it there).",
        "descriptor_lifetime_ms": "How long the node's signed descriptor is valid (ms); "
        "the node publishes a new one at half of it.",
        "fetch_timeout": "Seconds for one request to an authority.",
        "retry_interval": "Seconds between fetches while the node holds no fresh consensus.",
    },
    "authority": {
        "interval_ms": "Consensus interval (ms): epoch E starts at E * interval_ms since "
        "the Unix epoch.",
        "swarm_size": "Target nodes per swarm.",
        "check_timeout": "Seconds for one liveness check of a node (GET /info and a one-hop "
        "onion info request) or one request to a peer authority.",
        "check_interval_ms": "How often every node is checked (ms); 0: interval_ms / 2, "
        "at least 500 ms, at most 5 min.",
        "vote_delay_ms": "When, after an epoch starts, the peers' votes are fetched (ms; "
        "they may answer until twice that); 0: interval_ms / 5, at most 10 s.",
        "max_descriptors": "Registered nodes at most; when full, a new one may push out one "
        "that never answered or is failing (never a live one), else 503.",
        "max_failed_checks": "Failed checks in a row after which a node that never passed "
        "one leaves the registry.",
        "max_per_source": "Nodes registered from one address (IPv6: its /64) at once, at "
        "most (then 429).",
        "per_source_exempt": 'Networks not held to max_per_source, e.g. ["127.0.0.0/8"] '
        "(a loopback devnet's).",
    },
    "replication": {
        "ack_timeout": "Seconds a store waits for the swarm's acknowledgements before it "
        "answers the client.",
        "request_timeout": "Seconds for one push or pull request to a peer.",
        "sync_interval": "Seconds between anti-entropy pulls from each swarm peer, on "
        "average (each wait is 0.5 to 1.5 of it, so the members' rounds do not fall "
        "together).",
        "max_pages": "Pages pulled from one peer in one round, at most.",
        "handover_interval": "Seconds between scans for accounts that left this swarm (a "
        "new consensus starts one too).",
        "queue_messages": "Messages queued for one peer, at most.",
        "queue_bytes": "Bytes of message data queued for one peer, at most.",
        "retry_max": "Seconds, the longest wait between pushes to a failing peer.",
        "give_up": "Seconds of failures after which a peer's queue is dropped (it catches "
        "up by pulling).",
        "clock_skew_ms": "Accepted skew of a peer's frame time (ms).",
    },
}

_COMMAND: dict[Role, str] = {"node": "veil-node run", "authority": "veil-node authority"}


def render(role: Role = "node") -> str:
    """The commented TOML of every key ``role`` reads, each at its default.

    Raises :class:`KeyError` naming a table or key that has no meaning written in
    :data:`TABLE_DOCS` or :data:`KEY_DOCS` (a key added to a dataclass without one).
    """
    defaults = NodeConfig()
    check = "veil-node check --config FILE" + (" --authority" if role == "authority" else "")
    lines = _comment(
        f"The configuration of `{_COMMAND[role]}` (veil {__version__}): every key, each at "
        "its default. Printed from the program's own defaults by `veil-node config"
        + (" --authority" if role == "authority" else "")
        + "`. Keep the keys you change: a key left out keeps its default; an unknown table "
        f"or key, a wrong type or a value out of range is refused. Check a file with "
        f"`{check}` before you start with it."
    )
    for table in ROLE_TABLES[role]:
        lines.append("")
        lines.extend(_comment(TABLE_DOCS[role][table]))
        lines.append(f"[{table}]")
        values = getattr(defaults, table)
        for f in dataclasses.fields(values):
            lines.extend(_comment(KEY_DOCS[table][f.name]))
            lines.append(f"{f.name} = {toml_value(getattr(values, f.name))}")
    return "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    """``value`` (a bool, int, finite float, str, or a tuple of str) as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:_}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, tuple) and all(isinstance(v, str) for v in value):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def _comment(text: str) -> list[str]:
    return textwrap.wrap(text, _WIDTH, initial_indent="# ", subsequent_indent="# ")
