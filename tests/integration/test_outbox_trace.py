"""The producer's trace context through the outbox (migration 0005_outbox_trace.sql): enqueue_job()'s
``traceparent`` and ``tracestate`` arguments, else the transaction's ``pgpool.traceparent`` and
``pgpool.tracestate`` settings, are copied by the relay into the payload, and a real tracing worker's
run of the job continues that trace; a malformed one is refused by enqueue_job with a message naming
it; rows without one run as before. The migration keeps who may execute enqueue_job."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg
import pytest
from arq.connections import ArqRedis
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from jobs.registry import JOBS_BY_NAME
from tests.conftest import ADMIN_URL, RunWorker
from tests.tracing_spans import continues, run_span
from worker.config import Config
from worker.db.outbox import enqueue_in_transaction
from worker.db.pool import MIGRATIONS_DIR, migrate, with_database
from worker.queue.keys import JOB_PREFIX
from worker.runtime.metrics import WorkerMetrics
from worker.runtime.relay import OutboxRelay
from worker.runtime.tracing import TRACING_KEY, JobTracing

pytestmark = pytest.mark.integration

if TYPE_CHECKING:
    Pool = asyncpg.Pool[asyncpg.Record]

GIVEN = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
SETTING = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
BAD = (
    "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",  # uppercase
    f"00-{'0' * 32}-b7ad6b7169203331-01",  # an all-zero trace id
    f"00-0af7651916cd43dd8448eb211c80319c-{'0' * 16}-01",  # an all-zero parent span id
    "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # not version 00
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
    "not a traceparent",
)
REFUSED = re.escape(
    "enqueue_job: traceparent (or the pgpool.traceparent setting) must be a W3C traceparent: "
    "00-<32 lowercase hex trace id, not all zero>-<16 lowercase hex parent span id, not all zero>-"
    "<2 lowercase hex flags>"
)


async def payload(arq_redis: ArqRedis, job_id: str) -> dict[str, object]:
    data = await arq_redis.get(JOB_PREFIX + job_id)
    assert data is not None, f"job {job_id} is not in Redis"
    job: dict[str, object] = json.loads(data)
    return job


async def test_rows_enqueued_with_a_trace_context_continue_it_in_a_tracing_worker(
    config: Config,
    pool: Pool,
    arq_redis: ArqRedis,
    run_worker: RunWorker,
    users: list[asyncpg.Record],
    exporter: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, spans = exporter
    queue = config.queue_name
    async with pool.acquire() as conn, conn.transaction():
        given = await conn.fetchval(
            "SELECT enqueue_job('get_user', '{\"user_id\": 1}', queue => $1,"
            " traceparent => $2, tracestate => 'congo=t61rcWkgMzE')",
            queue,
            GIVEN,
        )
        # SET LOCAL pgpool.traceparent = '...', with the value as a bind parameter:
        await conn.execute("SELECT set_config('pgpool.traceparent', $1, true)", SETTING)
        await conn.execute("SELECT set_config('pgpool.tracestate', 'rojo=00f067aa0ba902b7', true)")
        from_setting = await conn.fetchval(
            "SELECT enqueue_job('get_user', '{\"user_id\": 2}', NULL, NULL, $1)", queue
        )
        # An explicit traceparent wins over the setting, and its tracestate is its own (none).
        over = await conn.fetchval(
            "SELECT enqueue_job('get_user', '{\"user_id\": 3}', queue => $1, traceparent => $2)",
            queue,
            GIVEN,
        )
        opted_out = await conn.fetchval(  # '': none, the setting notwithstanding
            "SELECT enqueue_job('get_user', '{\"user_id\": 4}', queue => $1, traceparent => '')",
            queue,
        )
    async with pool.acquire() as conn, conn.transaction():
        # The setting ended with that transaction (it reads '' now): no trace context.
        plain = await conn.fetchval(
            "SELECT enqueue_job('count_users', '{}', NULL, NULL, $1)", queue
        )
        with provider.get_tracer("test").start_as_current_span("request") as request:
            helper = await enqueue_in_transaction(conn, "get_user", queue=queue, user_id=5)
        later = await conn.fetchval(
            "SELECT enqueue_job('get_user', '{\"user_id\": 6}', NULL, $1, $2, $3)",
            datetime.now(UTC) + timedelta(hours=1),
            queue,
            GIVEN,
        )
    relay = OutboxRelay(config, pool, arq_redis, JOBS_BY_NAME, WorkerMetrics())
    assert await relay.relay_batch() == 7

    assert (await payload(arq_redis, given))["tracestate"] == "congo=t61rcWkgMzE"
    assert (await payload(arq_redis, later))["traceparent"] == GIVEN  # deferred: the same payload
    for job_id in (plain, opted_out):
        written = await payload(arq_redis, job_id)
        assert "traceparent" not in written and "tracestate" not in written
    await arq_redis.zrem(queue, later)
    await run_worker(ctx={"config": config, TRACING_KEY: JobTracing(provider, queue)})

    finished = list(spans.get_finished_spans())
    continues(run_span(finished, given), GIVEN, "congo=t61rcWkgMzE")
    continues(run_span(finished, from_setting), SETTING, "rojo=00f067aa0ba902b7")
    continues(run_span(finished, over), GIVEN)
    context = request.get_span_context()
    helper_run = run_span(finished, helper)
    assert helper_run.context.trace_id == context.trace_id
    assert helper_run.parent is not None and helper_run.parent.span_id == context.span_id
    for job_id in (plain, opted_out):
        untraced = run_span(finished, job_id)
        assert untraced.parent is None
        assert (untraced.attributes or {}).get("pgpool.job.outcome") == "succeeded"


@pytest.mark.parametrize("traceparent", BAD)
async def test_a_malformed_traceparent_is_refused_naming_it(
    config: Config, pool: Pool, traceparent: str
) -> None:
    queue = config.queue_name
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.InvalidParameterValueError, match=REFUSED):
            await conn.fetchval(
                "SELECT enqueue_job('get_user', queue => $1, traceparent => $2)", queue, traceparent
            )
        with pytest.raises(asyncpg.InvalidParameterValueError, match=REFUSED):
            async with conn.transaction():
                await conn.execute("SELECT set_config('pgpool.traceparent', $1, true)", traceparent)
                await conn.fetchval("SELECT enqueue_job('get_user', queue => $1)", queue)
        with pytest.raises(asyncpg.CheckViolationError, match="job_outbox_trace_check"):
            await conn.execute(
                "INSERT INTO job_outbox (function, queue, traceparent) VALUES ('get_user', $1, $2)",
                queue,
                traceparent,
            )
        assert await conn.fetchval("SELECT count(*) FROM job_outbox WHERE queue = $1", queue) == 0


async def test_a_bad_tracestate_is_refused_naming_it(pool: Pool) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.InvalidParameterValueError, match=r"tracestate .* without a"):
            await conn.fetchval("SELECT enqueue_job('get_user', tracestate => 'k=v')")
        for state in ("k=v\n", "k=" + "v" * 511):
            with pytest.raises(asyncpg.InvalidParameterValueError, match="at most 512 printable"):
                await conn.fetchval(
                    "SELECT enqueue_job('get_user', traceparent => $1, tracestate => $2)",
                    GIVEN,
                    state,
                )


async def test_the_migration_keeps_who_may_execute_enqueue_job() -> None:
    """A database at migration 0004 whose enqueue_job only a producer role may execute: after
    0005, that role calls it as before (old arguments and new), and PUBLIC still may not."""
    name = f"worker_mig_{uuid.uuid4().hex[:10]}"
    role = f"producer_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = with_database(ADMIN_URL, name)
    try:
        conn = await asyncpg.connect(url)
        try:
            for path in sorted(MIGRATIONS_DIR.glob("*.sql"))[:4]:
                await conn.execute(path.read_text())
            await conn.execute("CREATE TABLE schema_migrations (version text PRIMARY KEY)")
            await conn.executemany(
                "INSERT INTO schema_migrations VALUES ($1)",
                [(p.stem,) for p in sorted(MIGRATIONS_DIR.glob("*.sql"))[:4]],
            )
            await conn.execute(f'CREATE ROLE "{role}" LOGIN')
            # enqueue_job's INSERT ... RETURNING id needs SELECT on the id column.
            await conn.execute(f'GRANT INSERT, SELECT (id) ON job_outbox TO "{role}"')
            signature = "enqueue_job(text, jsonb, text, timestamptz, text)"
            await conn.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
            await conn.execute(f'GRANT EXECUTE ON FUNCTION {signature} TO "{role}"')
            assert await migrate(conn) == ["0005_outbox_trace"]
            assert (
                await conn.fetchval("SELECT count(*) FROM pg_proc WHERE proname = 'enqueue_job'")
                == 1
            )
            new = "enqueue_job(text, jsonb, text, timestamptz, text, text, text)"
            assert await conn.fetchval(
                "SELECT has_function_privilege($1, $2, 'EXECUTE')", role, new
            )
            assert not await conn.fetchval(
                "SELECT has_function_privilege('public', $1, 'EXECUTE')", new
            )
        finally:
            await conn.close()
        producer = await asyncpg.connect(url, user=role)
        try:
            old_call = await producer.fetchval("SELECT enqueue_job('get_user', '{}', 'old', NULL)")
            new_call = await producer.fetchval(
                "SELECT enqueue_job('get_user', job_id => 'new', traceparent => $1)", GIVEN
            )
            assert (old_call, new_call) == ("old", "new")
        finally:
            await producer.close()
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()
