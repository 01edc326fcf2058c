"""Errors a user can fix, as the worker and the command line report them: one line that names the
problem and the fix, exit 2, no traceback; a password in DATABASE_URL's query string masked."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import ADMIN_URL
from worker.config import Config
from worker.db.pool import with_database

pytestmark = pytest.mark.acceptance

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cret-in-query"


def env_for(config: Config, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in Config.model_fields}
    env.update(
        DATABASE_URL=config.database_url,
        REDIS_URL=config.redis_url,
        QUEUE_NAME=config.queue_name,
        CRON_DEACTIVATE="",
        METRICS_PORT="0",
        PG_POOL_OVER_BUDGET="shrink",
        LOG_FORMAT="text",
    )
    env.update(extra)
    return env


def run(config: Config, *argv: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv],
        cwd=ROOT,
        env=env_for(config, **extra),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def the_error(done: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a command that failed with exit 2 (log lines may come before it)."""
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert not any(line.startswith("Traceback") for line in lines), done.stderr
    errors = [line for line in lines if "error" in line.lower()]
    assert errors == [lines[-1]], done.stderr
    return lines[-1]


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A database of this test's own without the schema; dropped afterwards."""
    name = f"edges_empty_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    yield with_database(ADMIN_URL, name)
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_worker_without_schema_says_so_in_one_line(config: Config, empty_database: str) -> None:
    error = the_error(run(config, "-m", "arq", "worker.Settings", DATABASE_URL=empty_database))
    assert "does not exist" in error and "python -m worker setup" in error


def test_worker_with_a_bad_setting_says_so_in_one_line(config: Config) -> None:
    done = run(config, "-m", "arq", "worker.Settings", WORKER_MAX_JOBS="zero")
    error = the_error(done)
    assert done.stderr.strip() == error  # nothing else: it stopped before logging anything
    assert "WORKER_MAX_JOBS" in error and "'zero'" in error and ".env" in error


def test_enqueue_with_bad_json_names_the_option(config: Config) -> None:
    done = run(config, "-m", "worker", "enqueue", "get_user", "--json", "not json")
    error = the_error(done)
    assert done.stderr.strip() == error
    assert "--json" in error and "JSON" in error and "line 1 column 1" in error
    assert "{" in error  # an example of what is expected


def test_check_masks_a_password_in_the_query_string(config: Config) -> None:
    url = f"{ADMIN_URL}?password={SECRET}"
    done = run(config, "-m", "worker", "check", DATABASE_URL=url)
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert "password=***" in done.stdout


def test_startup_error_masks_a_password_in_the_query_string(config: Config) -> None:
    missing = with_database(ADMIN_URL, f"edges_missing_{uuid.uuid4().hex[:8]}")
    done = run(config, "-m", "arq", "worker.Settings", DATABASE_URL=f"{missing}?password={SECRET}")
    error = the_error(done)
    assert SECRET not in done.stdout + done.stderr
    assert "password=***" in error
