"""Edges of bad payloads and broken backends, each with a real worker process.

* ``pg_terminate_backend`` of idle pool connections costs retries, never a job: asyncpg reads the
  terminated backend's FATAL error before it sees the socket close, and the next operation on that
  connection fails with ``InternalClientError: cannot switch to state ...`` (a proxy that holds the
  socket open makes the window as wide as a test needs); and a burst of jobs under repeated
  terminations of every backend loses none.
* A dead letter that PostgreSQL refuses (any error, here a trigger) waits in Redis and lands later.
* Payloads that once crashed the consumer before the policy (deep nesting, a 5,000-digit integer,
  an enqueue time past the year 9999, and other malformed times) end as one poison dead letter and
  one stored result, and are never claimed again.
* Producers cannot call the worker's own handlers (``__poison__``, ``__unknown__``), an argument
  named ``ctx`` is an invalid argument, and an unknown job's stored result carries no argument
  value; arq's default pickle client gets a hint at the JSON settings it needs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import asyncpg
import pytest
import redis.asyncio as redis_py
from arq.connections import ArqRedis, RedisSettings, create_pool

from tests.conftest import REDIS_URL
from tests.faults.conftest import Counters, Spawn, url_via, wait_until
from tests.faults.proxy import Proxy
from worker.config import Config
from worker.core.masking import REDACTED
from worker.db.pool import APPLICATION_NAME
from worker.queue.codec import POISON_FUNCTION
from worker.queue.enqueue import enqueue_many

if TYPE_CHECKING:
    Pool = asyncpg.Pool[asyncpg.Record]

pytestmark = pytest.mark.faults

WORKER_BACKENDS = """
SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()
"""
TERMINATE = """
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE application_name = $1 AND datname = current_database()
"""


@pytest.fixture
async def raw() -> AsyncIterator[redis_py.Redis]:
    """A plain Redis client (no arq codec): what another service would write and read."""
    client = redis_py.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


async def backend_pids(pool: Pool) -> set[int]:
    return {r["pid"] for r in await pool.fetch(WORKER_BACKENDS, APPLICATION_NAME)}


async def terminate_backends(pool: Pool) -> int:
    """Terminate every backend of the worker's pool; returns how many there were."""
    return len(await pool.fetch(TERMINATE, APPLICATION_NAME))


async def letters_of(counters: Counters, job_id: str) -> list[dict[str, Any]]:
    return [d for d in await counters.dead_letters() if d["job_id"] == job_id]


async def stored_result(raw: redis_py.Redis, job_id: str, timeout: float = 20.0) -> dict[str, Any]:
    async def probe() -> bytes | None:
        data: bytes | None = await raw.get(f"arq:result:{job_id}")
        return data

    data = await wait_until(probe, timeout, f"the result of job {job_id}")
    assert data is not None
    result: dict[str, Any] = json.loads(data)
    return result


async def put_raw(raw: redis_py.Redis, queue: str, job_id: str, payload: bytes) -> None:
    """Write a payload and its queue entry in arq's layout (docs/wire-format.md), due now."""
    await raw.psetex(f"arq:job:{job_id}", 60_000, payload)
    await raw.zadd(queue, {job_id: int(time.time() * 1000)})


def payload(**fields: Any) -> bytes:
    job: dict[str, Any] = {"t": None, "f": "get_user", "a": [], "k": {"user_id": 1}}
    job["et"] = int(time.time() * 1000)
    job.update(fields)
    return json.dumps(job).encode()


# Item 1: terminated backends ----------------------------------------------------------------------


class LingeringProxy(Proxy):
    """A proxy that, while ``hold`` is set, keeps a client's socket open after the server closed its
    side: asyncpg reads a terminated backend's last words (its FATAL error) but not the end of the
    connection, as when the two arrive apart on a busy worker."""

    hold = False

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cuts: int
    ) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        if self.cuts != cuts:  # cut while being set up (as Proxy._serve)
            writer.transport.abort()
            up_writer.transport.abort()
            return
        self.writers.update((writer, up_writer))
        await asyncio.gather(
            self._pipe(reader, up_writer), self._down(up_reader, writer), return_exceptions=True
        )
        writer.transport.abort()  # the client closed its side (or the proxy was cut)
        self.writers.difference_update((writer, up_writer))

    async def _down(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            if not self.hold:
                writer.transport.abort()


@pytest.fixture
def lingering_pg(config: Config) -> Iterator[LingeringProxy]:
    parts = urlsplit(config.database_url)
    proxy = LingeringProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    proxy.start()
    yield proxy
    proxy.stop()


async def test_backends_terminated_while_idle_in_the_pool_cost_retries_not_jobs(
    spawn: Spawn,
    arq_redis: ArqRedis,
    counters: Counters,
    pool: Pool,
    lingering_pg: LingeringProxy,
    config: Config,
) -> None:
    size = 4
    worker = await spawn(
        DATABASE_URL=url_via(config.database_url, lingering_pg.port),
        PG_POOL_MIN_SIZE=str(size),
        PG_POOL_MAX_SIZE=str(size),
        WORKER_MAX_JOBS=str(size),
    )

    async def opened() -> set[int]:
        pids = await backend_pids(pool)
        return pids if len(pids) == size else set()

    before = await wait_until(opened, timeout=10, what=f"{size} pool connections")
    lingering_pg.hold = True
    assert await terminate_backends(pool) == size

    async def gone() -> bool:
        return not (await backend_pids(pool)) & before

    await wait_until(gone, timeout=10, what="the terminated backends to exit")
    # Every idle connection of the pool now holds a FATAL error and an open socket.
    keys = [f"idle-{i}-{uuid.uuid4().hex[:6]}" for i in range(2 * size)]
    jobs = [await arq_redis.enqueue_job("fault_write", key=key) for key in keys]
    results = [await job.result(timeout=30, poll_delay=0.05) for job in jobs if job is not None]
    assert [r["key"] for r in results] == keys
    assert await counters.dead_letters() == [], worker.log()
    tries = sorted(r["job_try"] for r in results)
    assert tries[-1] >= 2, tries  # the broken connections were met, and cost a retry
    log = worker.log()
    # Each broken connection fails one operation and is aborted: none is handed out again.
    met = log.count("InternalClientError; retrying")
    assert 1 <= met <= size, log
    for key in keys:
        assert await counters.effects(key) == 1


BURST = 4000
ROUNDS = 5


async def test_terminating_every_pool_backend_during_a_burst_loses_no_job(
    spawn: Spawn,
    arq_redis: ArqRedis,
    raw: redis_py.Redis,
    counters: Counters,
    pool: Pool,
    users: list[asyncpg.Record],
    config: Config,
) -> None:
    """ROUNDS times, each time the queue has drained by another share of the burst, every backend
    of the worker's pool (busy and idle ones) is terminated: every job still succeeds."""
    worker = await spawn(WORKER_MAX_JOBS="20", PG_POOL_MIN_SIZE="20", PG_POOL_MAX_SIZE="20")
    ids = [f"burst-{i}-{uuid.uuid4().hex[:6]}" for i in range(BURST)]
    jobs = [
        (job_id, {"f": "get_user", "a": [], "k": {"user_id": users[i % len(users)]["id"]}})
        for i, job_id in enumerate(ids)
    ]
    assert all(await enqueue_many(arq_redis, config.queue_name, jobs))
    terminated = 0
    for round_ in range(1, ROUNDS + 1):
        left_at_most = BURST - round_ * BURST // (ROUNDS + 2)

        async def drained(limit: int = left_at_most) -> bool:
            left: int = await raw.zcard(config.queue_name)
            return left <= limit

        await wait_until(drained, timeout=60, what=f"the queue to drain to {left_at_most}")
        terminated += await terminate_backends(pool)
    assert terminated >= ROUNDS  # every round found backends to terminate

    async def all_done() -> bool:
        left: int = await raw.zcard(config.queue_name)
        return left == 0

    await wait_until(all_done, timeout=90, what="the burst to finish")
    results: list[dict[str, Any] | None] = []
    for start in range(0, BURST, 500):
        chunk = await raw.mget([f"arq:result:{job_id}" for job_id in ids[start : start + 500]])
        results.extend(json.loads(data) if data else None for data in chunk)
    failed = [
        (job_id, r and r["r"])
        for job_id, r in zip(ids, results, strict=True)
        if not r or not r["s"]
    ]
    assert failed == [], f"{len(failed)} of {BURST} jobs failed, first: {failed[:3]}"
    assert await counters.dead_letters() == []
    assert await raw.llen(f"{config.queue_name}:dead-letters:pending") == 0  # type: ignore[misc]
    assert worker.alive()


# A dead letter refused by PostgreSQL ------------------------------------------------------------

REFUSE = """
CREATE TABLE IF NOT EXISTS refused_dead_letter_queues (queue text PRIMARY KEY);
CREATE OR REPLACE FUNCTION refuse_dead_letters() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM refused_dead_letter_queues WHERE queue = NEW.queue) THEN
    RAISE EXCEPTION 'dead letters of queue % are refused (the test''s trigger)', NEW.queue;
  END IF;
  RETURN NEW;
END $$;
CREATE OR REPLACE TRIGGER refuse_dead_letters BEFORE INSERT ON dead_letters
FOR EACH ROW EXECUTE FUNCTION refuse_dead_letters();
"""
UNREFUSE = """
DROP TRIGGER IF EXISTS refuse_dead_letters ON dead_letters;
DROP FUNCTION IF EXISTS refuse_dead_letters();
DROP TABLE IF EXISTS refused_dead_letter_queues;
"""


@pytest.fixture
async def refusing_dead_letters(pool: Pool, config: Config) -> AsyncIterator[None]:
    """PostgreSQL refuses this test's dead letters (a trigger raises) until the row is deleted."""
    await pool.execute(REFUSE)
    await pool.execute("INSERT INTO refused_dead_letter_queues VALUES ($1)", config.queue_name)
    try:
        yield
    finally:
        await pool.execute(UNREFUSE)


async def test_a_dead_letter_postgres_refuses_waits_in_redis_then_lands(
    spawn: Spawn,
    arq_redis: ArqRedis,
    raw: redis_py.Redis,
    counters: Counters,
    pool: Pool,
    config: Config,
    refusing_dead_letters: None,
) -> None:
    worker = await spawn()
    key = f"refused-{uuid.uuid4().hex[:8]}"
    job = await arq_redis.enqueue_job("fault_write", key=key, fail_permanently=True)
    assert job is not None
    result = await stored_result(raw, job.job_id)
    # The job's outcome is its own error, not the dead-letter store's.
    assert result["r"] == {"error": "ValueError", "message": "injected permanent fault"}
    pending_key = f"{config.queue_name}:dead-letters:pending"
    [waiting] = await raw.lrange(pending_key, 0, -1)  # type: ignore[misc]
    assert json.loads(waiting)["job_id"] == job.job_id
    assert await letters_of(counters, job.job_id) == []
    assert "not written to PostgreSQL (RaiseError" in worker.log()

    await pool.execute("DELETE FROM refused_dead_letter_queues WHERE queue = $1", config.queue_name)
    [letter] = await wait_until(
        lambda: letters_of(counters, job.job_id), timeout=20, what="the letter in PostgreSQL"
    )
    assert (letter["reason"], letter["error_type"]) == ("permanent-error", "ValueError")
    assert json.loads(letter["payload"])["k"] == {"key": key, "fail_permanently": True}
    assert await raw.llen(pending_key) == 0  # type: ignore[misc]
    assert worker.alive()


# Item 2: payloads that crashed the consumer before the policy -----------------------------------


def deep_nesting() -> bytes:
    nested = b"[" * 100_000 + b"]" * 100_000
    return b'{"t": null, "f": "get_user", "a": [], "k": {"user_id": ' + nested + b'}, "et": 1}'


BAD_PAYLOADS = {
    "deep-nesting": deep_nesting(),
    "integer-of-5000-digits": payload(k={"user_id": 0}).replace(
        b": 0}", b": " + b"9" * 5000 + b"}"
    ),
    "et-of-400-digits": payload(et=10**400),  # OverflowError in arq's ms_to_datetime
    "et-beyond-64-bits": payload(et=10**20),  # OSError there
    "et-past-year-9999": payload(et=10**15),  # ValueError there
    "et-negative": payload(et=-(10**15)),
    "et-float": payload(et=1.5),
    "et-string": payload(et="2026-01-01T00:00:00Z"),
    "t-string": payload(t="1"),
}


@pytest.mark.parametrize("data", BAD_PAYLOADS.values(), ids=BAD_PAYLOADS.keys())
async def test_a_payload_the_consumer_cannot_run_is_one_poison_dead_letter(
    spawn: Spawn,
    raw: redis_py.Redis,
    counters: Counters,
    config: Config,
    data: bytes,
) -> None:
    worker = await spawn()
    job_id = uuid.uuid4().hex
    await put_raw(raw, config.queue_name, job_id, data)
    result = await stored_result(raw, job_id)
    assert result["s"] is False and result["r"]["error"] == "PoisonPayload", result
    assert (result["f"], result["a"], result["k"]) == (POISON_FUNCTION, [], {})
    [letter] = await wait_until(lambda: letters_of(counters, job_id), what="the dead letter")
    assert (letter["reason"], letter["error_type"], letter["function"]) == (
        "poison",
        "PoisonPayload",
        POISON_FUNCTION,
    )
    assert bytes(letter["payload"]) == data and letter["attempts"] == 1
    # Finished for good: nothing left for a claim, no try counter growing.
    for key in (f"arq:job:{job_id}", f"arq:in-progress:{job_id}", f"arq:retry:{job_id}"):
        assert await raw.exists(key) == 0, key
    assert await raw.zscore(config.queue_name, job_id) is None
    log = worker.log()
    assert "Traceback" not in log and log.count(f"dead letter: job {job_id}") == 1, log
    assert worker.alive()


# Item 9: the worker's own handlers, an argument named ctx, an unknown job's result ---------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"f": "__poison__", "k": {"payload": base64.b64encode(b"forged").decode(), "problem": "x"}},
        {"f": "__unknown__", "k": {"function": "get_user", "args": [], "kwargs": {"user_id": 1}}},
    ],
    ids=["__poison__", "__unknown__"],
)
async def test_a_producer_cannot_call_the_workers_own_handlers(
    spawn: Spawn, raw: redis_py.Redis, counters: Counters, config: Config, kwargs: dict[str, Any]
) -> None:
    await spawn()
    job_id = uuid.uuid4().hex
    data = payload(**kwargs)
    await put_raw(raw, config.queue_name, job_id, data)
    [letter] = await wait_until(lambda: letters_of(counters, job_id), what="the dead letter")
    assert (letter["reason"], letter["error_type"]) == ("poison", "PoisonPayload")
    assert f"job name {kwargs['f']!r} is reserved" in letter["error_message"]
    assert bytes(letter["payload"]) == data  # the producer's bytes, not what it asked to store
    result = await stored_result(raw, job_id)
    assert (result["f"], result["k"], result["r"]["error"]) == (
        POISON_FUNCTION,
        {},
        "PoisonPayload",
    )


async def test_an_argument_named_ctx_is_an_invalid_argument(
    spawn: Spawn, raw: redis_py.Redis, counters: Counters, config: Config
) -> None:
    await spawn()
    job_id = uuid.uuid4().hex
    await put_raw(raw, config.queue_name, job_id, payload(k={"user_id": 1, "ctx": {"x": 1}}))
    result = await stored_result(raw, job_id)
    assert result["r"]["error"] == "InvalidJobArguments", result
    assert "ctx: Extra inputs are not permitted" in result["r"]["message"]
    [letter] = await wait_until(lambda: letters_of(counters, job_id), what="the dead letter")
    assert (letter["reason"], letter["error_type"]) == ("permanent-error", "InvalidJobArguments")


async def test_an_unknown_jobs_result_names_it_and_keeps_no_argument_value(
    spawn: Spawn, raw: redis_py.Redis, counters: Counters, config: Config
) -> None:
    await spawn()  # UNKNOWN_JOB_GRACE=2
    job_id, secret = uuid.uuid4().hex, f"tok-SECRET-{uuid.uuid4().hex[:8]}"
    data = payload(f="not_deployed_yet", a=[secret], k={"token": secret, "n": 3})
    await put_raw(raw, config.queue_name, job_id, data)
    result = await stored_result(raw, job_id, timeout=20)
    assert result["r"]["error"] == "UnknownJobName"
    assert (result["f"], result["a"], result["k"]) == (
        "not_deployed_yet",
        [REDACTED],
        {"token": REDACTED, "n": REDACTED},
    )
    assert secret.encode() not in await raw.get(f"arq:result:{job_id}")
    [letter] = await wait_until(lambda: letters_of(counters, job_id), what="the dead letter")
    replayable = json.loads(letter["payload"])  # the dead letter keeps them, for a replay
    assert (replayable["f"], replayable["a"], replayable["k"]) == (
        "not_deployed_yet",
        [secret],
        {"token": secret, "n": 3},
    )


# Item 15: arq's default (pickle) client ---------------------------------------------------------


async def test_a_pickle_from_arqs_default_client_is_dead_lettered_with_a_hint(
    spawn: Spawn, counters: Counters, config: Config
) -> None:
    await spawn()
    client = await create_pool(
        RedisSettings.from_dsn(REDIS_URL), default_queue_name=config.queue_name
    )
    try:
        job = await client.enqueue_job("get_user", user_id=1)
        assert job is not None
        [letter] = await wait_until(
            lambda: letters_of(counters, job.job_id), what="the dead letter"
        )
    finally:
        await client.aclose()
    assert (letter["reason"], letter["error_type"]) == ("poison", "PoisonPayload")
    message = letter["error_message"]
    assert "looks like a pickle" in message, message
    for words in (
        "job_serializer=json.dumps",
        "job_deserializer=json.loads",
        "docs/wire-format.md",
    ):
        assert words in message
