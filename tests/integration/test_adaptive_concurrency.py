"""WORKER_MAX_JOBS=auto on the real worker (worker.Settings, its consumer and a real pool of 2):
jobs that spend their time away from the database let the limit rise to its ceiling, the connection
budget's; jobs that hold their connection (pg_sleep) make them wait for the pool and bring the limit
down toward the pool's size. Every job records the limit it ran under: never outside the bounds."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from arq.connections import ArqRedis
from arq.worker import Worker
from pydantic import BaseModel

from jobs.context import JobContext, connection
from jobs.models import JobArgs
from jobs.registry import JobSpec
from tests.conftest import RunWorker
from tests.faults.conftest import wait_until
from worker.config import Config
from worker.ops.status_cli import gather_status, render_status
from worker.runtime.lifecycle import SERVICES_KEY, Services

pytestmark = pytest.mark.integration

POOL = 2
# PG_CONNECTION_BUDGET: the only worker of its queue may hold 12 (fewer if the shared server has
# less room), the limit's ceiling below the 40 of WORKER_MAX_JOBS_MAX.
BUDGET = 12
WAIT = 60.0  # the most any condition below is waited for (never a speed assertion)

SEEN: list[tuple[int, int, int]] = []  # (limit, running, ceiling) as each job started


class NoArgs(JobArgs):
    pass


class Done(BaseModel):
    ok: bool


def _record(ctx: JobContext) -> None:
    services = ctx[SERVICES_KEY]
    assert isinstance(services, Services) and services.consumer is not None
    limiter = services.consumer.limiter
    assert limiter is not None
    SEEN.append((limiter.limit, services.consumer.running, limiter.maximum))


async def light(ctx: JobContext, args: NoArgs) -> Done:
    """Mostly away from the database: a short query, then 50 ms of other waiting."""
    _record(ctx)
    async with connection(ctx) as conn:
        await conn.fetchval("SELECT 1")
    await asyncio.sleep(0.05)
    return Done(ok=True)


async def heavy(ctx: JobContext, args: NoArgs) -> Done:
    """Holds its connection 20 ms: with more than 2 of them running, jobs wait for the pool."""
    _record(ctx)
    async with connection(ctx) as conn:
        await conn.execute("SELECT pg_sleep(0.02)")
    return Done(ok=True)


LIGHT = JobSpec("adaptive_light", light, NoArgs)
HEAVY = JobSpec("adaptive_heavy", heavy, NoArgs)


async def feed_until(
    redis: ArqRedis, queue: str, name: str, done: Callable[[], bool], worker: asyncio.Task[Worker]
) -> None:
    """Keep 100 or more jobs ``name`` waiting until ``done()`` (the burst worker never runs dry)."""
    async with asyncio.timeout(WAIT):
        while not done():
            assert not worker.done(), "the worker stopped"
            if await redis.zcard(queue) < 100:
                for _ in range(100):
                    await redis.enqueue_job(name)
            await asyncio.sleep(0.01)


async def test_the_limit_rises_on_idle_connections_and_falls_toward_the_pool_when_they_are_held(
    config: Config, run_worker: RunWorker, arq_redis: ArqRedis
) -> None:
    SEEN.clear()
    cfg = config.model_copy(
        update={
            "worker_max_jobs": "auto",
            "worker_max_jobs_min": 1,
            "worker_max_jobs_max": 40,
            "pg_pool_max_size": POOL,
            "pg_pool_min_size": POOL,
            "pg_connection_budget": BUDGET,
            "health_check_interval": 0.2,
        }
    )

    async def run() -> Worker:
        return await run_worker(config=cfg, specs=[LIGHT, HEAVY], max_jobs=cfg.max_jobs)

    worker = asyncio.create_task(run())
    queue = cfg.queue_name

    # Connections mostly idle: the limit climbs to its ceiling, the budget's 12, not the 40 asked.
    await feed_until(
        arq_redis, queue, LIGHT.name, lambda: bool(SEEN) and SEEN[-1][0] >= SEEN[-1][2], worker
    )
    peak, top = SEEN[-1][0], SEEN[-1][2]
    assert POOL + 4 < top <= BUDGET

    # Connections held: jobs wait for the pool of 2 and the limit comes down toward it; meanwhile
    # `python -m worker status` shows the current limit and its bounds.
    async def status_shows_the_limit() -> bool:
        status = await gather_status(cfg, arq_redis)
        listed = status["workers"]["listed"]
        if not listed or not listed[0].get("concurrency"):
            return False
        shown = listed[0]["concurrency"]
        assert shown["mode"] == "auto" and (shown["min"], shown["max"]) == (1, top)
        assert 1 <= shown["limit"] == listed[0]["max_jobs"] <= top
        return f"/{shown['limit']} (auto 1-{top})" in render_status(status)

    status = asyncio.create_task(wait_until(status_shows_the_limit, WAIT, "the limit in status"))
    held = lambda: SEEN[-1][0] <= POOL + 4 and status.done()
    await feed_until(arq_redis, queue, HEAVY.name, held, worker)
    await status  # raises if the status check failed
    done = await worker  # the queue drains; the burst worker ends
    assert done.jobs_failed == 0 and done.jobs_retried == 0
    assert peak == top
    assert all(1 <= limit <= top and ceiling == top for limit, _, ceiling in SEEN)
    assert all(running <= top for _, running, _ in SEEN)
