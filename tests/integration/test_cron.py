"""The scheduled write job: enqueued once per tick however many workers run, and applied."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from arq.connections import ArqRedis
from arq.worker import create_worker, func

from tests.conftest import RunWorker
from worker.config import Config
from worker.queue.connection import redis_settings
from worker.runtime.functions import CRON_DEACTIVATE, cron_jobs, cron_name, deactivate_inactive_cron

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
