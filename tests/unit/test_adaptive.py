"""The adaptive concurrency limiter's arithmetic (worker/runtime/adaptive.py), on deterministic
sample sequences and a fake clock: it rises while latency is flat, falls when the pool wait climbs
or queries slow down, stays within its bounds, and recomputes once per window, not per sample."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from worker.config import load_config
from worker.errors import ConfigError
from worker.runtime.adaptive import MIN_SAMPLES, MIN_WINDOW, AdaptiveLimit, ceiling
from worker.runtime.lifecycle import adaptive_limit
from worker.runtime.metrics import WorkerMetrics

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


def busy(limiter: AdaptiveLimit, slots: Slots) -> None:
    slots.running = limiter.limit  # every slot in use


def test_the_limit_rises_while_latency_is_flat_up_to_its_maximum() -> None:
    limiter, slots = AdaptiveLimit(1, 50, initial=5), Slots()
    limiter.drive(slots)
    seen = [limiter.limit]
    for _ in range(200):
        busy(limiter, slots)
        seen.append(limiter.update(wait=0.0, hold=HOLD, running=slots.running))
    assert seen == sorted(seen)  # never falls
    assert seen[20] > 5 and seen[-1] == 50 and slots.max_jobs == 50


def test_the_limit_falls_when_the_pool_wait_climbs_and_stops_at_its_minimum() -> None:
    limiter = AdaptiveLimit(6, 100, initial=100)
    limiter.update(wait=0.0, hold=HOLD, running=100)  # the baseline: 10 ms without waiting
    seen = []
    for step in range(1, 60):
        seen.append(limiter.update(wait=HOLD * step, hold=HOLD, running=limiter.limit))
    assert seen == sorted(seen, reverse=True)
    assert seen[5] < 100 and seen[-1] == 6


def test_slower_queries_lower_the_limit_and_the_baseline_follows_them() -> None:
    limiter = AdaptiveLimit(1, 200, initial=40)
    for _ in range(20):
        limiter.update(wait=0.0, hold=HOLD, running=limiter.limit)
    before = limiter.limit
    for _ in range(3):
        limiter.update(wait=0.0, hold=4 * HOLD, running=limiter.limit)
    assert limiter.limit < before  # the database got slower: fewer jobs at once
    lowest = limiter.limit
    for _ in range(300):  # it stays slow: the baseline catches up and the limit grows again
        limiter.update(wait=0.0, hold=4 * HOLD, running=limiter.limit)
    assert limiter.baseline is not None and limiter.baseline > 3 * HOLD
    assert limiter.limit > lowest


def test_a_worker_that_is_not_busy_keeps_its_limit() -> None:
    limiter = AdaptiveLimit(1, 200, initial=40)
    for _ in range(50):
        limiter.update(wait=0.0, hold=HOLD, running=5)  # 5 of 40 in use
    assert limiter.limit == 40
    limiter.update(wait=10 * HOLD, hold=HOLD, running=5)
    assert limiter.limit == 40


@pytest.mark.parametrize("pool", [2, 5, 20])
def test_against_a_pool_of_p_connections_the_limit_settles_a_few_jobs_above_p(pool: int) -> None:
    """A closed model: L jobs that only hold a connection for HOLD seconds share P connections, so
    a job waits (L - P) / P hold times; from far above and from below, the limit ends near P."""
    for start in (1, 150):
        limiter = AdaptiveLimit(1, 150, initial=start)
        seen = []
        for _ in range(400):
            jobs = limiter.limit
            wait = max(jobs - pool, 0) / pool * HOLD
            seen.append(limiter.update(wait=wait, hold=HOLD, running=jobs))
        settled = seen[-50:]
        assert all(pool <= limit <= pool + 2 * pool**0.5 + 2 for limit in settled), settled
        assert all(1 <= limit <= 150 for limit in seen)


def test_samples_are_summed_and_the_limit_recomputed_once_per_window() -> None:
    clock, slots = Clock(), Slots()
    limiter = AdaptiveLimit(1, 100, initial=10, clock=clock)
    limiter.slow_start = limiter.warm_up = False  # the gradient's windows (slow start's and
    # the warm-up's: test_adaptive_slow_start.py)
    limiter.drive(slots)
    slots.running = 10
    for _ in range(5 * MIN_SAMPLES):  # many samples, no time passes: no update
        limiter.observe(0.0, HOLD)
    assert limiter.updates == 0
    clock.now += MIN_WINDOW
    limiter.observe(0.0, HOLD)
    assert limiter.updates == 1 and limiter.baseline == pytest.approx(HOLD)
    clock.now += 10 * MIN_WINDOW  # time passes, too few samples: no update
    for _ in range(MIN_SAMPLES - 1):
        limiter.observe(0.0, HOLD)
    assert limiter.updates == 1
    limiter.observe(0.0, HOLD)
    assert limiter.updates == 2 and slots.max_jobs == limiter.limit > 10


def test_a_timed_out_acquire_counts_as_a_long_wait() -> None:
    clock = Clock()
    limiter = AdaptiveLimit(1, 100, initial=50, clock=clock)
    before = limiter.update(wait=0.0, hold=HOLD, running=50)  # slow start: up from 50
    for _ in range(MIN_SAMPLES):
        limiter.observe(5.0, 0.0)  # PG_ACQUIRE_TIMEOUT hit
    clock.now += MIN_WINDOW
    limiter.observe(5.0, 0.0)
    assert limiter.limit < before and not limiter.slow_start


def test_bounds_are_checked_and_the_ceiling_follows_the_connection_budget() -> None:
    with pytest.raises(ValueError, match="minimum <= maximum"):
        AdaptiveLimit(10, 5, initial=7)
    assert AdaptiveLimit(4, 8, initial=100).limit == 8
    assert AdaptiveLimit(4, 8, initial=1).limit == 4
    assert ceiling(200, None) == 200  # behind a transaction pooler: not checked
    assert ceiling(200, 37) == 37
    assert ceiling(20, 37) == 20


def test_auto_is_configured_with_bounds_and_the_budget() -> None:
    auto = load_config(worker_max_jobs="auto", worker_max_jobs_min=2, worker_max_jobs_max=80)
    assert auto.adaptive_concurrency and auto.max_jobs == 80 and auto.max_jobs_min == 2
    assert auto.pool_max_size == 20  # PG_POOL_MAX_SIZE unset: the default WORKER_MAX_JOBS
    limiter = adaptive_limit(auto, budget_left=30)
    assert limiter is not None
    assert (limiter.minimum, limiter.maximum, limiter.limit) == (2, 30, 20)
    small = adaptive_limit(auto.model_copy(update={"pg_pool_max_size": 4}), budget_left=3)
    assert small is not None and (small.minimum, small.maximum, small.limit) == (2, 3, 3)
    defaults = load_config(worker_max_jobs="auto")
    assert (defaults.max_jobs_min, defaults.max_jobs, defaults.pool_max_size) == (1, 200, 20)
    assert adaptive_limit(load_config(worker_max_jobs=12), budget_left=30) is None


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"worker_max_jobs": 10, "worker_max_jobs_max": 50}, "bound WORKER_MAX_JOBS=auto only"),
        (
            {"worker_max_jobs": "auto", "worker_max_jobs_min": 60, "worker_max_jobs_max": 50},
            "WORKER_MAX_JOBS_MIN=60 is larger than WORKER_MAX_JOBS_MAX=50",
        ),
        ({"worker_max_jobs": "sometimes"}, "WORKER_MAX_JOBS"),
        ({"worker_max_jobs": "auto", "worker_max_jobs_min": 0}, "WORKER_MAX_JOBS_MIN"),
    ],
)
def test_bad_bounds_are_refused_with_a_message(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(**settings)


def test_the_limit_is_exported_as_a_gauge_beside_max_jobs() -> None:
    metrics = WorkerMetrics()
    metrics.set_state(3, 200, None, None, 0.1, limit=7)
    text = metrics.exposition().decode()
    assert "\nworker_concurrency_limit 7.0\n" in text and "\nworker_max_jobs 200.0\n" in text
    metrics.set_state(3, 20, None, None, 0.1)  # a fixed WORKER_MAX_JOBS: the limit is it
    assert "\nworker_concurrency_limit 20.0\n" in metrics.exposition().decode()
