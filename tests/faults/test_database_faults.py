"""F5 to F7 and F9: PostgreSQL faults. A job past its deadline has its query cancelled on the server
and its transaction rolled back on a connection the pool keeps; backends terminated under running
jobs cost retries but never an effect or a dead letter, and a database unreachable for seconds costs
neither (nor a try: worker/runtime/breaker.py); a pool ten times smaller than the worker's concurrency serves
every job exactly once."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
from arq.connections import ArqRedis
from arq.jobs import Job

from tests.faults.conftest import Counters, Spawn, WorkerProcess, url_via, wait_until
from tests.faults.proxy import Proxy
from worker.config import Config
from worker.db.pool import APPLICATION_NAME

if TYPE_CHECKING:
    Pool = asyncpg.Pool[asyncpg.Record]

pytestmark = pytest.mark.faults

BACKENDS = """
SELECT pid, state, query, query_start FROM pg_stat_activity
WHERE application_name = $1 AND datname = current_database()
"""
SLEEPING = BACKENDS + " AND state = 'active' AND query ILIKE '%pg_sleep%'"
TERMINATE = """
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE application_name = 'pgpool-worker' AND datname = current_database()
"""


async def backend_pids(pool: Pool) -> set[int]:
    """The worker's backends in the test database (its pool's connections)."""
    return {r["pid"] for r in await pool.fetch(BACKENDS, APPLICATION_NAME)}


async def sleeping(pool: Pool) -> list[asyncpg.Record]:
    """The worker's backends running a job's pg_sleep right now."""
    return await pool.fetch(SLEEPING, APPLICATION_NAME)


async def nobody_sleeps(pool: Pool) -> bool:
    return not await sleeping(pool)


async def pool_of(pool: Pool, size: int) -> set[int]:
    """Wait until the worker holds exactly ``size`` backends (its pool's min size) and return them."""

    async def opened() -> set[int]:
        pids = await backend_pids(pool)
        return pids if len(pids) == size else set()

    return await wait_until(opened, timeout=10, what=f"{size} pool connections")


async def enqueue(arq_redis: ArqRedis, key: str, hold: float = 0.0) -> Job:
    job = await arq_redis.enqueue_job("fault_write", key=key, hold=hold)
    assert job is not None
    return job


async def results(jobs: list[Job], timeout: float) -> list[dict[str, Any]]:
    """Every job's result (raises if one failed)."""
    done = await asyncio.gather(*(j.result(timeout=timeout, poll_delay=0.05) for j in jobs))
    return [dict(r) for r in done]


async def effect_counts(pool: Pool) -> dict[str, int]:
    rows = await pool.fetch("SELECT key, count(*)::int AS n FROM fault_effects GROUP BY key")
    return {r["key"]: r["n"] for r in rows}


async def effects_total(pool: Pool) -> int:
    count: int = await pool.fetchval("SELECT count(*) FROM fault_effects")
    return count


async def ledger_entries(pool: Pool, key: str) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM job_effects WHERE idempotency_key = $1", key
    )
    return count


async def pending_dead_letters(arq_redis: ArqRedis, config: Config) -> int:
    """Dead letters waiting in Redis while PostgreSQL is unreachable."""
    pending: int = await arq_redis.llen(f"{config.queue_name}:dead-letters:pending")  # type: ignore[misc]
    return pending


async def seconds_since(pool: Pool, moment: Any) -> float:
    elapsed: float = await pool.fetchval(
        "SELECT extract(epoch FROM clock_timestamp() - $1::timestamptz)::float8", moment
    )
    return elapsed


async def test_f5a_timeout_inside_a_query_cancels_it_on_the_server_and_reuses_the_connection(
    spawn: Spawn, arq_redis: ArqRedis, counters: Counters, pool: Pool
) -> None:
    key = f"f5a-{uuid.uuid4().hex[:8]}"
    worker = await spawn(JOB_TIMEOUT="1", MAX_TRIES="2", PG_POOL_MIN_SIZE="2", PG_POOL_MAX_SIZE="2")
    connections = await pool_of(pool, 2)
    job = await enqueue(arq_redis, key, hold=5.0)

    first = (await wait_until(lambda: sleeping(pool), what="the first try's pg_sleep"))[0]

    async def first_cancelled() -> bool:
        return all(
            (r["pid"], r["query_start"]) != (first["pid"], first["query_start"])
            for r in await sleeping(pool)
        )

    await wait_until(first_cancelled, timeout=4, what="the first try's query to be cancelled")
    # Seconds the query ran on the server: the 1 s deadline, not pg_sleep's 5 s.
    ran_for = await seconds_since(pool, first["query_start"])
    assert ran_for < 2.5, f"the query ran {ran_for:.2f}s on the server"

    await wait_until(counters.dead_letters, timeout=15, what="the dead letter")
    # The second try's query is cancelled too: nothing sleeps on (its pg_sleep would run 5 s).
    await wait_until(lambda: nobody_sleeps(pool), timeout=1, what="no backend in pg_sleep")
    letters = await counters.dead_letters()
    assert len(letters) == 1
    letter = letters[0]
    assert (letter["job_id"], letter["reason"]) == (job.job_id, "tries-exhausted")
    assert letter["error_type"] == "JobTimeout", letter
    assert letter["attempts"] == 2
    assert [r["try"] for r in await counters.runs(key)] == [1, 2]
    assert await counters.effects(key) == 0  # rolled back, both tries
    assert await ledger_entries(pool, key) == 0
    info = await job.result_info()
    assert info is not None and not info.success

    # The worker lives on and runs the next job on the same connections.
    assert worker.alive()
    after = f"f5a-next-{uuid.uuid4().hex[:8]}"
    result = await (await enqueue(arq_redis, after)).result(timeout=10, poll_delay=0.05)
    assert result["job_try"] == 1 and await counters.effects(after) == 1
    used = {r["pid"] for r in await pool.fetch("SELECT pid FROM fault_runs")}
    assert used <= connections, f"runs on {used}, pool opened {connections}"
    assert await backend_pids(pool) == connections  # none closed and replaced


async def test_f5b_timeout_holding_a_row_lock_releases_it_and_reuses_the_connection(
    spawn: Spawn, arq_redis: ArqRedis, counters: Counters, pool: Pool
) -> None:
    key = f"f5b-{uuid.uuid4().hex[:8]}"
    # A leaked transaction would keep its locks for 5 s (idle_in_transaction) here, not 1 s.
    worker = await spawn(
        JOB_TIMEOUT="1",
        MAX_TRIES="1",
        JOB_LEASE="10",
        PG_IDLE_IN_TRANSACTION_TIMEOUT="5",
        PG_POOL_MIN_SIZE="1",
        PG_POOL_MAX_SIZE="1",
    )
    (backend,) = await pool_of(pool, 1)
    job = await enqueue(arq_redis, key, hold=5.0)
    await wait_until(lambda: sleeping(pool), what="the job's pg_sleep")

    # While it sleeps, the job's transaction holds its claim row (SELECT ... FOR UPDATE).
    lock_claim = "SELECT 1 FROM job_claims WHERE job_id = $1 FOR UPDATE NOWAIT"
    async with pool.acquire() as conn, conn.transaction():
        with pytest.raises(asyncpg.LockNotAvailableError):
            await conn.fetchval(lock_claim, job.job_id)
    held = await pool.fetchval("SELECT count(*) FROM pg_locks WHERE pid = $1", backend)
    assert held > 0

    await wait_until(counters.dead_letters, timeout=10, what="the dead letter")

    async def unlocked() -> bool:
        return not await pool.fetchval("SELECT count(*) FROM pg_locks WHERE pid = $1", backend)

    released_from = time.monotonic()
    await wait_until(unlocked, timeout=1, what="the backend to hold no lock")
    released_in = time.monotonic() - released_from
    async with pool.acquire() as conn, conn.transaction():
        assert await conn.fetchval(lock_claim, job.job_id) == 1
    letter = (await counters.dead_letters())[0]
    assert (letter["reason"], letter["error_type"], letter["attempts"]) == (
        "tries-exhausted",
        "JobTimeout",
        1,
    )
    assert await counters.effects(key) == 0 and await ledger_entries(pool, key) == 0

    # The same idempotency key (its uncommitted ledger row would block this) on the same connection.
    assert worker.alive()
    again = await enqueue(arq_redis, key)
    result = await again.result(timeout=10, poll_delay=0.05)
    assert result["job_try"] == 1 and await counters.effects(key) == 1
    runs = await pool.fetch("SELECT pid FROM fault_runs WHERE key = $1 ORDER BY id", key)
    assert [r["pid"] for r in runs] == [backend, backend]
    assert await backend_pids(pool) == {backend}
    assert released_in < 0.5


async def test_f6_terminating_every_pool_backend_costs_a_retry_not_an_effect(
    spawn: Spawn, arq_redis: ArqRedis, counters: Counters, pool: Pool
) -> None:
    keys = [f"f6-{i}-{uuid.uuid4().hex[:6]}" for i in range(5)]
    # 8 connections for 5 running jobs: the pool has idle connections as well as busy ones.
    worker = await spawn(WORKER_MAX_JOBS="10", PG_POOL_MIN_SIZE="8")
    jobs = [await enqueue(arq_redis, key, hold=2.0) for key in keys]

    async def all_sleeping() -> bool:
        return len(await sleeping(pool)) == len(keys)

    await wait_until(all_sleeping, timeout=10, what="every job in pg_sleep")
    before = await backend_pids(pool)
    killed = await pool.fetch(TERMINATE)
    assert len(killed) >= 8 and all(r[0] for r in killed)

    done = await results(jobs, timeout=30)
    assert worker.alive()
    assert await counters.dead_letters() == []
    assert await effect_counts(pool) == dict.fromkeys(keys, 1)
    tries = [r["job_try"] for r in done]
    assert all(t >= 2 for t in tries), tries  # every running job was hit and retried
    assert not (await backend_pids(pool)) & before  # the pool reconnected


# 10 tries must outlast a 5 s outage: backoffs of 0.25-0.5, 0.5-1, then 1-2 s add up to 7.75 s at
# least before the tenth try (the suite's 0.1/0.5 s backoffs spend 10 tries in 1.9-3.7 s).
OUTAGE_ENV = {"MAX_TRIES": "10", "RETRY_BACKOFF_BASE": "0.5", "RETRY_BACKOFF_MAX": "2"}
OUTAGE = 5.0


async def keep_cut(
    proxy: Proxy, worker: WorkerProcess, arq_redis: ArqRedis, config: Config, cut_at: float
) -> None:
    """Keep ``proxy`` cut until OUTAGE seconds after ``cut_at``, then restore it; meanwhile the
    worker must stay up and dead-letter nothing."""

    async def over() -> bool:
        assert worker.alive(), worker.log()
        assert await pending_dead_letters(arq_redis, config) == 0, worker.log()
        return time.monotonic() - cut_at >= OUTAGE

    try:
        await wait_until(over, timeout=OUTAGE + 5, what="the end of the outage")
    finally:
        proxy.restore()


async def test_f7_postgres_unreachable_mid_run_delays_jobs_without_losing_or_repeating_one(
    spawn: Spawn,
    arq_redis: ArqRedis,
    counters: Counters,
    pool: Pool,
    pg_proxy: Proxy,
    config: Config,
) -> None:
    keys = [f"f7-{i:02d}-{uuid.uuid4().hex[:6]}" for i in range(20)]
    worker = await spawn(DATABASE_URL=url_via(config.database_url, pg_proxy.port), **OUTAGE_ENV)
    # Staggered holds: when the first jobs have committed, others are inside their transactions.
    jobs = [await enqueue(arq_redis, key, hold=0.2 + 0.05 * i) for i, key in enumerate(keys)]

    async def a_few_done() -> bool:
        return await effects_total(pool) >= 3

    await wait_until(a_few_done, timeout=10, what="the first effects")
    pg_proxy.cut()
    await keep_cut(pg_proxy, worker, arq_redis, config, time.monotonic())
    restored = time.monotonic()

    done = await results(jobs, timeout=40)
    recovered_in = time.monotonic() - restored
    assert worker.alive()
    assert await counters.dead_letters() == []
    assert await pending_dead_letters(arq_redis, config) == 0
    assert await effect_counts(pool) == dict.fromkeys(keys, 1)
    # The outage did reach running jobs (they ran again), and gave their tries back (breaker.py).
    assert len(await pool.fetch("SELECT key FROM fault_runs")) > len(keys)
    assert max(r["job_try"] for r in done) <= 2
    assert "unreachable (" in worker.log()
    assert recovered_in < 15, f"jobs finished {recovered_in:.1f}s after the database came back"


async def test_f7_jobs_enqueued_while_postgres_is_unreachable_run_when_it_returns(
    spawn: Spawn,
    arq_redis: ArqRedis,
    counters: Counters,
    pool: Pool,
    pg_proxy: Proxy,
    config: Config,
) -> None:
    keys = [f"f7b-{i:02d}-{uuid.uuid4().hex[:6]}" for i in range(20)]
    worker = await spawn(DATABASE_URL=url_via(config.database_url, pg_proxy.port), **OUTAGE_ENV)
    pg_proxy.cut()  # the pool's open connections are reset before any job starts
    cut_at = time.monotonic()
    jobs = [await enqueue(arq_redis, key, hold=0.1) for key in keys]
    await keep_cut(pg_proxy, worker, arq_redis, config, cut_at)
    restored = time.monotonic()

    done = await results(jobs, timeout=40)
    recovered_in = time.monotonic() - restored
    assert worker.alive()
    assert await counters.dead_letters() == []
    assert await pending_dead_letters(arq_redis, config) == 0
    assert await effect_counts(pool) == dict.fromkeys(keys, 1)
    # The jobs claimed first met the outage: the breaker opened, and their tries were given back.
    assert "unreachable (" in worker.log() and "try given back" in worker.log()
    assert max(r["job_try"] for r in done) <= 2
    assert recovered_in < 15, f"jobs finished {recovered_in:.1f}s after the database came back"


async def test_f9_five_hundred_jobs_on_fifty_slots_and_a_pool_of_five(
    spawn: Spawn, arq_redis: ArqRedis, counters: Counters, pool: Pool
) -> None:
    keys = [f"f9-{i:03d}-{uuid.uuid4().hex[:6]}" for i in range(500)]
    worker = await spawn(WORKER_MAX_JOBS="50", PG_POOL_MAX_SIZE="5", PG_POOL_MIN_SIZE="1")
    started = time.monotonic()
    jobs = list(await asyncio.gather(*(enqueue(arq_redis, key) for key in keys)))

    async def all_done() -> bool:
        return await effects_total(pool) >= len(keys)

    await wait_until(all_done, timeout=45, what="500 effects")
    done = await results(jobs, timeout=10)
    elapsed = time.monotonic() - started
    assert [r["job_try"] for r in done] == [1] * len(keys)  # no failure, so no retry
    assert await effect_counts(pool) == dict.fromkeys(keys, 1)
    runs = await pool.fetch("SELECT key, try, pid FROM fault_runs")
    assert sorted(r["key"] for r in runs) == sorted(keys) and {r["try"] for r in runs} == {1}
    assert len({r["pid"] for r in runs}) <= 5  # never more connections than the pool's max
    assert await counters.dead_letters() == []
    assert worker.alive()
    log = worker.log()
    assert "another operation is in progress" not in log and "InterfaceError" not in log
    assert elapsed < 45
