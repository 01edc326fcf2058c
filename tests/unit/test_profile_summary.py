"""bench.profile's reading of py-spy's raw stacks (pure functions)."""

from __future__ import annotations

import pytest

from bench.common import ROOT
from bench.profile import part_of, summarize

pytestmark = pytest.mark.unit

ARQ = "Worker.run (/v/lib/python3.11/site-packages/arq/worker.py:313)"
OURS = f"_execute ({ROOT}/worker/runtime/consumer.py:420)"
PG = "fetchrow (/v/lib/python3.11/site-packages/asyncpg/connection.py:775)"
STACKS = [f"{ARQ};{OURS};{PG} 6", f"{ARQ};{OURS} 3", f"{ARQ} 1", "", "not a stack line"]


def test_parts_are_told_apart_by_file() -> None:
    assert part_of("acquire (/v/site-packages/asyncpg/pool.py:9)") == "asyncpg"
    assert part_of("acquire (asyncpg/pool.py:9)") == "asyncpg"  # py-spy's short form
    assert part_of("execute (redis/asyncio/client.py:1)") == "Redis client"
    assert part_of("get_user (/r/main/jobs/users.py:59)") == "this worker"
    assert part_of("create_task (asyncio/tasks.py:384)") == "asyncio"
    assert part_of("Worker.run (arq/worker.py:313)") == "event loop (uvloop, native)"
    assert part_of("Worker.main (arq/worker.py:352)") == "arq"
    assert part_of("_find_and_load (<frozen importlib._bootstrap>:1176)") == "imports (start-up)"
    assert part_of("helper (contextlib.py:334)") == "async with (contextlib)"
    assert part_of("select (selectors.py:468)") == "other"


def test_summary_counts_self_and_inclusive_samples() -> None:
    total, parts, frames = summarize(STACKS, top=10)
    assert total == 10
    assert parts == [
        ["asyncpg", "60.0 %"],
        ["this worker", "30.0 %"],
        ["event loop (uvloop, native)", "10.0 %"],
    ]
    by_frame = {row[0]: row[1:] for row in frames}
    assert by_frame["fetchrow (asyncpg/connection.py:775)"] == ["60.0 %", "60.0 %"]
    assert by_frame["_execute (worker/runtime/consumer.py:420)"] == ["30.0 %", "90.0 %"]
    assert by_frame["Worker.run (arq/worker.py:313)"] == ["10.0 %", "100.0 %"]


def test_no_samples_gives_empty_tables() -> None:
    assert summarize(["", "garbage"], top=5) == (0, [], [])
