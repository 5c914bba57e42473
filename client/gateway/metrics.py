"""The gateway's Prometheus metrics (its own registry, served at ``GET /metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["GatewayMetrics"]


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "veil_gateway_requests",
            "HTTP requests answered, by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "veil_gateway_request_seconds",
            "time to answer a request",
            ["route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.codes = Counter("veil_gateway_codes_sent", "codes sent", registry=self.registry)
        self.messages = Counter(
            "veil_gateway_messages_sent", "messages sent", registry=self.registry
        )
        self.replays = Counter(
            "veil_gateway_idempotent_replays", "answers replayed", registry=self.registry
        )
        self.unavailable = Counter(
            "veil_gateway_network_unavailable",
            "requests answered 503 (network unreachable or too slow)",
            registry=self.registry,
        )

    def text(self) -> bytes:
        return generate_latest(self.registry)
