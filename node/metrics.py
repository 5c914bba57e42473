"""The node's Prometheus metrics, in a registry of its own.

Design note
-----------
Each :class:`NodeMetrics` owns a :class:`prometheus_client.CollectorRegistry` (not the
process-global one), so several nodes can run in one process (the benchmark, tests)
without their counters mixing, and ``GET /metrics`` shows exactly this node.

Labels are bounded: the HTTP path label is one of the routes the server knows or
``other``, the method one of a fixed set or ``other``, so a client sending random paths
cannot grow the label space. Label children are cached in plain dicts, because
``Counter.labels()`` costs a few microseconds and runs on every request.

The store's figures (messages held, bytes on disk, stores accepted) are read from the
storage service at scrape time through :meth:`NodeMetrics.set_storage_source`, so the
hot path does no bookkeeping for them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .ratelimit import peer_ip

__all__ = ["CONTENT_TYPE", "METRICS_FORBIDDEN", "MetricsAccess", "NodeMetrics", "StorageFigure"]

#: The Content-Type of the text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: "LINK" counts onion packets that arrived on a node-to-node link (node/link/).
_METHODS = frozenset({"GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "LINK"})


class MetricsAccess:
    """Who may read ``GET /metrics``: the networks of ``[http] metrics_allow``.

    The connecting address is judged (IPv4-mapped IPv6 as IPv4); an address that does
    not parse is refused. Loopback only by default, as Tor's MetricsPort policy: a
    scraper elsewhere is added by its network.
    """

    __slots__ = ("_networks",)

    def __init__(self, networks: Iterable[str]) -> None:
        self._networks = tuple(ipaddress.ip_network(n, strict=False) for n in networks)

    def allows(self, address: str) -> bool:
        ip = peer_ip(address)
        return ip is not None and any(ip in net for net in self._networks)


#: The answer to a scrape from an address ``[http] metrics_allow`` does not hold.
METRICS_FORBIDDEN = b"forbidden: /metrics is served only to the networks of [http] metrics_allow\n"


@dataclass(frozen=True, slots=True)
class StorageFigure:
    """One metric read from the storage service at scrape time.

    ``samples`` maps label values (in the order of ``labels``) to a value; a metric
    without labels has one sample under ``()``.
    """

    name: str
    doc: str
    kind: Literal["counter", "gauge"]
    samples: Mapping[tuple[str, ...], float]
    labels: tuple[str, ...] = ()


class _StorageCollector(Collector):
    def __init__(self) -> None:
        self.source: Callable[[], list[StorageFigure]] | None = None

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        if self.source is None:
            return
        for fig in self.source():
            family: CounterMetricFamily | GaugeMetricFamily
            if fig.kind == "counter":
                family = CounterMetricFamily(fig.name, fig.doc, labels=fig.labels)
            else:
                family = GaugeMetricFamily(fig.name, fig.doc, labels=fig.labels)
            for label_values, value in fig.samples.items():
                family.add_metric(list(label_values), value)
            yield family


class NodeMetrics:
    """Counters and gauges of one node; :meth:`render` gives the exposition text."""

    def __init__(self, paths: Mapping[str, str] | None = None) -> None:
        """``paths`` maps a request path to its label (unknown paths count as ``other``)."""
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._paths = dict(paths or {})
        self.requests = Counter(
            "veil_http_requests",
            "HTTP requests answered, by method, path and status code",
            ["method", "path", "status"],
            registry=r,
        )
        self.connections = Gauge("veil_http_connections", "Open client connections", registry=r)
        self.connections_refused = Counter(
            "veil_http_connections_refused",
            "Connections refused because max_connections were open",
            registry=r,
        )
        self.rate_limited = Counter(
            "veil_rate_limited", "Requests refused by the per-address rate limit", registry=r
        )
        self.onion_rejected = Counter(
            "veil_onion_rejected",
            "Packets refused before a reply was possible (bad length, version or MAC)",
            ["reason"],
            registry=r,
        )
        self.replay_rejections = Counter(
            "veil_onion_replay_rejections",
            "Packets refused by the timestamp window or the replay cache",
            ["reason"],
            registry=r,
        )
        self.relayed = Counter(
            "veil_onion_relayed", "Packets relayed whose reply came back", registry=r
        )
        self.relay_failures = Counter(
            "veil_onion_relay_failures",
            "Packets whose next hop failed (the client got a layered error)",
            ["reason"],
            registry=r,
        )
        self.delivered = Counter(
            "veil_onion_delivered", "Packets delivered to this node's storage RPC", registry=r
        )
        self.peer_errors = Counter(
            "veil_peer_errors",
            "Bad input from peers (e.g. a malformed link frame), by cause; every one is"
            " counted here, while the log holds a rate-limited few (node/logging.py)",
            ["cause"],
            registry=r,
        )
        self._storage = _StorageCollector()
        r.register(self._storage)
        self._request_children: dict[tuple[str, str, int], Counter] = {}
        self._reason_children: dict[tuple[int, str], Counter] = {}

    def set_storage_source(self, source: Callable[[], list[StorageFigure]] | None) -> None:
        """Read the storage figures from ``source`` at every scrape (None: none)."""
        self._storage.source = source

    def path_label(self, path: str) -> str:
        return self._paths.get(path, "other")

    def count_request(self, method: str, path_label: str, status: int) -> None:
        if method not in _METHODS:
            method = "other"
        # Bounded key space: a fixed set of methods x known paths x the statuses we send.
        key = (method, path_label, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(
                method, path_label, str(status)
            )
        child.inc()

    def count(self, counter: Counter, reason: str) -> None:
        """Increment ``counter``'s child for ``reason`` (a fixed string of ours)."""
        key = (id(counter), reason)
        child = self._reason_children.get(key)
        if child is None:
            child = self._reason_children[key] = counter.labels(reason)
        child.inc()

    def count_peer_error(self, cause: str) -> None:
        """Count one bad input from a peer (``cause``: the event name, a fixed string of
        ours); what :class:`~veil.node.logging.PeerWarnings` is given as ``count``."""
        self.count(self.peer_errors, cause)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
