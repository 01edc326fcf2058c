"""The outbox relay carries a job's declared flow control: a row of a job that declares limits is
enqueued with the payload's ``"flow"`` rendered from its arguments, as the Python client renders
it, so the claim script holds it to its limits like any other producer's job."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg
import pytest
from arq.connections import ArqRedis

from jobs.registry import JOBS_BY_NAME
from pgpool_client.client import payload_of
from pgpool_client.jobs import CONTRACTS
from worker.config import Config
from worker.db.outbox import enqueue_in_transaction
from worker.queue.keys import BLOCKED_SCORE, JOB_PREFIX, blocked_key, limits_key
from worker.runtime.claimed import Claim
from worker.runtime.claims import Claimer
from worker.runtime.metrics import WorkerMetrics
from worker.runtime.relay import OutboxRelay

pytestmark = pytest.mark.integration

if TYPE_CHECKING:
    Pool = asyncpg.Pool[asyncpg.Record]


async def payload(arq_redis: ArqRedis, job_id: str) -> dict[str, object]:
    data = await arq_redis.get(JOB_PREFIX + job_id)
    assert data is not None, f"job {job_id} is not in Redis"
    job: dict[str, object] = json.loads(data)
    return job


async def test_relayed_rows_carry_their_jobs_flow(
    config: Config, pool: Pool, arq_redis: ArqRedis
) -> None:
    relay = OutboxRelay(config, pool, arq_redis, JOBS_BY_NAME, WorkerMetrics())
    queue = config.queue_name
    later = datetime.now(UTC) + timedelta(hours=1)
    async with pool.acquire() as conn, conn.transaction():
        counted = await conn.fetchval(
            "SELECT enqueue_job('count_users', '{\"active\": true}', NULL, NULL, $1)", queue
        )
        searched = await enqueue_in_transaction(
            conn, "search_users", queue=queue, run_at=later, prefix="ab"
        )
        plain = await enqueue_in_transaction(conn, "get_user", queue=queue, user_id=1)
    assert await relay.relay_batch() == 3
    cases = (
        (counted, "count_users", {"active": True}),
        (searched, "search_users", {"prefix": "ab"}),
    )
    for job_id, name, args in cases:
        contract = CONTRACTS[name]
        expected = payload_of(contract, contract.parse((), args), None)["flow"]
        assert expected == {"concurrency": [{"name": "heavy-db", "key": "", "max": 20}]}
        assert (await payload(arq_redis, job_id))["flow"] == expected  # due and deferred rows
    assert "flow" not in await payload(arq_redis, plain)


async def test_a_relayed_job_is_held_to_its_limit(
    config: Config, pool: Pool, arq_redis: ArqRedis
) -> None:
    queue = config.queue_name
    await arq_redis.hset(limits_key(queue), "heavy-db", json.dumps({"max": 0}))  # type: ignore[misc]
    relay = OutboxRelay(config, pool, arq_redis, JOBS_BY_NAME, WorkerMetrics())
    async with pool.acquire() as conn, conn.transaction():
        counted = await enqueue_in_transaction(conn, "count_users", queue=queue)
        plain = await enqueue_in_transaction(conn, "get_user", queue=queue, user_id=1)
    assert await relay.relay_batch() == 2
    claimer = Claimer(arq_redis, queue, "60000")
    claimed, _, _ = await claimer.claim(int(time.time() * 1000), 10)
    assert [Claim.from_entry(entry).job_id for entry in claimed] == [plain]
    assert await arq_redis.zscore(queue, counted) == BLOCKED_SCORE  # waits on its gate
    blocked = await arq_redis.zrange(blocked_key(queue, "c:heavy-db:"), 0, -1)
    assert blocked == [counted.encode()]
