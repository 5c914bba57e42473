"""The consensus as a client holds it: fetched, verified, cached, refreshed.

Design note
-----------
A client trusts nothing about the network but the authorities' keys pinned in its
network file (:class:`veil.onion.directory.NetworkFile`). :class:`Directory` gets the
consensus from the authorities (``GET /consensus``, in random order, the first that
verifies wins: every authority serves the same document with all the signatures),
verifies it with :func:`veil.onion.directory.verify_consensus` against the pinned keys and
threshold, and keeps it in the state file so that a restarted client starts at once.
The cached bytes are verified again when loaded (a local file is not trusted more than
the network), and never replace a newer epoch (no rollback, across restarts too).

Refresh (Tor's rule): a consensus is *fresh* until ``fresh_until``, when the authorities
publish the next one, and *usable* until ``valid_until``. :meth:`Directory.run` fetches
a little after ``fresh_until`` (a random delay of up to a quarter of the interval, so
that clients do not all ask at the same instant), retries with a back-off while the
authorities have nothing newer or cannot be reached, and keeps using the old document
meanwhile; :meth:`Directory.request_refresh` (a node said our view is stale) asks
for an early fetch.

Time. Validity is judged on the network's clock
(:class:`veil.client.network_clock.NetworkClock`), not the local one. A client whose
clock is far off cannot verify any consensus at first (a devnet's lives for seconds);
:meth:`Directory.fetch` then accepts the document *tentatively*, judged at its own
``valid_after`` (the signatures are still checked in full), so that the client can ask
the network for its time through that consensus's nodes and then verify again
(:meth:`Directory.confirm`). What this trusts: that a document with the authorities'
signatures names nodes that tell the time; an attacker who replays an old one gets, at
worst, a client that asks old nodes for the time and, if those answer, a consensus that
fails the second check. Tor has the same bootstrap problem and also leans on the
network's answers (its ``Date`` headers).

Errors: :class:`~veil.client.errors.AuthorityUnreachable` (no authority could be
reached, or none has a consensus yet: ``unavailable``), and the directory's own
:class:`~veil.onion.errors.ConsensusError` subclasses for a document that fails to verify.

Cancellation: :meth:`Directory.run` stops when cancelled; a save to the state file that
has started completes in its thread (:mod:`veil.client.state`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import trio

from veil.client.errors import AuthorityUnreachable, PeerRefused
from veil.client.network_clock import NetworkClock
from veil.client.state import ClientState
from veil.client.transport import Transport
from veil.onion.directory import (
    MAX_CONSENSUS_SIZE,
    Authority,
    Consensus,
    NetworkFile,
    parse_consensus_body,
    split_consensus,
    verify_consensus,
)
from veil.onion.errors import (
    ConsensusError,
    ConsensusNotYetValid,
    NetworkError,
    ProtocolError,
    StaleConsensus,
    VeilError,
)

__all__ = ["Directory", "DirectoryPolicy"]

#: A consensus document plus its signature list (the largest onion.directory accepts).
_MAX_DOCUMENT_BYTES = MAX_CONSENSUS_SIZE + 64 * 1024


@dataclass(frozen=True, slots=True)
class DirectoryPolicy:
    """Timeouts and back-offs of consensus fetches (seconds)."""

    #: One fetch from one authority.
    timeout_s: float = 10.0
    #: First wait after a failed refresh; doubled up to ``max_backoff_s``.
    backoff_s: float = 0.5
    max_backoff_s: float = 60.0
    #: Shortest wait between two refreshes (a devnet's interval is a second).
    min_wait_s: float = 0.25


class Directory:
    """The client's consensus; see the module note."""

    def __init__(
        self,
        network: NetworkFile,
        state: ClientState,
        transport: Transport,
        clock: NetworkClock,
        *,
        policy: DirectoryPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.network = network
        self.state = state
        self.transport = transport
        self.clock = clock
        self.policy = policy or DirectoryPolicy()
        self.rng = rng or random.SystemRandom()
        self.current: Consensus | None = None
        self._raw: bytes | None = None
        #: Set when the current consensus was accepted at its own time, not ours.
        self.tentative = False
        self._listeners: list[Callable[[Consensus], None]] = []
        self._wake = trio.Event()
        self.fetches = 0
        self.last_error: str | None = None

    def on_change(self, listener: Callable[[Consensus], None]) -> None:
        """Call ``listener(consensus)`` whenever a newer consensus is installed."""
        self._listeners.append(listener)

    @property
    def min_epoch(self) -> int:
        return self.current.epoch if self.current is not None else 0

    # --- verifying -------------------------------------------------------------------------

    def verify(self, raw: bytes, *, tentative_ok: bool = False) -> tuple[Consensus, bool]:
        """Verify ``raw`` against the pinned keys on the network's clock.

        With ``tentative_ok``, a document refused only for its times (expired or not yet
        valid by our clock) is accepted at its own ``valid_after`` instead, and the
        result's second item is True (see the module note). The epoch is not compared
        with the current one here (:meth:`install` refuses an older one). Raises what
        :func:`~veil.onion.directory.verify_consensus` raises.
        """
        pinned, threshold = self.network.pinned_keys, self.network.threshold
        try:
            consensus = verify_consensus(
                raw, pinned=pinned, threshold=threshold, now_ms=self.clock.now()
            )
            return consensus, False
        except (StaleConsensus, ConsensusNotYetValid) as exc:
            if not tentative_ok:
                raise
            body, _ = split_consensus(raw)
            claimed = parse_consensus_body(body)
            try:
                consensus = verify_consensus(
                    raw, pinned=pinned, threshold=threshold, now_ms=claimed.valid_after_ms
                )
            except ConsensusError:
                raise exc from None
            return consensus, True

    def install(self, consensus: Consensus, raw: bytes, *, tentative: bool = False) -> bool:
        """Make ``consensus`` current if it is newer (or the first); True if it was."""
        current = self.current
        confirming = (
            current is not None
            and self.tentative
            and not tentative
            and consensus.epoch == current.epoch
        )
        if current is not None and consensus.epoch <= current.epoch and not confirming:
            return False
        self.current, self._raw, self.tentative = consensus, raw, tentative
        for listener in self._listeners:
            listener(consensus)
        return True

    async def confirm(self) -> Consensus:
        """Verify the tentative consensus again, now on the measured clock, and keep it
        (saved to the state file); raises the directory's error if it still fails."""
        assert self._raw is not None
        consensus, _ = self.verify(self._raw)
        self.tentative = False
        await self._save(consensus, self._raw)
        return consensus

    # --- the cache -------------------------------------------------------------------------

    async def load_cached(self) -> Consensus | None:
        """Install the consensus saved by an earlier run if it still verifies (on our
        clock); None if there is none or it does not (it is then ignored)."""
        cached = await trio.to_thread.run_sync(self.state.load_consensus)
        if cached is None:
            return None
        try:
            consensus, _ = self.verify(cached.raw)
        except VeilError:
            return None
        self.install(consensus, cached.raw)
        return consensus

    async def _save(self, consensus: Consensus, raw: bytes) -> None:
        await trio.to_thread.run_sync(
            self.state.save_consensus, raw, consensus.epoch, int(self.clock.local())
        )

    # --- fetching --------------------------------------------------------------------------

    async def fetch(self, *, tentative_ok: bool = False) -> Consensus:
        """Fetch, verify, install and save the consensus from the first authority that
        serves one that verifies (in random order); returns the consensus now current
        (which may be the one already held, if no authority has a newer one).

        Raises :class:`AuthorityUnreachable` if none answered with a document, or the
        last verification error if every document failed.
        """
        self.fetches += 1
        authorities = list(self.network.authorities)
        self.rng.shuffle(authorities)
        problems: list[str] = []
        refusal: VeilError | None = None
        for authority in authorities:
            where = f"{authority.host}:{authority.port}"
            try:
                raw = await self._get(authority)
            except PeerRefused as exc:
                problems.append(
                    f"{where} has no consensus yet" if exc.code == 503 else f"{where}: {exc}"
                )
                continue
            except NetworkError as exc:
                problems.append(str(exc))  # it names the authority's address
                continue
            except ProtocolError as exc:
                problems.append(f"{where}: {exc}")
                continue
            try:
                consensus, tentative = self.verify(raw, tentative_ok=tentative_ok)
            except (ConsensusError, ProtocolError) as exc:
                refusal = exc
                problems.append(f"{where}: {exc}")
                continue
            if not self.install(consensus, raw, tentative=tentative):
                # Nothing newer there (not published yet, or an authority that lags).
                assert self.current is not None
                self.last_error = None
                return self.current
            if not tentative:
                await self._save(consensus, raw)
            self.last_error = None
            return consensus
        self.last_error = "; ".join(problems)
        if refusal is not None:
            raise type(refusal)(f"no usable consensus: {self.last_error}")
        raise AuthorityUnreachable(
            f"cannot get the consensus from any directory authority ({self.last_error})"
        )

    async def _get(self, authority: Authority) -> bytes:
        return await self.transport.get(
            authority.host,
            authority.port,
            "/consensus",
            timeout_s=self.policy.timeout_s,
            max_bytes=_MAX_DOCUMENT_BYTES,
        )

    # --- refreshing --------------------------------------------------------------------------

    def request_refresh(self) -> None:
        """Ask :meth:`run` for a fetch now (a node said our consensus is behind)."""
        self._wake.set()

    def _next_wait(self) -> float:
        """Seconds until the next fetch is due: a random moment in the first quarter of
        the interval after ``fresh_until`` (at once if that is past)."""
        consensus = self.current
        if consensus is None:
            return 0.0
        interval = max(consensus.fresh_until_ms - consensus.valid_after_ms, 1)
        due = consensus.fresh_until_ms + self.rng.uniform(0, interval / 4)
        return max((due - self.clock.now()) / 1000, self.policy.min_wait_s)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the consensus fresh until cancelled (see the module note). Never raises
        for a failed fetch: the old consensus stays in use and the error is kept in
        :attr:`last_error`."""
        task_status.started()
        # Not veil.onion.backoff.Backoff: the wait's cap here depends on the consensus
        # held (it must refresh before it expires, _until_stale), not on a fixed policy.
        backoff = self.policy.backoff_s
        while True:
            with trio.move_on_after(self._next_wait()):
                await self._wake.wait()
            self._wake = trio.Event()
            before = self.min_epoch
            try:
                await self.fetch()
            except VeilError as exc:
                self.last_error = str(exc)
                await trio.sleep(backoff * (0.5 + self.rng.random()))
                backoff = min(backoff * 2, self.policy.max_backoff_s)
                continue
            if self.min_epoch == before:
                # Not published yet (or a refresh asked early): ask again soon.
                await trio.sleep(backoff * (0.5 + self.rng.random()))
                backoff = min(backoff * 2, self._until_stale())
            else:
                backoff = self.policy.backoff_s

    def _until_stale(self) -> float:
        """The longest back-off that still refreshes before the consensus expires."""
        consensus = self.current
        if consensus is None:
            return self.policy.max_backoff_s
        left = (consensus.valid_until_ms - self.clock.now()) / 1000 / 4
        return max(self.policy.backoff_s, min(self.policy.max_backoff_s, left))
