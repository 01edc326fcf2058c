"""Transactional enqueue: enqueue_job() and enqueue_in_transaction() write the outbox in the
caller's transaction; the relay moves committed rows to Redis once, dead-letters rows that are no
valid job and goes on, and counts ids Redis already holds as relayed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg
import pytest
from arq.connections import ArqRedis

from jobs.errors import InvalidJobArguments
from jobs.registry import JOBS_BY_NAME
from tests.conftest import RunWorker
from tests.faults.conftest import wait_until
from tests.integration.test_least_privilege import as_role
from worker.client import JobClient
from worker.config import Config
from worker.db import outbox
from worker.db.outbox import enqueue_in_transaction
from worker.db.pool import grant_worker_role, init_connection
from worker.errors import DuplicateJob, UnknownJob
from worker.queue.enqueue import enqueue_payload
from worker.queue.keys import JOB_PREFIX
from worker.runtime.metrics import WorkerMetrics
from worker.runtime.relay import OUTBOX_INVALID, OutboxRelay

pytestmark = pytest.mark.integration

if TYPE_CHECKING:
    Pool = asyncpg.Pool[asyncpg.Record]


@pytest.fixture
async def relay(config: Config, pool: Pool, arq_redis: ArqRedis) -> OutboxRelay:
    return OutboxRelay(config, pool, arq_redis, JOBS_BY_NAME, WorkerMetrics())


async def unrelayed(pool: Pool, queue: str) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM job_outbox WHERE queue = $1 AND relayed_at IS NULL", queue
    )
    return count


async def test_a_rolled_back_transaction_enqueues_nothing(
    config: Config, pool: Pool, relay: OutboxRelay, arq_redis: ArqRedis
) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError, match="the caller's own failure"):
            async with conn.transaction():
                await enqueue_in_transaction(conn, "count_users", queue=config.queue_name)
                await conn.fetchval(
                    "SELECT enqueue_job('get_user', '{\"user_id\": 1}', 'sql-rolled-back', NULL, $1)",
                    config.queue_name,
                )
                raise RuntimeError("the caller's own failure")
    assert (
        await pool.fetchval("SELECT count(*) FROM job_outbox WHERE queue = $1", config.queue_name)
        == 0
    )
    assert await relay.relay_batch() == 0
    assert await arq_redis.zcard(config.queue_name) == 0


async def test_a_committed_transaction_runs_its_job_once(
    config: Config,
    pool: Pool,
    relay: OutboxRelay,
    arq_redis: ArqRedis,
    run_worker: RunWorker,
    users: list[asyncpg.Record],
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        # Lenient as the typed client: "1" is read as 1, and stored as the JSON integer 1.
        job_id = await enqueue_in_transaction(
            conn, "get_user", queue=config.queue_name, user_id=str(users[0]["id"])
        )
    row = await pool.fetchrow("SELECT args::text, relayed_at FROM job_outbox WHERE id = $1", job_id)
    assert row is not None and json.loads(row["args"]) == {"user_id": users[0]["id"]}
    assert row["relayed_at"] is None
    assert await relay.relay_batch() == 1
    assert await relay.relay_batch() == 0  # relayed once
    assert await unrelayed(pool, config.queue_name) == 0
    worker = await run_worker()
    assert worker.jobs_complete == 1
    user = await JobClient(arq_redis, config.queue_name).handle(job_id).result(timeout=5)
    assert user["id"] == users[0]["id"]
    assert relay.metrics.outbox_relayed._value.get() == 1
    assert relay.metrics.outbox_relay_lag.counts != [0] * len(relay.metrics.outbox_relay_lag.counts)


async def test_the_sql_function_returns_the_id_and_notifies_at_commit_only(
    config: Config, pool: Pool, database_url: str
) -> None:
    listener = await asyncpg.connect(database_url)
    heard: list[str] = []
    await listener.add_listener(outbox.CHANNEL, lambda *a: heard.append(a[3]))
    try:
        async with pool.acquire() as conn:
            async with conn.transaction():
                given = await conn.fetchval(
                    "SELECT enqueue_job('count_users', '{}', 'sql-id-1', NULL, $1)",
                    config.queue_name,
                )
                made = await conn.fetchval(
                    "SELECT enqueue_job(name => 'count_users', queue => $1)", config.queue_name
                )
                await listener.execute("SELECT 1")  # a round trip: nothing was delivered yet
                assert heard == []
            assert given == "sql-id-1" and len(made) == 32
            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.fetchval(
                    "SELECT enqueue_job('count_users', '{}', 'sql-id-1', NULL, $1)",
                    config.queue_name,
                )
            for bad_args, message in (("[]", "JSON object"), ("null", "JSON object")):
                with pytest.raises(asyncpg.InvalidParameterValueError, match=message):
                    await conn.fetchval("SELECT enqueue_job('count_users', $1::jsonb)", bad_args)
            with pytest.raises(asyncpg.InvalidParameterValueError, match="empty"):
                await conn.fetchval("SELECT enqueue_job('')")

        async def notified() -> bool:
            await listener.execute("SELECT 1")
            return bool(heard)  # one: PostgreSQL folds a transaction's equal notifications

        await wait_until(notified, 5, "the notifications")
        assert heard == [config.queue_name]
    finally:
        await listener.close()


async def test_the_helper_refuses_bad_input_before_writing(config: Config, pool: Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        with pytest.raises(UnknownJob, match="no_such_job"):
            await enqueue_in_transaction(conn, "no_such_job", queue=config.queue_name)
        with pytest.raises(InvalidJobArguments, match="user_id"):
            await enqueue_in_transaction(conn, "get_user", queue=config.queue_name, user_id="x")
        with pytest.raises(ValueError, match="timezone-aware"):
            await enqueue_in_transaction(
                conn, "count_users", queue=config.queue_name, run_at=datetime(2030, 1, 1)
            )
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM job_outbox WHERE queue = $1", config.queue_name
            )
            == 0
        )
        await enqueue_in_transaction(conn, "count_users", queue=config.queue_name, job_id="dup-1")
        with pytest.raises(DuplicateJob, match="dup-1"):
            await enqueue_in_transaction(
                conn, "count_users", queue=config.queue_name, job_id="dup-1"
            )


async def test_invalid_rows_become_dead_letters_and_the_relay_goes_on(
    config: Config, pool: Pool, relay: OutboxRelay, arq_redis: ArqRedis
) -> None:
    queue = config.queue_name
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "SELECT enqueue_job('no_such_job', '{}', $1 || '-bad-name', NULL, $1)", queue
        )
        await conn.execute(
            "SELECT enqueue_job('get_user', '{\"user_id\": \"7\"}', $1 || '-bad-args', NULL, $1)",
            queue,
        )
        await conn.execute(
            "SELECT enqueue_job('get_user', '{\"user_id\": 7}', $1 || '-good-one', NULL, $1)", queue
        )
    assert await relay.relay_batch() == 3
    assert await unrelayed(pool, queue) == 0
    letters = {
        r["job_id"]: r
        for r in await pool.fetch(
            "SELECT job_id, reason, error_type, error_message, attempts FROM dead_letters"
            " WHERE queue = $1",
            queue,
        )
    }
    assert set(letters) == {f"{queue}-bad-name", f"{queue}-bad-args"}
    assert {r["reason"] for r in letters.values()} == {OUTBOX_INVALID}
    assert letters[f"{queue}-bad-name"]["error_type"] == "UnknownJob"
    assert "no_such_job" in letters[f"{queue}-bad-name"]["error_message"]
    assert letters[f"{queue}-bad-args"]["error_type"] == "InvalidJobArguments"
    assert "user_id" in letters[f"{queue}-bad-args"]["error_message"]
    rows = await pool.fetch("SELECT id, error FROM job_outbox WHERE queue = $1", queue)
    errors: dict[str, str | None] = {r["id"]: r["error"] for r in rows}
    assert errors[f"{queue}-good-one"] is None
    assert str(errors[f"{queue}-bad-name"]).startswith("UnknownJob: Unknown job 'no_such_job'")
    assert str(errors[f"{queue}-bad-args"]).startswith("InvalidJobArguments: Invalid arguments")
    assert await arq_redis.zrange(queue, 0, -1) == [f"{queue}-good-one".encode()]
    assert relay.metrics.dead_lettered.labels("get_user", OUTBOX_INVALID)._value.get() == 1


async def test_an_id_already_in_redis_counts_as_relayed_and_is_not_run_twice(
    config: Config, pool: Pool, relay: OutboxRelay, arq_redis: ArqRedis
) -> None:
    """A relay that crashed after its push and before its commit: the next one pushes again."""
    queue = config.queue_name
    job = {"f": "count_users", "a": [], "k": {}}
    assert await enqueue_payload(arq_redis, queue, f"{queue}-pushed", job)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "SELECT enqueue_job('count_users', '{}', $1 || '-pushed', NULL, $1)", queue
        )
        await conn.execute(
            "SELECT enqueue_job('count_users', '{}', $1 || '-fresh', NULL, $1)", queue
        )
    assert await relay.relay_batch() == 2
    assert await unrelayed(pool, queue) == 0
    assert sorted(await arq_redis.zrange(queue, 0, -1)) == [
        f"{queue}-fresh".encode(),
        f"{queue}-pushed".encode(),
    ]


async def test_run_at_schedules_the_job_and_old_relayed_rows_are_pruned(
    config: Config, pool: Pool, relay: OutboxRelay, arq_redis: ArqRedis
) -> None:
    queue = config.queue_name
    later = datetime.now(UTC) + timedelta(hours=1)
    async with pool.acquire() as conn, conn.transaction():
        job_id = await enqueue_in_transaction(conn, "count_users", queue=queue, run_at=later)
    assert await relay.relay_batch() == 1
    score = await arq_redis.zscore(queue, job_id)
    assert score is not None and abs(score - later.timestamp() * 1000) < 5_000
    assert await arq_redis.pttl(JOB_PREFIX + job_id) > 3_600_000  # kept until it is due, and more
    await pool.execute(
        "UPDATE job_outbox SET relayed_at = now() - interval '2 hours' WHERE id = $1", job_id
    )
    async with pool.acquire() as conn:
        assert await outbox.prune(conn, 3600) >= 1
        depth = await outbox.outbox_depth(conn, queue)
    assert await pool.fetchval("SELECT count(*) FROM job_outbox WHERE id = $1", job_id) == 0
    assert depth == outbox.OutboxDepth(0, 0.0)


@pytest.fixture
async def role_pool(pool: Pool, config: Config) -> AsyncIterator[Pool]:
    """A pool of a least-privilege worker role (the setup command's grants)."""
    role = "worker_outbox_role"
    async with pool.acquire() as conn:
        await grant_worker_role(conn, role, None)
    async with asyncpg.create_pool(
        as_role(config.database_url, role), min_size=1, max_size=2, init=init_connection
    ) as limited:
        yield limited
    async with pool.acquire() as conn:
        await conn.execute(f'DROP OWNED BY "{role}"')
        await conn.execute(f'DROP ROLE "{role}"')


async def test_the_worker_role_relays_prunes_and_dead_letters(
    config: Config, role_pool: Pool, arq_redis: ArqRedis
) -> None:
    queue = config.queue_name
    relay = OutboxRelay(config, role_pool, arq_redis, JOBS_BY_NAME, WorkerMetrics())
    async with role_pool.acquire() as conn, conn.transaction():
        await enqueue_in_transaction(conn, "count_users", queue=queue)  # a job's follow-up
        await conn.execute("SELECT enqueue_job('nope', '{}', NULL, NULL, $1)", queue)
    assert await relay.relay_batch() == 2
    async with role_pool.acquire() as conn:
        await outbox.prune(conn, 0)
        assert (await outbox.outbox_depth(conn, queue)).unrelayed == 0


async def test_status_shows_the_outbox_depth_and_oldest_age(
    config: Config, pool: Pool, arq_redis: ArqRedis
) -> None:
    from worker.ops.status_cli import gather_status, render_status

    async with pool.acquire() as conn, conn.transaction():
        await enqueue_in_transaction(conn, "count_users", queue=config.queue_name)
    await pool.execute(
        "UPDATE job_outbox SET created_at = created_at - interval '90 seconds' WHERE queue = $1",
        config.queue_name,
    )
    status = await gather_status(config, arq_redis)
    assert status["outbox"]["unrelayed"] == 1
    assert 90 <= status["outbox"]["oldest_unrelayed_age_s"] < 200
    assert "outbox: 1 not yet relayed (oldest 9" in render_status(status)
