"""Properties of the client's staggered race (client/staggered_race.py), on trio's mock clock.

Each example is a list of sources, each answering after a delay (or never) with a win,
``FAILED`` or ``NOTHING_NEWER``, some of which the caller's rule skips. What must hold
whatever the timing: sources are asked in order, only those the rule allows, never more
than ``max_in_flight`` at once, the next one no later than a stagger after the last
(room permitting); the result is the first win to arrive, or None only when no win
arrived; and the race ends, cancelling what is still in flight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.client.errors import InvalidArgument
from veil.client.staggered_race import Verdict, staggered_race


@dataclass(frozen=True)
class Source:
    index: int
    #: Seconds until it answers; math.inf: never.
    delay_s: float
    #: "win", or a Verdict.
    answer: str | Verdict
    allowed: bool


@dataclass
class Log:
    asked: list[tuple[int, float]] = field(default_factory=list)
    ended: dict[int, float] = field(default_factory=dict)
    cancelled: set[int] = field(default_factory=set)
    in_flight: int = 0
    most_in_flight: int = 0


sources_strategy = st.lists(
    st.tuples(
        st.one_of(st.just(math.inf), st.integers(0, 40).map(lambda t: t / 4)),
        st.sampled_from(["win", Verdict.FAILED, Verdict.NOTHING_NEWER]),
        st.booleans().map(lambda b: b or False) | st.just(True),
    ),
    min_size=0,
    max_size=8,
).map(lambda items: [Source(i, d, a, ok) for i, (d, a, ok) in enumerate(items)])


def run_race(
    sources: list[Source], stagger_s: float, max_in_flight: int
) -> tuple[object, Log, float]:
    log = Log()
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def ask(source: Source) -> object:
        log.asked.append((source.index, trio.current_time()))
        log.in_flight += 1
        log.most_in_flight = max(log.most_in_flight, log.in_flight)
        try:
            if math.isinf(source.delay_s):
                await trio.sleep_forever()
            await trio.sleep(source.delay_s)
            log.ended[source.index] = trio.current_time()
            return f"won by {source.index}" if source.answer == "win" else source.answer
        except trio.Cancelled:
            log.cancelled.add(source.index)
            raise
        finally:
            log.in_flight -= 1

    async def main() -> tuple[object, float]:
        result = await staggered_race(
            sources,
            ask,
            may_ask=lambda s: s.allowed,
            stagger_s=stagger_s,
            max_in_flight=max_in_flight,
        )
        return result, trio.current_time()

    # A race over sources of which one never answers (and no one said "nothing newer")
    # waits for it: bounded here by a move_on, which the checks below account for.
    async def bounded() -> tuple[object, float]:
        with trio.move_on_after(10_000) as scope:
            return await main()
        assert scope.cancelled_caught
        return "still waiting", trio.current_time()

    result, ended_at = trio.run(bounded, clock=clock)
    return result, log, ended_at


@settings(max_examples=300, deadline=None)
@given(
    sources=sources_strategy,
    stagger_s=st.sampled_from([0.0, 0.5, 1.0, 3.0]),
    max_in_flight=st.integers(1, 4),
)
def test_the_race_keeps_its_rules(
    sources: list[Source], stagger_s: float, max_in_flight: int
) -> None:
    result, log, _ = run_race(sources, stagger_s, max_in_flight)
    asked = [i for i, _ in log.asked]
    # In order, only the allowed ones, each at most once, within the in-flight cap.
    assert asked == sorted(set(asked))
    assert all(sources[i].allowed for i in asked)
    assert log.most_in_flight <= max_in_flight
    assert log.in_flight == 0  # whatever was still asking has been cancelled

    wins = {i: t for i, t in log.ended.items() if sources[i].answer == "win"}
    if isinstance(result, str) and result.startswith("won by "):
        winner = int(result.removeprefix("won by "))
        assert winner in wins
        assert wins[winner] == min(wins.values())  # the first win to arrive
        # Once won, nobody else is asked.
        assert all(t <= wins[winner] for _, t in log.asked)
    elif result is None:
        assert not wins
    else:
        # Still waiting: only for a source that never answers, and with no win.
        assert result == "still waiting"
        assert not wins
        assert any(math.isinf(sources[i].delay_s) for i in asked)
        # A live "nothing newer" ends the wait a stagger after the last source was
        # asked, once no source is left to ask (a full race waits for a slot first).
        every_allowed_asked = asked == [x.index for x in sources if x.allowed]
        answered_nothing_newer = any(sources[i].answer is Verdict.NOTHING_NEWER for i in log.ended)
        assert not (every_allowed_asked and answered_nothing_newer), (sources, stagger_s, log)

    # The stagger: while there was room, the next allowed source was asked no later
    # than a stagger after the one before it (or once that one ended).
    for (i, t_i), (j, t_j) in zip(log.asked, log.asked[1:], strict=False):
        if max_in_flight >= len(sources):
            ended_i = log.ended.get(i, math.inf)
            assert t_j <= min(t_i + stagger_s, ended_i) + 1e-9, (i, j)


@settings(max_examples=100, deadline=None)
@given(
    sources=sources_strategy,
    stagger_s=st.sampled_from([0.0, 0.5, 1.0]),
    max_in_flight=st.integers(1, 4),
)
def test_a_race_of_sources_that_all_answer_ends_with_a_win_if_any_allowed_one_wins(
    sources: list[Source], stagger_s: float, max_in_flight: int
) -> None:
    finite = [Source(s.index, min(s.delay_s, 5.0), s.answer, s.allowed) for s in sources]
    # Without "nothing newer" (which may end the race before a slow win), every allowed
    # source is asked and answers: a win among them must come out.
    finite = [
        Source(
            s.index,
            s.delay_s,
            Verdict.FAILED if s.answer is Verdict.NOTHING_NEWER else s.answer,
            s.allowed,
        )
        for s in finite
    ]
    result, log, _ = run_race(finite, stagger_s, max_in_flight)
    allowed_wins = [s for s in finite if s.allowed and s.answer == "win"]
    if allowed_wins:
        assert isinstance(result, str) and result.startswith("won by ")
    else:
        assert result is None
        assert [i for i, _ in log.asked] == [s.index for s in finite if s.allowed]


def test_silent_sources_are_asked_a_stagger_apart_and_nothing_newer_ends_the_wait() -> None:
    # Two frozen sources and a third that says "nothing newer" at once: the third is
    # asked two staggers in, and once it has answered the race ends when every request
    # still in flight has had its stagger (at 2 s: not at their timeouts).
    sources = [
        Source(0, math.inf, "win", True),
        Source(1, math.inf, "win", True),
        Source(2, 0.0, Verdict.NOTHING_NEWER, True),
    ]
    result, log, ended_at = run_race(sources, stagger_s=1.0, max_in_flight=3)
    assert result is None
    assert log.asked == [(0, pytest.approx(0.0)), (1, pytest.approx(1.0)), (2, pytest.approx(2.0))]
    assert ended_at == pytest.approx(2.0)
    assert log.cancelled == {0, 1}


def test_bad_arguments_are_refused() -> None:
    async def ask(source: object) -> Verdict:
        return Verdict.FAILED

    for stagger_s, max_in_flight in [(-1.0, 1), (1.0, 0)]:
        with pytest.raises(InvalidArgument):
            trio.run(
                lambda s=stagger_s, m=max_in_flight: staggered_race(
                    [1], ask, stagger_s=s, max_in_flight=m
                )
            )
