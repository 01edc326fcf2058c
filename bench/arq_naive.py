"""``arq bench.arq_naive.WorkerSettings --burst``: bare arq as its documentation shows it.

arq's defaults (pickle, ``poll_delay`` 0.5 s, INFO log lines per job, results kept 1 h), an asyncpg
pool in ``ctx`` opened in ``on_startup``. Configured by BENCH_DATABASE_URL, BENCH_REDIS_URL,
BENCH_QUEUE, BENCH_MAX_JOBS and BENCH_POOL_SIZE (read when arq imports this module).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import asyncpg
from arq.connections import RedisSettings

from bench.common import QUERY


async def noop(ctx: dict[str, Any], user_id: int) -> None:
    """The no-op job: measures the queue alone."""


async def db_job(ctx: dict[str, Any], user_id: int) -> int | None:
    """The DB job: one indexed lookup on a pooled connection."""
    pool: asyncpg.Pool[asyncpg.Record] = ctx["pool"]
    async with pool.acquire() as conn:
        row = await conn.fetchrow(QUERY, user_id)
    return None if row is None else int(row["id"])


async def startup(ctx: dict[str, Any]) -> None:
    size = int(os.environ.get("BENCH_POOL_SIZE", "10"))
    ctx["pool"] = await asyncpg.create_pool(
        os.environ["BENCH_DATABASE_URL"], min_size=min(10, size), max_size=size
    )


async def shutdown(ctx: dict[str, Any]) -> None:
    await ctx["pool"].close()


class WorkerSettings:
    functions: ClassVar = [noop, db_job]
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = RedisSettings.from_dsn(
        os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
    )
    queue_name = os.environ.get("BENCH_QUEUE", "arq:queue")
    max_jobs = int(os.environ.get("BENCH_MAX_JOBS", "10"))
