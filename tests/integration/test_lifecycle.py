"""Worker startup and shutdown: one pool, closed at shutdown, clear errors when startup fails."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import asyncpg
import pytest
from arq.connections import ArqRedis

from jobs.context import RESOURCES_KEY, Resources
from tests.conftest import ADMIN_URL, RunWorker
from worker.config import Config
from worker.db.pool import create_pool, with_database
from worker.errors import DatabaseMissing, DatabaseUnavailable, PoolTooLarge, SchemaMissing
from worker.runtime.lifecycle import shutdown, startup

pytestmark = pytest.mark.integration


async def test_startup_puts_one_pool_in_ctx_and_shutdown_closes_it(
    config: Config, arq_redis: ArqRedis
) -> None:
    ctx: dict[str, Any] = {"config": config, "redis": arq_redis}
    await startup(ctx)
    res = ctx[RESOURCES_KEY]
    assert isinstance(res, Resources)
    assert res.pool.get_max_size() == config.worker_max_jobs
    assert res.pool.get_min_size() == min(4, config.worker_max_jobs)
    assert res.acquire_timeout == config.pg_acquire_timeout
    async with res.pool.acquire() as conn:
        settings = await conn.fetchrow(
            "SELECT current_setting('application_name') AS app,"
            " current_setting('statement_timeout') AS st"
        )
    assert settings is not None
    assert settings["app"] == "pgpool-worker"
    assert settings["st"] == f"{int(config.pg_statement_timeout)}s"
    await shutdown(ctx)
    assert RESOURCES_KEY not in ctx
    assert res.pool.is_closing()


async def test_startup_twice_keeps_one_pool_per_worker(
    config: Config, run_worker: RunWorker, pool: asyncpg.Pool
) -> None:
    worker = await run_worker()
    assert RESOURCES_KEY not in worker.ctx  # shutdown took it out and closed it
    open_after = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgpool-worker'"
        " AND datname = current_database()"
    )
    assert open_after == 0


async def test_shutdown_after_failed_startup_does_not_raise(
    config: Config, arq_redis: ArqRedis
) -> None:
    bad = config.model_copy(
        update={"database_url": "postgresql://postgres:hunter2@127.0.0.1:1/nowhere"}
    )
    ctx: dict[str, Any] = {"config": bad, "redis": arq_redis}
    with pytest.raises(DatabaseUnavailable) as info:
        await startup(ctx)
    message = str(info.value)
    assert "hunter2" not in message
    assert "postgresql://postgres:***@127.0.0.1:1/nowhere" in message
    assert "docker compose up -d postgres" in message
    await shutdown(ctx)  # must not turn the real error into a KeyError
    assert RESOURCES_KEY not in ctx


async def test_missing_database_says_how_to_create_it(config: Config, arq_redis: ArqRedis) -> None:
    name = f"missing_{uuid.uuid4().hex[:8]}"
    bad = config.model_copy(update={"database_url": with_database(ADMIN_URL, name)})
    with pytest.raises(DatabaseMissing, match=f"{name}.*python -m worker setup"):
        await startup({"config": bad, "redis": arq_redis})


async def test_missing_users_table_is_a_clear_error(config: Config, arq_redis: ArqRedis) -> None:
    name = f"empty_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        empty = config.model_copy(update={"database_url": with_database(ADMIN_URL, name)})
        with pytest.raises(SchemaMissing, match="python -m worker setup"):
            await startup({"config": empty, "redis": arq_redis})
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def test_pool_larger_than_the_server_allows_is_refused(
    config: Config, arq_redis: ArqRedis
) -> None:
    huge = config.model_copy(update={"pg_pool_max_size": 100_000, "pg_pool_min_size": 1})
    ctx: dict[str, Any] = {"config": huge, "redis": arq_redis}
    with pytest.raises(PoolTooLarge, match=r"PG_POOL_MAX_SIZE=100000.*max_connections="):
        await startup(ctx)
    assert RESOURCES_KEY not in ctx


async def test_pool_smaller_than_max_jobs_is_reported(
    config: Config, arq_redis: ArqRedis, caplog: pytest.LogCaptureFixture
) -> None:
    small = config.model_copy(update={"worker_max_jobs": 50, "pg_pool_max_size": 10})
    ctx: dict[str, Any] = {"config": small, "redis": arq_redis}
    with caplog.at_level(logging.WARNING, logger="worker.runtime.lifecycle"):
        await startup(ctx)
    await shutdown(ctx)
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "WORKER_MAX_JOBS=50 > PG_POOL_MAX_SIZE=10" in warning
    assert "longer than 1.250s" in warning  # 5 s acquire timeout / 4 rounds of waiting


async def test_a_released_connection_keeps_no_open_transaction(config: Config) -> None:
    # Without PG_RESET_SESSION the pool skips asyncpg's reset query, not its rollback.
    one = config.model_copy(update={"pg_pool_min_size": 1, "pg_pool_max_size": 1})
    pool = await create_pool(one)
    try:
        async with pool.acquire() as conn:
            await conn.execute("BEGIN")
            await conn.execute("CREATE TEMP TABLE left_open (x int)")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT to_regclass('pg_temp.left_open')") is None
    finally:
        await pool.close()


@pytest.mark.parametrize("reset", [False, True])
async def test_pg_reset_session_decides_whether_session_state_survives_a_release(
    config: Config, reset: bool
) -> None:
    one = config.model_copy(
        update={"pg_pool_min_size": 1, "pg_pool_max_size": 1, "pg_reset_session": reset}
    )
    pool = await create_pool(one)
    try:
        async with pool.acquire() as conn:
            await conn.execute("SET search_path TO pg_catalog")
        async with pool.acquire() as conn:
            path = await conn.fetchval("SHOW search_path")
    finally:
        await pool.close()
    assert (path == "pg_catalog") is not reset
