"""The node's view of the network, and the task that keeps it current.

Design note
-----------
A node started with ``[network] file`` set is a member of a network: directory
authorities (pinned in ``network.json``) sign a consensus of the nodes and of their
swarms, and the node must know that consensus to decide which accounts it stores, which
nodes are its swarm peers, and which next hops it relays to. Without the file the node
is *standalone*: a one-node network that holds every account (as before this module).

:class:`NetworkView` is what the rest of the node reads: the latest consensus this node
accepted, and questions about it (my swarm, the swarm of an account, is this account
mine, is this a listed relay). It is a plain object updated from one task, read from
any task; every read sees one whole consensus, never a mix. Other tasks follow changes
with :meth:`NetworkView.subscribe` (every new consensus, in order) or
:meth:`NetworkView.wait_for`.

:class:`DirectoryClient` is that one task:

* **Publishing.** It signs this node's descriptor (identity key, onion key, advertised
  address, version) and POSTs it to every authority; it makes a new one when half of
  ``descriptor_lifetime_ms`` has passed, and posts again to an authority that has not
  accepted the current one (backing off to a minute between attempts to an authority
  that does not answer). When a new consensus does not list this node, it posts again
  to every authority: the authority then checks the node at once instead of at its next
  round (it may have restarted and lost it, or missed a check).
* **Fetching.** While it holds no consensus, or the one it holds is no longer fresh, it
  asks the authorities for ``GET /consensus`` every ``retry_interval`` (in turn, starting
  with a different one each time, stopping at the first that gives a newer one); while
  the consensus is fresh it sleeps until its ``fresh_until`` (no newer one can exist
  before). Every document is checked with
  :func:`onion.directory.verify_consensus` against the pinned keys and the threshold,
  with the epoch held as ``min_epoch`` (no rollback). A refused document is logged with
  its error (at most once a minute per authority and kind of error) and ignored: the
  view keeps its last good consensus.
* **Persisting.** Each accepted document is written to ``DIR/consensus.cbor``; at start
  the saved one is verified again (signatures, threshold, times) and used if it still
  is valid, so a restarted node relays and answers at once; a stale one is discarded.

Errors and cancellation: :meth:`DirectoryClient.run` never returns and raises nothing
for what the network does (unreachable authorities, bad documents); only a local failure
(the data dir) escapes. Cancel it to stop it; a cancelled run leaves the view as it was.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path

import trio

from veil.onion.directory import (
    MAX_CONSENSUS_SIZE,
    Authority,
    Consensus,
    ConsensusNode,
    NetworkFile,
    Swarm,
    make_descriptor,
    verify_consensus,
)
from veil.onion.errors import NetworkError, NetworkFileError, NotFound, RateLimited, VeilError
from veil.onion.keys import AccountId, NodeKeys

from .config import ConfigError, NetworkConfig
from .keystore import write_file_atomic
from .logging import log_event
from .peers import PeerPool

__all__ = [
    "CONSENSUS_FILE",
    "DirectoryClient",
    "NetworkView",
    "advertised_address",
    "load_network_file",
]

log = logging.getLogger("veil.node.network_view")

CONSENSUS_FILE = "consensus.cbor"
#: Buffered consensuses per subscriber; one that falls further behind skips some.
SUBSCRIBER_BUFFER = 16
#: Longest wait between attempts to post to an authority that does not answer.
_MAX_BACKOFF_S = 60.0
#: The same refusal from the same authority is logged at most this often.
_LOG_EVERY_S = 60.0


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
        host, _, port = config.advertise.rpartition(":")
        host = host.strip("[]")
        return str(ipaddress.ip_address(host)), int(port)
    ip = ipaddress.ip_address(bound_host)
    if ip.is_unspecified:
        raise ConfigError(
            f"the node listens on {bound_host}, which is not an address others can reach: "
            'set [network] advertise = "HOST:PORT"'
        )
    return str(ip), bound_port


def _normal_ip(address: str) -> str | None:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


class NetworkView:
    """The network as this node knows it: the latest consensus it accepted.

    ``standalone`` (no ``[network] file``): every account is this node's, there is no
    consensus and no peer, every next hop is allowed. Otherwise, until the first
    consensus arrives (:attr:`ready` is False) the node knows no swarm: :meth:`is_mine`
    is False and :meth:`swarm_for` None, and a caller should answer ``unavailable``
    rather than ``wrong_swarm``.
    """

    def __init__(self, node_id: bytes, *, standalone: bool) -> None:
        self.node_id = node_id
        self.standalone = standalone
        self.consensus: Consensus | None = None
        self._relay_ips: frozenset[str] = frozenset()
        self._subscribers: list[trio.MemorySendChannel[Consensus]] = []
        self._changed = trio.Event()

    # --- state ------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True if standalone, or once a consensus is held."""
        return self.standalone or self.consensus is not None

    @property
    def epoch(self) -> int | None:
        return None if self.consensus is None else self.consensus.epoch

    def update(self, consensus: Consensus) -> bool:
        """Adopt ``consensus`` if it is newer than the one held (a verified one: this
        does not check signatures); True if adopted. Subscribers get it in order."""
        if self.standalone:
            raise RuntimeError("a standalone node has no consensus")
        if self.consensus is not None and consensus.epoch <= self.consensus.epoch:
            return False
        self.consensus = consensus
        ips = {_normal_ip(node.host) for node in consensus.nodes}
        self._relay_ips = frozenset(ip for ip in ips if ip is not None)
        for channel in list(self._subscribers):
            try:
                channel.send_nowait(consensus)
            except trio.WouldBlock:
                log_event(log, logging.WARNING, "subscriber_lagging", epoch=consensus.epoch)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.remove(channel)
        changed, self._changed = self._changed, trio.Event()
        changed.set()
        return True

    # --- questions --------------------------------------------------------------------

    def me(self) -> ConsensusNode | None:
        """This node's entry in the consensus, or None (standalone, none yet, not listed)."""
        return None if self.consensus is None else self.consensus.node(self.node_id)

    def my_swarm(self) -> Swarm | None:
        """This node's swarm, or None (standalone, no consensus yet, or not listed)."""
        me = self.me()
        if me is None:
            return None
        assert self.consensus is not None
        return self.consensus.swarms[me.swarm_id]

    def swarm_for(self, account: AccountId | str) -> Swarm | None:
        """The swarm that stores ``account`` (None if standalone, no consensus yet, or
        a consensus without nodes). :class:`~onion.errors.InvalidId` for a bad ID text."""
        if self.consensus is None:
            return None
        try:
            return self.consensus.swarm_of(account)
        except NotFound:
            return None

    def is_mine(self, account: AccountId | str) -> bool:
        """True if this node stores ``account``: always when standalone; otherwise when
        this node is listed and ``account`` maps to its swarm (False before the first
        consensus: check :attr:`ready` to tell "not yet" from "not mine")."""
        if self.standalone:
            return True
        me = self.me()
        if me is None:
            return False
        found = self.swarm_for(account)
        return found is not None and found.swarm_id == me.swarm_id

    def swarm_peers(self) -> list[ConsensusNode]:
        """The other members of this node's swarm (empty when it has none)."""
        found = self.my_swarm()
        if found is None:
            return []
        return [node for node in found.members if node.node_id != self.node_id]

    def node(self, node_id: bytes | str) -> ConsensusNode | None:
        """The listed node with this ID (bytes or hex), or None."""
        if self.consensus is None:
            return None
        return self.consensus.node(node_id)

    def next_hop_allowed(self, node_id: bytes, host: str, port: int) -> bool:
        """May a packet be relayed to this next hop? Standalone or before the first
        consensus: yes. Then only to a listed node at its listed address."""
        if self.consensus is None:
            return True
        node = self.consensus.node(node_id)
        if node is None or node.port != port:
            return False
        # Clients copy the listed host into their packets: the same string is the same
        # address, without parsing two addresses for every relayed packet.
        return node.host == host or _normal_ip(node.host) == _normal_ip(host)

    def is_relay_address(self, address: str) -> bool:
        """True if ``address`` (a connecting IP) is the host of a listed node: relays
        carry many clients' packets, so the per-address rate limit exempts them."""
        if not self._relay_ips:
            return False
        ip = _normal_ip(address)
        return ip is not None and ip in self._relay_ips

    # --- following changes ------------------------------------------------------------

    def subscribe(self) -> trio.MemoryReceiveChannel[Consensus]:
        """A channel that receives every consensus adopted from now on, in order.

        Buffered (:data:`SUBSCRIBER_BUFFER`); a subscriber that falls further behind
        misses the ones in between (logged) and can read :attr:`consensus` for the
        latest. Close the channel to unsubscribe.
        """
        send, receive = trio.open_memory_channel[Consensus](SUBSCRIBER_BUFFER)
        self._subscribers.append(send)
        return receive

    async def wait_for(self, min_epoch: int = 0) -> Consensus:
        """Wait until a consensus of epoch ``min_epoch`` or later is held; return it.
        Cancellation just ends the wait. Never returns when standalone."""
        while self.consensus is None or self.consensus.epoch < min_epoch:
            await self._changed.wait()
        return self.consensus


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
        self._next_try: dict[bytes, float] = {}
        self._failures: dict[bytes, int] = {}
        self._turn = 0
        self._logged: dict[tuple[bytes, str], float] = {}
        self._reposted_epoch = -1
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
            async with PeerPool(
                max_per_peer=2,
                max_waiters=4,
                connect_timeout=min(5.0, cfg.fetch_timeout),
                idle_timeout=15.0,
                max_response_bytes=MAX_CONSENSUS_SIZE + 4096,
            ) as pool:
                task_status.started()
                while True:
                    await self._publish(pool)
                    await self._fetch(pool)
                    await trio.sleep(self._delay())

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
        self.view.update(consensus)
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

    async def _publish(self, pool: PeerPool) -> None:
        descriptor = self._current_descriptor()
        now = trio.current_time()
        due = [
            a
            for a in self.network.authorities
            if self._accepted.get(a.key) != self._published_ms
            and self._next_try.get(a.key, 0.0) <= now
        ]
        if not due:
            return
        async with trio.open_nursery() as nursery:
            for authority in due:
                nursery.start_soon(self._post_descriptor, pool, authority, descriptor)

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
                authority=_name(authority),
                address=f"{self.host}:{self.port}",
            )
            return
        self._backoff(authority)
        text = body[:200].decode("utf-8", "replace").strip()
        self._log_once(authority, "descriptor_refused", f"HTTP {status}: {text}")

    def _backoff(self, authority: Authority) -> None:
        failures = self._failures.get(authority.key, 0) + 1
        self._failures[authority.key] = failures
        delay = min(self.config.retry_interval * 2 ** min(failures - 1, 10), _MAX_BACKOFF_S)
        self._next_try[authority.key] = trio.current_time() + delay

    # --- fetching --------------------------------------------------------------------

    def _needs_fetch(self) -> bool:
        held = self.view.consensus
        return held is None or not held.is_fresh(self.clock())

    async def _fetch(self, pool: PeerPool) -> None:
        if not self._needs_fetch():
            return
        authorities = self.network.authorities
        start = self._turn % len(authorities)
        self._turn += 1
        for authority in (*authorities[start:], *authorities[:start]):
            if await self._fetch_from(pool, authority):
                return

    async def _fetch_from(self, pool: PeerPool, authority: Authority) -> bool:
        """True if ``authority`` gave a consensus newer than the one held."""
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
        if not self.view.update(consensus):
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
        await self._save(data)
        if me is None and consensus.epoch > self._reposted_epoch:
            # Not listed: have every authority take (and check) our descriptor again.
            self._reposted_epoch = consensus.epoch
            self._accepted.clear()
        return True

    async def _save(self, data: bytes) -> None:
        path = self.consensus_path
        try:
            await trio.to_thread.run_sync(write_file_atomic, path, data, 0o644)
        except OSError as exc:
            log_event(log, logging.WARNING, "consensus_not_saved", error=str(exc))

    def _delay(self) -> float:
        """Seconds until the next round: a retry soon while something is missing,
        else until the held consensus stops being fresh (or the descriptor is due)."""
        cfg = self.config
        now_ms = self.clock()
        renew_at = self._published_ms + cfg.descriptor_lifetime_ms // 2
        until_renew = max(0.0, (renew_at - now_ms) / 1000)
        held = self.view.consensus
        if held is None or not held.is_fresh(now_ms):
            return min(cfg.retry_interval, until_renew) or 0.05
        pending = [
            self._next_try.get(a.key, 0.0) - trio.current_time()
            for a in self.network.authorities
            if self._accepted.get(a.key) != self._published_ms
        ]
        until_fresh_end = (held.fresh_until_ms - now_ms) / 1000
        # A little jitter so that all the nodes do not ask at the same millisecond.
        jitter = random.uniform(0, min(0.5, (held.fresh_until_ms - held.valid_after_ms) / 10_000))
        delay = min([until_fresh_end + jitter, until_renew, *[max(p, 0.05) for p in pending]])
        return max(delay, 0.05)

    def _log_once(
        self, authority: Authority, event: str, error: str, level: int = logging.WARNING
    ) -> None:
        key = (authority.key, f"{event}:{error.split(':', 1)[0]}")
        now = time.monotonic()
        if now - self._logged.get(key, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._logged[key] = now
            log_event(log, level, event, authority=_name(authority), error=error)


def _name(authority: Authority) -> str:
    return f"{authority.key_hex[:16]}@{authority.host}:{authority.port}"
