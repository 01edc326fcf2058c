"""OpenTelemetry tracing end to end, with the real SDK and its in-memory exporter: a job enqueued by
the slim client inside a span is run by a real burst worker whose spans continue that trace
(producer -> job run -> pool connection -> acquire and query); a malformed ``traceparent`` starts a
new trace and fails nothing; tracing off adds no payload field and makes no span."""

from __future__ import annotations

import uuid

import asyncpg
import orjson
import pytest
from arq.connections import ArqRedis
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from pgpool_client import Client
from tests.conftest import REDIS_URL, RunWorker
from worker.config import Config
from worker.queue.enqueue import enqueue_many
from worker.runtime.tracing import TRACING_KEY, JobTracing

pytestmark = pytest.mark.integration


def one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [span for span in spans if span.name == name]
    assert len(found) == 1, [span.name for span in spans]
    return found[0]


def parent_of(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


async def test_spans_chain_from_enqueue_to_query(
    config: Config,
    run_worker: RunWorker,
    arq_redis: ArqRedis,
    users: list[asyncpg.Record],
    exporter: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, spans = exporter
    async with Client.connect(redis_url=REDIS_URL, queue_name=config.queue_name) as client:
        with provider.get_tracer("test").start_as_current_span("request") as request:
            handle = await client.get_user(3)
        payload = orjson.loads(await arq_redis.get(f"arq:job:{handle.job_id}"))
        context = request.get_span_context()
        assert payload["traceparent"] == (
            f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
        )
        tracing = JobTracing(provider, config.queue_name)
        await run_worker(ctx={"config": config, TRACING_KEY: tracing})
        user = await handle.result(timeout=5)
        assert user is not None and user.id == 3

    finished = list(spans.get_finished_spans())
    assert {span.context.trace_id for span in finished} == {context.trace_id}
    run = one(finished, "run get_user")
    assert parent_of(run) == context.span_id and run.kind is SpanKind.CONSUMER
    assert run.attributes is not None
    assert run.attributes["pgpool.job.name"] == "get_user"
    assert run.attributes["messaging.message.id"] == handle.job_id
    assert run.attributes["pgpool.job.try"] == 1
    assert run.attributes["pgpool.job.outcome"] == "succeeded"
    assert float(str(run.attributes["pgpool.job.queue_wait_s"])) >= 0
    assert parent_of(one(finished, "queue wait")) == context.span_id
    connections = [span for span in finished if span.name == "pool.connection"]
    assert connections and {parent_of(span) for span in connections} == {run.context.span_id}
    ids = {span.context.span_id for span in connections}
    acquires = [span for span in finished if span.name == "pool.acquire"]
    assert len(acquires) == len(connections) and {parent_of(s) for s in acquires} == ids
    queries = [span for span in finished if span.kind is SpanKind.CLIENT]
    assert {parent_of(span) for span in queries} <= ids
    [select] = [
        span
        for span in queries
        if span.attributes and "FROM users" in str(span.attributes["db.query.text"])
    ]
    assert select.name == "SELECT" and select.attributes is not None
    assert select.attributes["db.system.name"] == "postgresql"


async def test_a_failed_try_records_its_exception(
    config: Config,
    run_worker: RunWorker,
    arq_redis: ArqRedis,
    exporter: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """A job whose arguments are refused fails: its run span says so, with the exception."""
    provider, spans = exporter
    job_id = uuid.uuid4().hex
    bad = {"f": "get_user", "a": [], "k": {"user_id": "not a number"}}
    await enqueue_many(arq_redis, config.queue_name, [(job_id, bad)])
    await run_worker(ctx={"config": config, TRACING_KEY: JobTracing(provider, config.queue_name)})
    run = one(list(spans.get_finished_spans()), "run get_user")
    assert run.attributes is not None and run.attributes["pgpool.job.outcome"] == "failed"
    assert run.status.status_code is StatusCode.ERROR
    assert [event.name for event in run.events] == ["exception"]


@pytest.mark.parametrize("traceparent", ["garbage", "00-" + "0" * 32 + "-" + "0" * 16 + "-01", 42])
async def test_a_malformed_traceparent_starts_a_new_trace(
    config: Config,
    run_worker: RunWorker,
    arq_redis: ArqRedis,
    users: list[asyncpg.Record],
    exporter: tuple[TracerProvider, InMemorySpanExporter],
    traceparent: object,
) -> None:
    provider, spans = exporter
    job_id = uuid.uuid4().hex
    job = {"f": "get_user", "a": [], "k": {"user_id": 2}, "traceparent": traceparent}
    await enqueue_many(arq_redis, config.queue_name, [(job_id, job)])
    tracing = JobTracing(provider, config.queue_name)
    worker = await run_worker(ctx={"config": config, TRACING_KEY: tracing})
    assert (worker.jobs_complete, worker.jobs_failed) == (1, 0)
    finished = list(spans.get_finished_spans())
    run = one(finished, "run get_user")
    assert run.parent is None and run.attributes is not None
    assert run.attributes["pgpool.job.outcome"] == "succeeded"
    assert "queue wait" not in {span.name for span in finished}


async def test_tracing_off_adds_no_field_and_makes_no_span(
    config: Config,
    run_worker: RunWorker,
    arq_redis: ArqRedis,
    users: list[asyncpg.Record],
    exporter: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """No span active at enqueue: no field. A worker without tracing (no OTEL_* set, nothing
    injected) continues nothing, even from a payload that carries a trace context."""
    provider, spans = exporter
    async with Client.connect(redis_url=REDIS_URL, queue_name=config.queue_name) as client:
        plain = await client.get_user(1)
        with provider.get_tracer("test").start_as_current_span("request"):
            traced = await client.get_user(2)
        payload = orjson.loads(await arq_redis.get(f"arq:job:{plain.job_id}"))
        assert set(payload) == {"f", "a", "k", "et", "t"}
        worker = await run_worker()
        assert worker.jobs_complete == 2
        assert (await traced.result(timeout=5)) is not None
    assert [span.name for span in spans.get_finished_spans()] == ["request"]
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)


async def test_an_unsampled_run_makes_no_span_and_runs(
    config: Config, run_worker: RunWorker, arq_redis: ArqRedis, users: list[asyncpg.Record]
) -> None:
    """OTEL_TRACES_SAMPLER's way to cut the cost: spans not sampled are not recorded (nor their
    queries logged), and the job runs as usual."""
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    provider = TracerProvider(sampler=ALWAYS_OFF)
    spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    job_id = uuid.uuid4().hex
    await enqueue_many(
        arq_redis, config.queue_name, [(job_id, {"f": "count_users", "a": [], "k": {}})]
    )
    tracing = JobTracing(provider, config.queue_name)
    worker = await run_worker(ctx={"config": config, TRACING_KEY: tracing})
    assert (worker.jobs_complete, worker.jobs_failed) == (1, 0)
    assert list(spans.get_finished_spans()) == []
    provider.shutdown()
