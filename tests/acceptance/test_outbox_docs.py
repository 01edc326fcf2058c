"""docs/producers.md's transactional enqueue examples run as printed, on the real services."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import pytest

from worker.config import Config

if TYPE_CHECKING:
    Pool = asyncpg.Pool[asyncpg.Record]

pytestmark = pytest.mark.acceptance

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Transactional enqueue (SQL, in your own transaction)"


def example(language: str, index: int = 0) -> str:
    """The ``index``-th (default the first) ``language`` code block of the section."""
    text = (ROOT / "docs" / "producers.md").read_text()
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    found = re.findall(rf"```{language}\n(.*?)```", section, re.DOTALL)
    assert len(found) > index, f"no {language} example #{index + 1} in {SECTION!r}"
    return str(found[index])


async def test_the_sql_example_enqueues_three_jobs_at_commit(pool: Pool) -> None:
    async with pool.acquire() as conn:
        before = await conn.fetchval("SELECT count(*) FROM job_outbox WHERE queue = 'arq:queue'")
        await conn.execute(example("sql"))
        after = await conn.fetchval("SELECT count(*) FROM job_outbox WHERE queue = 'arq:queue'")
        assert after - before == 3
        assert await conn.fetchval(
            "SELECT run_at > now() FROM job_outbox WHERE function = 'count_users'"
            " AND run_at IS NOT NULL ORDER BY created_at DESC LIMIT 1"
        )
        await conn.execute("DELETE FROM job_outbox WHERE queue = 'arq:queue'")


async def test_the_trace_context_example_stores_each_rows_traceparent(pool: Pool) -> None:
    async with pool.acquire() as conn:
        started = await conn.fetchval("SELECT clock_timestamp()")
        await conn.execute(example("sql", 1))
        rows = await conn.fetch(
            "SELECT function, traceparent, tracestate FROM job_outbox"
            " WHERE queue = 'arq:queue' AND created_at > $1 ORDER BY created_at",
            started,
        )
        await conn.execute("DELETE FROM job_outbox WHERE queue = 'arq:queue'")
    assert [tuple(row) for row in rows] == [
        (
            "get_user",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "congo=t61rcWkgMzE",
        ),
        ("count_users", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None),
    ]


def test_the_python_example_enqueues_in_its_transaction(config: Config, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(example("python"))
    env = {**os.environ, "DATABASE_URL": config.database_url, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(script)],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"enqueued [0-9a-f]{32}\n", done.stdout)
