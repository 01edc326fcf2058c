"""Shared fixtures: a private database and Redis logical db on the real services on loopback.

URLs come from TEST_ADMIN_DATABASE_URL (a server to create databases on) and TEST_REDIS_URL. Each
session creates its own database and drops it at the end; each test uses its own queue name.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from arq.connections import ArqRedis, create_pool
from arq.worker import Worker, create_worker
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from jobs.context import RESOURCES_KEY, Resources
from jobs.registry import JobSpec
from worker.config import Config, load_config
from worker.db.pool import init_connection, migrate, with_database
from worker.queue import codec
from worker.queue.connection import redis_settings

ADMIN_URL = os.environ.get(
    "TEST_ADMIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


async def _admin(sql: str) -> None:
    try:
        conn = await asyncpg.connect(ADMIN_URL, timeout=5)
    except OSError as exc:
        pytest.exit(f"PostgreSQL is not reachable at {ADMIN_URL}: {exc}. Start it first.", 2)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _create_database(name: str) -> str:
    await _admin(f'CREATE DATABASE "{name}"')
    url = with_database(ADMIN_URL, name)
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return url


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh database with the schema applied, dropped at the end of the session."""
    name = f"worker_test_{uuid.uuid4().hex[:10]}"
    url = asyncio.run(_create_database(name))
    yield url
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def queue_name() -> str:
    return f"test:{uuid.uuid4().hex[:12]}"


@pytest.fixture
def config(database_url: str, queue_name: str) -> Config:
    """Configuration for this test: private database and queue, no cron, short timeouts."""
    return load_config(
        database_url=database_url,
        redis_url=REDIS_URL,
        queue_name=queue_name,
        cron_deactivate="",
        worker_max_jobs=10,
        pg_acquire_timeout=5,
        job_timeout=20,
        keep_result=300,
        retry_backoff_base=0.05,
        retry_backoff_max=0.2,
        max_tries=3,
        job_lease=3,
        pg_idle_in_transaction_timeout=2,
        unknown_job_grace=0,
        metrics_port=0,  # tests that scrape a worker give it a free port
    )


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool[asyncpg.Record]]:
    """A pool for the test's own SQL checks (not the worker's)."""
    async with asyncpg.create_pool(database_url, min_size=1, max_size=4, init=init_connection) as p:
        yield p


@pytest.fixture
async def users(pool: asyncpg.Pool[asyncpg.Record]) -> list[asyncpg.Record]:
    """A small known users table: the table is emptied first, then 30 users are inserted."""
    now = datetime.now(UTC)
    rows = []
    for i in range(1, 31):
        created = now - timedelta(days=400 - i * 10)
        seen = None if i % 7 == 0 else created + timedelta(days=i)
        name = ["Ada Lovelace", "Alan Turing", "Grace Hopper", "Zoë Ünicode"][i % 4] + f" {i}"
        rows.append((f"User{i}@Example.com", name, i % 5 != 0, created, seen))
    rows.append(("o'brien_100%@example.com", "Robert'); DROP TABLE users;--", True, now, now))
    async with pool.acquire() as conn:
        await conn.execute("TRUNCATE users RESTART IDENTITY")
        await conn.copy_records_to_table(
            "users",
            records=rows,
            columns=("email", "name", "is_active", "created_at", "last_seen_at"),
        )
        return await conn.fetch("SELECT * FROM users ORDER BY id")


@pytest.fixture
async def job_ctx(config: Config) -> AsyncIterator[dict[str, Any]]:
    """arq-style ctx holding a worker pool, for calling job functions directly."""
    async with asyncpg.create_pool(
        config.database_url, min_size=1, max_size=5, init=init_connection
    ) as p:
        yield {RESOURCES_KEY: Resources(pool=p, acquire_timeout=5.0), "config": config}


@pytest.fixture
async def arq_redis(config: Config) -> AsyncIterator[ArqRedis]:
    """An arq Redis client with the project's JSON codec on the test's queue."""
    redis = await create_pool(
        redis_settings(config),
        job_serializer=codec.serialize,
        job_deserializer=codec.deserialize,
        default_queue_name=config.queue_name,
    )
    yield redis
    await redis.aclose()


RunWorker = Callable[..., Awaitable[Worker]]


@pytest.fixture
def run_worker(config: Config) -> RunWorker:
    """Run a burst worker built from the real ``worker.Settings`` until the queue is empty:
    ``specs`` adds jobs, ``functions`` replaces the registry's (``worker.settings.settings_with``
    derives the result encoder and the decoder from them); other keywords are Worker arguments."""
    from worker.settings import settings_with

    async def run(
        *,
        specs: Iterable[JobSpec[Any, Any]] = (),
        functions: Sequence[Any] | None = None,
        **overrides: Any,
    ) -> Worker:
        cfg = overrides.pop("config", config)
        options: dict[str, Any] = {
            "redis_settings": redis_settings(cfg),
            "queue_name": cfg.queue_name,
            "ctx": {"config": cfg},
            "burst": True,
            "poll_delay": 0.01,
            "handle_signals": False,
            "max_jobs": cfg.worker_max_jobs,
            "keep_result": cfg.keep_result,
            "job_timeout": cfg.job_timeout + 5,
        }
        options.update(overrides)
        settings = settings_with(specs, functions=functions, cron_jobs=options.pop("cron_jobs", []))
        worker = create_worker(settings, **options)
        try:
            await worker.async_run()
        finally:
            await worker.close()
        return worker

    return run


@pytest.fixture
def exporter() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """A tracer provider whose spans end up in memory (OpenTelemetry's SDK), for one test."""
    provider = TracerProvider()
    spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    yield provider, spans
    provider.shutdown()
