"""The scheduled jobs: a tick enqueued once however many workers run, at cron's times (either day
field), and run by a real worker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from arq.connections import ArqRedis
from arq.jobs import Job
from arq.worker import create_worker, func

from tests.conftest import RunWorker
from worker.config import Config
from worker.queue import codec
from worker.queue.connection import redis_settings
from worker.runtime.functions import CRON_DEACTIVATE, cron_name, deactivate_inactive_cron
from worker.runtime.schedules import cron_jobs

pytestmark = pytest.mark.integration


async def test_cron_tick_is_enqueued_once_across_workers_and_runs(
    config: Config,
    run_worker: RunWorker,
    arq_redis: ArqRedis,
    users: list[asyncpg.Record],
    pool: asyncpg.Pool,
) -> None:
    from worker.settings import Settings

    cfg = config.model_copy(update={"cron_deactivate": "* * * * *", "deactivate_after_days": 150})
    workers = [
        create_worker(
            Settings,
            redis_pool=arq_redis,
            redis_settings=redis_settings(cfg),
            queue_name=cfg.queue_name,
            cron_jobs=cron_jobs(cfg),
            handle_signals=False,
            ctx={"config": cfg},
        )
        for _ in range(3)
    ]
    # Half a second before a minute boundary that has just passed: every worker sees the same tick.
    tick = datetime.now(UTC).replace(second=0, microsecond=0)
    for worker in workers:
        await worker.run_cron(tick - timedelta(seconds=0.5), 0.5)  # first call plans the next run
        await worker.run_cron(tick - timedelta(seconds=0.5), 0.5)  # second call enqueues it
    assert await arq_redis.zcard(cfg.queue_name) == 1
    queued = await arq_redis.zrange(cfg.queue_name, 0, -1)
    assert queued[0].decode().startswith(f"{cfg.queue_name}:cron:deactivate_inactive_users:")

    cutoff = datetime.now(UTC) - timedelta(days=150)
    stale = await pool.fetchval(
        "SELECT count(*) FROM users WHERE is_active AND coalesce(last_seen_at, created_at) < $1",
        cutoff,
    )
    assert stale > 0
    # Run the queued tick with the cron function registered but no schedule of its own.
    tick_function = func(deactivate_inactive_cron, name=cron_name(cfg, CRON_DEACTIVATE))
    ran = await run_worker(config=cfg, functions=[*Settings.functions, tick_function])
    assert ran.jobs_complete == 1 and ran.jobs_failed == 0
    left = await pool.fetchval(
        "SELECT count(*) FROM users WHERE is_active AND coalesce(last_seen_at, created_at) < $1",
        cutoff,
    )
    assert left == 0


def test_empty_schedule_disables_cron(config: Config) -> None:
    assert cron_jobs(config) == []  # the test config sets CRON_DEACTIVATE=""
    assert len(cron_jobs(config.model_copy(update={"cron_deactivate": "0 3 * * 1-5"}))) == 1


async def test_a_tick_on_a_1st_that_is_no_monday_is_enqueued_once_by_arqs_loop(
    config: Config, arq_redis: ArqRedis
) -> None:
    """arq's own day rule would skip 2027-01-01 (a Friday) for "0 0 1 * 1"; cron runs it."""
    from worker.settings import Settings

    table = '{"first-or-monday": {"job": "count_users", "cron": "0 0 1 * 1"}}'
    cfg = config.model_copy(update={"cron_schedules": table})
    workers = [
        create_worker(
            Settings,
            redis_pool=arq_redis,
            redis_settings=redis_settings(cfg),
            queue_name=cfg.queue_name,
            cron_jobs=cron_jobs(cfg),
            handle_signals=False,
            ctx={"config": cfg},
        )
        for _ in range(3)
    ]
    # arq's loop as it would run half a second before the tick (the tick is then deferred to it).
    before = datetime(2026, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC)
    for worker in workers:
        await worker.run_cron(before, 0.5)  # plans the next run
        (job,) = worker.cron_jobs
        assert job.next_run == datetime(2027, 1, 1, tzinfo=UTC)
        await worker.run_cron(before, 0.5)  # enqueues it
        assert job.next_run == datetime(2027, 1, 4, tzinfo=UTC)  # then the Monday
    queued = await arq_redis.zrange(cfg.queue_name, 0, -1, withscores=True)
    tick_ms = int(datetime(2027, 1, 1, tzinfo=UTC).timestamp() * 1000)
    assert queued == [(f"{cfg.queue_name}:cron:first-or-monday:{tick_ms}".encode(), tick_ms)]


async def test_a_named_schedule_runs_its_job_with_its_arguments_in_a_real_worker(
    config: Config, run_worker: RunWorker, arq_redis: ArqRedis, users: list[asyncpg.Record]
) -> None:
    """A CRON_SCHEDULES schedule made to run at the worker's start (arq's run_at_startup), so
    that the burst worker enqueues the tick, runs it and stops, with no wait for a minute."""
    user_id = users[0]["id"]
    table = (
        f'{{"probe": {{"job": "get_user", "cron": "0 0 1 1 *", "args": {{"user_id": {user_id}}}}}}}'
    )
    cfg = config.model_copy(update={"cron_schedules": table, "cron_timezone": "Europe/Berlin"})
    (job,) = cron_jobs(cfg)
    job.run_at_startup = True
    job.keep_result_s = 60  # keep the tick's result, to read it below
    ran = await run_worker(config=cfg, cron_jobs=[job])
    assert (ran.jobs_complete, ran.jobs_failed) == (1, 0)
    keys = await arq_redis.keys(f"arq:result:{cfg.queue_name}:cron:probe:*")
    assert len(keys) == 1
    job_id = keys[0].decode().removeprefix("arq:result:")
    job_handle = Job(job_id, arq_redis, _queue_name=cfg.queue_name, _deserializer=codec.deserialize)
    info = await job_handle.result_info()
    assert info is not None and info.success
    assert info.result["id"] == user_id
    # The next run after the startup tick: New Year's midnight in Berlin, in UTC.
    assert job.next_run is not None and job.next_run.month == 12 and job.next_run.hour == 23
