"""Prometheus metrics of one worker process, in a registry of its own (not the global default one,
so that several workers can run in one process, as the tests do).

Counters and histograms are updated where things happen (``worker/runtime/executor.py``,
``worker/runtime/execution.py``, the pool acquire hook, the dead-letter store); gauges that describe a state
(queue depth, pool connections, jobs in progress) are read when Prometheus scrapes, by
``set_state()``. What every job updates (its counters, its duration, queue-wait and acquire-wait
histograms) is kept in plain lock-free tallies (``Tally``, ``Spread``: the worker is one event
loop) that a collector turns into Prometheus families at scrape time; prometheus_client's own
metrics take a lock per update, which cost ~3 % of a core at a few thousand jobs per second.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import asyncpg
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from jobs.errors import PoolAcquireTimeout

CONTENT_TYPE = CONTENT_TYPE_LATEST
disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series: half the scrape

# Jobs of this project take milliseconds; the long tail is timeouts (JOB_TIMEOUT, 60 s by default).
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800)
ACQUIRE_BUCKETS = (
    0.0001,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
)

# Errors counted as PostgreSQL's when a job fails with them.
POSTGRES_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    PoolAcquireTimeout,
)


class Tally:
    """A counter bumped without a lock (read by the collector at scrape time)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount


class Spread:
    """A histogram filled without a lock: a count per bucket (the last one: above every bound)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bound >= value
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus' buckets: (le, observations <= le), ending with +Inf."""
        buckets, seen = [], 0
        for bound, count in zip(
            (*map(floatToGoString, self.bounds), "+Inf"), self.counts, strict=True
        ):
            seen += count
            buckets.append((bound, float(seen)))
        return buckets


@dataclass(slots=True)
class JobSeries:
    """The series of one job name: what each of its tries updates."""

    started: Tally = field(default_factory=Tally)
    succeeded: Tally = field(default_factory=Tally)
    failed: Tally = field(default_factory=Tally)
    retried: Tally = field(default_factory=Tally)
    aborted: Tally = field(default_factory=Tally)
    duration: Spread = field(default_factory=lambda: Spread(DURATION_BUCKETS))


JOB_COUNTERS = (
    ("started", "worker_jobs_started", "Jobs started (tries)."),
    ("succeeded", "worker_jobs_succeeded", "Jobs that succeeded."),
    ("failed", "worker_jobs_failed", "Jobs that ended in failure (a result with an error)."),
    ("retried", "worker_jobs_retried", "Tries that ended in a retry with backoff, or a re-queue."),
    ("aborted", "worker_jobs_aborted", "Jobs aborted by an operator."),
)


class JobCollector(Collector):
    """Turns the per-job tallies into Prometheus families when the registry is collected."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        series = sorted(self.metrics._series.items())
        for attr, name, documentation in JOB_COUNTERS:
            family = CounterMetricFamily(name, documentation, labels=["function"])
            for job, s in series:
                family.add_metric([job], getattr(s, attr).value)
            yield family
        duration = HistogramMetricFamily(
            "worker_job_duration_seconds", "Run time of a try, by job.", labels=["function"]
        )
        for job, s in series:
            duration.add_metric([job], s.duration.cumulative(), s.duration.total)
        yield duration
        m = self.metrics
        yield _histogram(
            "worker_job_queue_wait_seconds",
            "Time from a job's due time to its start.",
            m.queue_wait,
        )
        yield _histogram(
            "worker_pool_acquire_wait_seconds",
            "Time a job waited for a pool connection.",
            m.acquire_wait,
        )
        yield _histogram(
            "worker_outbox_relay_lag_seconds",
            "Time from an outbox row's insert to its relay to Redis.",
            m.outbox_relay_lag,
        )


def _histogram(name: str, documentation: str, spread: Spread) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation)
    family.add_metric([], spread.cumulative(), spread.total)
    return family


@dataclass(frozen=True, slots=True)
class QueueGauges:
    """What ``refresh`` sets from the queue (see ``worker/queue/stats.py``)."""

    due: int
    scheduled: int
    oldest_due_age: float
    blocked: int = 0  # waiting on a flow-control gate (worker/queue/stats.py)


class WorkerMetrics:
    """Every metric of one worker; ``registry`` is what its ``/metrics`` endpoint serves."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.dead_lettered = Counter(
            "worker_jobs_dead_lettered",
            "Jobs that became dead letters.",
            ["function", "reason"],
            registry=r,
        )
        self.queue_wait = Spread(WAIT_BUCKETS)
        self.acquire_wait = Spread(ACQUIRE_BUCKETS)
        self.outbox_relay_lag = Spread(WAIT_BUCKETS)  # the outbox relay's (worker/runtime/relay.py)
        self._series: dict[str, JobSeries] = {}
        r.register(JobCollector(self))
        self.acquire_timeouts = Counter(
            "worker_pool_acquire_timeouts", "Acquires that hit PG_ACQUIRE_TIMEOUT.", registry=r
        )
        self.redis_errors = Counter(
            "worker_redis_errors", "Redis errors seen by the worker's loops.", ["where"], registry=r
        )
        self.postgres_errors = Counter(
            "worker_postgres_errors",
            "PostgreSQL errors that ended a try, by type.",
            ["error"],
            registry=r,
        )
        self.in_progress = Gauge("worker_jobs_in_progress", "Jobs running now.", registry=r)
        self.max_jobs = Gauge("worker_max_jobs", "Jobs this worker runs at once.", registry=r)
        self.concurrency_limit = Gauge(
            "worker_concurrency_limit",
            "Jobs this worker claims up to now: WORKER_MAX_JOBS, or the adaptive limit under "
            "WORKER_MAX_JOBS=auto (worker_max_jobs is then its ceiling).",
            registry=r,
        )
        self.queue_jobs = Gauge(
            "worker_queue_jobs",
            "Jobs in the queue: due (waiting or running), scheduled later, or blocked (waiting "
            "on a flow-control limit, rate, pause or lane).",
            ["state"],
            registry=r,
        )
        self.oldest_due_age = Gauge(
            "worker_queue_oldest_due_job_age_seconds",
            "How long the oldest due job not yet running has waited (0: none).",
            registry=r,
        )
        self.pool_connections = Gauge(
            "worker_pool_connections", "Pool connections, idle or in use.", ["state"], registry=r
        )
        self.pool_size = Gauge("worker_pool_size", "Connections open in the pool.", registry=r)
        self.pool_max_size = Gauge("worker_pool_max_size", "The pool's max size.", registry=r)
        self.heartbeat_age = Gauge(
            "worker_heartbeat_age_seconds",
            "Since the consumer loop last made progress.",
            registry=r,
        )
        self.postgres_breaker_open = Gauge(
            "worker_postgres_breaker_open",
            "1 while PostgreSQL is unreachable and the worker claims no jobs (worker/runtime/breaker.py).",
            registry=r,
        )
        # The outbox relay (worker/runtime/relay.py).
        self.outbox_depth = Gauge(
            "worker_outbox_unrelayed", "Outbox rows of the queue not yet relayed.", registry=r
        )
        self.outbox_oldest_age = Gauge(
            "worker_outbox_oldest_unrelayed_age_seconds",
            "How long the oldest outbox row not yet relayed has waited (0: none).",
            registry=r,
        )
        self.outbox_relayed = Counter(
            "worker_outbox_relayed", "Outbox rows this worker moved to Redis.", registry=r
        )
        self.outbox_relay_errors = Counter(
            "worker_outbox_relay_errors", "Relay rounds that failed (and were retried).", registry=r
        )
        self.last_acquire = 0.0  # time.monotonic() of the last successful acquire

    def job(self, name: str) -> JobSeries:
        """The series of job ``name`` (created on first use)."""
        series = self._series.get(name)
        if series is None:
            series = self._series[name] = JobSeries()
        return series

    def observe_acquire(self, waited: float, ok: bool) -> None:
        """The pool acquire hook (``jobs.context.Resources.on_acquire``)."""
        self.acquire_wait.observe(waited)
        if ok:
            self.last_acquire = time.monotonic()
        else:
            self.acquire_timeouts.inc()

    def postgres_error(self, exc: BaseException) -> None:
        """Count ``exc`` if it is a PostgreSQL error (or a pool acquire timeout)."""
        if isinstance(exc, POSTGRES_ERRORS):
            self.postgres_errors.labels(type(exc).__name__).inc()

    def redis_error(self, where: str) -> None:
        self.redis_errors.labels(where).inc()

    def set_state(
        self,
        running: int,
        max_jobs: int,
        pool: asyncpg.Pool[asyncpg.Record] | None,
        queue: QueueGauges | None,
        heartbeat_age: float,
        limit: int | None = None,
    ) -> None:
        """Set the gauges from the worker's state just before a scrape (``limit``: the adaptive
        limit, default ``max_jobs``)."""
        self.in_progress.set(running)
        self.max_jobs.set(max_jobs)
        self.concurrency_limit.set(max_jobs if limit is None else limit)
        self.heartbeat_age.set(heartbeat_age)
        if pool is not None:
            size, idle = pool.get_size(), pool.get_idle_size()
            self.pool_size.set(size)
            self.pool_max_size.set(pool.get_max_size())
            self.pool_connections.labels("idle").set(idle)
            self.pool_connections.labels("in_use").set(size - idle)
        if queue is not None:
            self.queue_jobs.labels("due").set(queue.due)
            self.queue_jobs.labels("scheduled").set(queue.scheduled)
            self.queue_jobs.labels("blocked").set(queue.blocked)
            self.oldest_due_age.set(queue.oldest_due_age)

    def set_outbox(self, unrelayed: int, oldest_age: float) -> None:
        """The outbox gauges, as the relay last read them."""
        self.outbox_depth.set(unrelayed)
        self.outbox_oldest_age.set(oldest_age)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


AcquireHook = Callable[[float, bool], None]
