"""The authority's HTTP face: its routes, their strict query strings, and ``/info``.

Design note
-----------
Routes (every refusal is a short ``text/plain`` body ``<wire status>: <why>``)::

    POST /descriptor                a node's signed descriptor (<= 1 KiB): 200, or 4xx
    GET  /consensus[?epoch=E]       the latest (or epoch E's) signed consensus,
                                    application/cbor; 503 before the first, 404 for an
                                    epoch not held
    GET  /vote[?epoch=E]            this authority's signed vote (the latest, or E's)
    GET  /signature?epoch=E&digest=HEX
                                    this authority's signature of its body for epoch E
                                    if that body's digest is HEX; 404 if it has no body
                                    for E (yet), 409 if its body differs
    GET  /info                      JSON: key, address, version, time_ms, epoch, counts
    GET  /metrics                   Prometheus text

They run on the node's own :class:`veil.node.server.HttpServer`; only ``POST /descriptor`` is
rate limited, and its poster's address is the *source* that ``max_per_source`` counts
(:mod:`.registry`). A query string is parsed strictly (:func:`parse_query`: known keys once
each, bounded length), so a typo is a 400, never a silently different answer.
"""

from __future__ import annotations

import ipaddress
import json
from functools import cached_property
from typing import Any
from urllib.parse import parse_qsl

from veil.onion import __version__, crypto
from veil.onion.directory import MAX_DESCRIPTOR_SIZE, ConsensusSignature, parse_descriptor
from veil.onion.errors import STATUS_CODES, VeilError, wire_status
from veil.onion.vote import make_signature_doc

from ..metrics import CONTENT_TYPE, METRICS_FORBIDDEN
from ..ratelimit import client_key, peer_ip
from ..server import Request, Response, Route, text_response
from .registry import Registry

__all__ = ["Routes", "parse_query"]

_CBOR = b"application/cbor"
_JSON = b"application/json"
_MAX_QUERY = 256


class Routes(Registry):
    """The route handlers, and what ``GET /info`` answers."""

    def info(self) -> dict[str, Any]:
        """What ``GET /info`` answers (and, with the pid, what authority.json holds)."""
        latest = self.latest()
        now_ms = self.clock()
        return {
            "key": self.keys.node_id,
            "address": self.address,
            "host": self.host,
            "port": self.port,
            "version": __version__,
            "time_ms": now_ms,
            "epoch": None if latest is None else latest.consensus.epoch,
            "consensus_nodes": None if latest is None else len(latest.consensus.nodes),
            "signatures": None if latest is None else len(latest.signatures),
            "threshold": self.threshold,
            "interval_ms": self.interval_ms,
            "nodes": len(self.registry),
            "live": len(self.live_descriptors(now_ms)),
            "measured": self.measured,
        }

    @cached_property
    def _per_source_exempt(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(n, strict=False) for n in self.config.per_source_exempt)

    def _routes(self) -> dict[str, Route]:
        return {
            "/descriptor": Route(
                ("POST",), self._post_descriptor, MAX_DESCRIPTOR_SIZE, rate_limited=True
            ),
            "/consensus": Route(("GET",), self._get_consensus),
            "/vote": Route(("GET",), self._get_vote),
            "/signature": Route(("GET",), self._get_signature),
            "/info": Route(("GET",), self._get_info),
            "/metrics": Route(("GET",), self._get_metrics),
        }

    async def _post_descriptor(self, request: Request) -> Response:
        try:
            descriptor = parse_descriptor(request.body, now_ms=self.clock())
        except VeilError as exc:
            status = wire_status(exc)
            code = STATUS_CODES[status] if 400 <= STATUS_CODES[status] < 500 else 400
            return text_response(code, f"{status}: {exc}")
        return self.register(descriptor, request.body, self._source_of(request.peer))

    def _source_of(self, peer: str) -> str | None:
        """Who posts, for ``max_per_source``: the peer's bucket key (an IPv6 /64 as
        one), or None for an address in ``per_source_exempt``."""
        ip = peer_ip(peer)
        if ip is None:
            return client_key(peer)  # no address known: all such posters share one
        if any(ip in net for net in self._per_source_exempt):
            return None
        return client_key(peer)

    async def _get_consensus(self, request: Request) -> Response:
        try:
            query = parse_query(request.query, {"epoch"})
        except ValueError as exc:
            return text_response(400, f"bad_request: {exc}")
        if "epoch" in query:
            doc = self.documents.get(query["epoch"])
            if doc is None:
                return text_response(404, f"not_found: no consensus for epoch {query['epoch']}")
        else:
            doc = self.latest()
            if doc is None:
                return text_response(503, "unavailable: no consensus yet")
        return Response(200, doc.data, _CBOR)

    async def _get_vote(self, request: Request) -> Response:
        try:
            query = parse_query(request.query, {"epoch"})
        except ValueError as exc:
            return text_response(400, f"bad_request: {exc}")
        epoch = query.get("epoch", max(self.votes) if self.votes else -1)
        vote = self.votes.get(epoch)
        if vote is None:
            return text_response(404, f"not_found: no vote for epoch {epoch}")
        return Response(200, vote, _CBOR)

    async def _get_signature(self, request: Request) -> Response:
        try:
            query = parse_query(request.query, {"epoch", "digest"}, required={"epoch", "digest"})
        except ValueError as exc:
            return text_response(400, f"bad_request: {exc}")
        doc = self.documents.get(query["epoch"])
        if doc is None or not doc.ours or self.key not in doc.signatures:
            return text_response(404, f"not_found: no body of ours for epoch {query['epoch']}")
        if not crypto.ct_equal(doc.consensus.digest, query["digest"]):
            return text_response(
                409,
                f"conflict: our body for epoch {query['epoch']} has digest "
                f"{doc.consensus.digest.hex()}",
            )
        sig = ConsensusSignature(self.key, doc.signatures[self.key])
        return Response(200, make_signature_doc(sig), _CBOR)

    async def _get_info(self, request: Request) -> Response:
        return Response(200, json.dumps(self.info()).encode(), _JSON)

    async def _get_metrics(self, request: Request) -> Response:
        if not self.metrics_access.allows(request.peer):
            return Response(403, METRICS_FORBIDDEN)
        return Response(200, self.metrics.render(), CONTENT_TYPE.encode())


def parse_query(
    text: str, allowed: set[str], required: frozenset[str] | set[str] = frozenset()
) -> dict[str, Any]:
    """A strict query string: known keys once each; ``epoch`` an int, ``digest`` 32
    bytes of hex. :class:`ValueError` saying what is wrong."""
    if len(text) > _MAX_QUERY:
        raise ValueError("query string too long")
    result: dict[str, Any] = {}
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))
    except ValueError:
        raise ValueError("malformed query string") from None
    for key, value in pairs:
        if key not in allowed:
            raise ValueError(f"unknown query parameter {key[:32]!r}")
        if key in result:
            raise ValueError(f"query parameter {key} given twice")
        if key == "epoch":
            if not value.isdigit() or len(value) > 19:
                raise ValueError("epoch must be a non-negative integer")
            result[key] = int(value)
        elif key == "digest":
            try:
                digest = bytes.fromhex(value)
            except ValueError:
                digest = b""
            if len(digest) != 32:
                raise ValueError("digest must be 64 hex characters")
            result[key] = digest
    missing = set(required) - result.keys()
    if missing:
        raise ValueError(f"missing query parameter(s) {', '.join(sorted(missing))}")
    return result
