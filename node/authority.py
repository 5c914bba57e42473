"""The directory authority: registers nodes, checks that they answer, and signs consensuses.

Design note
-----------
Tor's directory authorities in miniature (see :mod:`onion.vote` for the documents).
An authority is a small HTTP server (:class:`node.server.HttpServer`, the node's own)
with three background jobs under one nursery: the *checker*, the *epoch loop* and, at
start, a *catch-up* with its peers. Everything it knows lives in memory, plus two files
so that a restart loses nothing: ``DIR/descriptors.cbor`` (the registered descriptors)
and ``DIR/consensus.cbor`` (the latest consensus signed by a threshold of authorities).

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

Registration. A descriptor is parsed with :func:`onion.directory.parse_descriptor` at
the authority's clock; a bad one is refused with the error's status (400, 401 for a bad
signature, 406 for clock trouble, 413 over the size limit). A node may replace its
descriptor with a later one (an older one is refused, 409); if its keys or address
change, it counts as unchecked until checked again. Descriptors expire unless renewed.

Liveness (the checker). Every ``check_period_ms`` (and at once for a new or changed
descriptor) each registered node gets a *real* request, bounded by ``check_timeout``
(:mod:`node.liveness`): ``GET /info``, whose ``node_id`` and ``onion_key`` must be the
descriptor's, then a one-hop onion packet carrying a storage ``info`` request, which
only a node holding the onion secret can answer. A node is *live* while its last check
succeeded and that check is recent (three check periods plus the timeout).

No vote before measuring. An authority votes only once its first round of checks (every
node it held when it started, checked once) has finished; until then it has *measured*
nothing (``GET /info`` says ``"measured": false``). A vote frozen earlier would list only
the nodes checked so far: right after a restart, none, and with a single authority the
consensus would then list no node and every node would refuse every account for an
interval. Tor's authorities follow the same rule (one that has not run long enough to
decide reachability does not vote on it). Without enough votes the epoch is skipped
(step 3 below) and every authority keeps serving its latest consensus, valid for three
intervals from its start: a restart whose first round ends within that time costs the
network nothing. The round lasts as long as its slowest check: a node that refuses
connections fails at once, one that does not answer at all after ``check_timeout``.

Epochs. Epoch ``E`` covers ``[E * interval, (E + 1) * interval)`` of the authorities'
clocks (assumed NTP-synchronized to about a second). For each epoch:

1. At its start the authority freezes its vote for ``E``: the live, unexpired
   descriptors (``GET /vote?epoch=E`` serves it from then on). If it has not measured
   yet (above), it waits for its first round of checks until ``vote_delay`` (when the
   peers fetch votes) and freezes the vote then; still not measured, it casts no vote
   for ``E`` (nor signs a consensus of ``E``).
2. After ``vote_delay`` it fetches the consensus of ``E - 1`` from its peers and merges
   their signatures (or adopts theirs, if the threshold signed theirs and not ours): so
   all authorities agree on the previous consensus, whose swarm assignment the next
   one keeps (sticky swarms, :mod:`onion.swarm`). Then it fetches the peers' votes for
   ``E`` (retrying those that do not have one yet until ``2 * vote_delay``).
3. With fewer than ``threshold`` votes it skips the epoch (no node could be listed by
   ``threshold`` votes); the previous consensus stays valid for two more intervals.
   Otherwise it combines the votes (:func:`onion.vote.combine_votes`: a node listed by
   ``threshold`` votes, with its latest descriptor) and builds the body with
   :func:`onion.directory.make_consensus_body`, ``valid_after = E * interval`` and
   ``previous`` = the assignment of the latest consensus before ``E`` that a threshold
   of pinned authorities signed. Identical votes and previous consensus give identical
   bytes.
4. It signs the body, serves it at once (a consensus with fewer than ``threshold``
   signatures is served too: readers refuse it with ``BelowThreshold``, which is
   right), and fetches the peers' signatures of the same digest until all have signed
   or the epoch is nearly over, serving the document again each time one is added.

A restarted authority loads its key, its saved descriptors and consensus (serving that
consensus at once, while it is valid), checks every saved node, and at once asks its
peers for their latest consensus and vote: from the vote it learns (and checks) the
nodes it lacks, so it votes for them once they answer. It votes from the first epoch
that begins (or reaches ``vote_delay``) after its first round of checks.

Network use: only the authorities of ``network.json`` and the addresses of registered
descriptors are contacted (:class:`node.peers.PeerPool`, bounded responses).

Errors and cancellation: :meth:`DirectoryAuthority.run` raises nothing for what peers
or nodes do (each failure is logged and that step skipped); cancelling it stops every
job at once, leaving the served state as it was. :func:`open_authority` shuts the server
down gracefully and saves the registry when its block ends.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import ExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import trio

from veil.onion import __version__, crypto
from veil.onion.cbor import Field, encode
from veil.onion.cbor import decode as cbor_decode
from veil.onion.directory import (
    CONSENSUS_DOMAIN,
    MAX_CONSENSUS_SIZE,
    MAX_DESCRIPTOR_SIZE,
    MAX_NODES,
    Authority,
    Consensus,
    ConsensusSignature,
    NetworkFile,
    NodeDescriptor,
    assemble,
    make_consensus_body,
    parse_consensus_body,
    parse_descriptor,
    sign_consensus,
    split_consensus,
)
from veil.onion.errors import (
    STATUS_CODES,
    BadSignature,
    NetworkError,
    NetworkFileError,
    ProtocolError,
    RateLimited,
    VeilError,
    wire_status,
)
from veil.onion.keys import NodeKeys
from veil.onion.vote import (
    MAX_VOTE_SIZE,
    Vote,
    combine_votes,
    make_signature_doc,
    make_vote,
    parse_signature_doc,
    parse_vote,
    vote_descriptors,
)

from .config import AuthorityConfig, NodeConfig
from .keystore import (
    load_or_create_keys,
    lock_data_dir,
    prepare_data_dir,
    write_file_atomic,
)
from .liveness import probe_node
from .logging import log_event
from .metrics import CONTENT_TYPE, NodeMetrics
from .peers import PeerPool
from .ratelimit import TokenBucketLimiter
from .server import HttpServer, Request, Response, Route, text_response

__all__ = [
    "AUTHORITY_INFO_FILE",
    "AUTHORITY_KEYS_FILE",
    "CONSENSUS_FILE",
    "DESCRIPTORS_FILE",
    "DirectoryAuthority",
    "init_authority",
    "open_authority",
    "run_authority",
]

log = logging.getLogger("veil.authority")

AUTHORITY_KEYS_FILE = "authority_keys.json"
AUTHORITY_INFO_FILE = "authority.json"
DESCRIPTORS_FILE = "descriptors.cbor"
CONSENSUS_FILE = "consensus.cbor"

#: Epochs of votes and consensus documents kept (served to late peers).
KEEP_EPOCHS = 4
#: Concurrent liveness checks.
MAX_CONCURRENT_CHECKS = 32
_CBOR = b"application/cbor"
_JSON = b"application/json"
_PATH_LABELS = {
    p: p for p in ("/descriptor", "/consensus", "/vote", "/signature", "/info", "/metrics")
}
_MAX_QUERY = 256
_SAVED_DESCRIPTORS = Field(
    list, max_len=MAX_NODES, items=Field(bytes, min_len=1, max_len=MAX_DESCRIPTOR_SIZE)
)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def init_authority(data_dir: str | Path) -> NodeKeys:
    """Create the authority's key in ``data_dir`` if missing (dir 0700, file 0600).

    Raises :class:`~node.keystore.KeystoreError` for an unusable directory or key file.
    """
    path = Path(data_dir)
    prepare_data_dir(path)
    keys, created = load_or_create_keys(path, name=AUTHORITY_KEYS_FILE)
    if created:
        log_event(log, logging.INFO, "authority_key_created", key=keys.node_id)
    return keys


@dataclass(eq=False)
class _Registration:
    """A registered node: its latest descriptor and what the checker found."""

    descriptor: NodeDescriptor
    raw: bytes
    live: bool = False
    last_ok_ms: int = 0
    #: When the check whose result is recorded began (a later one wins).
    checked_ms: int = 0
    reason: str = "not checked yet"


@dataclass(eq=False)
class _Document:
    """One epoch's consensus as this authority holds it: the body and the valid
    signatures of pinned authorities it has gathered for it."""

    consensus: Consensus
    signatures: dict[bytes, bytes] = field(default_factory=dict)
    data: bytes = b""
    ours: bool = False

    def reassemble(self) -> None:
        self.data = assemble(
            self.consensus.body,
            [ConsensusSignature(k, s) for k, s in self.signatures.items()],
        )


class DirectoryAuthority:
    """One directory authority (see the module docstring). Build it with
    :func:`open_authority`; tests may call its methods directly."""

    def __init__(
        self,
        *,
        keys: NodeKeys,
        network: NetworkFile,
        config: NodeConfig,
        data_dir: Path,
        clock: Callable[[], int] = _wall_ms,
    ) -> None:
        if keys.identity_public not in network.pinned_keys:
            raise NetworkFileError(
                f"this authority's key {keys.node_id} is not listed in the network file"
            )
        self.keys = keys
        self.key = keys.identity_public
        self.network = network
        self.peers: tuple[Authority, ...] = tuple(
            a for a in network.authorities if a.key != self.key
        )
        self.config: AuthorityConfig = config.authority
        self.data_dir = data_dir
        self.clock = clock
        self.host = ""
        self.port = 0
        self.metrics = NodeMetrics(_PATH_LABELS)
        rl = config.rate_limit
        limiter = (
            TokenBucketLimiter(rl.rate, rl.burst, rl.max_clients, rl.exempt) if rl.rate else None
        )
        self.server = HttpServer(self._routes(), config.http, metrics=self.metrics, limiter=limiter)
        self.registry: dict[bytes, _Registration] = {}
        self.votes: dict[int, bytes] = {}
        self.documents: dict[int, _Document] = {}
        self._dirty = False
        self._checks_send, self._checks_receive = trio.open_memory_channel[bytes](
            self.config.max_descriptors
        )
        self._background = trio.CancelScope()
        self._pool: PeerPool | None = None
        # Set when the first round of liveness checks has finished: no vote before.
        self._measured = trio.Event()

    # --- small accessors ------------------------------------------------------------------

    @property
    def interval(self) -> int:
        return self.config.interval_ms

    @property
    def threshold(self) -> int:
        return self.network.threshold

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def latest(self) -> _Document | None:
        """The document of the newest epoch held (whatever its signatures)."""
        return self.documents[max(self.documents)] if self.documents else None

    def latest_verified(self, before_epoch: int | None = None) -> _Document | None:
        """The newest document signed by ``threshold`` pinned authorities (and of an
        epoch before ``before_epoch``, if given)."""
        for epoch in sorted(self.documents, reverse=True):
            if before_epoch is not None and epoch >= before_epoch:
                continue
            doc = self.documents[epoch]
            if len(doc.signatures) >= self.threshold:
                return doc
        return None

    @property
    def measured(self) -> bool:
        """True once the first round of liveness checks since start has finished (every
        node held then checked once): only then does this authority vote."""
        return self._measured.is_set()

    def live_descriptors(self, at_ms: int) -> list[_Registration]:
        """Registrations that are live and unexpired at ``at_ms``."""
        window = 3 * self.config.check_period_ms + int(self.config.check_timeout * 1000)
        return [
            r
            for r in self.registry.values()
            if r.live and r.last_ok_ms >= at_ms - window and not r.descriptor.is_expired(at_ms)
        ]

    def info(self) -> dict[str, Any]:
        """What ``GET /info`` answers (and, with the pid, what authority.json holds)."""
        latest = self.latest()
        now = self.clock()
        return {
            "key": self.keys.node_id,
            "address": self.address,
            "host": self.host,
            "port": self.port,
            "version": __version__,
            "time_ms": now,
            "epoch": None if latest is None else latest.consensus.epoch,
            "consensus_nodes": None if latest is None else len(latest.consensus.nodes),
            "signatures": None if latest is None else len(latest.signatures),
            "threshold": self.threshold,
            "interval_ms": self.interval,
            "nodes": len(self.registry),
            "live": len(self.live_descriptors(now)),
            "measured": self.measured,
        }

    def stop(self) -> None:
        """Stop the background jobs and begin the server's graceful shutdown."""
        self._background.cancel()
        self.server.stop()

    # --- routes ---------------------------------------------------------------------------

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
        return self.register(descriptor, request.body)

    def register(self, descriptor: NodeDescriptor, raw: bytes) -> Response:
        """Record a parsed descriptor (see the module docstring); the HTTP answer."""
        node_id = descriptor.node_id
        held = self.registry.get(node_id)
        if held is None:
            if len(self.registry) >= self.config.max_descriptors:
                return text_response(
                    503, "unavailable: this authority holds as many nodes as it may"
                )
            self.registry[node_id] = _Registration(descriptor, raw)
            log_event(
                log,
                logging.INFO,
                "node_registered",
                node=descriptor.node_id_hex[:16],
                address=f"{descriptor.host}:{descriptor.port}",
            )
            self._queue_check(node_id)
        elif held.raw == raw:
            if not held.live:
                self._queue_check(node_id)  # the node asks again: check it now
            return text_response(200, "ok: descriptor unchanged")
        elif descriptor.published_ms < held.descriptor.published_ms:
            return text_response(409, "replayed: older than the descriptor held for this node")
        else:
            old = held.descriptor
            held.descriptor, held.raw = descriptor, raw
            if (old.onion_key, old.host, old.port) != (
                descriptor.onion_key,
                descriptor.host,
                descriptor.port,
            ):
                held.live, held.reason = False, "keys or address changed"
                self._queue_check(node_id)
            elif not held.live:
                self._queue_check(node_id)
        self._dirty = True
        return text_response(200, "ok: descriptor accepted")

    def _queue_check(self, node_id: bytes) -> None:
        with suppress(trio.WouldBlock):  # full: the next round checks it anyway
            self._checks_send.send_nowait(node_id)

    async def _get_consensus(self, request: Request) -> Response:
        try:
            query = _query(request.query, {"epoch"})
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
            query = _query(request.query, {"epoch"})
        except ValueError as exc:
            return text_response(400, f"bad_request: {exc}")
        epoch = query.get("epoch", max(self.votes) if self.votes else -1)
        vote = self.votes.get(epoch)
        if vote is None:
            return text_response(404, f"not_found: no vote for epoch {epoch}")
        return Response(200, vote, _CBOR)

    async def _get_signature(self, request: Request) -> Response:
        try:
            query = _query(request.query, {"epoch", "digest"}, required={"epoch", "digest"})
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
        return Response(200, self.metrics.render(), CONTENT_TYPE.encode())

    # --- the background jobs -----------------------------------------------------------

    async def run(self, pool: PeerPool) -> None:
        """The checker, the catch-up and the epoch loop, until :meth:`stop` or cancel.

        See the module docstring for errors and cancellation.
        """
        self._pool = pool
        with self._background:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._checker)
                nursery.start_soon(self._catch_up_at_start)
                nursery.start_soon(self._epoch_loop)

    # -- liveness

    async def _checker(self) -> None:
        limiter = trio.CapacityLimiter(MAX_CONCURRENT_CHECKS)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._check_queued, limiter)
            while True:
                self._expire()
                async with trio.open_nursery() as round_:
                    for node_id in list(self.registry):
                        round_.start_soon(self._check, node_id, limiter)
                if not self._measured.is_set():
                    log_event(log, logging.INFO, "measured", nodes=len(self.registry))
                    self._measured.set()
                await trio.sleep(self.config.check_period_ms / 1000)

    async def _check_queued(self, limiter: trio.CapacityLimiter) -> None:
        async with trio.open_nursery() as nursery:
            async for node_id in self._checks_receive:
                nursery.start_soon(self._check, node_id, limiter)

    def _expire(self) -> None:
        now = self.clock()
        for node_id, reg in list(self.registry.items()):
            if reg.descriptor.is_expired(now):
                del self.registry[node_id]
                self._dirty = True
                log_event(log, logging.INFO, "node_expired", node=node_id.hex()[:16])

    async def _check(self, node_id: bytes, limiter: trio.CapacityLimiter) -> None:
        async with limiter:
            reg = self.registry.get(node_id)
            if reg is None:
                return
            descriptor = reg.descriptor
            started = self.clock()
            ok, reason = await self.probe(descriptor)
        reg = self.registry.get(node_id)
        if reg is None or started < reg.checked_ms:
            return
        current = reg.descriptor
        if (current.onion_key, current.host, current.port) != (
            descriptor.onion_key,
            descriptor.host,
            descriptor.port,
        ):
            return  # the node changed its descriptor meanwhile; its own check decides
        was, was_reason = reg.live, reg.reason
        reg.checked_ms, reg.live, reg.reason = started, ok, reason
        if ok:
            reg.last_ok_ms = started
        if was != ok or (not ok and reason != was_reason):  # news, not every failed check
            log_event(
                log,
                logging.INFO if ok else logging.WARNING,
                "node_live" if ok else "node_down",
                node=node_id.hex()[:16],
                address=f"{descriptor.host}:{descriptor.port}",
                reason=reason,
            )

    async def probe(self, descriptor: NodeDescriptor) -> tuple[bool, str]:
        """:func:`node.liveness.probe_node` with this authority's pool, clock and timeout."""
        assert self._pool is not None
        return await probe_node(
            self._pool, descriptor, clock=self.clock, timeout=self.config.check_timeout
        )

    # -- epochs

    async def _sleep_until(self, at_ms: int) -> None:
        while (left := at_ms - self.clock()) > 0:
            await trio.sleep(left / 1000)

    def _deadline(self, at_ms: int) -> float:
        """The trio deadline of the wall-clock time ``at_ms``."""
        return trio.current_time() + (at_ms - self.clock()) / 1000

    async def _epoch_loop(self) -> None:
        interval = self.interval
        margin = min(interval // 10, 1000)
        epoch = self.clock() // interval + 1
        while True:
            start = epoch * interval
            await self._sleep_until(start)
            if not self._measured.is_set():
                # Just started: the first round of checks may end before the peers
                # (and our own _run_epoch) want the vote, at vote_delay.
                with trio.move_on_at(self._deadline(start + self.config.vote_delay)):
                    await self._measured.wait()
            if self._measured.is_set():
                try:
                    self.freeze_vote(epoch)
                except ValueError as exc:  # over the vote's size limit: a bug or an attack
                    log_event(log, logging.ERROR, "vote_failed", epoch=epoch, error=str(exc))
            else:
                log_event(
                    log,
                    logging.WARNING,
                    "vote_withheld",
                    epoch=epoch,
                    reason="the first round of liveness checks has not finished",
                )
            await self._save_registry()
            await self._sleep_until(start + self.config.vote_delay)
            with trio.move_on_at(self._deadline(start + interval - margin)):
                await self._run_epoch(epoch)
            self._forget_old(epoch)
            # Normally the next epoch; if this one overran (a suspended machine), the
            # next one that has not begun.
            epoch = max(epoch + 1, self.clock() // interval + 1)

    def freeze_vote(self, epoch: int) -> bytes:
        """Make (and serve) this authority's vote for ``epoch``: its live descriptors.

        The epoch loop calls it only once :attr:`measured` (see the module docstring).
        """
        at = epoch * self.interval
        live = self.live_descriptors(at)
        vote = make_vote(
            self.keys,
            [r.raw for r in live],
            epoch=epoch,
            interval_ms=self.interval,
            swarm_size=self.config.swarm_size,
            now_ms=self.clock(),
        )
        self.votes[epoch] = vote
        log_event(log, logging.INFO, "vote_frozen", epoch=epoch, nodes=len(live))
        return vote

    def _forget_old(self, epoch: int) -> None:
        for table in (self.votes, self.documents):
            for old in [e for e in table if e <= epoch - KEEP_EPOCHS]:
                del table[old]

    async def _run_epoch(self, epoch: int) -> None:
        start = epoch * self.interval
        own = self.votes.get(epoch)
        if own is None:
            return
        own_vote = parse_vote(
            own,
            key=self.key,
            epoch=epoch,
            interval_ms=self.interval,
            swarm_size=self.config.swarm_size,
        )
        # The previous consensus and the peers' votes, at the same time and both cut off
        # at twice the vote delay: a peer that hangs must not eat the epoch.
        until = start + 2 * self.config.vote_delay
        votes = [own_vote]
        with trio.move_on_at(self._deadline(until)):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._catch_up, epoch - 1)
                nursery.start_soon(self._fetch_votes, epoch, until, votes)
        if len(votes) < self.threshold:
            log_event(
                log,
                logging.WARNING,
                "epoch_skipped",
                epoch=epoch,
                votes=len(votes),
                threshold=self.threshold,
            )
            return
        known = {r.raw: r.descriptor for r in self.registry.values()}
        lists = await trio.to_thread.run_sync(_parse_votes, votes, start, known)
        descriptors = combine_votes(lists, threshold=self.threshold)
        previous = self.latest_verified(before_epoch=epoch)
        try:
            body = make_consensus_body(
                descriptors,
                epoch=epoch,
                valid_after_ms=start,
                interval_ms=self.interval,
                swarm_size=self.config.swarm_size,
                previous=None if previous is None else previous.consensus.assignment,
            )
        except ValueError as exc:
            log_event(log, logging.ERROR, "consensus_failed", epoch=epoch, error=str(exc))
            return
        signature = sign_consensus(body, self.keys)
        doc = _Document(parse_consensus_body(body), {self.key: signature.signature}, ours=True)
        doc.reassemble()
        self.documents[epoch] = doc
        log_event(
            log,
            logging.INFO,
            "consensus_made",
            epoch=epoch,
            nodes=len(descriptors),
            votes=len(votes),
            previous=None if previous is None else previous.consensus.epoch,
            digest=doc.consensus.digest.hex()[:16],
        )
        await self._after_signatures_changed(doc)
        await self._gather_signatures(epoch, doc)

    async def _fetch_votes(self, epoch: int, until_ms: int, votes: list[Vote]) -> None:
        """Append the peers' votes for ``epoch`` to ``votes``, asking again those that
        have none yet until ``until_ms``."""

        async def fetch(peer: Authority) -> None:
            poll = self._poll_s()
            while True:
                vote = await self._fetch_vote(peer, epoch)
                if vote is not None:
                    votes.append(vote)
                    return
                if self.clock() + poll * 1000 >= until_ms:
                    return
                await trio.sleep(poll)

        async with trio.open_nursery() as nursery:
            for peer in self.peers:
                nursery.start_soon(fetch, peer)

    async def _fetch_vote(self, peer: Authority, epoch: int | None) -> Vote | None:
        path = "/vote" if epoch is None else f"/vote?epoch={epoch}"
        data = await self._get(peer, path)
        if data is None:
            return None
        try:
            return await trio.to_thread.run_sync(self._parse_peer_vote, data, peer, epoch)
        except ProtocolError as exc:
            log_event(log, logging.WARNING, "vote_refused", peer=_name(peer), error=str(exc))
            return None

    def _parse_peer_vote(self, data: bytes, peer: Authority, epoch: int | None) -> Vote:
        if epoch is None:  # "the latest": take the epoch it claims, check the rest
            epoch = _peek_epoch(data)
        return parse_vote(
            data,
            key=peer.key,
            epoch=epoch,
            interval_ms=self.interval,
            swarm_size=self.config.swarm_size,
        )

    async def _gather_signatures(self, epoch: int, doc: _Document) -> None:
        """Fetch the peers' signatures of ``doc`` until all signed (or cancelled)."""
        poll = self._poll_s()
        digest = doc.consensus.digest.hex()
        while self.documents.get(epoch) is doc:
            missing = [p for p in self.peers if p.key not in doc.signatures]
            if not missing:
                return
            got: list[ConsensusSignature] = []

            async def fetch(peer: Authority, got: list[ConsensusSignature] = got) -> None:
                data = await self._get(peer, f"/signature?epoch={epoch}&digest={digest}")
                if data is None:
                    return
                try:
                    got.append(parse_signature_doc(data, key=peer.key, body=doc.consensus.body))
                except ProtocolError as exc:
                    log_event(
                        log, logging.WARNING, "signature_refused", peer=_name(peer), error=str(exc)
                    )

            async with trio.open_nursery() as nursery:
                for peer in missing:
                    nursery.start_soon(fetch, peer)
            if got and self.documents.get(epoch) is doc:
                for sig in got:
                    doc.signatures[sig.key] = sig.signature
                doc.reassemble()
                log_event(
                    log,
                    logging.INFO,
                    "signatures_added",
                    epoch=epoch,
                    signatures=len(doc.signatures),
                    threshold=self.threshold,
                )
                await self._after_signatures_changed(doc)
            await trio.sleep(poll)

    async def _after_signatures_changed(self, doc: _Document) -> None:
        if len(doc.signatures) >= self.threshold and self.latest_verified() is doc:
            await self._save(self.data_dir / CONSENSUS_FILE, doc.data)

    # -- agreeing on the previous consensus

    async def _catch_up(self, epoch: int | None) -> None:
        """Merge the peers' consensus of ``epoch`` (None: their latest) into ours."""
        held = None if epoch is None else self.documents.get(epoch)
        if held is not None and len(held.signatures) >= self.threshold:
            return  # already good enough to build on
        path = "/consensus" if epoch is None else f"/consensus?epoch={epoch}"
        results: list[bytes] = []

        async def fetch(peer: Authority) -> None:
            data = await self._get(peer, path)
            if data is not None:
                results.append(data)

        async with trio.open_nursery() as nursery:
            for peer in self.peers:
                nursery.start_soon(fetch, peer)
        for data in results:
            await self.merge_document(data)

    async def merge_document(self, data: bytes) -> bool:
        """Merge a consensus document from a peer (or our saved file): add its valid
        pinned signatures to the same body held, or adopt it if a threshold signed it
        and the body held for its epoch (if any) has fewer. True if anything changed."""
        try:
            body, signatures = split_consensus(data)
            consensus = await trio.to_thread.run_sync(parse_consensus_body, body)
        except ProtocolError as exc:
            log_event(log, logging.WARNING, "consensus_refused", error=str(exc))
            return False
        valid: dict[bytes, bytes] = {}
        pinned = set(self.network.pinned_keys)
        for sig in signatures:
            if sig.key in pinned and sig.key not in valid:
                try:
                    crypto.verify(sig.key, CONSENSUS_DOMAIN, body, sig.signature)
                except BadSignature:
                    continue
                valid[sig.key] = sig.signature
        epoch = consensus.epoch
        held = self.documents.get(epoch)
        if held is not None and held.consensus.body == body:
            new = {k: s for k, s in valid.items() if k not in held.signatures}
            if not new:
                return False
            held.signatures.update(new)
            held.reassemble()
            await self._after_signatures_changed(held)
            return True
        if len(valid) < self.threshold:
            return False
        if held is not None and len(held.signatures) >= self.threshold:
            log_event(log, logging.WARNING, "conflicting_consensus", epoch=epoch)
            return False
        doc = _Document(consensus, valid)
        doc.reassemble()
        self.documents[epoch] = doc
        log_event(log, logging.INFO, "consensus_adopted", epoch=epoch, signatures=len(valid))
        await self._after_signatures_changed(doc)
        return True

    async def _catch_up_at_start(self) -> None:
        """Learn the peers' latest consensus and the descriptors their votes hold."""
        await self._catch_up(None)

        async def import_vote(peer: Authority) -> None:
            vote = await self._fetch_vote(peer, None)
            if vote is None:
                return
            added = 0
            now = self.clock()
            for raw in vote.descriptors:
                try:
                    descriptor = parse_descriptor(raw, now_ms=now)
                except ProtocolError:
                    continue
                if (
                    descriptor.node_id not in self.registry
                    and self.register(descriptor, raw).status == 200
                ):
                    added += 1
                await trio.lowlevel.checkpoint()
            if added:
                log_event(log, logging.INFO, "descriptors_imported", peer=_name(peer), nodes=added)

        async with trio.open_nursery() as nursery:
            for peer in self.peers:
                nursery.start_soon(import_vote, peer)

    # -- I/O helpers

    def _poll_s(self) -> float:
        return min(max(self.interval / 20_000, 0.1), 2.0)

    async def _get(self, peer: Authority, path: str) -> bytes | None:
        """GET from a peer authority: the body of a 200, else None (logged at debug)."""
        assert self._pool is not None
        try:
            status, data = await self._pool.get(
                peer.host, peer.port, path, timeout=self.config.check_timeout
            )
        except (NetworkError, RateLimited) as exc:
            log_event(log, logging.DEBUG, "peer_unreachable", peer=_name(peer), error=str(exc))
            return None
        if status != 200:
            log_event(log, logging.DEBUG, "peer_answered", peer=_name(peer), status=status)
            return None
        return data

    async def _save(self, path: Path, data: bytes) -> None:
        try:
            await trio.to_thread.run_sync(write_file_atomic, path, data, 0o644)
        except OSError as exc:
            log_event(log, logging.WARNING, "cannot_save", path=str(path), error=str(exc))

    async def _save_registry(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        raws = sorted(r.raw for r in self.registry.values())
        await self._save(self.data_dir / DESCRIPTORS_FILE, encode(raws))

    def save_registry_now(self) -> None:
        """Blocking save of the registry (at shutdown)."""
        raws = sorted(r.raw for r in self.registry.values())
        try:
            write_file_atomic(self.data_dir / DESCRIPTORS_FILE, encode(raws), 0o644)
        except OSError as exc:
            log_event(log, logging.WARNING, "cannot_save", error=str(exc))

    def load_saved(self) -> None:
        """Load the saved registry and consensus (blocking; at start, before serving).

        Unreadable or invalid files are logged and ignored; every descriptor is parsed
        again at the current time and checked before it counts as live.
        """
        now = self.clock()
        raws = _read_cbor_list(self.data_dir / DESCRIPTORS_FILE)
        for raw in raws:
            try:
                descriptor = parse_descriptor(raw, now_ms=now)
            except ProtocolError:
                continue
            if descriptor.node_id not in self.registry:
                self.register(descriptor, raw)
        if raws:
            log_event(log, logging.INFO, "descriptors_loaded", nodes=len(self.registry))
        path = self.data_dir / CONSENSUS_FILE
        try:
            with path.open("rb") as f:
                data = f.read(MAX_CONSENSUS_SIZE + 1)
        except OSError:
            return
        try:
            body, signatures = split_consensus(data)
            consensus = parse_consensus_body(body)
        except ProtocolError as exc:
            log_event(log, logging.WARNING, "saved_consensus_discarded", error=str(exc))
            return
        if now >= consensus.valid_until_ms:
            log_event(log, logging.INFO, "saved_consensus_stale", epoch=consensus.epoch)
            return
        pinned = set(self.network.pinned_keys)
        valid: dict[bytes, bytes] = {}
        for sig in signatures:
            if sig.key in pinned:
                try:
                    crypto.verify(sig.key, CONSENSUS_DOMAIN, body, sig.signature)
                except BadSignature:
                    continue
                valid[sig.key] = sig.signature
        if len(valid) < self.threshold:
            return
        doc = _Document(consensus, valid, ours=self.key in valid)
        doc.reassemble()
        self.documents[consensus.epoch] = doc
        log_event(log, logging.INFO, "saved_consensus_loaded", epoch=consensus.epoch)


def _parse_votes(
    votes: list[Vote], valid_after_ms: int, known: Mapping[bytes, NodeDescriptor]
) -> list[list[NodeDescriptor]]:
    """Every vote's descriptors at the epoch's time (in a worker thread: signatures)."""
    lists = []
    for vote in votes:
        descriptors, skipped = vote_descriptors(vote, valid_after_ms=valid_after_ms, known=known)
        if skipped:
            log_event(
                log, logging.WARNING, "vote_descriptors_skipped", vote=repr(vote), skipped=skipped
            )
        lists.append(descriptors)
    return lists


def _peek_epoch(data: bytes) -> int:
    """The epoch a vote claims (checked again, with its signature, by parse_vote)."""
    outer = cbor_decode(data, max_size=MAX_VOTE_SIZE, max_depth=1)
    if not isinstance(outer, dict) or not isinstance(outer.get("body"), bytes):
        raise ProtocolError("not a vote")
    body = cbor_decode(outer["body"], max_size=MAX_VOTE_SIZE, max_depth=2)
    epoch = body.get("epoch") if isinstance(body, dict) else None
    if type(epoch) is not int or epoch < 0:
        raise ProtocolError("vote without an epoch")
    return epoch


def _read_cbor_list(path: Path) -> list[bytes]:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_NODES * MAX_DESCRIPTOR_SIZE + 16)
    except OSError:
        return []
    try:
        items = cbor_decode(data, max_size=MAX_NODES * MAX_DESCRIPTOR_SIZE + 8, max_depth=1)
        _SAVED_DESCRIPTORS.check(items, "descriptors")
    except ProtocolError as exc:
        log_event(log, logging.WARNING, "saved_descriptors_discarded", error=str(exc))
        return []
    return list(items)


def _query(
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


def _name(authority: Authority) -> str:
    return f"{authority.key_hex[:16]}@{authority.host}:{authority.port}"


# --- running one ------------------------------------------------------------------------


@asynccontextmanager
async def open_authority(
    data_dir: str | Path,
    host: str,
    port: int,
    network: NetworkFile,
    config: NodeConfig | None = None,
) -> AsyncIterator[DirectoryAuthority]:
    """Run a directory authority on ``host:port`` with its key in ``data_dir``.

    Yields the :class:`DirectoryAuthority` once it accepts connections and
    ``DIR/authority.json`` is written. When the block ends it stops its jobs, shuts the
    server down gracefully, saves the registry and removes ``authority.json``; if the
    block raises or is cancelled, requests are cut at once (files are still written).
    Raises :class:`~node.keystore.KeystoreError` (data dir, key, lock),
    :class:`~onion.errors.NetworkFileError` (this key is not in the network file) or
    ``OSError`` (listen) while starting.
    """
    config = config or NodeConfig()
    data_dir = Path(data_dir)
    with ExitStack() as files:
        prepare_data_dir(data_dir)
        files.enter_context(lock_data_dir(data_dir))
        keys, _ = load_or_create_keys(data_dir, name=AUTHORITY_KEYS_FILE)
        authority = DirectoryAuthority(keys=keys, network=network, config=config, data_dir=data_dir)
        authority.load_saved()
        listeners = await trio.open_tcp_listeners(port, host=host)
        files.callback(_close_listeners, listeners)
        sockname = listeners[0].socket.getsockname()
        authority.host, authority.port = str(sockname[0]), int(sockname[1])
        info_path = data_dir / AUTHORITY_INFO_FILE
        try:
            async with (
                PeerPool(
                    max_per_peer=config.peers.max_per_peer,
                    max_waiters=config.peers.max_waiters,
                    connect_timeout=config.peers.connect_timeout,
                    idle_timeout=config.peers.idle_timeout,
                    max_response_bytes=MAX_VOTE_SIZE + 4096,
                ) as pool,
                trio.open_nursery() as nursery,
            ):
                await nursery.start(authority.server.serve, listeners)
                nursery.start_soon(authority.run, pool)
                doc = {k: v for k, v in authority.info().items() if k in _INFO_FILE_KEYS}
                doc["pid"] = os.getpid()
                write_file_atomic(info_path, json.dumps(doc).encode() + b"\n", 0o644)
                log_event(
                    log,
                    logging.INFO,
                    "listening",
                    address=authority.address,
                    key=keys.node_id,
                    threshold=network.threshold,
                    authorities=len(network.authorities),
                )
                try:
                    yield authority
                except BaseException:
                    nursery.cancel_scope.cancel()
                    raise
                authority.stop()
        finally:
            authority.save_registry_now()
            with suppress(FileNotFoundError):
                info_path.unlink()


_INFO_FILE_KEYS = frozenset({"key", "address", "host", "port", "version"})


async def run_authority(
    data_dir: str | Path,
    host: str,
    port: int,
    network: NetworkFile,
    config: NodeConfig | None = None,
    *,
    on_ready: Callable[[DirectoryAuthority], None] | None = None,
) -> None:
    """Run an authority until SIGINT or SIGTERM, then shut it down and return.

    Must run in the main thread (signal handling). Errors as :func:`open_authority`.
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_authority(data_dir, host, port, network, config) as authority:
            if on_ready is not None:
                on_ready(authority)
            async for signum in signals:
                log_event(log, logging.INFO, "stopping", signal=signal.Signals(signum).name)
                break


def _close_listeners(listeners: list[trio.SocketListener]) -> None:
    for listener in listeners:
        listener.socket.close()
