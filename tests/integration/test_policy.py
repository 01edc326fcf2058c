"""The worker's policy in one process: transient errors retried with backoff, permanent ones and
exhausted tries dead-lettered in PostgreSQL, dead letters kept in Redis while PostgreSQL is away."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from arq.connections import ArqRedis

from tests.conftest import RunWorker
from tests.faults.conftest import fault_tables
from tests.faults.jobs import FAULT_JOBS
from tests.faults.proxy import Proxy
from worker.config import Config
from worker.db import dead_letters
from worker.db.dead_letters import DeadLetter, DeadLetterStore

pytestmark = pytest.mark.integration
__all__ = ["fault_tables"]  # the fault suite's fixture, used here too


@pytest.fixture
def run_with_faults(run_worker: RunWorker) -> RunWorker:
    async def run(**overrides: Any) -> Any:
        return await run_worker(specs=FAULT_JOBS, **overrides)

    return run


async def letters(pool: asyncpg.Pool[asyncpg.Record]) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT * FROM dead_letters ORDER BY id")


async def tries(pool: asyncpg.Pool[asyncpg.Record], key: str) -> list[int]:
    rows = await pool.fetch("SELECT try FROM fault_runs WHERE key = $1 ORDER BY id", key)
    return [r["try"] for r in rows]


async def test_transient_errors_are_retried_until_success(
    fault_tables: None, run_with_faults: RunWorker, arq_redis: ArqRedis, pool: asyncpg.Pool
) -> None:
    key = uuid.uuid4().hex
    job = await arq_redis.enqueue_job("fault_write", key=key, fail_tries=2)  # MAX_TRIES=3
    assert job is not None
    worker = await run_with_faults()
    assert worker.jobs_retried == 2 and worker.jobs_complete == 1
    assert (await job.result(timeout=1))["job_try"] == 3
    assert await tries(pool, key) == [1, 2, 3]
    assert await pool.fetchval("SELECT count(*) FROM fault_effects WHERE key = $1", key) == 1
    assert await letters(pool) == []


async def test_exhausted_tries_are_dead_lettered(
    fault_tables: None, run_with_faults: RunWorker, arq_redis: ArqRedis, pool: asyncpg.Pool
) -> None:
    key = uuid.uuid4().hex
    job = await arq_redis.enqueue_job("fault_write", key=key, fail_tries=99)
    assert job is not None
    await run_with_faults()
    assert await tries(pool, key) == [1, 2, 3]
    [letter] = await letters(pool)
    assert (letter["reason"], letter["error_type"]) == ("tries-exhausted", "ConnectionResetError")
    assert letter["attempts"] == 3 and letter["job_id"] == job.job_id
    assert letter["function"] == "fault_write"


async def test_permanent_errors_are_dead_lettered_at_once(
    fault_tables: None, run_with_faults: RunWorker, arq_redis: ArqRedis, pool: asyncpg.Pool
) -> None:
    key = uuid.uuid4().hex
    await arq_redis.enqueue_job("fault_write", key=key, fail_permanently=True)
    await arq_redis.enqueue_job("get_user", user_id="twelve")
    worker = await run_with_faults()
    assert worker.jobs_failed == 2 and worker.jobs_retried == 0
    assert await tries(pool, key) == [1]
    found = {(r["function"], r["reason"], r["error_type"]) for r in await letters(pool)}
    assert found == {
        ("fault_write", "permanent-error", "ValueError"),
        ("get_user", "permanent-error", "InvalidJobArguments"),
    }


async def test_replay_runs_a_dead_lettered_job_again(
    fault_tables: None,
    config: Config,
    run_worker: RunWorker,
    run_with_faults: RunWorker,
    arq_redis: ArqRedis,
    pool: asyncpg.Pool,
) -> None:
    key = uuid.uuid4().hex
    await arq_redis.enqueue_job("fault_write", key=key)
    await run_worker()  # a worker that does not know fault_write yet (UNKNOWN_JOB_GRACE=0)
    [letter] = await letters(pool)
    assert letter["reason"] == "unknown-job" and letter["function"] == "fault_write"
    async with pool.acquire() as conn:
        new_id = await dead_letters.replay(conn, arq_redis, letter["id"])
    await run_with_faults()  # the deploy that knows it
    assert await pool.fetchval("SELECT count(*) FROM fault_effects WHERE key = $1", key) == 1
    row = await pool.fetchrow("SELECT replayed_at, replay_job_id FROM dead_letters")
    assert row is not None and row["replay_job_id"] == new_id and row["replayed_at"] is not None
    async with pool.acquire() as conn:
        assert await dead_letters.purge(conn, [letter["id"]]) == 1
    assert await letters(pool) == []


@pytest.fixture
async def cut_pool(config: Config) -> AsyncIterator[tuple[asyncpg.Pool, Proxy]]:
    """A pool whose connections go through a proxy that the test can cut."""
    proxy = Proxy("127.0.0.1", 5432).start()
    url = config.database_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    yield pool, proxy
    await pool.close()
    proxy.stop()


async def test_dead_letters_wait_in_redis_while_postgres_is_down(
    fault_tables: None,
    config: Config,
    arq_redis: ArqRedis,
    pool: asyncpg.Pool,
    cut_pool: tuple[asyncpg.Pool, Proxy],
) -> None:
    flaky_pool, proxy = cut_pool
    store = DeadLetterStore(flaky_pool, arq_redis, config.queue_name)
    letter = DeadLetter(
        job_id="j1",
        queue=config.queue_name,
        function="get_user",
        payload=b"\x00\xffraw",
        reason="poison",
        error_type="PoisonPayload",
        error_message="not JSON",
        attempts=1,
        enqueued_at=datetime.now(UTC),
    )
    proxy.cut()
    await store.add(letter)
    assert await letters(pool) == []
    assert await arq_redis.llen(store.pending_key) == 1  # type: ignore[misc]
    proxy.restore()
    assert await store.flush_pending() == 1
    [row] = await letters(pool)
    assert bytes(row["payload"]) == b"\x00\xffraw" and row["job_id"] == "j1"
    assert await arq_redis.llen(store.pending_key) == 0  # type: ignore[misc]
