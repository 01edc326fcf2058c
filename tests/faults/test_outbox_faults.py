"""The outbox relay under faults, with real worker processes: a job committed while Redis is
unreachable runs once it returns; a relay SIGKILLed between its push and its commit loses
nothing and runs nothing twice; several workers relaying one outbox relay each row once."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import asyncpg
import pytest
from arq.connections import ArqRedis

from tests.faults.conftest import Counters, Spawn, url_via, wait_until
from tests.faults.proxy import Proxy
from worker.config import Config

if TYPE_CHECKING:
    Pool = asyncpg.Pool[asyncpg.Record]

pytestmark = pytest.mark.faults

ENQUEUE_MANY = """
SELECT count(enqueue_job('fault_write', jsonb_build_object('key', $2 || g), $2 || g, NULL, $1))
FROM generate_series(1, $3::int) AS g
"""


async def unrelayed(pool: Pool, queue: str) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM job_outbox WHERE queue = $1 AND relayed_at IS NULL", queue
    )
    return count


def all_relayed(pool: Pool, queue: str) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return await unrelayed(pool, queue) == 0

    return probe


async def runs_and_effects(pool: Pool, prefix: str) -> tuple[int, int, int]:
    """Runs, distinct keys run, and effects of the fault jobs whose key starts with ``prefix``."""
    row = await pool.fetchrow(
        "SELECT (SELECT count(*) FROM fault_runs WHERE key LIKE $1 || '%') AS runs,"
        " (SELECT count(DISTINCT key) FROM fault_runs WHERE key LIKE $1 || '%') AS keys,"
        " (SELECT count(*) FROM fault_effects WHERE key LIKE $1 || '%') AS effects",
        prefix,
    )
    assert row is not None
    return int(row["runs"]), int(row["keys"]), int(row["effects"])


async def test_a_job_committed_while_redis_is_unreachable_runs_once_it_returns(
    config: Config, spawn: Spawn, counters: Counters, pool: Pool, redis_proxy: Proxy
) -> None:
    worker = await spawn(REDIS_URL=url_via(config.redis_url, redis_proxy.port))
    redis_proxy.cut()
    key = f"outage-{uuid.uuid4().hex[:8]}-1"
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(ENQUEUE_MANY, config.queue_name, key[:-1], 1)
    await asyncio.sleep(3)  # the outage itself: nothing to poll while it lasts
    assert await unrelayed(pool, config.queue_name) == 1
    assert await counters.runs(key) == []
    redis_proxy.restore()

    await wait_until(lambda: counters.effects(key), 40, "the job to run")
    await wait_until(all_relayed(pool, config.queue_name), 40, "the row to be marked relayed")
    assert len(await counters.runs(key)) == 1
    assert await counters.effects(key) == 1
    assert worker.alive()
    assert await counters.dead_letters() == []


async def test_a_relay_killed_between_push_and_commit_loses_nothing_and_runs_nothing_twice(
    config: Config, spawn: Spawn, counters: Counters, pool: Pool, arq_redis: ArqRedis
) -> None:
    rows = 300
    queue, prefix = config.queue_name, f"kill-{uuid.uuid4().hex[:8]}-"
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(ENQUEUE_MANY, queue, prefix, rows)
    # SHARE mode lets the relay claim (FOR UPDATE) and push, and holds its UPDATE (the mark):
    # the worker is killed with its batch in Redis and its transaction not committed.
    blocker = await pool.acquire()
    blocked = blocker.transaction()
    await blocked.start()
    await blocker.execute("LOCK TABLE job_outbox IN SHARE MODE")
    try:
        first = await spawn()

        async def all_ran() -> bool:
            return (await runs_and_effects(pool, prefix))[2] == rows

        await wait_until(all_ran, 60, "the first push's jobs to run")
        assert await unrelayed(pool, queue) == rows  # pushed, never marked
        first.signal(signal.SIGKILL)
        first.wait(10)
    finally:
        await blocked.rollback()
        await pool.release(blocker)

    second = await spawn()
    await wait_until(all_relayed(pool, queue), 60, "the second relay to mark them")
    assert await arq_redis.zcard(queue) == 0  # every id refused as a duplicate: none re-queued
    assert await runs_and_effects(pool, prefix) == (rows, rows, rows)
    assert "rows were already in Redis (counted as relayed)" in second.log()
    assert await counters.dead_letters() == []


@pytest.mark.parametrize("workers", [2, 4])
async def test_workers_relaying_one_outbox_relay_each_row_once(
    config: Config, spawn: Spawn, counters: Counters, pool: Pool, workers: int
) -> None:
    rows, prefix = 20_000, f"many-{uuid.uuid4().hex[:8]}-"
    started = [await spawn() for _ in range(workers)]
    # One commit wakes every relay at once (NOTIFY): they race for the same rows.
    async with pool.acquire() as conn, conn.transaction():
        assert await conn.fetchval(ENQUEUE_MANY, config.queue_name, prefix, rows) == rows

    async def all_done() -> bool:
        return (await runs_and_effects(pool, prefix))[2] == rows

    await wait_until(all_done, 180, f"{rows} jobs relayed by {workers} workers to run")
    assert await unrelayed(pool, config.queue_name) == 0
    assert await runs_and_effects(pool, prefix) == (rows, rows, rows)
    for worker in started:
        assert worker.alive()
        # A row pushed twice would be refused by Redis, and logged: none was.
        assert "already in Redis" not in worker.log()
