"""F18: PostgreSQL unreachable far longer than a job's whole retry budget. The worker's circuit
breaker (worker/runtime/breaker.py) stops claiming and gives back the tries of the jobs that met the
outage, so a backlog outlives the outage: nothing lost, nothing dead-lettered, no try burnt."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
import uuid
from typing import TYPE_CHECKING

import asyncpg
import pytest
from arq.connections import ArqRedis
from arq.jobs import Job

from tests.faults.conftest import Counters, Spawn, url_via, wait_until
from tests.faults.proxy import Proxy, _free_port
from tests.faults.test_database_faults import effects_total
from worker.config import Config
from worker.queue.health import read_workers

if TYPE_CHECKING:
    Pool = asyncpg.Pool[asyncpg.Record]

pytestmark = pytest.mark.faults

OUTAGE = 25.0
BEFORE, DURING = 150, 150  # jobs queued before the outage and while it lasts


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


async def http_get(port: int, path: str) -> tuple[int, str]:
    return await asyncio.to_thread(_get, f"http://127.0.0.1:{port}{path}")


async def breaker_gauge(port: int) -> float | None:
    _, body = await http_get(port, "/metrics")
    for line in body.splitlines():
        if line.startswith("worker_postgres_breaker_open "):
            return float(line.split()[1])
    return None


async def enqueue(arq_redis: ArqRedis, prefix: str, count: int) -> tuple[list[str], list[Job]]:
    keys = [f"{prefix}-{i:03d}-{uuid.uuid4().hex[:6]}" for i in range(count)]
    jobs = await asyncio.gather(
        *(arq_redis.enqueue_job("fault_write", key=key, hold=0.02) for key in keys)
    )
    return keys, [j for j in jobs if j is not None]


async def test_f18_a_postgres_outage_many_times_the_retry_budget_loses_and_dead_letters_nothing(
    spawn: Spawn,
    arq_redis: ArqRedis,
    counters: Counters,
    pool: Pool,
    pg_proxy: Proxy,
    config: Config,
) -> None:
    """The scaled equivalent of a 5-minute outage at the defaults.

    At the defaults (MAX_TRIES=10, RETRY_BACKOFF_BASE=1, RETRY_BACKOFF_MAX=60: RetryPolicy(10,
    1.0, 60.0)) the nine waits before tries 2-10 have ceilings 1+2+4+8+16+32+60+60+60 = 243 s,
    each waited between half of it and all of it: a job that meets nothing but the outage spends
    all its tries in 121.5-243 s, so a 5-minute (300 s) outage, 1.2-2.5 times that budget, would
    dead-letter the whole backlog. Here (the fault suite's MAX_TRIES=5, backoff 0.1-0.5 s) the
    four waits add up to 0.6-1.2 s: a 25 s outage is 20-40 times the budget.
    """
    port = _free_port()
    worker = await spawn(
        DATABASE_URL=url_via(config.database_url, pg_proxy.port), METRICS_PORT=str(port)
    )
    keys, jobs = await enqueue(arq_redis, "f18-before", BEFORE)

    async def running() -> bool:
        return await effects_total(pool) >= 10

    await wait_until(running, timeout=20, what="the first effects")
    pg_proxy.cut()
    cut_at = time.monotonic()
    during_keys, during_jobs = await enqueue(arq_redis, "f18-during", DURING)
    keys += during_keys
    jobs += during_jobs
    assert len(jobs) == len(keys) == BEFORE + DURING
    seen_open = {"gauge": False, "record": False, "readyz": False}

    async def outage_over() -> bool:
        assert worker.alive(), worker.log()
        pending = f"{config.queue_name}:dead-letters:pending"
        assert await arq_redis.llen(pending) == 0, worker.log()  # type: ignore[misc]
        if not seen_open["gauge"]:
            seen_open["gauge"] = await breaker_gauge(port) == 1
        if not seen_open["record"]:
            records = await read_workers(arq_redis, config.queue_name)
            seen_open["record"] = any(
                (r.get("postgres_breaker") or {}).get("open") for r in records
            )
        if not seen_open["readyz"]:
            status, body = await http_get(port, "/readyz")
            seen_open["readyz"] = status == 503 and json.loads(body)["postgres"] != "ok"
        return time.monotonic() - cut_at >= OUTAGE

    try:
        await wait_until(outage_over, timeout=OUTAGE + 20, what="the end of the outage")
    finally:
        pg_proxy.restore()
    assert seen_open == {"gauge": True, "record": True, "readyz": True}

    results = await asyncio.gather(*(j.result(timeout=90, poll_delay=0.1) for j in jobs))
    assert worker.alive()
    assert await counters.dead_letters() == []
    effects = await pool.fetch("SELECT key, count(*)::int AS n FROM fault_effects GROUP BY key")
    assert {r["key"]: r["n"] for r in effects} == dict.fromkeys(keys, 1)  # each succeeded once
    tries = sorted(r["job_try"] for r in results)
    assert tries[-1] <= 2, f"tries burnt by the outage: {tries[-20:]}"

    async def closed() -> bool:
        return await breaker_gauge(port) == 0

    await wait_until(closed, timeout=10, what="the breaker to close")
    log = worker.log()
    assert log.count("unreachable (") == 1 and log.count("reachable again after") == 1, log
    assert "tries-exhausted" not in log
