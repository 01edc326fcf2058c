"""The dead-letter store keeps every letter whatever PostgreSQL's error: in Redis when the INSERT
fails for any reason, in memory when Redis fails too, and its text fits PostgreSQL's columns."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.conftest import REDIS_URL
from worker.config import Config
from worker.db.dead_letters import PERMANENT, DeadLetter, DeadLetterStore
from worker.db.pool import init_connection

pytestmark = pytest.mark.integration


def letter(queue: str, job_id: str, **fields: object) -> DeadLetter:
    values: dict[str, object] = {
        "job_id": job_id,
        "queue": queue,
        "function": "get_user",
        "payload": b'{"f": "get_user"}',
        "reason": PERMANENT,
        "error_type": "ValueError",
        "error_message": "bad",
        "attempts": 1,
        "enqueued_at": datetime(2026, 1, 2, tzinfo=UTC),
    }
    values.update(fields)
    return DeadLetter(**values)  # type: ignore[arg-type]


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
async def closed_pool(database_url: str) -> asyncpg.Pool[asyncpg.Record]:
    """A real pool, closed: every use of it fails (InterfaceError: pool is closed)."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1, init=init_connection)
    await pool.close()
    return pool


@pytest.fixture
async def no_redis() -> AsyncIterator[Redis]:
    """A client of a port nothing listens on: every command fails at once (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = Redis(host="127.0.0.1", port=port, socket_connect_timeout=1, retry_on_error=[])
    yield client
    await client.aclose()


async def stored(pool: asyncpg.Pool[asyncpg.Record], job_id: str) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT * FROM dead_letters WHERE job_id = $1", job_id)


async def test_a_letter_postgres_does_not_take_waits_in_redis(
    pool: asyncpg.Pool[asyncpg.Record],
    closed_pool: asyncpg.Pool[asyncpg.Record],
    redis: Redis,
    config: Config,
) -> None:
    store = DeadLetterStore(closed_pool, redis, config.queue_name)
    sent = letter(config.queue_name, "refused-1")
    await store.add(sent)  # InterfaceError, not a transient error: kept all the same
    assert [DeadLetter.from_json(r) for r in await redis.lrange(store.pending_key, 0, -1)] == [sent]  # type: ignore[misc]
    store.pool = pool
    assert await store.flush_pending() == 1
    assert [r["error_message"] for r in await stored(pool, "refused-1")] == ["bad"]
    assert await redis.llen(store.pending_key) == 0  # type: ignore[misc]


async def test_a_letter_neither_store_takes_is_held_logged_and_saved_later(
    pool: asyncpg.Pool[asyncpg.Record],
    closed_pool: asyncpg.Pool[asyncpg.Record],
    no_redis: Redis,
    redis: Redis,
    config: Config,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = DeadLetterStore(closed_pool, no_redis, config.queue_name)
    errors: list[str] = []
    store.on_error = lambda exc: errors.append(type(exc).__name__)
    with caplog.at_level(logging.WARNING, logger="worker.db.dead_letters"):
        await store.add(letter(config.queue_name, "held-1"))  # never raises
    assert [held.job_id for held in store.unsaved] == ["held-1"]
    assert errors == ["InterfaceError", "ConnectionError"]
    [loud] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "held-1" in loud.getMessage() and "neither PostgreSQL nor Redis" in loud.getMessage()
    with pytest.raises(RedisConnectionError):  # both still down: the run loop logs it and waits
        await store.flush_pending()
    assert len(store.unsaved) == 1
    store.pool, store.redis = pool, redis
    assert await store.flush_pending() == 1
    assert store.unsaved == [] and len(await stored(pool, "held-1")) == 1


async def test_text_postgres_cannot_store_is_escaped_not_refused(
    pool: asyncpg.Pool[asyncpg.Record], redis: Redis, config: Config
) -> None:
    store = DeadLetterStore(pool, redis, config.queue_name)
    await store.add(
        letter(
            config.queue_name,
            "nul\x00id",
            function="get\x00user\ud800",
            error_message="prefix 'a\x00b'",
            attempts=10**12,
        )
    )
    [row] = await stored(pool, "nul\\x00id")
    assert (row["function"], row["error_message"]) == ("get\\x00user\\ud800", "prefix 'a\\x00b'")
    assert row["attempts"] == 2**31 - 1
    assert await redis.llen(store.pending_key) == 0  # type: ignore[misc]
