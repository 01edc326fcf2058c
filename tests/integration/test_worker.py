"""The real ``worker.Settings`` in burst mode: jobs enqueued through the client, results checked."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from arq.connections import ArqRedis

from jobs.errors import InvalidJobArguments
from jobs.models import User
from pgpool_client import JobStatus
from tests.conftest import RunWorker
from worker.client import JobClient
from worker.config import Config
from worker.errors import DuplicateJob, JobFailed, ResultNotFound, ResultTimeout, UnknownJob

pytestmark = pytest.mark.integration


async def test_jobs_run_end_to_end(
    config: Config, run_worker: RunWorker, users: list[asyncpg.Record]
) -> None:
    async with JobClient.connect(config) as client:
        get = await client.get_user(users[0]["id"])
        missing = await client.get_user(99_999)
        count = await client.count_users(active=True)
        page = await client.list_users(limit=5)
        search = await client.search_users("user2", limit=50)
        worker = await run_worker()
        assert worker.jobs_complete == 5 and worker.jobs_failed == 0

        user = await get.result(timeout=1)
        assert isinstance(user, User) and user.model_dump() == dict(users[0])
        assert await missing.result(timeout=1) is None
        assert (await count.result(timeout=1)).count == sum(r["is_active"] for r in users)
        assert [u.id for u in (await page.result(timeout=1)).users] == [1, 2, 3, 4, 5]
        emails = sorted(u.email for u in (await search.result(timeout=1)).users)
        assert emails == sorted(r["email"] for r in users if r["email"].lower().startswith("user2"))


async def test_results_are_json_with_iso_timestamps(
    config: Config, run_worker: RunWorker, users: list[asyncpg.Record]
) -> None:
    async with JobClient.connect(config) as client:
        handle = await client.get_user(users[1]["id"])
        await run_worker()
        raw = (await handle.raw_result(timeout=1))["result"]
    assert raw["created_at"] == users[1]["created_at"].isoformat().replace("+00:00", "Z")
    assert datetime.fromisoformat(raw["created_at"]) == users[1]["created_at"]


async def test_write_job_returns_affected_count(
    config: Config, run_worker: RunWorker, users: list[asyncpg.Record], pool: asyncpg.Pool
) -> None:
    cutoff = datetime.now(UTC) - timedelta(days=100)
    expected = await pool.fetchval(
        "SELECT count(*) FROM users WHERE is_active AND coalesce(last_seen_at, created_at) < $1",
        cutoff,
    )
    async with JobClient.connect(config) as client:
        handle = await client.deactivate_inactive_users(cutoff)
        await run_worker()
        result = await handle.result(timeout=1)
    assert result.deactivated == expected > 0


async def test_invalid_arguments_fail_the_job_not_the_worker(
    config: Config, run_worker: RunWorker, arq_redis: ArqRedis, users: list[asyncpg.Record]
) -> None:
    bad = [
        await arq_redis.enqueue_job("get_user", user_id="not a number"),
        await arq_redis.enqueue_job("get_user", user_id=-5),
        await arq_redis.enqueue_job("get_user", 1, 2),
        await arq_redis.enqueue_job("list_users", limit=5000, colour="red"),
        await arq_redis.enqueue_job("get_user"),
    ]
    good = await arq_redis.enqueue_job("get_user", user_id=1)
    worker = await run_worker()
    assert worker.jobs_failed == len(bad) and worker.jobs_complete == 1
    async with JobClient.connect(config) as client:
        for job in bad:
            assert job is not None
            with pytest.raises(JobFailed) as info:
                await client.handle(job.job_id).raw_result(timeout=1)
            assert info.value.context["error_type"] == "InvalidJobArguments"
            assert "Fix the arguments" in str(info.value)
        assert good is not None
        assert (await client.handle(good.job_id).raw_result(timeout=1))["result"]["id"] == 1


async def test_unknown_job_name_fails_clearly(
    config: Config, run_worker: RunWorker, arq_redis: ArqRedis
) -> None:
    job = await arq_redis.enqueue_job("drop_all_tables", really=True)
    assert job is not None
    worker = await run_worker()
    assert worker.jobs_failed == 1
    async with JobClient.connect(config) as client:
        with pytest.raises(JobFailed, match="No worker knows job 'drop_all_tables'"):
            await client.handle(job.job_id).raw_result(timeout=1)


async def test_client_validates_before_reaching_redis(config: Config, arq_redis: ArqRedis) -> None:
    async with JobClient.connect(config) as client:
        with pytest.raises(InvalidJobArguments, match="user_id"):
            await client.get_user(0)
        with pytest.raises(UnknownJob, match="Known jobs: count_users"):
            await client.enqueue("no_such_job")
        with pytest.raises(ValueError, match="timezone-aware"):
            await client.count_users(defer_until=datetime(2030, 1, 1))
    assert await arq_redis.zcard(config.queue_name) == 0


async def test_job_id_refuses_duplicates(
    config: Config, run_worker: RunWorker, users: list[asyncpg.Record]
) -> None:
    job_id = f"user-1-lookup-{config.queue_name}"
    async with JobClient.connect(config) as client:
        first = await client.get_user(1, job_id=job_id)
        with pytest.raises(DuplicateJob, match=job_id):
            await client.get_user(2, job_id=job_id)
        await run_worker()
        found = await first.result(timeout=1)
        assert found is not None and found.id == 1
        with pytest.raises(DuplicateJob):  # a kept result still blocks the id
            await client.get_user(1, job_id=job_id)


async def test_deferred_jobs_wait_their_turn(
    config: Config, run_worker: RunWorker, users: list[asyncpg.Record]
) -> None:
    async with JobClient.connect(config) as client:
        later = await client.count_users(defer_by=timedelta(hours=1))
        until = await client.count_users(defer_until=datetime.now(UTC) + timedelta(hours=1))
        now = await client.count_users()
        assert await later.status() == JobStatus.deferred
        assert await until.status() == JobStatus.deferred
        await run_worker(max_burst_jobs=1)
        assert (await now.result(timeout=1)).count == len(users)
        assert await later.status() == JobStatus.deferred
        with pytest.raises(ResultTimeout):
            await later.result(timeout=0.05)


async def test_unknown_job_id_is_not_found(config: Config) -> None:
    async with JobClient.connect(config) as client:
        with pytest.raises(ResultNotFound, match="nope"):
            await client.handle("nope").raw_result(timeout=1)


PEAKS: list[int] = []


async def peak_backends(pool: asyncpg.Pool) -> None:
    """Sample how many connections the worker holds open, until cancelled."""
    while True:
        PEAKS.append(
            await pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = 'pgpool-worker'"
            )
        )
        await asyncio.sleep(0.005)


async def test_shared_connection_fails_where_the_pool_does_not(
    config: Config, run_worker: RunWorker, users: list[asyncpg.Record], pool: asyncpg.Pool
) -> None:
    """The seed's bug, reproduced, beside the worker doing the same work safely."""
    conn = await asyncpg.connect(config.database_url)
    try:
        outcomes = await asyncio.gather(
            *(conn.fetchrow("SELECT pg_sleep(0.05), $1::int", i) for i in range(5)),
            return_exceptions=True,
        )
    finally:
        await conn.close()
    errors = [o for o in outcomes if isinstance(o, asyncpg.InterfaceError)]
    assert errors and all("another operation is in progress" in str(e) for e in errors)

    ids = [random.choice(users)["id"] for _ in range(2000)]
    crowded = config.model_copy(update={"worker_max_jobs": 100, "pg_pool_max_size": 5})
    async with JobClient.connect(crowded) as client:
        handles = [await client.get_user(i) for i in ids]
        sampler = asyncio.create_task(peak_backends(pool))
        worker = await run_worker(config=crowded, max_jobs=100)
        sampler.cancel()
        assert 1 <= max(PEAKS) <= 5
        assert (worker.jobs_complete, worker.jobs_failed, worker.jobs_retried) == (2000, 0, 0)
        by_id = {r["id"]: dict(r) for r in users}
        for user_id, handle in zip(ids, handles, strict=True):
            user = await handle.result(timeout=1)
            assert user is not None and user.model_dump() == by_id[user_id]
    backends = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'pgpool-worker'"
    )
    assert backends == 0  # the worker's pool closed at shutdown


async def test_enqueue_many_validates_first_refuses_duplicates_and_runs(
    config: Config, run_worker: RunWorker, users: list[asyncpg.Record], arq_redis: ArqRedis
) -> None:
    async with JobClient.connect(config) as client:
        with pytest.raises(InvalidJobArguments, match="user_id"):
            await client.enqueue_many("get_user", [{"user_id": 1}, {"user_id": "x"}])
        assert await arq_redis.zcard(config.queue_name) == 0  # nothing half-enqueued
        ids = [f"bulk-{config.queue_name}-{i}" for i in range(2500)]
        args = [{"user_id": users[i % len(users)]["id"]} for i in range(2500)]
        handles = await client.enqueue_many("get_user", args, job_ids=ids, chunk=1000)
        assert all(h is not None for h in handles)
        again = await client.enqueue_many(
            "get_user", args[:3], job_ids=[*ids[:2], f"fresh-{config.queue_name}"]
        )
        assert again[:2] == [None, None] and again[2] is not None
        worker = await run_worker()
        assert worker.jobs_complete == 2501 and worker.jobs_failed == 0
        sample = handles[1234]
        assert sample is not None
        user = await sample.result(timeout=1)
        assert user is not None and user.id == users[1234 % len(users)]["id"]


async def test_client_passes_the_business_key_and_refuses_unknown_options(
    config: Config, run_worker: RunWorker, users: list[asyncpg.Record], pool: asyncpg.Pool
) -> None:
    key = f"nightly-{config.queue_name}"
    cutoff = datetime.now(UTC) - timedelta(days=100)
    async with JobClient.connect(config) as client:
        first = await client.deactivate_inactive_users(cutoff, idempotency_key=key)
        second = await client.deactivate_inactive_users(cutoff, idempotency_key=key)
        with pytest.raises(ValueError, match="unknown enqueue option"):
            await client.count_users(colour="red")  # type: ignore[call-arg]
        await run_worker()
        assert (await first.result(timeout=1)) == (await second.result(timeout=1))
    assert (
        await pool.fetchval("SELECT count(*) FROM job_effects WHERE idempotency_key=$1", key) == 1
    )
