"""The dashboard's PostgreSQL pool, opened through worker/db/pool.py: named in pg_stat_activity
like the worker's own connections."""

from __future__ import annotations

import asyncpg
import pytest

from worker.config import Config
from worker.db.pool import APPLICATION_NAME
from worker.ops.dashboard import Sources

pytestmark = pytest.mark.integration


async def test_the_dashboards_pool_is_named_like_the_workers(
    config: Config, pool: asyncpg.Pool[asyncpg.Record]
) -> None:
    sources = Sources(config)
    try:
        letters = await sources.dead_letters()
        assert "error" not in letters and letters["total"] >= 0
        names = await pool.fetch(
            "SELECT application_name FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert f"{APPLICATION_NAME}-dashboard" in {r["application_name"] for r in names}
    finally:
        await sources.close()
