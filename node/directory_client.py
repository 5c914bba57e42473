"""The directory client: the task that publishes this node's descriptor and keeps its
:class:`~veil.node.network_view.NetworkView` current.

Design note
-----------
A node started with ``[network] file`` set runs one :class:`DirectoryClient` (the file is
read by :func:`load_network_file`, before anything else at start, so that a typo in it
leaves no new key behind):

* **Publishing.** It signs this node's descriptor (identity key, onion key, advertised
  address, version) and POSTs it to every authority, each from a task of its own; it
  makes a new one when half of ``descriptor_lifetime_ms`` has passed, and posts again
  to an authority that has not accepted the current one (backing off to a minute
  between attempts to an authority that does not answer). When a new consensus does not
  list this node, it posts again to every authority: the authority then checks the node
  at once instead of at its next round (it may have restarted and lost it, or missed a
  check). A task per authority, because a post waits up to ``fetch_timeout`` for an
  authority that does not answer (a cut cable sends no reset): in one loop with the
  fetches, that wait held back every fetch behind it.
* **Fetching.** While it holds no consensus, or the one it holds is no longer fresh, it
  asks the authorities for ``GET /consensus`` every ``retry_interval``; while the
  consensus is fresh it sleeps until its ``fresh_until`` (no newer one can exist
  before). A round of asking is a race with a stagger, as Tor's directory fetches keep
  several attempts in flight (``ClientBootstrapConsensusMaxInProgressTries``, 3) and as
  Happy Eyeballs (RFC 8305) staggers connection attempts: it asks one authority
  (starting with a different one each round), and the next one as soon as that one has
  answered without a newer consensus, or when it has not answered within the stagger
  (``retry_interval``, at most 1 s); a round has at most :data:`_MAX_IN_FLIGHT` of its
  requests in flight, and there is at most one per authority. The first document that
  verifies and is newer than the one held is adopted, and the requests still in flight
  are cancelled. An authority whose request outlives its round (one that accepts
  connections and never answers) is not asked again until that request ends
  (``fetch_timeout``), and a newer document it brings late is still adopted. Asked one
  after another instead, an authority that does not answer cost ``fetch_timeout`` (10 s)
  in every round it came first, and the node served an old consensus meanwhile (found
  by the network-namespace test, tests/test_netns.py, which pulls an authority's cable).
* **Verifying.** Every document is checked with
  :func:`veil.onion.directory.verify_consensus` against the pinned keys and the threshold,
  with the epoch held as ``min_epoch`` (no rollback): an authority that answers first
  with a forged, rolled-back or below-threshold document wins nothing, and the race goes
  on. A refused document is logged with its error (at most once a minute per authority
  and kind of error) and ignored: the view keeps its last good consensus.
* **Persisting.** Each accepted document is written to ``DIR/consensus.cbor`` (one write
  at a time, never over a newer one: two requests of a race may both adopt, in turn,
  when the later brings a newer epoch); at start the saved one is verified again
  (signatures, threshold, times) and used if it still is valid, so a restarted node
  relays and answers at once; a stale one is discarded.
* **Serving.** The view keeps the verified document's exact bytes (all the signatures
  the authority served) with the consensus, and the node serves them to clients at
  ``GET /consensus`` (:mod:`veil.node.consensus_route`): clients fetch from their guards,
  not from the authorities. Nodes themselves still fetch from the authorities, a little
  after ``fresh_until`` (clients wait up to a quarter interval more), so a guard
  normally has the next consensus before its clients ask.

Structure: :meth:`DirectoryClient.run` owns one nursery: a publisher task per
authority, the fetch loop, and the fetch requests (each in a cancel scope of its own,
so that a win cancels the others). Errors and cancellation: it never returns and raises
nothing for what the network does (unreachable authorities, bad documents); only a local
failure (the data dir) escapes. Cancel it (or :meth:`~DirectoryClient.stop`) to stop
every task of it; a cancelled run leaves the view as it was, and a save to the data dir
that has begun completes in its thread.

Its log lines keep the logger name ``veil.node.network_view`` that they had when this
task lived in that module: operators' log filters select on it.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path

import trio

from veil.onion.backoff import Backoff
from veil.onion.directory import (
    MAX_CONSENSUS_SIZE,
    Authority,
    Consensus,
    NetworkFile,
    make_descriptor,
    verify_consensus,
)
from veil.onion.errors import NetworkError, NetworkFileError, RateLimited, VeilError
from veil.onion.hostport import parse_hostport
from veil.onion.keys import NodeKeys

from .config import NetworkConfig
from .errors import ConfigError
from .keystore import write_file_atomic
from .logging import log_event
from .network_view import NetworkView
from .peers import PeerPool

__all__ = [
    "CONSENSUS_FILE",
    "DirectoryClient",
    "advertised_address",
    "load_network_file",
]

log = logging.getLogger("veil.node.network_view")

CONSENSUS_FILE = "consensus.cbor"
#: Longest wait between attempts to post to an authority that does not answer.
_MAX_BACKOFF_S = 60.0
#: The back-off stops doubling after this many doublings (below _MAX_BACKOFF_S only
#: when ``retry_interval`` is under 60 ms).
_MAX_DOUBLINGS = 10
#: The same refusal from the same authority is logged at most this often.
_LOG_EVERY_S = 60.0
#: A round's fetch requests in flight at once (Tor's
#: ClientBootstrapConsensusMaxInProgressTries).
_MAX_IN_FLIGHT = 3
#: The longest stagger between two authorities of a round (it is ``retry_interval``
#: below this): a consensus is a few hundred kilobytes at most, which an authority that
#: works sends well within a second.
_MAX_STAGGER_S = 1.0
#: A publisher that waits for its descriptor's renewal looks at the node's clock at
#: least this often (the clock may move: NTP, or a test's clock control).
_MAX_PUBLISH_SLEEP_S = 10.0


def load_network_file(path: str | Path) -> NetworkFile:
    """Read and parse ``network.json``; :class:`NetworkFileError` saying what is wrong."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            raw = f.read(64 * 1024 + 1)
    except OSError as exc:
        raise NetworkFileError(f"cannot read network file {p}: {exc.strerror or exc}") from None
    try:
        return NetworkFile.from_json(raw)
    except NetworkFileError as exc:
        raise NetworkFileError(f"{p}: {exc}") from None


def advertised_address(config: NetworkConfig, bound_host: str, bound_port: int) -> tuple[str, int]:
    """The address this node puts in its descriptor: ``[network] advertise``, or the
    bound one. :class:`ConfigError` if that is not an address others can reach (a node
    listening on ``0.0.0.0`` must say where it is reached)."""
    if config.advertise:
        return parse_hostport(config.advertise)  # checked when the config was read
    ip = ipaddress.ip_address(bound_host)
    if ip.is_unspecified:
        raise ConfigError(
            f"the node listens on {bound_host}, which is not an address others can reach: "
            'set [network] advertise = "HOST:PORT"'
        )
    return str(ip), bound_port


class DirectoryClient:
    """Publishes this node's descriptor and keeps ``view`` current (module docstring)."""

    def __init__(
        self,
        view: NetworkView,
        *,
        keys: NodeKeys,
        network: NetworkFile,
        config: NetworkConfig,
        data_dir: Path,
        address: tuple[str, int],
        version: str,
        clock: Callable[[], int],
    ) -> None:
        self.view = view
        self.keys = keys
        self.network = network
        self.config = config
        self.data_dir = data_dir
        self.host, self.port = address
        self.version = version
        self.clock = clock
        self._descriptor = b""
        self._published_ms = 0
        # authority key -> the published_ms of our descriptor it accepted
        self._accepted: dict[bytes, int] = {}
        # authority key -> when (trio time, s) to post to it again
        self._next_try: dict[bytes, float] = {}
        self._failures: dict[bytes, int] = {}
        # retry_interval, doubling per failure at most _MAX_DOUBLINGS times, capped at
        # _MAX_BACKOFF_S (and never below it for a retry_interval above it).
        max_s = min(_MAX_BACKOFF_S, config.retry_interval * 2**_MAX_DOUBLINGS)
        self._backoff_policy = Backoff(first_s=min(config.retry_interval, max_s), max_s=max_s)
        self._turn = 0
        self._logged: dict[tuple[bytes, str], float] = {}
        self._reposted_epoch = -1
        #: Set (and replaced) to wake the publishers: every authority is to get the
        #: descriptor again (a consensus that does not list us).
        self._republish = trio.Event()
        #: Authority key -> the cancel scope of its fetch request in flight.
        self._asking: dict[bytes, trio.CancelScope] = {}
        self._save_lock = trio.Lock()
        self._saved_epoch = -1
        self._scope = trio.CancelScope()

    @property
    def consensus_path(self) -> Path:
        return self.data_dir / CONSENSUS_FILE

    def stop(self) -> None:
        """Make :meth:`run` return (at once, from wherever it waits)."""
        self._scope.cancel()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load the saved consensus, report started, then publish and fetch until
        :meth:`stop` (or cancellation). See the module docstring for errors.
        """
        self.load_saved()
        cfg = self.config
        with self._scope:
            async with (
                PeerPool(
                    max_per_peer=2,
                    max_waiters=4,
                    connect_timeout=min(5.0, cfg.fetch_timeout),
                    idle_timeout=15.0,
                    max_response_bytes=MAX_CONSENSUS_SIZE + 4096,
                ) as pool,
                trio.open_nursery() as nursery,
            ):
                for authority in self.network.authorities:
                    nursery.start_soon(self._publisher, pool, authority)
                task_status.started()
                while True:
                    await self._fetch(pool, nursery)
                    await trio.sleep(self._delay_s())

    # --- the saved consensus --------------------------------------------------------------

    def load_saved(self) -> Consensus | None:
        """Adopt ``DIR/consensus.cbor`` if it still verifies and is valid now."""
        path = self.consensus_path
        try:
            with path.open("rb") as f:
                data = f.read(MAX_CONSENSUS_SIZE + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log_event(log, logging.WARNING, "saved_consensus_unreadable", error=str(exc))
            return None
        try:
            consensus = self._verify(data)
        except VeilError as exc:
            log_event(log, logging.INFO, "saved_consensus_discarded", error=str(exc))
            return None
        self.view.update(consensus, data)
        self._saved_epoch = consensus.epoch
        log_event(log, logging.INFO, "saved_consensus_loaded", epoch=consensus.epoch)
        return consensus

    def _verify(self, data: bytes) -> Consensus:
        held = self.view.consensus
        return verify_consensus(
            data,
            pinned=self.network.pinned_keys,
            threshold=self.network.threshold,
            now_ms=self.clock(),
            min_epoch=0 if held is None else held.epoch,
        )

    # --- publishing ------------------------------------------------------------------

    def _current_descriptor(self) -> bytes:
        now = self.clock()
        lifetime = self.config.descriptor_lifetime_ms
        if not self._descriptor or now >= self._published_ms + lifetime // 2:
            self._descriptor = make_descriptor(
                self.keys, self.host, self.port, self.version, now, lifetime
            )
            self._published_ms = now
            log_event(log, logging.DEBUG, "descriptor_made", published_ms=now)
        return self._descriptor

    async def _publisher(self, pool: PeerPool, authority: Authority) -> None:
        """Post the current descriptor to ``authority`` whenever it has not accepted it
        (after the back-off of its failures), forever; see the module note."""
        key = authority.key
        while True:
            descriptor = self._current_descriptor()
            now = trio.current_time()
            if self._accepted.get(key) != self._published_ms:
                wait_s = self._next_try.get(key, 0.0) - now
                if wait_s <= 0:
                    await self._post_descriptor(pool, authority, descriptor)
                    continue
            else:
                renew_at_ms = self._published_ms + self.config.descriptor_lifetime_ms // 2
                wait_s = (renew_at_ms - self.clock()) / 1000
            wake = self._republish
            with trio.move_on_after(min(max(wait_s, 0.05), _MAX_PUBLISH_SLEEP_S)):
                await wake.wait()

    async def _post_descriptor(self, pool: PeerPool, authority: Authority, data: bytes) -> None:
        published = self._published_ms
        try:
            status, body = await pool.post(
                authority.host,
                authority.port,
                "/descriptor",
                data,
                timeout=self.config.fetch_timeout,
            )
        except (NetworkError, RateLimited) as exc:
            self._backoff(authority)
            self._log_once(authority, "descriptor_post_failed", str(exc))
            return
        if status == 200:
            self._accepted[authority.key] = published
            self._failures.pop(authority.key, None)
            self._next_try.pop(authority.key, None)
            log_event(
                log,
                logging.INFO,
                "descriptor_published",
                authority=authority.label,
                address=f"{self.host}:{self.port}",
            )
            return
        self._backoff(authority)
        text = body[:200].decode("utf-8", "replace").strip()
        self._log_once(authority, "descriptor_refused", f"HTTP {status}: {text}")

    def _backoff(self, authority: Authority) -> None:
        failures = self._failures.get(authority.key, 0) + 1
        self._failures[authority.key] = failures
        delay_s = self._backoff_policy.delay_s(failures)
        self._next_try[authority.key] = trio.current_time() + delay_s

    # --- fetching --------------------------------------------------------------------

    def _needs_fetch(self) -> bool:
        held = self.view.consensus
        return held is None or not held.is_fresh(self.clock())

    async def _fetch(self, pool: PeerPool, nursery: trio.Nursery) -> None:
        """One round of asking: the authorities in turn, staggered, until one gives a
        newer consensus (module note). Returns once every authority is asked (or still
        being asked) and the last has answered or had its stagger; requests that are
        still in flight go on in ``nursery``."""
        if not self._needs_fetch():
            return
        authorities = self.network.authorities
        start = self._turn % len(authorities)
        self._turn += 1
        stagger_s = min(self.config.retry_interval, _MAX_STAGGER_S)
        held = self.view.epoch
        launched: list[bytes] = []
        for authority in (*authorities[start:], *authorities[:start]):
            if self.view.epoch != held:
                return  # a request of this round or an earlier one brought a newer one
            if authority.key in self._asking:
                continue  # its request of an earlier round has not ended yet
            if sum(key in self._asking for key in launched) >= _MAX_IN_FLIGHT:
                return  # the next round asks the others (these are not asked again)
            launched.append(authority.key)
            scope = self._asking[authority.key] = trio.CancelScope()
            ended = trio.Event()
            nursery.start_soon(self._ask, pool, authority, scope, ended)
            with trio.move_on_after(stagger_s):
                await ended.wait()

    async def _ask(
        self, pool: PeerPool, authority: Authority, scope: trio.CancelScope, ended: trio.Event
    ) -> None:
        """One fetch request of a round, in ``scope`` (cancelled when another wins)."""
        try:
            with scope:
                if await self._fetch_from(pool, authority):
                    for other, asking in list(self._asking.items()):
                        if other != authority.key:
                            asking.cancel()
        finally:
            if self._asking.get(authority.key) is scope:
                del self._asking[authority.key]
            ended.set()

    async def _fetch_from(self, pool: PeerPool, authority: Authority) -> bool:
        """True if ``authority`` gave a consensus newer than the one held (adopted)."""
        try:
            status, data = await pool.get(
                authority.host, authority.port, "/consensus", timeout=self.config.fetch_timeout
            )
        except (NetworkError, RateLimited) as exc:
            self._log_once(authority, "consensus_fetch_failed", str(exc), logging.INFO)
            return False
        if status != 200:
            # 503: that authority has no consensus yet (it may have just started).
            return False
        try:
            consensus = self._verify(data)
        except VeilError as exc:
            self._log_once(authority, "consensus_refused", f"{type(exc).__name__}: {exc}")
            return False
        if not self.view.update(consensus, data):
            return False
        me = self.view.me()
        log_event(
            log,
            logging.INFO,
            "consensus_adopted",
            epoch=consensus.epoch,
            nodes=len(consensus.nodes),
            swarm="none" if me is None else me.swarm_id,
        )
        if me is None and consensus.epoch > self._reposted_epoch:
            # Not listed: have every authority take (and check) our descriptor again.
            self._reposted_epoch = consensus.epoch
            self._accepted.clear()
            self._republish.set()
            self._republish = trio.Event()
        with trio.CancelScope(shield=True):  # a win of another request must not cut it
            await self._save(consensus.epoch, data)
        return True

    async def _save(self, epoch: int, data: bytes) -> None:
        """Write ``data`` (of ``epoch``) to the data dir, unless a newer one was."""
        path = self.consensus_path
        async with self._save_lock:
            if epoch <= self._saved_epoch:
                return
            try:
                await trio.to_thread.run_sync(write_file_atomic, path, data, 0o644)
            except OSError as exc:
                log_event(log, logging.WARNING, "consensus_not_saved", error=str(exc))
                return
            self._saved_epoch = epoch

    def _delay_s(self) -> float:
        """Seconds until the next round of asking: ``retry_interval`` while no fresh
        consensus is held, else until the held one stops being fresh."""
        now_ms = self.clock()
        held = self.view.consensus
        if held is None or not held.is_fresh(now_ms):
            return self.config.retry_interval
        until_fresh_end_s = (held.fresh_until_ms - now_ms) / 1000
        # A little jitter so that all the nodes do not ask at the same millisecond.
        jitter_s = random.uniform(0, min(0.5, (held.fresh_until_ms - held.valid_after_ms) / 10_000))
        return max(until_fresh_end_s + jitter_s, 0.05)

    def _log_once(
        self, authority: Authority, event: str, error: str, level: int = logging.WARNING
    ) -> None:
        key = (authority.key, f"{event}:{error.split(':', 1)[0]}")
        now = time.monotonic()
        if now - self._logged.get(key, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._logged[key] = now
            log_event(log, level, event, authority=authority.label, error=error)
