"""The scale-out commands as an operator runs them: `python -m worker budget`, the budget line of
`python -m worker status`, and `python -m worker run`'s argument check."""

from __future__ import annotations

import json

import asyncpg
import pytest
from arq.connections import ArqRedis

from tests.acceptance.test_worker_process import cli
from worker.config import Config
from worker.db.budget_registry import Registration, register

pytestmark = pytest.mark.acceptance


async def test_budget_and_status_show_the_fleet(
    config: Config, arq_redis: ArqRedis, pool: asyncpg.Pool[asyncpg.Record]
) -> None:
    queue = config.queue_name
    await register(arq_redis, queue, Registration("h1:10", "h1", 10, "", 7, 3, False, 0.0))
    await register(arq_redis, queue, Registration("h2:20", "h2", 20, "", 50, 50, True, 0.0))
    max_connections = int(await pool.fetchval("SHOW max_connections"))

    done = cli(config, "budget", PG_CONNECTION_BUDGET="40")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["queue"] == queue
    assert sorted((w["worker"], w["pool_max"], w["via_pooler"]) for w in report["workers"]) == [
        ("h1:10", 7, False),
        ("h2:20", 50, True),
    ]
    assert report["fleet"] == {
        "workers": 2,
        "direct_workers": 1,
        "pool_max": 7,
        "pool_open": 3,
        "via_pooler_workers": 1,
    }
    budget = report["budget"]
    assert budget["max_connections"] == max_connections
    assert budget["pg_connection_budget"] == 40
    assert budget["allowance"] == min(40, budget["server_room"])
    assert budget["fleet_pool_max"] == 7
    assert budget["left"] == budget["allowance"] - 7

    status = cli(config, "status")
    line = next(x for x in status.stdout.splitlines() if x.startswith("connection budget:"))
    assert line.startswith(
        "connection budget: 1 workers (+1 behind a pooler, not counted) may open 7 of "
    ), line
    assert f"max_connections {max_connections}" in line
    status_json = json.loads(cli(config, "status", "--json").stdout)
    assert status_json["budget"]["fleet_pool_max"] == 7


def test_run_needs_at_least_one_process(config: Config) -> None:
    done = cli(config, "run", "--processes", "0")
    assert done.returncode == 2
    assert "--processes must be at least 1" in done.stderr
