"""The three queues under test: how each one is enqueued to, started as a subprocess and read back.

* ``arq``: bare arq, ``arq bench.arq_naive.WorkerSettings``.
* ``ours``: this worker, ``arq bench.ours_settings.BenchSettings`` (the real ``worker.Settings``
  plus a no-op job), configured only by the environment variables operators use.
* ``saq``: SAQ, ``python -m bench.saq_app``.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arq.constants import expires_extra_ms, job_key_prefix
from arq.jobs import serialize_job
from redis.asyncio import Redis
from saq import Queue

from bench.common import JobTiming, decode_json, decode_pickle, read_arq_results
from bench.database import BenchDatabase
from bench.options import Options, pool_for
from bench.procs import Monitored, child_env
from worker.core.clock import now_ms
from worker.queue.enqueue import enqueue_many

OURS_SETTINGS = "bench.ours_settings.BenchSettings"
ARQ_SETTINGS = "bench.arq_naive.WorkerSettings"
# The job each system runs for each kind of job.
FUNCTIONS = {
    "arq": {"noop": "noop", "db": "db_job"},
    "ours": {"noop": "noop", "db": "get_user"},
    "saq": {"noop": "noop", "db": "db_job"},
}
PIPELINE_CHUNK = 1000


class BenchError(RuntimeError):
    """A measurement could not be made (the message says why)."""


@dataclass(frozen=True)
class Target:
    """Where the bench runs: its options, its database and its Redis client."""

    opts: Options
    db: BenchDatabase
    redis: Redis

    def user_ids(self, count: int, seed: int) -> list[int]:
        rnd = random.Random(seed)
        return [rnd.randint(1, self.db.max_user_id) for _ in range(count)]


# Enqueueing in bulk (for the drains; the enqueue measurement also times the one-by-one APIs).


async def ours_bulk_enqueue(
    redis: Redis, queue: str, jobs: Sequence[tuple[str, dict[str, Any]]]
) -> int:
    """This worker's own bulk path (``worker.queue.enqueue.enqueue_many``: its Lua enqueue script, which
    refuses taken job ids, pipelined); returns how many were added."""
    added = await enqueue_many(redis, queue, jobs, PIPELINE_CHUNK)
    return sum(added)


async def arq_bulk_enqueue(
    redis: Redis, queue: str, jobs: Sequence[tuple[str, str, tuple[Any, ...]]]
) -> None:
    """The keys arq's enqueue_job writes (PSETEX job, ZADD queue), pickled, pipelined; without
    arq's duplicate check (arq 0.28 has no bulk API)."""
    for start in range(0, len(jobs), PIPELINE_CHUNK):
        async with redis.pipeline(transaction=False) as pipe:
            for job_id, function, args in jobs[start : start + PIPELINE_CHUNK]:
                enqueued = now_ms()
                payload = serialize_job(function, args, {}, None, enqueued)
                pipe.psetex(job_key_prefix + job_id, expires_extra_ms, payload)
                pipe.zadd(queue, {job_id: enqueued})
            await pipe.execute()


async def saq_enqueue(
    queue: Queue, function: str, user_ids: Sequence[int], batch: int = 100
) -> None:
    """SAQ's own ``enqueue`` (one Lua script each), ``batch`` at a time."""
    for start in range(0, len(user_ids), batch):
        await asyncio.gather(
            *(queue.enqueue(function, user_id=uid) for uid in user_ids[start : start + batch])
        )


# The worker processes.


def arq_worker(
    target: Target, queue: str, name: str, max_jobs: int, pool: int, burst: bool
) -> Monitored:
    env = {
        "BENCH_DATABASE_URL": target.db.url,
        "BENCH_REDIS_URL": target.opts.redis_url,
        "BENCH_QUEUE": queue,
        "BENCH_MAX_JOBS": str(max_jobs),
        "BENCH_POOL_SIZE": str(pool),
    }
    argv = ["-m", "arq", ARQ_SETTINGS, *(["--burst"] if burst else [])]
    return _monitored(target, argv, env, name, lambda: target.redis.zcard(queue))


def ours_worker(
    target: Target, queue: str, name: str, settings: dict[str, str], burst: bool
) -> Monitored:
    """This worker with its defaults, except what ``settings`` (environment variables) sets."""
    env = {
        "DATABASE_URL": target.db.url,
        "REDIS_URL": target.opts.redis_url,
        "QUEUE_NAME": queue,
        "CRON_DEACTIVATE": "",  # no scheduled job inside a measurement
        **settings,
    }
    argv = ["-m", "arq", OURS_SETTINGS, *(["--burst"] if burst else [])]
    return _monitored(target, argv, env, name, lambda: target.redis.zcard(queue))


def saq_worker(
    target: Target, queue: str, name: str, concurrency: int, pool: int, burst: bool
) -> Monitored:
    argv = [
        "-m",
        "bench.saq_app",
        "--redis-url",
        target.opts.redis_url,
        "--queue",
        queue,
        "--dsn",
        target.db.url,
        "--concurrency",
        str(concurrency),
        "--pool",
        str(pool),
        "--out",
        str(target.opts.workdir / f"{name}.json"),
        *(["--burst"] if burst else []),
    ]

    async def queued() -> int:
        return int(await target.redis.llen(f"saq:{queue}:queued"))  # type: ignore[misc]

    return _monitored(target, argv, {}, name, queued)


def _monitored(
    target: Target,
    argv: list[str],
    env: dict[str, str],
    name: str,
    queue_length: Callable[[], Awaitable[int]],
) -> Monitored:
    return Monitored(
        argv=argv,
        env=child_env(env),
        workdir=target.opts.workdir,
        name=name,
        admin_url=target.db.admin_url,
        database=target.db.name,
        queue_length=queue_length,
    )


# Draining N jobs.


async def drain(
    target: Target, system: str, kind: str, concurrency: int, tag: str
) -> dict[str, Any]:
    """Enqueue N jobs, run a burst worker until the queue is empty, and measure it."""
    n = target.opts.jobs
    user_ids = target.user_ids(n, seed=concurrency)
    function = FUNCTIONS[system][kind]
    name = f"{tag}-{system}-{kind}-c{concurrency}"
    queue = f"{tag}:queue"
    job_ids = [f"{tag}-{i}" for i in range(n)]
    loop = asyncio.get_running_loop()
    started = loop.time()
    if system == "ours":
        jobs = [
            (j, {"f": function, "a": [], "k": {"user_id": u}})
            for j, u in zip(job_ids, user_ids, strict=True)
        ]
        await ours_bulk_enqueue(target.redis, queue, jobs)
        settings = {
            "WORKER_MAX_JOBS": str(concurrency),
            "PG_POOL_MAX_SIZE": str(pool_for(concurrency)),
        }
        proc = ours_worker(target, queue, name, settings, burst=True)
    elif system == "arq":
        await arq_bulk_enqueue(
            target.redis,
            queue,
            [(j, function, (u,)) for j, u in zip(job_ids, user_ids, strict=True)],
        )
        proc = arq_worker(target, queue, name, concurrency, pool_for(concurrency), burst=True)
    else:
        queue = tag
        saq_queue = Queue.from_url(target.opts.redis_url, name=queue)
        try:
            await saq_queue.connect()
            await saq_enqueue(saq_queue, function, user_ids)
        finally:
            await saq_queue.disconnect()
        proc = saq_worker(target, queue, name, concurrency, pool_for(concurrency), burst=True)
    enqueue_s = loop.time() - started
    try:
        await proc.start()
        code = await proc.wait(timeout=60 + n / 25)
    finally:
        await proc.stop()
    if code != 0:
        raise BenchError(f"{name} worker exited with {code}:\n{proc.log_tail()}")
    if system == "saq":
        timings = saq_timings(target.opts.workdir / f"{name}.json")
    else:
        decode = decode_json if system == "ours" else decode_pickle
        timings = await read_arq_results(target.redis, job_ids, decode)
    return {**summarize(timings, proc, n), "enqueue_s": enqueue_s}


def saq_timings(path: Path) -> list[JobTiming]:
    """What bench.saq_app wrote on exit."""
    data = json.loads(path.read_text())
    return [JobTiming(int(q), int(st), int(ft), bool(ok)) for q, st, ft, ok in data["timings"]]


def summarize(timings: Sequence[JobTiming], proc: Monitored, n: int) -> dict[str, Any]:
    """Throughput from the first job start to the last job finish, as the queue recorded them
    (worker start-up and the final empty poll excluded); the worker's CPU over that window."""
    method = "results"
    if timings:
        t0 = min(t.started for t in timings) / 1000
        t1 = max(t.finished for t in timings) / 1000
        completed = len(timings)
    else:  # no stored results: the queue's length as sampled (0.1 s resolution)
        method = "queue length"
        taken = [s.at for s in proc.samples if s.queued is not None and s.queued < n]
        empty = [s.at for s in proc.samples if s.queued == 0]
        t0 = taken[0] if taken else proc.started_at
        t1 = empty[0] if empty else (proc.ended_at or t0)
        completed = n if empty else 0
    window = t1 - t0
    return {
        "jobs_per_s": completed / window if window > 0 else None,
        "jobs": n,
        "completed": completed,
        "failed": sum(1 for t in timings if not t.success),
        "window_s": window,
        "worker_cpu_pct": proc.cpu_percent(t0, t1),
        "peak_rss_mb": proc.peak_rss_mb(),
        "pg_backends_max": proc.backends_max(),
        "method": method,
    }


async def until_done(redis: Redis, job_ids: Sequence[str], timeout: float) -> None:
    """Wait until every job in ``job_ids`` has a stored result."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending = list(job_ids)
    while pending:
        if loop.time() > deadline:
            raise BenchError(f"{len(pending)} measured jobs still without a result")
        window = pending[:1000]
        found = await redis.mget([f"arq:result:{j}" for j in window])
        done = {j for j, raw in zip(window, found, strict=True) if raw is not None}
        pending = [j for j in pending if j not in done]
        if pending:
            await asyncio.sleep(0.1)
