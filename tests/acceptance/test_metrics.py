"""Prometheus metrics of a real worker subprocess, scraped over HTTP after real jobs ran."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
import redis.asyncio as redis_py
from arq.connections import ArqRedis
from prometheus_client.parser import text_string_to_metric_families

from tests.acceptance.conftest import free_port, http_get
from tests.faults.conftest import Counters, Spawn, url_via, wait_until
from tests.faults.proxy import Proxy
from worker.config import Config
from worker.queue.keys import failures_key

pytestmark = pytest.mark.acceptance


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, by (name, labels)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, frozenset(s.labels.items()))] = s.value
    return found


def value(
    scraped: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


async def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, body = await http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200, body
    return samples(body)


async def test_metrics_count_real_jobs_by_name(
    spawn: Spawn,
    arq_redis: ArqRedis,
    raw: redis_py.Redis,
    counters: Counters,
    users: list[asyncpg.Record],
    config: Config,
) -> None:
    port = free_port()
    await spawn(METRICS_PORT=str(port), WORKER_MAX_JOBS="6")
    key = uuid.uuid4().hex[:8]
    jobs = [await arq_redis.enqueue_job("get_user", user_id=i) for i in range(1, 6)]
    jobs += [
        await arq_redis.enqueue_job("fault_write", key=f"{key}-r{i}", fail_tries=1) for i in (1, 2)
    ]
    jobs += [await arq_redis.enqueue_job("fault_write", key=f"{key}-p", fail_permanently=True)]
    later = await arq_redis.enqueue_job("count_users", _defer_by=3600)
    assert later is not None and all(job is not None for job in jobs)

    async def all_done() -> bool:
        results = await raw.exists(*(f"arq:result:{job.job_id}" for job in jobs if job))
        return bool(results == len(jobs))

    await wait_until(all_done, timeout=30, what="the jobs' results")
    scraped = await scrape(port)

    assert value(scraped, "worker_jobs_started_total", function="get_user") == 5
    assert value(scraped, "worker_jobs_succeeded_total", function="get_user") == 5
    assert value(scraped, "worker_job_duration_seconds_count", function="get_user") == 5
    # Two jobs fail once and succeed on try 2; one fails for good: 5 tries of fault_write.
    assert value(scraped, "worker_jobs_started_total", function="fault_write") == 5
    assert value(scraped, "worker_jobs_retried_total", function="fault_write") == 2
    assert value(scraped, "worker_jobs_succeeded_total", function="fault_write") == 2
    assert value(scraped, "worker_jobs_failed_total", function="fault_write") == 1
    assert (
        value(
            scraped,
            "worker_jobs_dead_lettered_total",
            function="fault_write",
            reason="permanent-error",
        )
        == 1
    )
    assert value(scraped, "worker_job_queue_wait_seconds_count") == 10
    # Every try acquires at least one connection; none waited long, none timed out.
    acquired = value(scraped, "worker_pool_acquire_wait_seconds_count")
    assert acquired >= 10
    assert value(scraped, "worker_pool_acquire_wait_seconds_bucket", le="1.0") == acquired
    assert value(scraped, "worker_pool_acquire_timeouts_total") == 0
    # State read at scrape time: the deferred job is scheduled, nothing waits or runs.
    assert value(scraped, "worker_queue_jobs", state="scheduled") == 1
    assert value(scraped, "worker_queue_jobs", state="due") == 0
    assert value(scraped, "worker_queue_oldest_due_job_age_seconds") == 0
    assert value(scraped, "worker_jobs_in_progress") == 0
    assert value(scraped, "worker_max_jobs") == 6
    assert value(scraped, "worker_pool_max_size") == 6
    size = value(scraped, "worker_pool_size")
    assert size >= 1
    assert value(scraped, "worker_pool_connections", state="idle") == size
    assert value(scraped, "worker_pool_connections", state="in_use") == 0
    assert value(scraped, "worker_heartbeat_age_seconds") < 1.0
    # The recent-failures list has the two retries and the permanent failure, no arguments.
    listed = await raw.lrange(failures_key(config.queue_name), 0, -1)  # type: ignore[misc]
    failures = [f.decode() for f in listed]
    assert len(failures) == 3 and all(key not in f for f in failures)


async def test_queue_gauges_and_jobs_in_progress_while_jobs_run(
    spawn: Spawn, arq_redis: ArqRedis, counters: Counters
) -> None:
    """Two slots, both busy with a 3 s query; three more jobs wait: in progress 2, due 5, the
    oldest waiting job's age grows, and the pool has two connections in use."""
    port = free_port()
    await spawn(METRICS_PORT=str(port), WORKER_MAX_JOBS="2")
    key = uuid.uuid4().hex[:8]
    for i in range(5):
        await arq_redis.enqueue_job("fault_write", key=f"{key}-{i}", hold=3.0)

    async def busy() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
        scraped = await scrape(port)
        return scraped if value(scraped, "worker_jobs_in_progress") == 2 else None

    first = await wait_until(busy, timeout=10, what="two jobs in progress")
    assert first is not None
    await asyncio.sleep(0.5)  # the waiting jobs age by this much at least
    scraped = await scrape(port)
    assert value(scraped, "worker_jobs_in_progress") == 2
    assert value(scraped, "worker_queue_jobs", state="due") == 5
    assert value(scraped, "worker_pool_connections", state="in_use") == 2
    age = value(scraped, "worker_queue_oldest_due_job_age_seconds")
    assert age >= value(first, "worker_queue_oldest_due_job_age_seconds") + 0.4


async def test_redis_errors_are_counted_and_readiness_follows_redis(
    spawn: Spawn, config: Config, redis_proxy: Proxy, counters: Counters
) -> None:
    port = free_port()
    await spawn(METRICS_PORT=str(port), REDIS_URL=url_via(config.redis_url, redis_proxy.port))
    base = f"http://127.0.0.1:{port}"
    assert (await http_get(f"{base}/readyz"))[0] == 200
    redis_proxy.cut()
    try:
        status, body = await http_get(f"{base}/readyz")
        assert status == 503 and '"redis": "' in body and '"postgres": "ok"' in body
    finally:
        redis_proxy.restore()

    async def ready_again() -> bool:
        return (await http_get(f"{base}/readyz"))[0] == 200

    await wait_until(ready_again, timeout=30, what="readiness after Redis returned")
    scraped = await scrape(port)
    assert value(scraped, "worker_redis_errors_total", where="health") >= 1
