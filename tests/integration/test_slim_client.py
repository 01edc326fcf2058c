"""The slim client (pgpool_client.Client, its own configuration) against a real burst worker:
typed enqueue and result, enqueue_many, status, abort, duplicates refused; explicit arguments win
over REDIS_URL / QUEUE_NAME; the worker's settings in the environment (LOG_LEVEL=info, which the
worker's Config refuses) do not concern it; an unreachable Redis fails within the connect timeout
with the URL masked."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from jobs.models import User, UserCount
from pgpool_client import (
    Client,
    ClientConfig,
    DuplicateJob,
    InvalidJobArguments,
    JobStatus,
    RedisUnavailable,
    UnknownJob,
)
from pgpool_client.keys import ABORT_SET
from tests.conftest import REDIS_URL, RunWorker
from worker.config import Config, load_config
from worker.errors import ConfigError

pytestmark = pytest.mark.integration


@pytest.fixture
def client_env(monkeypatch: pytest.MonkeyPatch, config: Config) -> None:
    """A producer's environment: REDIS_URL, QUEUE_NAME, and worker settings the worker refuses
    (set after the burst worker's own ``config`` and ``worker.settings`` were read)."""
    import worker.settings  # noqa: F401  (it reads the environment when first imported)

    monkeypatch.setenv("REDIS_URL", REDIS_URL)
    monkeypatch.setenv("QUEUE_NAME", config.queue_name)
    monkeypatch.setenv("LOG_LEVEL", "info")
    monkeypatch.setenv("PG_POOL_MAX_SIZE", "not a number")


@pytest.fixture
async def client(client_env: None) -> AsyncIterator[Client]:
    async with Client.connect() as client:
        yield client


async def test_the_worker_settings_in_the_environment_do_not_concern_the_client(
    client_env: None,
) -> None:
    with pytest.raises(ConfigError):
        load_config()  # what the old client read
    async with Client.connect() as client:
        assert await client.redis.ping()


async def test_typed_jobs_end_to_end(
    client: Client, config: Config, run_worker: RunWorker, users: list[asyncpg.Record]
) -> None:
    assert client.queue_name == config.queue_name
    once = f"count-once-{uuid.uuid4().hex}"  # job ids are global (arq:job:<id>): unique
    get = await client.get_user(users[0]["id"])
    count = await client.count_users(active=True, job_id=once)
    assert await get.status() == JobStatus.queued
    with pytest.raises(DuplicateJob):
        await client.count_users(active=True, job_id=once)
    with pytest.raises(InvalidJobArguments):
        await client.get_user(-1)
    with pytest.raises(UnknownJob):
        await client.enqueue("no_such_job")
    worker = await run_worker()
    assert worker.jobs_complete == 2 and worker.jobs_failed == 0
    user = await get.result(timeout=10)
    assert isinstance(user, User) and user.id == users[0]["id"]
    counted = await count.result(timeout=10)
    assert isinstance(counted, UserCount)
    assert counted.count == sum(r["is_active"] for r in users)
    assert await get.status() == JobStatus.complete
    by_id = client.handle(once, "count_users")
    assert await by_id.result(timeout=1) == counted
    assert await client.handle(uuid.uuid4().hex).status() == JobStatus.not_found


async def test_enqueue_many(
    client: Client, run_worker: RunWorker, users: list[asyncpg.Record]
) -> None:
    ids = [f"many-{uuid.uuid4().hex}" for _ in range(5)]  # job ids are global: unique
    handles = await client.enqueue_many(
        "get_user", [{"user_id": i + 1} for i in range(5)], job_ids=ids
    )
    again = await client.enqueue_many("get_user", [{"user_id": 1}], job_ids=ids[:1])
    assert again == [None]  # its id is taken
    with pytest.raises(InvalidJobArguments):
        await client.enqueue_many("get_user", [{"user_id": 1}, {"user_id": "x"}])
    await run_worker()
    results = [await h.result(timeout=10) for h in handles if h is not None]
    assert [u.id for u in results if u is not None] == [1, 2, 3, 4, 5]


async def test_abort_a_deferred_job(client: Client, run_worker: RunWorker) -> None:
    handle = await client.count_users(defer_by=3600)
    assert await handle.status() == JobStatus.deferred
    aborting = asyncio.create_task(handle.abort(timeout=60))
    deadline = time.monotonic() + 30
    while await client.redis.zscore(ABORT_SET, handle.job_id) is None:
        assert time.monotonic() < deadline, "abort never reached Redis"
        await asyncio.sleep(0.01)
    worker = await run_worker()
    assert await aborting is True
    assert worker.jobs_complete == 0
    assert await handle.status() == JobStatus.complete  # a failed result: CancelledError


async def test_explicit_arguments_win_over_the_environment(
    client_env: None, monkeypatch: pytest.MonkeyPatch, config: Config, run_worker: RunWorker
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    monkeypatch.setenv("QUEUE_NAME", "someone-elses-queue")
    async with Client.connect(redis_url=REDIS_URL, queue_name=config.queue_name) as client:
        handle = await client.count_users()
        await run_worker()
        assert isinstance(await handle.result(timeout=10), UserCount)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_unreachable_redis_fails_fast_with_the_url_masked() -> None:
    url = f"redis://producer:s3cret-pass@127.0.0.1:{closed_port()}/0"
    with pytest.raises(RedisUnavailable) as refused:
        async with Client.connect(ClientConfig(url, connect_timeout=2)):
            pass
    assert "s3cret-pass" not in str(refused.value)
    assert "redis://producer:***@127.0.0.1:" in str(refused.value)


async def test_a_silent_redis_fails_within_the_connect_timeout() -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"redis://:hunter2@127.0.0.1:{port}/0"
    started = time.monotonic()
    try:
        with pytest.raises(RedisUnavailable) as silent:
            async with Client.connect(ClientConfig(url, connect_timeout=1)):
                pass
    finally:
        server.close()
    took = time.monotonic() - started
    assert took < 1 + 10, f"gave up after {took:.1f} s, not within the 1 s connect timeout"
    assert "hunter2" not in str(silent.value) and "no answer within 1 s" in str(silent.value)
