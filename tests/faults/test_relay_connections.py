"""The outbox relay's PostgreSQL connections under faults, with real worker processes: its pool
connection terminated, or PostgreSQL refusing connections, in the middle of a batch (pushed to
Redis, not yet marked): nothing is lost, nothing runs twice, and the relay resumes by itself; its
LISTEN connection terminated: it listens again, and a row committed afterwards is relayed by the
wake-up, long before the next poll."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import asyncpg
import pytest
from arq.connections import ArqRedis

from tests.faults.conftest import Counters, Spawn, WorkerProcess, url_via, wait_until
from tests.faults.proxy import Proxy
from tests.faults.test_outbox_faults import ENQUEUE_MANY, all_relayed, runs_and_effects, unrelayed
from worker.config import Config
from worker.db.pool import APPLICATION_NAME

if TYPE_CHECKING:
    Pool = asyncpg.Pool[asyncpg.Record]

pytestmark = pytest.mark.faults

RELAY_LISTENER = f"{APPLICATION_NAME}-relay"  # the application_name of the relay's LISTEN
BLOCKED_MARK = """
SELECT pid FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock'
  AND query LIKE 'UPDATE job_outbox SET relayed_at%'
"""
LISTENER = """
SELECT pid FROM pg_stat_activity
WHERE datname = current_database() AND application_name = $1 AND query LIKE 'LISTEN%'
"""


async def _blocked_mid_batch(
    config: Config,
    spawn: Spawn,
    pool: Pool,
    rows: int,
    prefix: str,
    interrupt: Callable[[int], Awaitable[None]],
    **env: str,
) -> WorkerProcess:
    """``rows`` committed; a worker whose relay pushed them all (and ran them) and waits to mark
    them (a SHARE lock holds its UPDATE); ``interrupt(pid of that blocked backend)``; then the lock
    released. Returns the worker."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(ENQUEUE_MANY, config.queue_name, prefix, rows)
    blocker = await pool.acquire()
    blocked = blocker.transaction()
    await blocked.start()
    await blocker.execute("LOCK TABLE job_outbox IN SHARE MODE")
    try:
        worker = await spawn(**env)

        async def pushed_and_waiting() -> int | None:
            ran = (await runs_and_effects(pool, prefix))[2] == rows
            pid: int | None = await pool.fetchval(BLOCKED_MARK)
            return pid if ran else None

        pid = await wait_until(
            pushed_and_waiting, 60, "the batch pushed, run, and its mark blocked"
        )
        assert pid is not None
        await interrupt(pid)
        assert await unrelayed(pool, config.queue_name) == rows
    finally:
        await blocked.rollback()
        await pool.release(blocker)
    return worker


async def _relayed_once(
    config: Config,
    pool: Pool,
    arq_redis: ArqRedis,
    counters: Counters,
    worker: WorkerProcess,
    prefix: str,
    rows: int,
) -> None:
    """Every row marked relayed by the same worker, each job run exactly once."""
    await wait_until(all_relayed(pool, config.queue_name), 60, "the relay to resume and mark them")
    assert await arq_redis.zcard(config.queue_name) == 0  # pushed again: refused as duplicates
    assert await runs_and_effects(pool, prefix) == (rows, rows, rows)
    log = worker.log()
    assert "retrying in" in log  # the round that failed, and was retried
    assert "rows were already in Redis (counted as relayed)" in log
    assert worker.alive()
    assert await counters.dead_letters() == []


async def test_a_relay_connection_terminated_mid_batch_loses_nothing_and_runs_nothing_twice(
    config: Config, spawn: Spawn, counters: Counters, pool: Pool, arq_redis: ArqRedis
) -> None:
    rows, prefix = 300, f"term-{uuid.uuid4().hex[:8]}-"

    async def terminate(pid: int) -> None:
        assert await pool.fetchval("SELECT pg_terminate_backend($1)", pid)

    worker = await _blocked_mid_batch(config, spawn, pool, rows, prefix, terminate)
    await _relayed_once(config, pool, arq_redis, counters, worker, prefix, rows)


async def test_postgres_refusing_connections_mid_batch_the_relay_resumes_once_it_accepts(
    config: Config,
    spawn: Spawn,
    counters: Counters,
    pool: Pool,
    arq_redis: ArqRedis,
    pg_proxy: Proxy,
) -> None:
    rows, prefix = 300, f"refuse-{uuid.uuid4().hex[:8]}-"

    async def cut(pid: int) -> None:
        pg_proxy.cut()  # every connection of the worker reset, new ones refused

        async def gone() -> bool:  # the blocked backend saw its client go and ended
            return pid not in [
                r["pid"] for r in await pool.fetch("SELECT pid FROM pg_stat_activity")
            ]

        await wait_until(gone, 20, "the relay's backend to end")

    worker = await _blocked_mid_batch(
        config,
        spawn,
        pool,
        rows,
        prefix,
        cut,
        DATABASE_URL=url_via(config.database_url, pg_proxy.port),
    )
    failures_before = worker.log().count("retrying in")

    async def failing_again() -> bool:  # refused while cut: the relay keeps backing off
        return worker.log().count("retrying in") >= failures_before + 2

    await wait_until(failing_again, 30, "the relay's retries to be refused")
    assert await unrelayed(pool, config.queue_name) == rows
    pg_proxy.restore()
    await _relayed_once(config, pool, arq_redis, counters, worker, prefix, rows)


async def test_a_terminated_listen_connection_is_replaced_and_wakes_the_relay(
    config: Config, spawn: Spawn, counters: Counters, pool: Pool
) -> None:
    poll = 60.0  # far longer than any wait below: only a NOTIFY can relay a row in time
    await spawn(OUTBOX_POLL_INTERVAL=str(poll))
    started = time.monotonic()

    async def listening() -> int | None:
        pid: int | None = await pool.fetchval(LISTENER, RELAY_LISTENER)
        return pid

    async def relayed_promptly(key: str) -> float:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(ENQUEUE_MANY, config.queue_name, key, 1)
        committed = time.monotonic()
        await wait_until(all_relayed(pool, config.queue_name), 10, f"{key} to be relayed")
        return time.monotonic() - committed

    first = await wait_until(listening, 20, "the relay's LISTEN connection")
    await relayed_promptly(f"listen-{uuid.uuid4().hex[:8]}-a")
    assert await pool.fetchval("SELECT pg_terminate_backend($1)", first)

    async def listening_again() -> int | None:
        pid = await listening()
        return pid if pid is not None and pid != first else None

    second = await wait_until(listening_again, 10, "the relay to LISTEN again")
    assert second != first
    key = f"listen-{uuid.uuid4().hex[:8]}-b"
    took = await relayed_promptly(key)
    assert took < poll and time.monotonic() - started < poll  # not by a poll: none came yet
    await wait_until(lambda: counters.effects(key + "1"), 20, "the job to run")
