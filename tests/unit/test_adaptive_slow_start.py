"""The adaptive limiter's slow start (worker/runtime/adaptive.py), on deterministic sample
sequences and a fake clock: multiplicative growth while no congestion is seen, the gradient's
additive steps from the first congested window on, and growth decided only on samples measured at
the limit of the last growth."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import pytest

from worker.runtime.adaptive import MIN_SAMPLES, SLOW_START_WAIT, TOLERANCE, AdaptiveLimit

HOLD = 0.010  # seconds a job holds its connection


@dataclass
class Slots:
    max_jobs: int = 0
    running: int = 0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def flat(limiter: AdaptiveLimit, windows: int) -> list[int]:
    """``windows`` busy windows of steady queries and no wait; the limits after each."""
    return [limiter.update(wait=0.0, hold=HOLD, running=limiter.limit) for _ in range(windows)]


def test_without_congestion_the_limit_grows_by_half_a_window_up_to_its_maximum() -> None:
    limiter = AdaptiveLimit(1, 200, initial=20)
    assert limiter.slow_start
    assert flat(limiter, 8) == [30, 45, 67, 101, 151, 200, 200, 200]
    assert limiter.slow_start  # nothing seen yet: still in slow start
    gradient = AdaptiveLimit(1, 200, initial=20)
    gradient.slow_start = False
    assert flat(gradient, 8)[-1] < 40  # the gradient alone: a few jobs a window


def test_from_the_minimum_it_grows_by_at_least_one_job_a_window() -> None:
    assert flat(AdaptiveLimit(1, 12, initial=1), 7) == [2, 3, 4, 6, 10, 12, 12]


def test_the_first_pool_wait_ends_slow_start_and_the_gradient_takes_over() -> None:
    limiter = AdaptiveLimit(1, 1000, initial=20)
    flat(limiter, 2)
    assert limiter.limit == 45
    waited = limiter.update(wait=HOLD, hold=HOLD, running=45)  # jobs wait a hold time
    assert not limiter.slow_start and waited < 45
    after = [waited, *flat(limiter, 30)]
    steps = [b - a for a, b in pairwise(after)]
    assert all(0 <= step <= after[i] ** 0.5 for i, step in enumerate(steps))  # additive now
    assert not limiter.slow_start  # and it stays so, though the wait is gone
    assert after[-1] < 1000


def test_a_small_wait_or_hold_within_tolerance_is_not_congestion() -> None:
    limiter = AdaptiveLimit(1, 1000, initial=20)
    flat(limiter, 1)  # the baseline: HOLD
    limiter.update(wait=0.9 * SLOW_START_WAIT * HOLD, hold=HOLD, running=limiter.limit)
    limiter.update(wait=0.0, hold=0.95 * TOLERANCE * HOLD, running=limiter.limit)
    assert limiter.slow_start and limiter.limit == 67


def test_queries_slower_than_their_baseline_end_slow_start() -> None:
    limiter = AdaptiveLimit(1, 1000, initial=20)
    flat(limiter, 3)
    assert limiter.limit == 67
    limiter.update(wait=0.0, hold=1.1 * TOLERANCE * HOLD, running=67)
    assert not limiter.slow_start and limiter.limit <= 67 + 67**0.5  # an additive step


def test_a_worker_that_is_not_busy_does_not_grow_in_slow_start() -> None:
    limiter = AdaptiveLimit(1, 200, initial=20)
    for _ in range(20):
        limiter.update(wait=0.0, hold=HOLD, running=5)
    assert limiter.limit == 20 and limiter.slow_start


def test_slow_start_grows_only_on_a_round_of_samples_begun_since_its_last_growth() -> None:
    """Jobs that start together finish together: the first releases after a growth are of jobs
    that found a free connection. With 20 connections held 0.2 s each, the limit grows to 30 once
    the first 20 are released; releases of acquires begun before it, and the next 20 that found a
    connection at once, do not grow it again (fewer than 30). The ones that had to wait end slow
    start as soon as the window's mean wait shows it."""
    clock, slots = Clock(), Slots()
    limiter = AdaptiveLimit(1, 200, initial=20, clock=clock)
    limiter.warm_up = False  # (test_the_first_window_is_dropped_as_warm_up)
    limiter.drive(slots)
    slots.running = 20
    clock.now = 0.2
    for _ in range(19):
        limiter.observe(0.0, 0.2)
    assert limiter.updates == 0  # 19 of a round of 20
    limiter.observe(0.0, 0.2)
    assert limiter.limit == slots.max_jobs == 30 and limiter.updates == 1
    slots.running = 30
    clock.now = 0.25
    for _ in range(5):  # begun at 0.05, before the growth
        limiter.observe(0.0, 0.2)
    clock.now = 0.4
    for _ in range(20):  # begun at 0.2, with a connection free: 20 of a round of 30
        limiter.observe(0.0, 0.2)
    assert limiter.updates == 1 and limiter.limit == 30 and limiter.slow_start
    clock.now = 0.6
    waited = 0
    while limiter.slow_start:  # begun at 0.2 too, they waited a hold time for a connection
        limiter.observe(0.2, 0.2)
        waited += 1
    assert waited == 3  # a mean wait of 0.6 / 28 s: above a tenth of the hold
    assert limiter.updates == 2 and limiter.limit <= 30


def test_the_first_window_is_dropped_as_warm_up() -> None:
    """The first round of samples times the pool opening its connections and their first
    queries: dropped, it neither ends slow start nor sets the baseline."""
    clock, slots = Clock(), Slots()
    limiter = AdaptiveLimit(1, 200, initial=20, clock=clock)
    limiter.drive(slots)
    slots.running = 20
    clock.now = 0.2
    for _ in range(19):  # cold: 18 ms waits for connections being opened, 32 ms first queries
        limiter.observe(0.018, 0.032)
    assert limiter.warm_up  # fewer than a round of the limit
    limiter.observe(0.018, 0.032)
    assert not limiter.warm_up and limiter.updates == 0 and limiter.baseline is None
    clock.now = 0.4
    for _ in range(20):  # warm: no wait, 3 ms queries
        limiter.observe(0.0, 0.003)
    assert limiter.updates == 1 and limiter.slow_start and limiter.limit == 30
    assert limiter.baseline == pytest.approx(0.003)


def test_a_congested_window_closes_at_once_whenever_its_samples_began() -> None:
    clock = Clock()
    limiter = AdaptiveLimit(1, 200, initial=20, clock=clock)
    limiter.update(wait=0.0, hold=HOLD, running=20)  # grown to 30 at 0.0 (and warm-up over)
    clock.now = 0.1
    for _ in range(MIN_SAMPLES):
        limiter.observe(1.0, 0.0)  # timed-out acquires begun before the growth
    assert limiter.updates == 2 and not limiter.slow_start and limiter.limit < 30
