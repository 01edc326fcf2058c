"""Adaptive concurrency (``WORKER_MAX_JOBS=auto``): how many jobs to run at once, from measurement.

A gradient limiter in the manner of Netflix's concurrency-limits ``Gradient2Limit``, fed from the
place where jobs take a connection (``jobs.context.connection``'s ``on_release`` hook): each sample
is one connection use, the seconds waited for the pool and the seconds the connection was held.
Samples are summed (no allocation, no list) and the limit is recomputed once per window, when a
window has at least ``MIN_SAMPLES`` samples and ``MIN_WINDOW`` seconds, never per job::

    baseline = EMA of the windows' mean hold time over ~BASELINE_WINDOWS windows: the query
               latency, long term (cut by 5% a window while it is above twice the hold time,
               Gradient2's recovery after a slow spell)
    queries  = min(TOLERANCE * baseline / mean hold, 1)       (1: queries no slower than usual)
    pool     = mean hold / (mean hold + mean wait)            (1: no job waits for a connection)
    gradient = max(queries * pool, 0.5)
    target   = limit * gradient + sqrt(limit)                 (the queue allowance)
    limit    = limit + SMOOTHING * (target - limit), within [WORKER_MAX_JOBS_MIN, ceiling]

With flat latency and no wait the gradient is 1 and the limit rises by the allowance. A pool that
runs short makes jobs wait: with P connections and L jobs that spend their time on them, a job
waits about (L - P) / P hold times, the pool factor is P / L, and the limit settles where
L = P + sqrt(L) (4 for P = 2, 25 for P = 20): a few jobs waiting, so that a freed connection is
taken at once, and the wait stays about sqrt(L) / P hold times. Queries slower than TOLERANCE
times their long-term latency (the database is slowed or overloaded) lower it too; the tolerance
keeps the noise of the hold times from holding the limit down. A window in which fewer than half
the limit were running (the worker is not busy) leaves the limit as it is. Jobs that use no
connection give no samples.

Slow start (as in TCP and concurrency-limits' limiters): the gradient adds about sqrt(limit) / 5 a
window, so from the pool's size it would take a long drain to find a higher limit. Until the first
sign of congestion, the limit is multiplied by SLOW_START_GROWTH a window instead::

    congested = mean wait > SLOW_START_WAIT * mean hold  or  mean hold > TOLERANCE * baseline

and from the first congested window on, the gradient above decides (slow start never comes back).
A growth is decided on samples measured at the current limit: in slow start, a window that shows
no congestion closes only once it has ``max(MIN_SAMPLES, limit)`` samples of acquires begun since
the last growth (about one round of the limit's jobs: jobs started together finish together, and
the first releases after a growth are of jobs that found a free connection); a congested window
closes as soon as it has MIN_SAMPLES samples and MIN_WINDOW seconds, whenever its samples began.

Warm-up: the first window (at least ``max(MIN_SAMPLES, limit)`` samples, one round of the pool's
connections) is dropped. Its samples time the pool opening its connections and their first
queries (tens of milliseconds where a warm query takes a few): kept, they would end slow start at
once and set the baseline far too high.

The ceiling is WORKER_MAX_JOBS_MAX, lowered to the connections the fleet's budget leaves this
worker (``worker/db/budget.py``'s ``left``), so that even if every running job held a connection
the worker would stay within the budget. The producer reads the limit as its ``max_jobs``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Protocol

logger = logging.getLogger(__name__)

MIN_SAMPLES = 10  # a window closes after at least this many samples...
MIN_WINDOW = 0.1  # ...and at least this many seconds
BASELINE_WINDOWS = 100  # the baseline's EMA spans about this many windows
TOLERANCE = 1.5  # hold times above baseline * TOLERANCE lower the limit (Gradient2's default)
SMOOTHING = 0.2  # the share of each new target taken into the limit
MIN_GRADIENT = 0.5  # one window at most halves the target
SLOW_START_GROWTH = 1.5  # slow start: the limit's factor per window (and at least + 1)
SLOW_START_WAIT = 0.1  # slow start ends once the mean wait exceeds this share of the mean hold
# (or the mean hold TOLERANCE times its baseline: the queries factor below drops under 1)


class Slots(Protocol):
    """What the limiter drives: the producer's limit and its running jobs."""

    max_jobs: int
    running: int


class AdaptiveLimit:
    """The gradient limiter (see the module docstring); ``observe`` is the release hook."""

    def __init__(
        self,
        minimum: int,
        maximum: int,
        initial: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= minimum <= maximum:
            raise ValueError(
                f"bounds must satisfy 1 <= minimum <= maximum, got {minimum}, {maximum}"
            )
        self.minimum = minimum
        self.maximum = maximum
        self.estimate = float(min(max(initial, minimum), maximum))
        self.limit = int(self.estimate)
        self.baseline: float | None = None
        self.slots: Slots | None = None
        self.clock = clock
        self.updates = 0
        self.slow_start = True  # until the first congested window (the module docstring)
        self.warm_up = True  # until the first window closes: observe() drops it
        self._count = 0
        self._fresh = 0  # samples of acquires begun after the last slow-start growth
        self._wait = 0.0
        self._hold = 0.0
        self._opened = clock()
        self._grown_at = -math.inf

    def drive(self, slots: Slots) -> None:
        """Set ``slots.max_jobs`` to the limit from now on (the producer)."""
        self.slots = slots
        slots.max_jobs = self.limit

    def observe(self, waited: float, held: float) -> None:
        """One connection use: seconds waited for it, seconds held (0 after a timed-out acquire)."""
        self._count += 1
        self._wait += waited
        self._hold += held
        now = self.clock()
        if now - waited - held >= self._grown_at:
            self._fresh += 1
        if self._count >= MIN_SAMPLES and now - self._opened >= MIN_WINDOW:
            if self.warm_up:
                if self._count >= self.limit:
                    self.warm_up = False
                    self._count, self._fresh, self._wait, self._hold = 0, 0, 0.0, 0.0
                    self._opened = now
                return
            wait, hold = self._wait / self._count, self._hold / self._count
            if (
                self.slow_start
                and self._fresh < max(MIN_SAMPLES, self.limit)
                and not self.congested(wait, hold)
            ):
                return  # no verdict yet on the limit of the last growth: keep summing
            slots = self.slots
            running = None if slots is None else slots.running
            self.update(wait, hold, running)

    def congested(self, wait: float, hold: float) -> bool:
        """Slow start's end: jobs wait for the pool, or queries are slower than their baseline."""
        if wait > SLOW_START_WAIT * hold:
            return True
        return self.baseline is not None and hold > TOLERANCE * self.baseline

    def update(self, wait: float, hold: float, running: int | None) -> int:
        """Close the window with its mean wait and hold (seconds) and the jobs running now (None:
        unknown, taken as busy); the new limit."""
        self._count, self._fresh, self._wait, self._hold = 0, 0, 0.0, 0.0
        self._opened = self.clock()
        self.updates += 1
        self.warm_up = False
        if self.slow_start and self.congested(wait, hold):
            self.slow_start = False
        baseline = self.baseline
        if baseline is None:
            baseline = hold
        else:
            baseline += (hold - baseline) * (2 / (BASELINE_WINDOWS + 1))
            if baseline > 2 * hold:
                baseline *= 0.95
        self.baseline = baseline
        if running is not None and running < self.limit / 2:
            return self.limit  # not busy: the samples say nothing about more jobs
        if self.slow_start:
            estimate = max(self.estimate * SLOW_START_GROWTH, self.estimate + 1)
            self._grown_at = self._opened
        else:
            queries = 1.0 if hold <= 0 else min(TOLERANCE * baseline / hold, 1.0)
            pool = 1.0 if hold + wait <= 0 else hold / (hold + wait)
            gradient = max(queries * pool, MIN_GRADIENT)
            target = self.estimate * gradient + math.sqrt(self.estimate)
            estimate = self.estimate + SMOOTHING * (target - self.estimate)
        self.estimate = min(max(estimate, float(self.minimum)), float(self.maximum))
        if int(self.estimate) != self.limit:
            logger.debug(
                "adaptive limit %d -> %d (wait %.2f ms, hold %.2f ms, baseline %.2f ms, %s running)",
                self.limit,
                int(self.estimate),
                wait * 1000,
                hold * 1000,
                baseline * 1000,
                running,
            )
        self.limit = int(self.estimate)
        if self.slots is not None:
            self.slots.max_jobs = self.limit
        return self.limit

    def as_dict(self) -> dict[str, int | str]:
        """For the health record and ``status``."""
        return {"mode": "auto", "limit": self.limit, "min": self.minimum, "max": self.maximum}


def ceiling(maximum: int, budget_left: int | None) -> int:
    """The limit's ceiling: WORKER_MAX_JOBS_MAX, at most what the connection budget leaves this
    worker (None: not checked, behind a transaction pooler)."""
    if budget_left is None:
        return maximum
    return max(min(maximum, budget_left), 1)
