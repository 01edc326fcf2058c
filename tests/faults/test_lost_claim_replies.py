"""F17: a claim whose reply is lost (the connection reset after the script ran on Redis). redis-py
sends the claim again, or the consumer's supervised loop does once the client's retries are spent;
either way the first execution's claims are the ones delivered: no job sits "running" without a
runner for a lease, and none is charged a try it did not run."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import asyncpg
import pytest
from arq.connections import ArqRedis
from arq.jobs import Job

from tests.faults.conftest import Counters, Spawn, url_via, wait_until
from tests.faults.proxy import Proxy
from worker.config import Config
from worker.runtime.claims import CLAIM_SCRIPT

pytestmark = pytest.mark.faults

# What the worker sends for a claim: EVALSHA with the script's SHA-1.
CLAIM_SHA = hashlib.sha1(CLAIM_SCRIPT.encode()).hexdigest().encode()


async def burst(arq_redis: ArqRedis, prefix: str, count: int) -> tuple[list[str], list[Job]]:
    keys = [f"{prefix}-{i:03d}-{uuid.uuid4().hex[:6]}" for i in range(count)]
    jobs = await asyncio.gather(
        *(arq_redis.enqueue_job("fault_write", key=key, hold=0.05) for key in keys)
    )
    assert all(jobs)
    return keys, [j for j in jobs if j is not None]


async def effects_total(pool: asyncpg.Pool[asyncpg.Record]) -> int:
    count: int = await pool.fetchval("SELECT count(*) FROM fault_effects")
    return count


async def assert_each_ran_once_on_try_one(
    keys: list[str], jobs: list[Job], pool: asyncpg.Pool[asyncpg.Record], counters: Counters
) -> None:
    results = await asyncio.gather(*(j.result(timeout=60, poll_delay=0.05) for j in jobs))
    runs = await pool.fetch("SELECT key, try FROM fault_runs")
    assert sorted(r["key"] for r in runs) == sorted(keys)  # every job ran, once
    charged = sorted(r["key"] for r in runs if r["try"] != 1)
    assert charged == [], f"{len(charged)} jobs charged a try they never ran"
    assert [r["job_try"] for r in results] == [1] * len(keys)
    effects = await pool.fetch("SELECT key, count(*)::int AS n FROM fault_effects GROUP BY key")
    assert {r["key"]: r["n"] for r in effects} == dict.fromkeys(keys, 1)
    assert await counters.dead_letters() == []


async def test_f17a_ten_lost_claim_replies_strand_no_job_and_charge_no_try(
    config: Config,
    spawn: Spawn,
    arq_redis: ArqRedis,
    counters: Counters,
    pool: asyncpg.Pool[asyncpg.Record],
    redis_proxy: Proxy,
) -> None:
    await arq_redis.script_load(CLAIM_SCRIPT)  # no NOSCRIPT round trip to lose instead
    worker = await spawn(REDIS_URL=url_via(config.redis_url, redis_proxy.port))
    keys, jobs = await burst(arq_redis, "f17a", 300)
    for lost in range(1, 11):
        done = await effects_total(pool)
        redis_proxy.drop_replies(CLAIM_SHA)

        async def reset(lost: int = lost) -> bool:
            return redis_proxy.dropped >= lost

        async def progressed(done: int = done) -> bool:
            return await effects_total(pool) >= min(done + 5, len(keys))

        await wait_until(reset, timeout=20, what=f"lost claim reply {lost}")
        await wait_until(progressed, timeout=20, what="jobs to run between resets")
    await assert_each_ran_once_on_try_one(keys, jobs, pool, counters)
    assert redis_proxy.dropped == 10
    assert worker.alive()


async def test_f17b_a_claim_round_started_again_after_the_retries_delivers_its_claims(
    config: Config,
    spawn: Spawn,
    arq_redis: ArqRedis,
    counters: Counters,
    pool: asyncpg.Pool[asyncpg.Record],
    redis_proxy: Proxy,
) -> None:
    """REDIS_RETRY_WINDOW=0: redis-py sends a command four times (three retries); four lost
    replies in a row end the claim loop's round, and the supervisor starts the loop again a second
    later. A 10 s lease keeps the round's record (and its claims' leases) past that. The jobs are
    queued before the worker starts, so that its first round claims some."""
    await arq_redis.script_load(CLAIM_SCRIPT)
    keys, jobs = await burst(arq_redis, "f17b", 40)
    redis_proxy.drop_replies(CLAIM_SHA, 4)
    worker = await spawn(
        REDIS_URL=url_via(config.redis_url, redis_proxy.port),
        REDIS_RETRY_WINDOW="0",
        JOB_LEASE="10",
    )

    async def lost_four() -> bool:
        return redis_proxy.dropped >= 4

    await wait_until(lost_four, timeout=20, what="four lost claim replies")
    await assert_each_ran_once_on_try_one(keys, jobs, pool, counters)
    assert "job claim loop:" in worker.log()  # the round outlived the client's retries
    assert worker.alive()
