"""One onion request, end to end: build, send, open, classify, retry.

Design note
-----------
:meth:`OnionClient.call` sends one storage RPC request to a node of an account's swarm
(or to a given node) along a path from :mod:`veil.client.paths`, and returns the node's
decoded :class:`~veil.onion.rpc.Reply` with status ``ok``, or raises. Everything between is
policy, in one place:

**The network's clock** (:mod:`veil.client.network_clock`) stamps packets and signed
requests; every reply samples it. Requests are built by a callback ``build(now_ms)`` so
that a retry is signed with the corrected time. A hop or a node that refuses our time
answers ``clock_skew`` with its own: the clock is reset to it and the request retried
once (not counted as a failure).

**Whom to blame.** A failure counts against a node only when the client knows which
one failed:

=========================================  =============================================
what happened                              counted against
=========================================  =============================================
guard unreachable, refused the packet      the guard (node) and the path
a relay answers bad_gateway / timeout /    the hop after it (node) and the path; if
unavailable (it could not reach the next)  that hop is the destination, another member
                                           of the swarm is tried
no answer within the client's timeout      the path (which hop stalled is unknown)
a reply that does not open                 the path
the destination's bad_request error: the   the path (a relay changed the body; which
packet's body did not authenticate there   one is unknown); another path is tried
the destination's timeout/internal/        the destination (node); another member is
unavailable, or a reply that does not      tried
decode
rate_limited (a hop or the destination)    nobody: back off, then retry
wrong_swarm                                nobody: follow the swarm the node names
bad_request, unauthorized, too_large,      nobody: raised at once (retrying cannot help)
not_found (the destination's verdict)
a node of the route left the consensus     nobody: another path, without that node
while the try waited                       (below, "Nodes that leave")
=========================================  =============================================

**Retries.** Up to ``attempts`` tries per call, each on a path and destination not yet
tried by this call where possible, within the call's ``deadline_s``; one extra try for a
clock correction. Between tries a jittered exponential back-off
(:class:`veil.onion.backoff.Backoff`): short after a failure (the next try goes
elsewhere), longer after ``rate_limited``. A request is safe to retry: stores are
deduplicated by message hash, deletes and expiries are idempotent, retrieves only read.

**Nodes that leave.** A node lost silently (a cable pulled, a frozen host: no reset,
no answer) holds a try through it until the try's limit: 10 s, 45 s for a long-poll.
The network learns of the loss when the authorities drop the node from the consensus.
So a try waits inside :meth:`~veil.client.paths.PathSelector.in_flight`, and a
consensus that drops a node of its route (guard, relay or destination) ends the wait at
once: the call goes on as after a timeout, on another path (the given-up one counts as
tried, so the next try goes through the other guard where there is one), without the
nodes that left, after the usual jittered pause; nobody's failure count grows (the
consensus said what happened). On loopback (tests/test_silent_loss_client.py) the
message after a frozen relay's drop reached a follower within seconds, not at 45 s.

Why here, not at the relays (a relay failing the packets on its link to a peer that
left): only the client can give up a try through a lost *guard*; it learns the
consensus about when relays do (within a quarter interval of them); and it needs
nothing of relays of older versions. A given-up try reveals what a timeout reveals,
sooner: the guard sees a request dropped and another one sent (through the other guard
where there is one), at a moment of this client's own refresh schedule, telling that a
node of the route is one the consensus just dropped, as a try that times out meanwhile
tells. A path through a node that left is never used again. The limit: the authorities
drop a node up to an interval (60 s by default) after it stops answering their checks,
and the try's own limit may come first.

**wrong_swarm.** A node asked about an account outside its swarm answers
``wrong_swarm`` and names the account's swarm (a newer consensus than ours moved it);
the client remembers that swarm for the account until its consensus is newer, retries
there, and asks for a consensus refresh.

Cancellation: a cancelled call cancels its HTTP exchange; failure counts already
recorded stay recorded. Errors: :class:`~veil.client.errors.OnionRequestFailed` (a
:class:`~veil.onion.errors.NetworkError`: every try failed; it names the last failure),
:class:`~veil.onion.errors.ClockSkew` (still refused after the correction), and the
typed error of a destination's final verdict (:func:`veil.onion.errors.error_for_status`).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

import trio

from veil.client.errors import InvalidArgument, OnionRequestFailed, PeerRefused
from veil.client.network_clock import NetworkClock
from veil.client.paths import OnionPath, PathSelector
from veil.client.prepared_keys import PreparedKeys
from veil.client.transport import Transport
from veil.onion import rpc
from veil.onion.backoff import Backoff
from veil.onion.errors import (
    ClockSkew,
    HopTimeout,
    HopUnreachable,
    ProtocolError,
    TooLarge,
    error_for_status,
)
from veil.onion.keys import AccountId, GroupId
from veil.onion.packet import BAD_BODY_STATUS, Hop, HopError, build_packet

__all__ = ["Answer", "OnionClient", "RequestPolicy"]

_NODE_TIME = re.compile(r"node time (\d{1,19})")


# --- results and policy ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """A successful call: the node's reply, which node answered, through which path."""

    reply: rpc.Reply
    node: Hop
    path: OnionPath
    rtt_ms: float


@dataclass(frozen=True, slots=True)
class RequestPolicy:
    """Timeouts and retries of :meth:`OnionClient.call`."""

    #: Seconds one try of an ordinary request may take (the path's hops answer in ms).
    timeout_s: float = 10.0
    #: Tries per call (a clock correction is one more).
    attempts: int = 4
    #: Seconds a whole ordinary call may take, tries and back-offs included.
    deadline_s: float = 30.0
    #: First back-off (seconds) after a rate_limited answer; doubled at each one, up to
    #: 5 s, each wait drawn from 0.5x to 1.5x.
    backoff_s: float = 0.25
    #: Pause (seconds) before a try that follows a failed one; doubled at each failure,
    #: up to 2 s, each drawn from 0.5x to 1.5x. Short: the next try goes elsewhere; it
    #: spares a network whose nodes are still catching up (a node that has not yet seen
    #: the newest consensus refuses to relay to a node that joined in it).
    retry_pause_s: float = 0.05

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.deadline_s <= 0 or self.attempts < 1:
            raise InvalidArgument("timeouts and attempts must be positive")
        if self.backoff_s < 0 or self.retry_pause_s < 0:
            raise InvalidArgument("back-offs must not be negative")

    @property
    def rate_limited_backoff(self) -> Backoff:
        """The waits after ``rate_limited`` answers (n: failures so far, plus one)."""
        return Backoff(min(self.backoff_s, 5.0), 5.0, jitter=0.5)

    @property
    def retry_backoff(self) -> Backoff:
        """The pauses before a try that follows ``n`` failed ones."""
        return Backoff(min(self.retry_pause_s, 2.0), 2.0, jitter=0.5)


@dataclass(slots=True)
class _SwarmHint:
    members: tuple[Hop, ...]
    epoch: int  # the consensus epoch we held when a node named this swarm


@dataclass(slots=True)
class _Try:
    """What one call has tried so far."""

    paths: list[OnionPath]
    destinations: set[bytes]
    errors: list[BaseException]
    #: Relays blamed during this call: later tries route around them.
    avoid: set[bytes] = field(default_factory=set)
    clock_retries: int = 0
    #: Seconds to wait before the next try (0: none).
    backoff_s: float = 0.0


class _Retry(Exception):
    """Internal: this try failed in a way worth another try."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


# --- the client --------------------------------------------------------------------------------


class OnionClient:
    """Sends storage RPC requests through onion paths; see the module note.

    ``on_clock`` is awaited after the offset moved by more than a second (the client
    persists it); ``on_wrong_swarm`` is called when a node says our consensus is behind.
    """

    def __init__(
        self,
        transport: Transport,
        paths: PathSelector,
        clock: NetworkClock,
        *,
        policy: RequestPolicy | None = None,
        on_clock: Callable[[int], Awaitable[None]] | None = None,
        on_wrong_swarm: Callable[[], None] | None = None,
    ) -> None:
        self.transport = transport
        self.paths = paths
        self.clock = clock
        self.policy = policy or RequestPolicy()
        # The policy is frozen: its back-offs are made once, not on every failure.
        self._retry_backoff = self.policy.retry_backoff
        self._rate_limited_backoff = self.policy.rate_limited_backoff
        self._on_clock = on_clock
        self._on_wrong_swarm = on_wrong_swarm
        self._hints: dict[AccountId | GroupId, _SwarmHint] = {}
        self._saved_offset = clock.offset_ms
        #: Hop key exchanges prepared ahead (filled only while its ``run`` task runs).
        self.prepared = PreparedKeys()

    # --- swarms ----------------------------------------------------------------------------

    def swarm_members(self, account: AccountId | GroupId) -> tuple[Hop, ...]:
        """The nodes that hold ``account``: from a wrong_swarm answer newer than our
        consensus if there is one, else from the consensus."""
        consensus = self.paths.consensus
        hint = self._hints.get(account)
        if hint is not None:
            if hint.epoch >= consensus.epoch:
                return hint.members
            del self._hints[account]  # our consensus has moved on since
        # A group (an encryption session) sits on the ring by its Ed25519 key.
        where = account.ring_position if isinstance(account, GroupId) else account
        return tuple(n.as_hop() for n in consensus.swarm_of(where).members)

    # --- one call ----------------------------------------------------------------------------

    async def call(
        self,
        build: Callable[[int], bytes],
        *,
        account: AccountId | GroupId | None = None,
        destination: Hop | None = None,
        prefer: bytes | None = None,
        timeout_s: float | None = None,
        deadline_s: float | None = None,
        attempts: int | None = None,
    ) -> Answer:
        """Send the request ``build(now_ms)`` makes to a node of ``account``'s swarm
        (``prefer`` that node if possible) or to ``destination``; the ok answer.

        ``timeout_s`` is one try's limit (a long-poll passes its wait plus the relays'
        budget), ``deadline_s`` the whole call's (seconds). See the module note for retries,
        errors and cancellation.
        """
        if (account is None) == (destination is None):
            raise InvalidArgument("give an account or a destination, not both")
        policy = self.policy
        per_try = timeout_s or policy.timeout_s
        tries = attempts or policy.attempts
        state = _Try(paths=[], destinations=set(), errors=[])
        with trio.move_on_after(deadline_s or max(policy.deadline_s, per_try * 2)) as scope:
            while len(state.errors) < tries:
                if state.backoff_s:
                    await trio.sleep(state.backoff_s)
                    state.backoff_s = 0.0
                try:
                    return await self._try(build, account, destination, prefer, per_try, state)
                except _FreeRetry:
                    continue
                except _Retry as retry:
                    state.errors.append(retry.error)
                    if not state.backoff_s:
                        pauses = self._retry_backoff
                        state.backoff_s = pauses.delay_s(len(state.errors), self.paths.rng)
        errors = state.errors
        if scope.cancelled_caught:
            errors = [*errors, HopTimeout("the request's deadline passed")]
        last = errors[-1] if errors else HopTimeout("no try was made")
        earlier = "; ".join(str(e) for e in errors[:-1])
        raise OnionRequestFailed(
            f"no answer after {len(state.errors)} tries: {last}"
            + (f" (before: {earlier})" if earlier else ""),
            errors,
        ) from None

    async def _try(
        self,
        build: Callable[[int], bytes],
        account: AccountId | GroupId | None,
        destination: Hop | None,
        prefer: bytes | None,
        per_try: float,
        state: _Try,
    ) -> Answer:
        if destination is None:
            assert account is not None
            members = self.swarm_members(account)
        else:
            members = (destination,)
        # Path and destination together: the destination is never on the path.
        route = await self.paths.choose_route(
            members,
            exclude_paths=state.paths,
            avoid=state.avoid,
            exclude=state.destinations | state.avoid,
            prefer=prefer,
        )
        path, target = route.path, route.destination
        hops = route.hops()
        sent_ms = self.clock.local()
        started = trio.current_time()
        payload = build(self.clock.now())
        packet, opener = build_packet(
            hops, payload, now_ms=self.clock.now(), prepared=self.prepared.take(hops)
        )
        raw: bytes | None = None
        try:
            with self.paths.in_flight(hops) as flight:
                raw = await self.transport.post_onion(hops[0], packet, timeout_s=per_try)
        except HopTimeout as exc:
            # Which hop stalled is unknown: the path is blamed, not a node.
            await self._path_failed(path, state)
            raise _Retry(exc) from None
        except (HopUnreachable, PeerRefused, TooLarge) as exc:
            if isinstance(exc, PeerRefused) and exc.status == "rate_limited":
                self._back_off(state)
                raise _Retry(exc) from None
            await self.paths.node_failed(path.guard.node_id)
            state.avoid.add(path.guard.node_id)
            await self._path_failed(path, state)
            raise _Retry(exc) from None
        if raw is None:
            # A newer consensus dropped a node of the route while we waited: see the
            # module note ("Nodes that leave").
            self._left_consensus(path, target, flight.gone, state)
        received_ms = self.clock.local()
        rtt_ms = (trio.current_time() - started) * 1000
        try:
            body = opener.open(raw)
        except HopError as exc:
            await self._hop_error(exc, hops, path, target, sent_ms, received_ms, state)
            raise AssertionError("unreachable") from None  # _hop_error always raises
        except ProtocolError as exc:  # IntegrityError, MalformedPacket: who knows
            await self._path_failed(path, state)
            raise _Retry(exc) from None
        try:
            reply = rpc.decode_reply(body)
        except ProtocolError as exc:
            await self._destination_failed(target, state, count=True)
            raise _Retry(exc) from None

        self.clock.sample(reply.t_ms, sent_ms, received_ms)
        await self._clock_moved()
        if reply.ok:
            await self._succeeded(path, target)
            return Answer(reply, target, path, rtt_ms)
        return await self._refused(reply, account, path, target, sent_ms, received_ms, state)

    # --- outcomes ----------------------------------------------------------------------------

    async def _succeeded(self, path: OnionPath, target: Hop) -> None:
        self.paths.path_succeeded(path)
        for node_id in {*path.node_ids, target.node_id}:
            await self.paths.node_succeeded(node_id)

    async def _path_failed(self, path: OnionPath, state: _Try) -> None:
        state.paths.append(path)
        await self.paths.path_failed(path)

    def _left_consensus(
        self, path: OnionPath, target: Hop, gone: frozenset[bytes], state: _Try
    ) -> NoReturn:
        """Give up a try whose route lost ``gone`` (the consensus dropped them): the
        next try takes another path and leaves them out; nobody's count grows."""
        state.paths.append(path)
        state.avoid |= gone
        if target.node_id in gone:
            state.destinations.add(target.node_id)
        raise _Retry(HopUnreachable("a node of the path left the consensus"))

    async def _destination_failed(self, target: Hop, state: _Try, *, count: bool) -> None:
        state.destinations.add(target.node_id)
        if count:
            # A destination that failed is no relay for this call's later tries either.
            state.avoid.add(target.node_id)
            await self.paths.node_failed(target.node_id)

    def _back_off(self, state: _Try) -> None:
        # The first rate_limited answer of a call waits about backoff_s, whatever failed
        # before it: hence failures so far plus one.
        backoff = self._rate_limited_backoff
        state.backoff_s = backoff.delay_s(len(state.errors) + 1, self.paths.rng)

    async def _hop_error(
        self,
        exc: HopError,
        hops: Sequence[Hop],
        path: OnionPath,
        target: Hop,
        sent_ms: float,
        received_ms: float,
        state: _Try,
    ) -> None:
        last = len(hops) - 1
        status = exc.status
        if status == "clock_skew":
            match = _NODE_TIME.search(exc.message)
            if match and state.clock_retries == 0:
                state.clock_retries += 1
                self.clock.reset(int(match.group(1)), sent_ms, received_ms)
                await self._clock_moved()
                raise _FreeRetry()  # not a failure: the one retry a correction earns
            raise _Retry(ClockSkew(f"hop {exc.hop} still refuses our time: {exc.message}"))
        if status in ("rate_limited", "replayed"):
            self._back_off(state)
            raise _Retry(exc)
        if status == BAD_BODY_STATUS:
            # The body was changed on the way (BadBody in onion/packet/): some relay of
            # this path did it, and the destination is not at fault.
            await self._path_failed(path, state)
            raise _Retry(exc)
        if exc.hop < last:
            # The hop could not get an answer from the next one: blame the next one.
            blamed = hops[exc.hop + 1]
            if exc.hop + 1 == last:
                await self._destination_failed(target, state, count=True)
            else:
                await self.paths.node_failed(blamed.node_id)
                state.avoid.add(blamed.node_id)
                await self._path_failed(path, state)
            raise _Retry(exc)
        # The destination's own error (timeout, internal, unavailable).
        await self._destination_failed(target, state, count=status != "unavailable")
        raise _Retry(exc)

    async def _refused(
        self,
        reply: rpc.Reply,
        account: AccountId | GroupId | None,
        path: OnionPath,
        target: Hop,
        sent_ms: float,
        received_ms: float,
        state: _Try,
    ) -> Answer:
        status = reply.status
        error = error_for_status(status, reply.error or status)
        # The path worked: the relays answered.
        self.paths.path_succeeded(path)
        for node_id in path.node_ids:
            await self.paths.node_succeeded(node_id)
        if status == "clock_skew":
            if state.clock_retries == 0:
                state.clock_retries += 1
                self.clock.reset(reply.t_ms, sent_ms, received_ms)
                await self._clock_moved()
                raise _FreeRetry()
            raise error
        if status == "wrong_swarm":
            try:
                swarm = rpc.swarm_of_reply(reply)
            except ProtocolError:
                swarm = None  # a malformed hint: our own consensus (refreshed) decides
            if account is not None and swarm is not None:
                self._hints[account] = _SwarmHint(swarm.hops, self.paths.consensus.epoch)
            state.destinations.add(target.node_id)
            if self._on_wrong_swarm is not None:
                self._on_wrong_swarm()
            raise _Retry(error)
        if status == "rate_limited":
            state.destinations.add(target.node_id)
            self._back_off(state)
            raise _Retry(error)
        if status in ("unavailable", "timeout", "internal", "bad_gateway"):
            await self._destination_failed(target, state, count=status != "unavailable")
            raise _Retry(error)
        await self.paths.node_succeeded(target.node_id)
        raise error

    async def _clock_moved(self) -> None:
        offset = self.clock.offset_ms
        if abs(offset - self._saved_offset) > 1000:
            self._saved_offset = offset
            if self._on_clock is not None:
                await self._on_clock(offset)


class _FreeRetry(_Retry):
    """A retry that does not count as a failed try (a clock correction)."""

    def __init__(self) -> None:
        super().__init__(ClockSkew("clock corrected"))
