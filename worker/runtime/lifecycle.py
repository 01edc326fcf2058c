"""Worker startup and shutdown: exactly one asyncpg pool per worker process, in ``ctx``; the
``Runtime`` a job's run needs (``worker/runtime/execution.py``), in ``ctx``; and what runs beside
the jobs (the consumer, the endpoint and health record, the background tasks), the ``Services``
kept in ``ctx`` under ``SERVICES_KEY`` until shutdown stops them."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from jobs.context import RESOURCES_KEY, Resources
from jobs.registry import JOBS_BY_NAME
from worker.config import Config, load_config
from worker.core.logs import configure_logging
from worker.db.budget import BUDGET_KEY, open_pool, transaction_timeouts
from worker.db.dead_letters import DeadLetterStore
from worker.queue.connection import install_policy, stop_retrying_on_stop
from worker.runtime.adaptive import AdaptiveLimit, ceiling
from worker.runtime.breaker import PostgresBreaker
from worker.runtime.consumer import Consumer, running_worker
from worker.runtime.execution import RUNTIME_KEY, Runtime
from worker.runtime.functions import job_specs
from worker.runtime.leases import LeaseKeeper
from worker.runtime.metrics import WorkerMetrics
from worker.runtime.operations import Operations, start_operations
from worker.runtime.relay import OutboxRelay
from worker.runtime.tracing import TRACING_KEY, tracing_from_env

logger = logging.getLogger(__name__)

CONFIG_KEY = "config"
SERVICES_KEY = "services"
POOL_CLOSE_TIMEOUT = 10.0


@dataclass
class Services:
    """What runs beside the jobs from startup to shutdown: the background tasks (lease renewal, dead
    letters, connection budget, breaker, outbox relay), the consumer, and the endpoint with the
    health record."""

    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    consumer: Consumer | None = None
    ops: Operations | None = None  # the endpoint and the health record (operations.py)

    async def stop(self, config: Config) -> None:
        """Drain the consumer, stop the endpoint and the record, cancel the tasks."""
        if self.consumer is not None:
            # A Redis that does not answer holds the final writes this long at most.
            await self.consumer.close(config.shutdown_grace, 2 * config.redis_socket_timeout)
        if self.ops is not None:
            await self.ops.stop()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def config_of(ctx: dict[str, Any]) -> Config:
    """The configuration in ``ctx`` (tests inject one), else the one from the environment."""
    config = ctx.get(CONFIG_KEY)
    if not isinstance(config, Config):
        config = ctx[CONFIG_KEY] = load_config()
    return config


async def startup(ctx: dict[str, Any]) -> None:
    """arq ``on_startup``: open the pool, check the schema and the connection budget, put it in ctx."""
    config = config_of(ctx)
    configure_logging(config.log_level, config.log_format)
    redis = ctx["redis"]  # arq's own connection pool: no second one
    # Socket timeouts, keepalive, retries for REDIS_RETRY_WINDOW; with Sentinel: follow a failover.
    redis_policy = await install_policy(redis, config)
    # OTEL_* (worker/runtime/tracing.py); tests inject theirs. None: off, the SDK not imported.
    tracing = ctx.get(TRACING_KEY) or tracing_from_env(os.environ, config.queue_name)
    ctx[TRACING_KEY] = tracing
    # The pool may come back smaller (PG_POOL_OVER_BUDGET=shrink): its config says so.
    pool, config, budget = await open_pool(config, redis)
    ctx[CONFIG_KEY], ctx[BUDGET_KEY] = config, budget
    metrics = WorkerMetrics()  # this process's registry (served on METRICS_PORT)
    limiter = adaptive_limit(config, budget.left)
    ctx[RESOURCES_KEY] = Resources(
        on_acquire=metrics.observe_acquire,
        on_release=None if limiter is None else limiter.observe,
        pool=pool,
        acquire_timeout=config.pg_acquire_timeout,
        transaction_timeouts=transaction_timeouts(config),
        tracing=tracing,
    )
    # While PostgreSQL is unreachable: no claims, tries given back (worker/runtime/breaker.py).
    breaker = PostgresBreaker(config.database_url, config.pg_connect_timeout, pool, metrics)
    rt = Runtime(
        config=config,
        redis=redis,
        leases=LeaseKeeper(redis, config.job_lease, config.queue_name),
        dead_letters=DeadLetterStore(pool, redis, config.queue_name),
        known=ctx.get("known_jobs", sorted(JOBS_BY_NAME)),
        metrics=metrics,
        breaker=breaker,
    )
    services = Services([asyncio.create_task(rt.leases.run())])
    services.tasks.append(asyncio.create_task(rt.dead_letters.run()))
    services.tasks.append(asyncio.create_task(budget.run()))
    services.tasks.append(asyncio.create_task(breaker.run()))
    ctx[RUNTIME_KEY], ctx[SERVICES_KEY] = rt, services
    worker = running_worker(ctx)
    # The outbox relay: committed job_outbox rows of this queue to Redis (worker/runtime/relay.py),
    # checked against the jobs this worker runs.
    specs = job_specs(worker.functions.values()) if worker is not None else JOBS_BY_NAME
    relay = OutboxRelay(config, pool, redis, specs, metrics)
    services.tasks.append(asyncio.create_task(relay.run()))
    if worker is not None:  # always, under arq; absent only when a test calls startup() itself
        consumer = services.consumer = Consumer(
            worker, config.job_lease, config.poll_delay, metrics, breaker
        )
        consumer.executor.tracing = tracing
        if limiter is not None:
            consumer.limiter = limiter
            limiter.drive(consumer.producer)
        consumer.start()
        stop_retrying_on_stop(worker, redis_policy, config.redis_socket_timeout)
        services.ops = await start_operations(rt, consumer, pool)
    report_pool_sizing(config)
    logger.info(
        "postgres pool ready: min %d, max %d connections for max_jobs=%s",
        config.pool_min_size,
        config.pool_max_size,
        config.worker_max_jobs
        if limiter is None
        else f"auto ({limiter.limit} now, {limiter.minimum} to {limiter.maximum})",
    )


def adaptive_limit(config: Config, budget_left: int | None) -> AdaptiveLimit | None:
    """Under WORKER_MAX_JOBS=auto, the limiter: from the pool's size, between WORKER_MAX_JOBS_MIN
    and WORKER_MAX_JOBS_MAX lowered to what the connection budget leaves this worker."""
    if not config.adaptive_concurrency:
        return None
    top = ceiling(config.max_jobs, budget_left)
    return AdaptiveLimit(min(config.max_jobs_min, top), top, initial=config.pool_max_size)


async def shutdown(ctx: dict[str, Any]) -> None:
    """arq ``on_shutdown``: stop the background tasks, close the pool; does nothing for what a
    failed startup did not create."""
    services: Services | None = ctx.pop(SERVICES_KEY, None)
    rt: Runtime | None = ctx.pop(RUNTIME_KEY, None)
    if services is not None and rt is not None:
        await services.stop(rt.config)
    budget = ctx.pop(BUDGET_KEY, None)
    if budget is not None:
        await budget.close()
    tracing = ctx.pop(TRACING_KEY, None)
    if tracing is not None:
        await tracing.shutdown()
    res: Resources | None = ctx.pop(RESOURCES_KEY, None)
    if res is None:
        return
    try:
        # close() waits for acquired connections to be released; past the timeout they are cut.
        await asyncio.wait_for(res.pool.close(), POOL_CLOSE_TIMEOUT)
    except TimeoutError:
        logger.warning(
            "postgres pool did not close within %gs; connections terminated", POOL_CLOSE_TIMEOUT
        )
        res.pool.terminate()


def report_pool_sizing(config: Config) -> None:
    """Warn when max_jobs exceeds the pool, with the connection hold time that still avoids timeouts."""
    jobs, pool = config.max_jobs, config.pool_max_size
    if config.adaptive_concurrency or jobs <= pool:
        return
    rounds = -(-(jobs - pool) // pool)  # waiting jobs are served in this many rounds of `pool`
    budget = config.pg_acquire_timeout / rounds
    logger.warning(
        "WORKER_MAX_JOBS=%d > PG_POOL_MAX_SIZE=%d: up to %d jobs wait for a connection, the last "
        "one about %d connection hold times; jobs that hold a connection longer than %.3fs will "
        "hit PG_ACQUIRE_TIMEOUT=%gs. Raise PG_POOL_MAX_SIZE or lower WORKER_MAX_JOBS.",
        jobs,
        pool,
        jobs - pool,
        rounds,
        budget,
        config.pg_acquire_timeout,
    )
