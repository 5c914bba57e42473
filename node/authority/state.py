"""What a directory authority holds, and how it talks to its peers: the shared base.

Design note
-----------
:class:`AuthorityState` is the base of :class:`~veil.node.authority.running.DirectoryAuthority`:
its keys, the network file, the registry of nodes (:class:`Registration`), its votes and
consensus documents (:class:`HeldConsensus`) by epoch, and the few helpers every job
uses (its peers' answers, its clock as trio deadlines). Each job is a class of its own
module built on this one (registry, liveness, saved, catch_up, epochs, routes), so a
job's module reads top to bottom without the others; everything lives in memory, read
and written from the one trio thread.

The data directory's file names are here because three jobs share them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from veil.onion.cbor import decode as cbor_decode
from veil.onion.directory import (
    Authority,
    Consensus,
    ConsensusSignature,
    NetworkFile,
    NodeDescriptor,
    assemble,
)
from veil.onion.errors import NetworkError, NetworkFileError, ProtocolError, RateLimited
from veil.onion.hostport import format_hostport
from veil.onion.keys import NodeKeys
from veil.onion.vote import MAX_VOTE_SIZE, Vote, parse_vote
from veil.onion.wallclock import wall_clock_ms

from ..config import AuthorityConfig, NodeConfig
from ..logging import PeerWarnings, log_event
from ..metrics import MetricsAccess, NodeMetrics
from ..peers import PeerPool

__all__ = [
    "AUTHORITY_INFO_FILE",
    "AUTHORITY_KEYS_FILE",
    "CONSENSUS_FILE",
    "DESCRIPTORS_FILE",
    "AuthorityState",
    "HeldConsensus",
    "Registration",
    "address_key",
    "peek_vote_epoch",
]

log = logging.getLogger("veil.authority")

AUTHORITY_KEYS_FILE = "authority_keys.json"
AUTHORITY_INFO_FILE = "authority.json"
DESCRIPTORS_FILE = "descriptors.cbor"
CONSENSUS_FILE = "consensus.cbor"

_PATH_LABELS = {
    p: p for p in ("/descriptor", "/consensus", "/vote", "/signature", "/info", "/metrics")
}


@dataclass(eq=False)
class Registration:
    """A registered node: its latest descriptor and what the checker found."""

    descriptor: NodeDescriptor
    raw: bytes
    live: bool = False
    last_ok_ms: int = 0
    #: When the check whose result is recorded began (a later one wins).
    checked_ms: int = 0
    reason: str = "not checked yet"
    #: Failed checks in a row (0 after a check that passed).
    failures: int = 0
    #: Who registered it, for ``max_per_source`` (:func:`veil.node.ratelimit.client_key`
    #: of the poster's address); None if no per-source limit applies: loaded from the
    #: saved registry, learnt from a peer's vote, or posted from an exempt network.
    source: str | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The address:port its descriptor claims (one identity per address:port)."""
        return address_key(self.descriptor)


def address_key(descriptor: NodeDescriptor) -> tuple[str, int]:
    """The address:port a descriptor claims, as the registry indexes it (a host name
    in lower case, so that two spellings of one name are one address)."""
    return descriptor.host.lower(), descriptor.port


@dataclass(eq=False)
class HeldConsensus:
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


class AuthorityState:
    """The state every job of an authority shares (see the module docstring)."""

    def __init__(
        self,
        *,
        keys: NodeKeys,
        network: NetworkFile,
        config: NodeConfig,
        data_dir: Path,
        clock: Callable[[], int] = wall_clock_ms,
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
        self.metrics_access = MetricsAccess(config.http.metrics_allow)
        # A peer authority that keeps serving a bad vote is logged once a minute, not
        # once a round, and counted in veil_peer_errors_total{cause="vote_refused"}.
        self.peer_warnings = PeerWarnings(count=self.metrics.count_peer_error)
        # Change the registry only through Registry._insert and Registry._remove: they
        # keep the two indexes below in step with it.
        self.registry: dict[bytes, Registration] = {}
        #: The node registered at each address:port (one identity per address:port).
        self.by_address: dict[tuple[str, int], bytes] = {}
        #: Registrations held per source (only those with a source).
        self.per_source: Counter[str] = Counter()
        self.votes: dict[int, bytes] = {}
        self.documents: dict[int, HeldConsensus] = {}
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
    def interval_ms(self) -> int:
        return self.config.interval_ms

    @property
    def threshold(self) -> int:
        return self.network.threshold

    @property
    def address(self) -> str:
        return format_hostport(self.host, self.port)

    def latest(self) -> HeldConsensus | None:
        """The document of the newest epoch held (whatever its signatures)."""
        return self.documents[max(self.documents)] if self.documents else None

    def latest_verified(self, before_epoch: int | None = None) -> HeldConsensus | None:
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

    # --- time -------------------------------------------------------------------------

    def _poll_s(self) -> float:
        return min(max(self.interval_ms / 20_000, 0.1), 2.0)

    async def _sleep_until(self, at_ms: int) -> None:
        while (left_ms := at_ms - self.clock()) > 0:
            await trio.sleep(left_ms / 1000)

    def _deadline(self, at_ms: int) -> float:
        """The trio deadline of the wall-clock time ``at_ms``."""
        return trio.current_time() + (at_ms - self.clock()) / 1000

    # --- asking the peers -------------------------------------------------------------

    async def _get(self, peer: Authority, path: str) -> bytes | None:
        """GET from a peer authority: the body of a 200, else None (logged at debug)."""
        assert self._pool is not None
        try:
            status, data = await self._pool.get(
                peer.host, peer.port, path, timeout=self.config.check_timeout
            )
        except (NetworkError, RateLimited) as exc:
            log_event(log, logging.DEBUG, "peer_unreachable", peer=peer.label, error=str(exc))
            return None
        if status != 200:
            log_event(log, logging.DEBUG, "peer_answered", peer=peer.label, status=status)
            return None
        return data

    async def _fetch_vote(self, peer: Authority, epoch: int | None) -> Vote | None:
        path = "/vote" if epoch is None else f"/vote?epoch={epoch}"
        data = await self._get(peer, path)
        if data is None:
            return None
        try:
            return await trio.to_thread.run_sync(self._parse_peer_vote, data, peer, epoch)
        except ProtocolError as exc:
            self.peer_warnings.warn(
                log, "vote_refused", peer.label, peer=peer.label, error=str(exc)
            )
            return None

    def _parse_peer_vote(self, data: bytes, peer: Authority, epoch: int | None) -> Vote:
        if epoch is None:  # "the latest": take the epoch it claims, check the rest
            epoch = peek_vote_epoch(data)
        return parse_vote(
            data,
            key=peer.key,
            epoch=epoch,
            interval_ms=self.interval_ms,
            swarm_size=self.config.swarm_size,
        )


def peek_vote_epoch(data: bytes) -> int:
    """The epoch a vote claims (checked again, with its signature, by parse_vote)."""
    outer = cbor_decode(data, max_size=MAX_VOTE_SIZE, max_depth=1)
    if not isinstance(outer, dict) or not isinstance(outer.get("body"), bytes):
        raise ProtocolError("not a vote")
    body = cbor_decode(outer["body"], max_size=MAX_VOTE_SIZE, max_depth=2)
    epoch = body.get("epoch") if isinstance(body, dict) else None
    if type(epoch) is not int or epoch < 0:
        raise ProtocolError("vote without an epoch")
    return epoch
