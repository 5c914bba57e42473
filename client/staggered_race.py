"""A staggered race over sources asked in order: the first that wins ends it.

Design note
-----------
The client fetches the consensus from several sources (guards, other listed nodes,
authorities: :mod:`veil.client.consensus`). Asked one after another, a source that
accepts the connection and never answers (a frozen host, a pulled cable: no reset)
costs the whole request timeout (10 s) before the next is asked. So, as the node's
directory client does (node/directory_client.py), as Tor keeps several directory
attempts in flight (``ClientBootstrapConsensusMaxInProgressTries``, 3) and as Happy
Eyeballs (RFC 8305) staggers connection attempts, :func:`staggered_race` asks the first
source, and the next one as soon as the last asked has answered without winning (or
failed), or when it has not answered within ``stagger_s``; at most ``max_in_flight``
requests are in flight, one per source. The first answer that wins ends the race, and
the requests still in flight are cancelled.

Which sources may be asked is the caller's rule (the consensus module's privacy rules:
other nodes only when the guards cannot help, authorities only as the last resort):
``may_ask(source)`` is called when every earlier request has ended or had its
stagger, before waiting for a free slot (and once more after such a wait, as what it
knows may have changed meanwhile); a False skips the source. It should be cheap and may
be called twice for one source. The race keeps the order.

The end without a winner: when every request has ended; or, once no source is left to
ask, when some source has answered that it has nothing newer (:data:`Verdict.NOTHING_NEWER`)
and every request still in flight has had its stagger. A live source has then told us
there is nothing to get yet, and waiting for one that does not answer would only delay
the caller's next attempt (which asks it again); without such an answer the race waits
for the requests to end (their own timeouts), so that a slow link still gets its
document.

Errors and cancellation: ``ask`` turns what the network does into a :class:`Verdict`;
anything it raises cancels the other requests and propagates (a bug, not the network).
Cancelled, the race cancels every request in flight (each closes its exchange: the
transport's rule) and raises ``Cancelled``; the caller has installed nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import trio

from veil.client.errors import InvalidArgument

__all__ = ["Verdict", "staggered_race"]

S = TypeVar("S")
W = TypeVar("W")


class Verdict(enum.Enum):
    """A source's answer that does not win."""

    #: Unreachable, timed out, refused, or served what does not verify.
    FAILED = "failed"
    #: It answered, and has nothing newer than what the caller holds.
    NOTHING_NEWER = "nothing newer"


async def staggered_race(
    sources: Sequence[S],
    ask: Callable[[S], Awaitable[W | Verdict]],
    *,
    may_ask: Callable[[S], bool] = lambda source: True,
    stagger_s: float,
    max_in_flight: int,
) -> W | None:
    """Ask ``sources`` in order with a stagger (module note); the first win, or None.

    ``ask(source)`` returns the win (anything that is not a :class:`Verdict`) or a
    :class:`Verdict`; the other requests are cancelled as soon as one wins.
    """
    if stagger_s < 0 or max_in_flight < 1:
        raise InvalidArgument("stagger_s >= 0 and max_in_flight >= 1")
    won: list[W] = []
    started_at: dict[int, float] = {}  # index of a source in flight -> when it was asked
    nothing_newer = False
    changed = trio.Event()  # set (and replaced) whenever a request ends

    async with trio.open_nursery() as nursery:

        async def attempt(index: int, source: S, ended: trio.Event) -> None:
            nonlocal changed, nothing_newer
            try:
                result = await ask(source)
                if isinstance(result, Verdict):
                    nothing_newer |= result is Verdict.NOTHING_NEWER
                elif not won:
                    won.append(result)
                    nursery.cancel_scope.cancel()  # the other requests, and the asking
            finally:
                del started_at[index]
                ended.set()
                changed.set()
                changed = trio.Event()

        last: tuple[trio.Event, float] | None = None
        for index, source in enumerate(sources):
            if last is not None:
                ended, asked_at = last
                with trio.move_on_at(asked_at + stagger_s):
                    await ended.wait()
            if won:
                # A wait that ended because the winner's request did returns before the
                # cancellation is delivered (at the next checkpoint): ask no one more.
                break
            # Asked before waiting for a free slot: a source the rule skips must not keep
            # the race waiting for a silent request's timeout (tests/test_staggered_race.py
            # found it: one slot, a silent source in it, a "nothing newer" already in and
            # only skipped sources left waited for the timeout instead of a stagger).
            if not may_ask(source):
                continue
            if len(started_at) >= max_in_flight:
                while len(started_at) >= max_in_flight:
                    await changed.wait()
                if won:
                    break
                if not may_ask(source):  # asked again: what it knew may have changed
                    continue
            ended = trio.Event()
            started_at[index] = asked_at = trio.current_time()
            nursery.start_soon(attempt, index, source, ended)
            last = ended, asked_at
        # No source left to ask: wait for the requests in flight (module note).
        while started_at:
            if nothing_newer:
                all_staggered_at = max(started_at.values()) + stagger_s
                if trio.current_time() >= all_staggered_at:
                    nursery.cancel_scope.cancel()
                    break
                with trio.move_on_at(all_staggered_at):
                    await changed.wait()
            else:
                await changed.wait()
    return won[0] if won else None
