"""The worker through a real PgBouncer in transaction pooling mode (tests/pgbouncer.py).

PgBouncer hands each transaction any of its few server connections (4 here, for a worker pool of
20), so named prepared statements and session settings do not follow a client: the worker runs
with PG_STATEMENT_CACHE_SIZE=0 and PG_TRANSACTION_POOLING=true. The last tests show that without
them it does break, so that the first ones prove something.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
from arq.connections import ArqRedis

from jobs.context import RESOURCES_KEY, Resources, transaction
from tests.conftest import RunWorker
from tests.pgbouncer import SERVER_POOL_SIZE, PgBouncer
from worker.client import JobClient
from worker.config import Config
from worker.db.budget import transaction_timeouts
from worker.db.pool import create_pool, database_name
from worker.errors import DatabaseUnavailable, JobFailed

pytestmark = pytest.mark.integration

if TYPE_CHECKING:
    Pool = asyncpg.Pool[asyncpg.Record]


@pytest.fixture(scope="module")
def pgbouncer(database_url: str) -> Iterator[PgBouncer]:
    bouncer = PgBouncer(database_url).start()
    yield bouncer
    bouncer.stop()


@pytest.fixture
def bounced(config: Config, pgbouncer: PgBouncer) -> Config:
    """The test's configuration with DATABASE_URL through PgBouncer, set up for it."""
    return config.model_copy(
        update={
            "database_url": pgbouncer.url_for(config.database_url),
            "pg_statement_cache_size": 0,
            "pg_transaction_pooling": True,
            "worker_max_jobs": 20,
        }
    )


async def test_the_job_suite_runs_through_pgbouncer(
    bounced: Config,
    pgbouncer: PgBouncer,
    run_worker: RunWorker,
    arq_redis: ArqRedis,
    users: list[asyncpg.Record],
    pool: Pool,
) -> None:
    cutoff = datetime.now(UTC) - timedelta(days=100)
    stale = "SELECT count(*) FROM users WHERE is_active AND coalesce(last_seen_at, created_at) < $1"
    to_deactivate = await pool.fetchval(stale, cutoff)
    active = await pool.fetchval("SELECT count(*) FROM users WHERE is_active")
    key = f"nightly-{uuid.uuid4()}"
    async with JobClient.connect(bounced) as client:
        gets = await client.enqueue_many("get_user", [{"user_id": r["id"]} for r in users] * 8)
        missing = await client.get_user(99_999)
        page = await client.list_users(active=True, limit=10)
        search = await client.search_users("ada", field="name", limit=100)
        count = await client.count_users(active=True)
        first, again = [
            await client.enqueue(
                "deactivate_inactive_users", seen_before=cutoff, idempotency_key=key
            )
            for _ in range(2)
        ]
        bad = await arq_redis.enqueue_job("get_user", user_id="not a number")
        assert bad is not None
        worker = await run_worker(config=bounced)
        assert (worker.jobs_complete, worker.jobs_failed) == (len(gets) + 6, 1)

        by_id = {r["id"]: dict(r) for r in users}
        for handle in gets:
            assert handle is not None
            user = await handle.result(timeout=1)
            assert user is not None and user.model_dump() == by_id[user.id]
        assert await missing.result(timeout=1) is None
        expected_page = [r["id"] for r in users if r["is_active"]][:10]
        assert [u.id for u in (await page.result(timeout=1)).users] == expected_page
        names = sorted(u.name for u in (await search.result(timeout=1)).users)
        assert names == sorted(r["name"] for r in users if r["name"].lower().startswith("ada"))
        assert (await count.result(timeout=1)).count == active
        done, repeated = await first.result(timeout=1), await again.result(timeout=1)
        assert done.deactivated == repeated.deactivated == to_deactivate > 0
        with pytest.raises(JobFailed, match="Invalid arguments for job 'get_user'"):
            await client.handle(bad.job_id).raw_result(timeout=1)

    assert await pool.fetchval(stale, cutoff) == 0
    assert (
        await pool.fetchval("SELECT count(*) FROM users WHERE is_active")
        == active - done.deactivated
    )
    assert (
        await pool.fetchval("SELECT count(*) FROM job_effects WHERE idempotency_key = $1", key) == 1
    )
    letter = await pool.fetchrow(
        "SELECT reason, error_type FROM dead_letters WHERE job_id = $1", bad.job_id
    )
    assert letter is not None and letter["error_type"] == "InvalidJobArguments"
    # The worker's connections really went through PgBouncer.
    assert f"db={database_name(bounced.database_url)}" in pgbouncer.log()


async def test_a_fenced_out_try_writes_nothing_through_pgbouncer(
    bounced: Config, run_worker: RunWorker, users: list[asyncpg.Record], pool: Pool
) -> None:
    """A newer try owns the job (job_claims) and committed its effect: this try claims, locks the
    claim row (FOR UPDATE), sees it lost, and returns the new owner's result, writing nothing."""
    job_id = f"fenced-{uuid.uuid4()}"
    cutoff = datetime.now(UTC)
    owners_result = {"deactivated": 777, "seen_before": cutoff.isoformat()}
    await pool.execute("INSERT INTO job_claims (job_id, try) VALUES ($1, 2)", job_id)
    await pool.execute(
        "INSERT INTO job_effects (idempotency_key, job_id, function, result) VALUES ($1, $1,"
        " 'deactivate_inactive_users', $2)",
        job_id,
        owners_result,
    )
    active = await pool.fetchval("SELECT count(*) FROM users WHERE is_active")
    async with JobClient.connect(bounced) as client:
        handle = await client.deactivate_inactive_users(cutoff, job_id=job_id)
        worker = await run_worker(config=bounced)
        assert worker.jobs_complete == 1
        assert (await handle.result(timeout=1)).deactivated == 777
    assert await pool.fetchval("SELECT count(*) FROM users WHERE is_active") == active
    assert await pool.fetchval("SELECT try FROM job_claims WHERE job_id = $1", job_id) == 2


async def test_each_job_transaction_sets_its_own_timeouts(bounced: Config) -> None:
    """Behind PgBouncer the timeouts are transaction settings: set inside each job transaction,
    never left on the server connections that other clients get next."""
    pool = await create_pool(bounced)
    try:
        ctx: dict[str, Any] = {
            RESOURCES_KEY: Resources(
                pool=pool, acquire_timeout=5, transaction_timeouts=transaction_timeouts(bounced)
            )
        }
        show = (
            "SELECT current_setting('statement_timeout') AS st, current_setting('lock_timeout')"
            " AS lt, current_setting('idle_in_transaction_session_timeout') AS it"
        )
        async with transaction(ctx) as conn:
            inside = await conn.fetchrow(show)
        assert inside is not None
        assert (inside["st"], inside["lt"], inside["it"]) == (
            f"{int(bounced.pg_statement_timeout)}s",
            f"{int(bounced.pg_lock_timeout)}s",
            f"{int(bounced.pg_idle_in_transaction_timeout)}s",
        )
        async with pool.acquire() as conn:
            outside = await conn.fetchrow(show)
        assert outside is not None and outside["lt"] == "0"  # the server's default again
        # The transaction's statement_timeout is enforced by the server.
        async with transaction(ctx) as conn:
            await conn.execute("SELECT set_config('statement_timeout', '100', true)")
            with pytest.raises(asyncpg.QueryCanceledError):
                await conn.execute("SELECT pg_sleep(5)")
    finally:
        await pool.close()


async def test_named_prepared_statements_break_through_pgbouncer(
    pgbouncer: PgBouncer, database_url: str
) -> None:
    """The control: asyncpg's default statement cache (named statements) fails in transaction
    mode, because the next transaction may run on a server connection that has another client's
    statement of the same name, or none. With statement_cache_size=0 the same load succeeds."""
    url = pgbouncer.url_for(database_url)

    async def load(cache: int) -> list[BaseException]:
        clients = [
            await asyncpg.connect(url, statement_cache_size=cache)
            for _ in range(SERVER_POOL_SIZE * 2)
        ]
        try:
            errors: list[BaseException] = []
            for round_ in range(5):
                outcomes = await asyncio.gather(
                    *(c.fetchval("SELECT $1::int * 2", round_) for c in clients),
                    return_exceptions=True,
                )
                errors += [o for o in outcomes if isinstance(o, BaseException)]
                assert all(o == round_ * 2 for o in outcomes if not isinstance(o, BaseException))
            return errors
        finally:
            for c in clients:
                await c.close()

    named = await load(cache=100)
    assert named, "named prepared statements should fail in transaction pooling mode"
    assert all(
        isinstance(
            e, asyncpg.DuplicatePreparedStatementError | asyncpg.InvalidSQLStatementNameError
        )
        for e in named
    ), named
    assert await load(cache=0) == []


async def test_without_transaction_pooling_the_worker_says_what_to_set(
    config: Config, pgbouncer: PgBouncer, arq_redis: ArqRedis
) -> None:
    plain = config.model_copy(update={"database_url": pgbouncer.url_for(config.database_url)})
    with pytest.raises(DatabaseUnavailable, match="set PG_TRANSACTION_POOLING=true"):
        await create_pool(plain)
