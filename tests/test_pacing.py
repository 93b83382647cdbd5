"""aggregator.pacing: when the collector commits and naps, over a clock the test moves."""

from __future__ import annotations

import pytest

from aggregator.pacing import TRICKLE_FRAMES, TRICKLE_RECORDS, CommitPacing

from .conftest import Clock


def test_the_first_commit_is_at_once_then_at_most_one_per_interval(clock: Clock) -> None:
    pacing = CommitPacing(0.05, clock)
    assert pacing.commit_now(dirty=True)
    clock.now += 0.01
    assert not pacing.commit_now(dirty=True)  # 10 ms after the last: waits
    assert pacing.poll_timeout(1.0) == pytest.approx(0.04)  # the poll ends when it is due
    clock.now += 0.02
    assert not pacing.commit_now(dirty=False)  # still due, even with nothing new
    clock.now += 0.02
    assert pacing.commit_now(dirty=False)
    assert pacing.poll_timeout(1.0) == 1.0  # nothing waits for a commit


def test_nothing_written_means_no_commit(clock: Clock) -> None:
    pacing = CommitPacing(0.05, clock)
    for _ in range(3):
        assert not pacing.commit_now(dirty=False)
        clock.now += 1.0


def test_after_a_quiet_spell_the_commit_is_at_once(clock: Clock) -> None:
    pacing = CommitPacing(0.05, clock)
    assert pacing.commit_now(dirty=True)
    clock.now += 10.0
    assert pacing.commit_now(dirty=True)


def test_a_bye_commits_at_the_end_of_its_cycle_even_within_the_interval(clock: Clock) -> None:
    pacing = CommitPacing(0.05, clock)
    assert pacing.commit_now(dirty=True)
    clock.now += 0.001
    pacing.soon()
    assert pacing.poll_timeout(1.0) == 0.0
    assert pacing.commit_now(dirty=False)


def test_a_zero_interval_commits_after_every_cycle_that_wrote(clock: Clock) -> None:
    pacing = CommitPacing(0.0, clock)
    assert [pacing.commit_now(dirty=True) for _ in range(3)] == [True, True, True]


@pytest.mark.parametrize(
    ("frames", "records", "naps"),
    [
        (0, 0, False),  # nothing came: the poll waits as usual
        (1, 1, True),
        (TRICKLE_FRAMES, TRICKLE_RECORDS, True),
        (TRICKLE_FRAMES + 1, 1, False),  # many small senders
        (1, TRICKLE_RECORDS + 1, False),  # a big batch
    ],
)
def test_a_trickle_naps_until_the_next_commit_may_be_due(
    clock: Clock, frames: int, records: int, naps: bool
) -> None:
    pacing = CommitPacing(0.05, clock)
    assert pacing.commit_now(dirty=True)
    pacing.cycle_done(frames, records)
    clock.now += 0.01
    assert pacing.nap() == (pytest.approx(0.04) if naps else None)


def test_a_trickle_with_a_commit_due_naps_until_it(clock: Clock) -> None:
    pacing = CommitPacing(0.05, clock)
    assert pacing.commit_now(dirty=True)
    clock.now += 0.02
    assert not pacing.commit_now(dirty=True)  # due at +0.05
    pacing.cycle_done(1, 1)
    assert pacing.nap() == pytest.approx(0.03)
    clock.now += 0.1
    assert pacing.nap() == 0.0  # overslept: no negative sleep
    assert pacing.commit_now(dirty=False)


def test_a_flood_after_a_trickle_ends_the_naps(clock: Clock) -> None:
    pacing = CommitPacing(0.05, clock)
    pacing.cycle_done(1, 1)
    assert pacing.nap() is not None
    pacing.cycle_done(200, 50_000)
    assert pacing.nap() is None
