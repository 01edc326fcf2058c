"""The fast consumer (worker/runtime/consumer.py): arq's Redis format kept, wake-up on enqueue, odd entries."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import pytest
from arq.connections import ArqRedis
from arq.worker import Worker, func

from jobs.registry import JOBS_BY_NAME
from tests.conftest import RunWorker
from worker.client import JobClient
from worker.config import Config
from worker.queue import codec
from worker.queue.connection import redis_settings
from worker.queue.enqueue import enqueue_many
from worker.queue.stats import queue_stats
from worker.runtime import producer
from worker.runtime.claims import ABORT_MAX_AGE_MS, CLAIM_SCRIPT
from worker.runtime.leases import LeaseKeeper
from worker.runtime.lifecycle import SERVICES_KEY

pytestmark = pytest.mark.integration


async def test_queue_entry_without_payload_is_cleared(
    config: Config, run_worker: RunWorker, arq_redis: ArqRedis, users: list[asyncpg.Record]
) -> None:
    ghost = f"ghost-{uuid.uuid4().hex}"
    await arq_redis.zadd(config.queue_name, {ghost: int(time.time() * 1000)})
    async with JobClient.connect(config) as client:
        real = await client.get_user(1)
        worker = await run_worker()
        assert (await real.result(timeout=1)) is not None
    assert worker.jobs_failed == 1 and worker.jobs_complete == 1
    assert await arq_redis.zcard(config.queue_name) == 0
    assert await arq_redis.exists(f"arq:in-progress:{ghost}", f"arq:retry:{ghost}") == 0


async def test_a_plain_arq_worker_runs_what_the_client_enqueued(
    config: Config, users: list[asyncpg.Record], job_ctx: dict[str, object]
) -> None:
    """The queue stays in arq's format: arq's own worker (no consumer) can take the jobs."""
    spec = JOBS_BY_NAME["count_users"]

    async def count_users(ctx: dict[str, object], **kwargs: object) -> object:
        return await spec.run({**job_ctx, **ctx}, spec.parse((), kwargs))

    async with JobClient.connect(config) as client:
        handle = await client.count_users(active=None)
        plain = Worker(
            functions=[func(count_users, name="count_users")],
            redis_settings=redis_settings(config),
            queue_name=config.queue_name,
            job_serializer=codec.serialize,
            job_deserializer=codec.deserialize,
            burst=True,
            poll_delay=0.01,
            handle_signals=False,
        )
        try:
            await plain.async_run()
        finally:
            await plain.close()
        assert plain.jobs_complete == 1
        assert (await handle.result(timeout=1)).count == len(users)


async def test_an_idle_consumer_wakes_on_enqueue(
    config: Config, run_worker: RunWorker, users: list[asyncpg.Record]
) -> None:
    """With a 30 s idle poll the job could only run this soon if the enqueue woke the consumer."""
    sleepy = config.model_copy(update={"poll_delay": 30.0})
    worker_task = asyncio.ensure_future(run_worker(config=sleepy, burst=False, poll_delay=0.5))
    try:
        async with JobClient.connect(sleepy) as client:
            await asyncio.sleep(0.5)  # let the worker start and go idle (nothing is queued yet)
            started = time.monotonic()
            handle = await client.get_user(2)
            user = await handle.result(timeout=10)
            assert user is not None and user.id == 2
            assert time.monotonic() - started < 10
    finally:
        worker_task.cancel()
        await asyncio.gather(worker_task, return_exceptions=True)


async def test_at_light_load_the_claim_round_carries_each_outcome(
    config: Config,
    run_worker: RunWorker,
    users: list[asyncpg.Record],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One job at a time: the claim loop lingers until the running job ends (LINGER made long, so
    that a slow machine cannot end it first), and its next round writes the outcome, so that the
    completer's write loop never needs a connection of its own."""
    monkeypatch.setattr(producer, "LINGER", 60.0)
    ctx: dict[str, Any] = {"config": config}
    worker_task = asyncio.ensure_future(run_worker(burst=False, ctx=ctx))
    try:
        async with JobClient.connect(config) as client:
            for user_id in (1, 2, 3):
                handle = await client.get_user(user_id)
                user = await handle.result(timeout=10)
                assert user is not None and user.id == user_id
        consumer = ctx[SERVICES_KEY].consumer
        assert consumer.completer.direct.conn is None and not consumer.completer.pending
        assert consumer.producer.claimer.direct.conn is not None
    finally:
        worker_task.cancel()
        await asyncio.gather(worker_task, return_exceptions=True)


async def test_claims_move_running_jobs_out_of_the_due_range(
    config: Config, arq_redis: ArqRedis
) -> None:
    """A claimed job is due again at its lease's end, so no number of running jobs hides a waiting
    one from the next claim, and queue stats still count the running ones."""
    running = [
        (f"run-{i}-{uuid.uuid4().hex[:6]}", {"f": "get_user", "a": [], "k": {}})
        for i in range(2_500)
    ]
    await enqueue_many(arq_redis, config.queue_name, running)
    claim = arq_redis.register_script(CLAIM_SCRIPT)
    now = int(time.time() * 1000)
    claimed, _, _ = await claim(
        keys=[config.queue_name], args=[now, 2_500, 60_000, ABORT_MAX_AGE_MS]
    )
    answered = int(time.time() * 1000)
    assert len(claimed) == 2_500
    scores = {
        score for _, score in await arq_redis.zrange(config.queue_name, 0, -1, withscores=True)
    }
    # One lease end for all: the round's now is Redis's clock when later than the one sent.
    assert len(scores) == 1 and now + 60_000 <= scores.pop() <= answered + 60_000
    stats = await queue_stats(arq_redis, config.queue_name, lease=60)
    assert (stats.running, stats.waiting, stats.scheduled) == (2_500, 0, 0)  # beyond SAMPLE: scaled

    late = f"late-{uuid.uuid4().hex[:6]}"
    await enqueue_many(arq_redis, config.queue_name, [(late, {"f": "get_user", "a": [], "k": {}})])
    [entry], _, _ = await claim(
        keys=[config.queue_name], args=[int(time.time() * 1000), 10, 60_000, ABORT_MAX_AGE_MS]
    )
    assert entry[0].decode() == late


async def test_a_lease_renewal_moves_the_due_time_only_of_running_jobs(
    config: Config, arq_redis: ArqRedis
) -> None:
    jobs = [
        (f"lease-{i}-{uuid.uuid4().hex[:6]}", {"f": "get_user", "a": [], "k": {}}) for i in range(2)
    ]
    await enqueue_many(arq_redis, config.queue_name, jobs)
    (running, _), (finished, _) = jobs
    await arq_redis.psetex(f"arq:in-progress:{running}", 60_000, b"1")
    keeper = LeaseKeeper(arq_redis, 2.0, config.queue_name)
    keeper.held.update([running, finished])
    before = int(time.time() * 1000)
    await keeper.renew()
    assert 0 < await arq_redis.pttl(f"arq:in-progress:{running}") <= 2_000
    assert await arq_redis.zscore(config.queue_name, running) >= before + 2_000
    assert await arq_redis.zscore(config.queue_name, finished) <= before  # not running: untouched
    assert await arq_redis.exists(f"arq:in-progress:{finished}") == 0  # never re-created
