"""The worker runs as a least-privilege role: its jobs work, anything else is refused."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from tests.conftest import RunWorker
from worker.client import JobClient
from worker.config import Config
from worker.db.pool import grant_worker_role

pytestmark = pytest.mark.integration


@pytest.fixture
async def worker_role(pool: asyncpg.Pool[asyncpg.Record]) -> AsyncIterator[str]:
    """A role made by the setup command's grants; dropped (with its grants) afterwards."""
    role = f"worker_lp_{uuid.uuid4().hex[:8]}"
    async with pool.acquire() as conn:
        assert await grant_worker_role(conn, role, "pw-not-logged")
        assert not await grant_worker_role(conn, role, None)  # idempotent
    yield role
    async with pool.acquire() as conn:
        await conn.execute(f'DROP OWNED BY "{role}"')
        await conn.execute(f'DROP ROLE "{role}"')


def as_role(url: str, role: str) -> str:
    parts = urlsplit(url)
    netloc = f"{role}@{parts.hostname}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


async def test_jobs_run_as_the_worker_role(
    config: Config, run_worker: RunWorker, users: list[asyncpg.Record], worker_role: str
) -> None:
    limited = config.model_copy(update={"database_url": as_role(config.database_url, worker_role)})
    async with JobClient.connect(limited) as client:
        read = await client.get_user(users[0]["id"])
        write = await client.deactivate_inactive_users(datetime.now(UTC) - timedelta(days=100))
        bad = await client.enqueue("get_user", user_id=1)
        await client.redis.enqueue_job("get_user", user_id="not-a-number")  # a dead letter
        worker = await run_worker(config=limited)
        assert worker.jobs_complete == 3 and worker.jobs_failed == 1
        assert (await read.result(timeout=1)) is not None
        assert (await write.result(timeout=1)).deactivated > 0
        assert (await bad.result(timeout=1)) is not None


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM users",
        "DROP TABLE users",
        "UPDATE users SET email = 'x'",
        "CREATE TABLE stolen (x int)",
        "TRUNCATE job_effects",
        "DELETE FROM dashboard_audit",  # the dashboard's role writes its audit log, never erases it
        "SELECT * FROM pg_authid",
    ],
)
async def test_the_worker_role_cannot_do_anything_else(
    config: Config, worker_role: str, statement: str, users: list[asyncpg.Record]
) -> None:
    conn = await asyncpg.connect(as_role(config.database_url, worker_role))
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement)
    finally:
        await conn.close()
