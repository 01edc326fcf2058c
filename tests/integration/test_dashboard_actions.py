"""The dashboard's actions (worker/ops/dashboard_actions.py) on the app itself, real Redis and
PostgreSQL: each has its effect through the CLI's own operation, is idempotent, and is written to
the audit log with its outcome."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from arq.connections import ArqRedis

from tests.acceptance.conftest import free_port
from tests.conftest import RunWorker
from tests.integration.dashboard_asgi import USERS, AppFactory, app_factory, basic
from worker.config import Config
from worker.queue import flow_admin
from worker.queue.keys import ABORT_SET, JOB_PREFIX

pytestmark = pytest.mark.integration

OTTO = basic("otto")


@pytest.fixture
def open_app(config: Config) -> AppFactory:
    return app_factory(config)


async def last_audit(pool: asyncpg.Pool[asyncpg.Record], action: str) -> asyncpg.Record:
    row = await pool.fetchrow(
        "SELECT actor, role, target, outcome, detail FROM dashboard_audit WHERE action = $1"
        " ORDER BY id DESC LIMIT 1",
        action,
    )
    assert row is not None
    return row


async def test_abort_a_queued_job_twice_and_an_unknown_one(
    open_app: AppFactory,
    arq_redis: ArqRedis,
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    job = await arq_redis.enqueue_job("count_users", _defer_by=3600)
    assert job is not None
    async with open_app(auth="basic", users=USERS) as app:
        # The first moves it to the queue's front (a worker records it aborted at once).
        for was in ("deferred", "queued"):
            answer = await app.act("abort", {"job_id": job.job_id}, OTTO)
            assert answer.status == 200, answer.body
            assert answer.json()["result"] == {"abort_requested": True, "was": was}
        assert await arq_redis.zscore(ABORT_SET, job.job_id) is not None
        row = await last_audit(pool, "abort")
        assert (row["actor"], row["role"], row["target"], row["outcome"]) == (
            "otto",
            "operator",
            job.job_id,
            "ok",
        )
        missing = await app.act("abort", {"job_id": "no-such-job"}, OTTO)
        assert missing.status == 400 and "no job 'no-such-job'" in missing.json()["error"]
        row = await last_audit(pool, "abort")
        assert row["outcome"] == "failed" and "no-such-job" in row["detail"]
        bad = await app.act("abort", {"job_id": 12}, OTTO)
        assert bad.status == 400 and "job_id is required" in bad.json()["error"]


async def test_retry_replays_the_dead_letter_once_then_purge_it(
    open_app: AppFactory,
    arq_redis: ArqRedis,
    run_worker: RunWorker,
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    await pool.execute("DELETE FROM dead_letters")
    job_id = f"dash-retry-{uuid.uuid4().hex[:8]}"
    assert await arq_redis.enqueue_job("get_user", user_id="twelve", _job_id=job_id)
    await run_worker()  # a permanent error: a dead letter
    letter_id = await pool.fetchval("SELECT id FROM dead_letters WHERE job_id = $1", job_id)
    assert letter_id is not None
    async with open_app(auth="basic", users=USERS) as app:
        first = await app.act("retry", {"job_id": job_id}, OTTO)
        assert first.status == 200, first.body
        new_id = first.json()["result"]["job_id"]
        assert first.json()["result"]["already"] is False
        assert await arq_redis.exists(JOB_PREFIX + new_id)
        again = await app.act("retry", {"job_id": job_id}, OTTO)
        assert again.json()["result"] == {
            "dead_letter": letter_id,
            "job_id": new_id,
            "already": True,
        }
        replay = await app.act("replay", {"id": letter_id}, OTTO)  # the same letter, by its id
        assert replay.json()["result"]["already"] is True
        none = await app.act("retry", {"job_id": "never-failed"}, OTTO)
        assert none.status == 400 and "has no dead letter" in none.json()["error"]
        purged = [(await app.act("purge", {"id": letter_id}, OTTO)).json() for _ in range(2)]
        assert [p["result"] for p in purged] == [{"purged": 1}, {"purged": 0}]
        assert (await app.act("purge", {}, OTTO)).status == 400  # no filter: nothing purged
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 0
    row = await last_audit(pool, "retry")
    assert row["outcome"] == "failed" and row["target"] == "never-failed"


async def test_replay_and_purge_by_filter(
    open_app: AppFactory,
    arq_redis: ArqRedis,
    run_worker: RunWorker,
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    await pool.execute("DELETE FROM dead_letters")
    for _ in (1, 2):
        assert await arq_redis.enqueue_job("get_user", user_id="bad")
    await run_worker()
    async with open_app(auth="basic", users=USERS) as app:
        later = {"before": "2999-01-01T00:00:00+00:00"}
        first = await app.act("replay", later, OTTO)
        assert first.status == 200, first.body
        assert first.json()["result"]["replayed"] == 2
        assert (await app.act("replay", later, OTTO)).json()["result"]["replayed"] == 0
        bad = await app.act("replay", {"before": "yesterday"}, OTTO)
        assert bad.status == 400 and "ISO 8601" in bad.json()["error"]
        earlier = await app.act("purge", {"before": "2000-01-01T00:00:00+00:00"}, OTTO)
        assert earlier.json()["result"] == {"purged": 0}
        everything = await app.act("purge", {"all": True}, OTTO)
        assert everything.json()["result"] == {"purged": 2}


async def test_pause_resume_and_limits(
    open_app: AppFactory,
    arq_redis: ArqRedis,
    config: Config,
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    queue = config.queue_name
    async with open_app(auth="basic", users=USERS) as app:
        assert (await app.act("pause", {"all": True}, OTTO)).status == 200
        assert (await app.act("pause", {"names": ["count_users"]}, OTTO)).status == 200
        assert await flow_admin.paused_names(arq_redis, queue) == ["*", "count_users"]
        unknown = await app.act("pause", {"names": ["no_such_job"]}, OTTO)
        assert unknown.status == 400 and "unknown job name" in unknown.json()["error"]
        assert (await app.act("resume", {"all": True}, OTTO)).json()["result"] == {
            "paused": ["count_users"]
        }
        answer = await app.act("limit-set", {"name": "heavy-db", "max": 2}, OTTO)
        assert answer.status == 200, answer.body
        assert await flow_admin.overrides(arq_redis, queue) == {"heavy-db": {"max": 2}}
        wrong = await app.act("limit-set", {"name": "heavy-db", "rate": 5, "per": 1}, OTTO)
        assert wrong.status == 400 and "concurrency limit" in wrong.json()["error"]
        for _ in range(2):
            assert (await app.act("limit-clear", {"name": "heavy-db"}, OTTO)).status == 200
        assert await flow_admin.overrides(arq_redis, queue) == {}
        assert (await app.act("nothing", {}, OTTO)).status == 404
        audit = (await app.request("GET", "/api/audit", basic("vera"))).json()["entries"]
    assert [e["action"] for e in audit[:3]] == ["limit-clear", "limit-clear", "limit-set"]
    assert audit[2]["outcome"] == "failed" and audit[2]["parameters"]["rate"] == 5
    assert (await last_audit(pool, "resume"))["outcome"] == "ok"


async def test_no_audit_row_no_action(
    config: Config, arq_redis: ArqRedis, pool: asyncpg.Pool[asyncpg.Record]
) -> None:
    dead = config.model_copy(
        update={"database_url": f"postgresql://postgres@127.0.0.1:{free_port()}/none"}
    )
    async with app_factory(dead)(auth="basic", users=USERS) as app:
        answer = await app.act("pause", {"all": True}, OTTO)
        assert answer.status == 503
        assert answer.json()["error"].startswith("audit log unavailable, nothing done")
        audit = (await app.request("GET", "/api/audit", OTTO)).json()
        assert audit["error"].startswith("PostgreSQL")
    assert await flow_admin.paused_names(arq_redis, config.queue_name) == []
