"""The consensus as a client holds it: fetched, verified, cached, refreshed.

Design note
-----------
A client trusts nothing about the network but the authorities' keys pinned in its
network file (:class:`veil.onion.directory.NetworkFile`). Every document, wherever it
came from, is verified with :func:`veil.onion.directory.verify_consensus` against the
pinned keys and threshold, and kept in the state file so that a restarted client starts
at once. The cached bytes are verified again when loaded (a local file is not trusted
more than the network), and never replace a newer epoch (no rollback, across restarts
too).

Where it comes from (issue #11, item 4). An authority that serves a client learns the
client's address and when it comes back; if every client asked the authorities, they
would see them all. So, as Tor moved to directory guards, a client that holds a
*usable* consensus (verified, not tentative, before its ``valid_until``) fetches the next
one from the nodes that see its address anyway, its guards (``GET /consensus?after=E``
on a node, node/consensus_route.py: the authorities' signed document byte for byte, or
304 when the node has nothing newer than epoch ``E``). In order, within one
:meth:`Directory.fetch` (a staggered race, below):

1. its guards (:meth:`Directory.use_guards`; :class:`veil.client.paths.PathSelector`
   keeps two), in their order;
2. a few other listed nodes (:attr:`DirectoryPolicy.other_nodes`, the same ones all
   run long: ranked by a keyed hash with a secret of the run), if every guard failed
   (unreachable, refusing, serving what does not verify), or once ``fresh_until`` is
   well past (:attr:`DirectoryPolicy.others_after` of the way to ``valid_until``) and
   the guards still have nothing newer;
3. the authorities, in random order, only as the last resort: when no usable consensus
   is held (first start, a tentative one), or when it is about to become unusable
   (:attr:`DirectoryPolicy.authorities_after`) and no node had a newer one.

The race (:mod:`veil.client.staggered_race`). Asked one after another, a source that
holds its sockets and answers nothing (a guard frozen or cut off: no reset) cost the
fetch's timeout (10 s) before the next was asked, and delayed by as much every
consensus the client learnt, the one that drops a lost node included (which ends the
requests in flight through that node, client/onion_client.py). So, as the nodes fetch
from the authorities (node/directory_client.py), the sources above are asked in their
order with a stagger: the next one as soon as the last has answered without a newer
consensus (304, an old epoch, a refusal), or when it has not answered within
:attr:`DirectoryPolicy.stagger_s`; at most :attr:`DirectoryPolicy.max_in_flight`
requests at once, one per source. The first document that verifies and is newer wins
and the other requests are cancelled; a forged, rolled-back or below-threshold answer
wins nothing and the race goes on. The rules of the list still hold: the other nodes
are asked only once every guard has failed or been silent for its stagger (or they have
had long enough), the authorities only once every node asked has answered or been
silent for its stagger, and an authority with nothing newer ends the asking of
authorities. Measured (tests/test_silent_loss_consensus.py, a devnet whose client's
first guard is SIGSTOPped): each epoch reached the client up to 10.1 s after the
authority served it one after another, at most about 2 s with the race.

A client restarted after its cached consensus expired (a consensus lives three
intervals: minutes) would otherwise go to the authorities at every start. As Tor uses a
"reasonably live" consensus (expired less than a day ago) to find its directory guards,
:meth:`Directory.load_cached` keeps such a document (signatures verified, not
installed), and the first fetch asks the guards kept from the last run at the addresses
it lists, for a newer one verified on our clock; only if none gives one, the
authorities.

A node cannot make the client accept anything the authorities did not sign: a forged,
below-threshold, expired, oversized (refused by the transport past the size limit) or
garbage document is refused exactly as one from an authority would be, an older epoch
is "nothing newer", and the client asks the next source. What a hostile guard can do is
withhold the consensus (or serve an old one) for a while: until the client asks other
nodes, half-way to ``valid_until``. Nodes fetch from the authorities a little after
``fresh_until``, before their clients (below), so guards normally have it.

Refresh (Tor's rule): a consensus is *fresh* until ``fresh_until``, when the authorities
publish the next one, and *usable* until ``valid_until``. :meth:`Directory.run` fetches
a little after ``fresh_until`` (a random delay of up to a quarter of the interval, so
that clients do not all ask at the same instant), retries with a back-off (short enough
to refresh before ``valid_until``) while no source has anything newer or none can be
reached, and keeps using the old document meanwhile; :meth:`Directory.request_refresh`
(a node said our view is stale) asks for an early fetch.

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
network's answers (its ``Date`` headers). A tentative consensus is not usable for the
choice of sources: such a client asks the authorities.

Errors: :class:`~veil.client.errors.AuthorityUnreachable` (the authorities had to be
asked and none could be reached, or none has a consensus yet: ``unavailable``), and the
directory's own :class:`~veil.onion.errors.ConsensusError` subclasses for a document
that fails to verify. While the held consensus is usable and not near its end, a fetch
where no node had a newer one raises nothing: it returns the held consensus and says
what failed in :attr:`Directory.last_error`.

Cancellation: :meth:`Directory.run` stops when cancelled, and a cancelled
:meth:`Directory.fetch` cancels its requests in flight (each closes its exchange) and
installs nothing more; a save to the state file that has started completes in its
thread (:mod:`veil.client.state`).

Why one module of about 660 lines: :class:`Directory` is one state machine, the
consensus held (current, tentative, or an expired one kept for its guards) and where
the next may come from (the stage past ``fresh_until``: guards, other nodes, the
authorities); its parts (verifying, the cache, the sources, the refresh loop) read and
change the same fields (``current``, ``tentative``, ``_expired``, ``last_error``), so
apart they would be one object's methods in several files. What is not the machine is
small and stays beside it: :class:`DirectoryPolicy` (its numbers) and a fetch's
``_Round`` and ``_Source``. The race's scheduling (stagger, cap, cancelling the losers,
when to stop waiting) knows nothing of consensuses and is its own module,
:mod:`veil.client.staggered_race`; only the rules of who may be asked stay here.
Measured: this note is about 110 lines, the docstrings and comments of the code about
120, blank lines about 55; the code is about 370 lines.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import trio

from veil.client.errors import AuthorityUnreachable, InvalidArgument, PeerRefused
from veil.client.network_clock import NetworkClock
from veil.client.staggered_race import Verdict, staggered_race
from veil.client.state import ClientState
from veil.client.transport import Transport
from veil.onion.directory import (
    MAX_CONSENSUS_SIZE,
    Consensus,
    ConsensusNode,
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

__all__ = ["Directory", "DirectoryPolicy", "GuardSource"]

#: A consensus document plus its signature list (the largest onion.directory accepts).
_MAX_DOCUMENT_BYTES = MAX_CONSENSUS_SIZE + 64 * 1024

#: The client's guards as consensus nodes (:meth:`veil.client.paths.PathSelector.ensure_guards`).
GuardSource = Callable[[], Awaitable[Sequence[ConsensusNode]]]

# Who a fetch may ask, by how far past fresh_until the held consensus is (Directory._stage).
_GUARDS, _OTHERS, _AUTHORITIES = 0, 1, 2


@dataclass(slots=True)
class _Round:
    """What the sources of one fetch did."""

    problems: list[str] = field(default_factory=list)
    #: The last verification error of a document some source served.
    refusal: VeilError | None = None
    #: Some node answered that it has nothing newer (304, or an old document).
    answered: bool = False
    #: Some authority answered with nothing newer than ours.
    authority_answered: bool = False
    #: An authority was asked in this fetch (it learnt our address).
    authorities_asked: bool = False


@dataclass(frozen=True, slots=True)
class _Source:
    """One source of a fetch: a node (``after``: the epoch to ask for newer than) or an
    authority (``after`` None: it is asked for its consensus outright)."""

    kind: str  # "guard", "node" or "authority": Directory.last_source
    host: str
    port: int
    after: int | None


#: A source's winning answer: the verified document, its bytes, whether it was accepted
#: tentatively, and the kind of source.
_Win = tuple[Consensus, bytes, bool, str]


@dataclass(frozen=True, slots=True)
class DirectoryPolicy:
    """Timeouts and back-offs of consensus fetches (seconds)."""

    #: One fetch from one source (a guard, another node or an authority).
    timeout_s: float = 10.0
    #: The next source is asked when the last has not answered within this (or at once
    #: when it answered without a newer consensus). A consensus is a few hundred
    #: kilobytes at most, sent well within a second by a node that works; the node's
    #: directory client staggers the authorities by the same second.
    stagger_s: float = 1.0
    #: Requests of one fetch in flight at once, one per source (Tor's
    #: ClientBootstrapConsensusMaxInProgressTries).
    max_in_flight: int = 3
    #: First wait after a failed refresh; doubled up to ``max_backoff_s``.
    backoff_s: float = 0.5
    max_backoff_s: float = 60.0
    #: Shortest wait between two refreshes (a devnet's interval is a second).
    min_wait_s: float = 0.25
    #: Listed nodes other than the guards asked when the guards cannot help.
    other_nodes: int = 3
    #: Guards that have nothing newer are waited for until this fraction of the time
    #: from ``fresh_until`` to ``valid_until``; then other listed nodes are asked too.
    others_after: float = 0.5
    #: From this fraction on, if no node has a newer consensus, the authorities are
    #: asked (the held one is about to become unusable).
    authorities_after: float = 0.75
    #: A cached consensus that expired less than this long ago still says where the
    #: client's guards are: a restarted client asks them first (Tor's "reasonably live").
    reasonably_live_s: float = 24 * 3600.0

    def __post_init__(self) -> None:
        if self.other_nodes < 0 or not 0 <= self.others_after <= self.authorities_after <= 1:
            raise InvalidArgument(
                "other_nodes >= 0 and 0 <= others_after <= authorities_after <= 1"
            )
        if self.reasonably_live_s < 0:
            raise InvalidArgument("reasonably_live_s >= 0")
        if self.stagger_s < 0 or self.max_in_flight < 1:
            raise InvalidArgument("stagger_s >= 0 and max_in_flight >= 1")


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
        guards: GuardSource | None = None,
        guard_ids: Callable[[], Sequence[bytes]] | None = None,
    ) -> None:
        """``guards`` gives the client's guards, to fetch from (:meth:`use_guards`);
        without it every fetch asks the authorities. ``guard_ids`` gives the IDs of the
        guards kept from an earlier run (looked up in an expired cached consensus)."""
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
        self._guards = guards
        self._guard_ids = guard_ids
        #: The cached consensus if it has expired, but not long ago (load_cached).
        self._expired: Consensus | None = None
        #: Ranks the other nodes a client asks (_other_nodes); secret, one per run.
        self._salt = self.rng.getrandbits(128).to_bytes(16, "big")
        self.fetches = 0
        #: Fetches that went to the authorities (each learns our address).
        self.authority_fetches = 0
        #: Where the current consensus came from: "cache", "guard", "node", "authority".
        self.last_source: str | None = None
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
        clock); None if there is none or it does not (it is then ignored). One whose
        signatures verify but that expired less than ``policy.reasonably_live_s`` ago is
        not installed, but kept to find the guards for the first fetch (module note)."""
        cached = await trio.to_thread.run_sync(self.state.load_consensus)
        if cached is None:
            return None
        try:
            consensus, _ = self.verify(cached.raw)
        except (StaleConsensus, ConsensusNotYetValid):
            self._expired = self._reasonably_live(cached.raw)
            return None
        except VeilError:
            return None
        self.install(consensus, cached.raw)
        self.last_source = "cache"
        return consensus

    def _reasonably_live(self, raw: bytes) -> Consensus | None:
        """``raw`` if its signatures verify and it expired (by our clock) less than
        ``policy.reasonably_live_s`` ago; else None."""
        try:
            consensus, tentative = self.verify(raw, tentative_ok=True)
        except VeilError:
            return None
        expired_ms = self.clock.now() - consensus.valid_until_ms
        if not tentative or not 0 <= expired_ms < self.policy.reasonably_live_s * 1000:
            return None
        return consensus

    async def _save(self, consensus: Consensus, raw: bytes) -> None:
        await trio.to_thread.run_sync(
            self.state.save_consensus, raw, consensus.epoch, int(self.clock.local())
        )

    # --- fetching --------------------------------------------------------------------------

    def use_guards(
        self, guards: GuardSource, guard_ids: Callable[[], Sequence[bytes]] | None = None
    ) -> None:
        """Fetch from ``guards()`` (the client's guards, as consensus nodes) while a
        usable consensus is held, instead of from the authorities; ``guard_ids()`` (the
        guards kept from the last run) after a restart with an expired cache (module
        note)."""
        self._guards = guards
        if guard_ids is not None:
            self._guard_ids = guard_ids

    def usable(self) -> bool:
        """True if a consensus is held that is not tentative and still valid by the
        network's clock: the next one may then come from nodes, not authorities."""
        held = self.current
        return held is not None and not self.tentative and self.clock.now() < held.valid_until_ms

    def _stage(self, held: Consensus) -> int:
        """How far past ``fresh_until`` the held consensus is: who may be asked now."""
        now = self.clock.now()
        window = max(held.valid_until_ms - held.fresh_until_ms, 0)
        if now >= held.fresh_until_ms + self.policy.authorities_after * window:
            return _AUTHORITIES
        if now >= held.fresh_until_ms + self.policy.others_after * window:
            return _OTHERS
        return _GUARDS

    async def fetch(self, *, tentative_ok: bool = False) -> Consensus:
        """Fetch, verify, install and save a newer consensus if a source has one;
        returns the consensus now current (which may be the one already held).

        The sources, in order (module note): with a usable consensus held and guards
        given (:meth:`use_guards`), the guards; then other listed nodes if every guard
        failed or ``fresh_until`` is well past; then, only when the held consensus is
        near its end (or there is none usable: first start, tentative, expired), the
        authorities in random order. They are asked in a staggered race
        (:func:`~veil.client.staggered_race.staggered_race`: the next source when the
        last has answered without a newer document or has not answered within
        ``policy.stagger_s``; at most ``policy.max_in_flight`` at once); the first
        document that verifies and is newer wins, and the other requests are cancelled.

        While the held consensus is usable and not near its end, a fetch where no node
        had a newer one returns the held one (:attr:`last_error` says what failed).
        When the authorities were asked: raises :class:`AuthorityUnreachable` if no
        source answered with a document, or the last verification error if every
        document failed. Cancelled, it cancels the requests in flight and installs
        nothing more (a save that has started completes in its thread).
        """
        self.fetches += 1
        seen = _Round()
        held = self.current
        nodes: list[_Source] = []
        # A usable consensus held and guards given: the nodes first, the authorities
        # only near the end (else, the authorities, after an expired cache's guards).
        from_nodes = self._guards is not None and held is not None and self.usable()
        if from_nodes:
            assert held is not None
            guards = await self._guard_nodes(seen)
            others = self._other_nodes(held, {g.node_id for g in guards})
            nodes = [_Source("guard", n.host, n.port, held.epoch) for n in guards]
            nodes += [_Source("node", n.host, n.port, held.epoch) for n in others]
        elif held is None and self._expired is not None:
            # Restarted with a cache that expired not long ago: it still says where our
            # guards are; ask them before the authorities.
            expired, self._expired = self._expired, None  # once: then the usual sources
            ids = self._guard_ids() if self._guard_ids is not None else []
            kept = [n for n in map(expired.node, ids) if n is not None]
            nodes = [_Source("guard", n.host, n.port, expired.epoch) for n in kept]
        authorities = list(self.network.authorities)
        self.rng.shuffle(authorities)
        sources = nodes + [_Source("authority", a.host, a.port, None) for a in authorities]

        def may_ask(source: _Source) -> bool:
            # Called when every source before ``source`` has answered or had its stagger.
            if source.kind == "node" and held is not None:
                # Every guard failed (down, refusing, serving what does not verify, or
                # silent past its stagger), or they have had long enough.
                return not seen.answered or self._stage(held) >= _OTHERS
            if source.kind == "authority":
                if seen.authority_answered:
                    return False  # one said it has nothing newer: no other learns of us
                if (
                    from_nodes
                    and held is not None
                    and self.usable()
                    and self._stage(held) < _AUTHORITIES
                ):
                    return False  # not near the end: the run loop asks the nodes later
                if not seen.authorities_asked:
                    seen.authorities_asked = True
                    self.authority_fetches += 1
            return True

        async def ask(source: _Source) -> _Win | Verdict:
            if source.after is None:
                return await self._ask_authority(source, seen, tentative_ok=tentative_ok)
            return await self._ask_node(source, seen)

        won = await staggered_race(
            sources,
            ask,
            may_ask=may_ask,
            stagger_s=self.policy.stagger_s,
            max_in_flight=self.policy.max_in_flight,
        )
        if won is not None:
            consensus, raw, tentative, kind = won
            if not self.install(consensus, raw, tentative=tentative):
                assert self.current is not None  # a newer one came meanwhile
                return self.current
            if not tentative:
                await self._save(consensus, raw)
            self.last_error = None
            self.last_source = kind
            return consensus
        if not seen.authorities_asked and held is not None:  # the nodes' fetch only
            self.last_error = "; ".join(seen.problems) or None
            return held
        if seen.authority_answered:
            # Nothing newer there (not published yet, or an authority that lags).
            assert self.current is not None
            self.last_error = None
            return self.current
        self.last_error = "; ".join(seen.problems)
        if seen.refusal is not None:
            raise type(seen.refusal)(f"no usable consensus: {self.last_error}")
        raise AuthorityUnreachable(
            f"cannot get the consensus from any directory authority ({self.last_error})"
        )

    async def _guard_nodes(self, seen: _Round) -> list[ConsensusNode]:
        assert self._guards is not None
        try:
            return list(await self._guards())
        except VeilError as exc:  # NoConsensus, or the state file is busy
            seen.problems.append(f"no guards: {exc}")
            return []

    def _other_nodes(self, held: Consensus, exclude: set[bytes]) -> list[ConsensusNode]:
        """Up to ``policy.other_nodes`` listed nodes other than the guards: the same
        ones at every fetch of this client (ranked by a keyed hash with a secret of
        this run), so that a failing guard exposes the client's address to a few
        nodes, not to a new random one at every retry."""
        ranked = sorted(
            (n for n in held.nodes if n.node_id not in exclude),
            key=lambda n: hashlib.blake2b(n.node_id, key=self._salt, digest_size=8).digest(),
        )
        return ranked[: self.policy.other_nodes]

    def _newer(self, consensus: Consensus, tentative: bool) -> bool:
        """True if :meth:`install` would take ``consensus`` now."""
        current = self.current
        if current is None or consensus.epoch > current.epoch:
            return True
        # The tentative one confirmed (the same epoch, now verified on our clock).
        return self.tentative and not tentative and consensus.epoch == current.epoch

    async def _ask_node(self, source: _Source, seen: _Round) -> _Win | Verdict:
        """A node's consensus if it is newer than ``source.after`` and ours (verified,
        not installed); else what it did, noted in ``seen``. Cancelled: nothing noted."""
        assert source.after is not None
        where = f"{source.kind} {source.host}:{source.port}"
        try:
            raw = await self.transport.get(
                source.host,
                source.port,
                f"/consensus?after={source.after}",
                timeout_s=self.policy.timeout_s,
                max_bytes=_MAX_DOCUMENT_BYTES,
            )
        except PeerRefused as exc:
            if exc.code == 304:  # nothing newer than ours there
                seen.answered = True
                return Verdict.NOTHING_NEWER
            if exc.code == 503:
                seen.problems.append(f"{where} has no consensus")
            else:
                seen.problems.append(f"{where}: {exc}")
            return Verdict.FAILED
        except VeilError as exc:  # unreachable, timed out, too large
            seen.problems.append(f"{where}: {exc}")
            return Verdict.FAILED
        try:
            consensus, _ = self.verify(raw)
        except VeilError as exc:
            # Forged, below the threshold, expired, garbage: refused, as from anyone.
            # (Never accepted tentatively: a node cannot make us doubt our clock.)
            seen.refusal = exc
            seen.problems.append(f"{where}: {exc}")
            return Verdict.FAILED
        if consensus.epoch <= source.after or not self._newer(consensus, False):
            seen.answered = True  # an old one: that node lags (or withholds)
            return Verdict.NOTHING_NEWER
        return consensus, raw, False, source.kind

    async def _ask_authority(
        self, source: _Source, seen: _Round, *, tentative_ok: bool
    ) -> _Win | Verdict:
        """An authority's consensus if it is newer than ours (verified, tentatively if
        ``tentative_ok`` and our clock disagrees; not installed); else what it did,
        noted in ``seen``. Cancelled: nothing noted."""
        where = f"{source.host}:{source.port}"
        try:
            raw = await self.transport.get(
                source.host,
                source.port,
                "/consensus",
                timeout_s=self.policy.timeout_s,
                max_bytes=_MAX_DOCUMENT_BYTES,
            )
        except PeerRefused as exc:
            seen.problems.append(
                f"{where} has no consensus yet" if exc.code == 503 else f"{where}: {exc}"
            )
            return Verdict.FAILED
        except NetworkError as exc:
            seen.problems.append(str(exc))  # it names the authority's address
            return Verdict.FAILED
        except ProtocolError as exc:
            seen.problems.append(f"{where}: {exc}")
            return Verdict.FAILED
        try:
            consensus, tentative = self.verify(raw, tentative_ok=tentative_ok)
        except (ConsensusError, ProtocolError) as exc:
            seen.refusal = exc
            seen.problems.append(f"{where}: {exc}")
            return Verdict.FAILED
        if not self._newer(consensus, tentative):
            seen.authority_answered = True
            return Verdict.NOTHING_NEWER
        return consensus, raw, tentative, "authority"

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
            if self.min_epoch != before:
                backoff = self.policy.backoff_s
                continue
            # Nothing newer yet (not published, the guards lag, a refresh asked early)
            # or every source failed: ask again soon, and before the consensus expires.
            await trio.sleep(backoff * (0.5 + self.rng.random()))
            backoff = min(backoff * 2, self._until_stale())

    def _until_stale(self) -> float:
        """The longest back-off that still refreshes before the consensus expires."""
        consensus = self.current
        if consensus is None:
            return self.policy.max_backoff_s
        left = (consensus.valid_until_ms - self.clock.now()) / 1000 / 4
        if left <= 0:
            # Expired: only the authorities can help now; the plain back-off.
            return self.policy.max_backoff_s
        return max(self.policy.backoff_s, min(self.policy.max_backoff_s, left))
