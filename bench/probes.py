"""The measurements other than drains: the database's limit, end-to-end latency at a fixed rate,
an idle worker's cost, and enqueue rates."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from arq.connections import ArqRedis, RedisSettings, create_pool
from saq import Queue

from bench.common import JobTiming, decode_json, decode_pickle, now, percentile, read_arq_results
from bench.database import free_connections
from bench.options import BULK_FACTOR, pool_for
from bench.procs import Monitored, child_env, memory_kb
from bench.systems import (
    FUNCTIONS,
    BenchError,
    Target,
    arq_bulk_enqueue,
    arq_worker,
    ours_worker,
    saq_enqueue,
    saq_timings,
    saq_worker,
)
from worker.client import JobClient
from worker.config import load_config

ARQ_DEFAULT_MAX_JOBS = 10  # arq's own default
SAQ_DEFAULT_CONCURRENCY = 10  # SAQ's own default
CONNECTION_MARGIN = 10  # connections left to other users of the server, at least


async def limit(target: Target, mode: str, concurrency: int, _tag: str = "") -> dict[str, Any]:
    """``python -m bench.limit``: the raw pool (with or without its reset query on release), or
    connect-per-query, for a fixed duration."""
    opts = target.opts
    pooled = mode != "connect"
    needed = pool_for(concurrency) if pooled else concurrency
    free = await free_connections(target.db.admin_url)
    if needed + CONNECTION_MARGIN > free:
        raise BenchError(
            f"skipped: needs {needed} connections, the server has {free} free "
            f"(keeping {CONNECTION_MARGIN} for others)"
        )
    seconds = opts.limit_seconds if pooled else opts.connect_seconds
    argv = [
        *("-m", "bench.limit", mode, "--dsn", target.db.url),
        *("--concurrency", str(concurrency), "--pool", str(pool_for(concurrency))),
        *("--duration", str(seconds), "--max-id", str(target.db.max_user_id)),
    ]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *argv,
        cwd=opts.workdir,
        env=child_env({}),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), seconds + 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise BenchError(f"bench.limit {mode} c={concurrency} did not finish") from None
    if proc.returncode != 0:
        raise BenchError(f"bench.limit failed: {stderr.decode(errors='replace')[-1500:]}")
    result: dict[str, Any] = json.loads(stdout)
    return result


# Running a worker that is not in burst mode.


@asynccontextmanager
async def running(proc: Monitored, warm_up: Awaitable[Any]) -> AsyncIterator[Monitored]:
    """Start ``proc``, wait until it has run one job (``warm_up``), stop it on the way out."""
    await proc.start()
    assert proc.proc is not None
    try:
        warm = asyncio.ensure_future(asyncio.wait_for(warm_up, 90))
        exited = asyncio.ensure_future(proc.proc.wait())
        await asyncio.wait({warm, exited}, return_when=asyncio.FIRST_COMPLETED)
        if not warm.done():
            warm.cancel()
            raise BenchError(f"{proc.name} exited at start-up:\n{proc.log_tail()}")
        exited.cancel()
        warm.result()
        yield proc
    finally:
        await proc.stop()


async def _paced(rate: float, count: int, send: Callable[[int], Awaitable[Any]]) -> float:
    """Call ``send(i)`` for i < count on a fixed schedule of ``rate`` per second; the achieved rate."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for i in range(count):
        delay = t0 + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await send(i)
    return count / max(loop.time() - t0, 1e-9)


async def _arq_results(
    target: Target, job_ids: Sequence[str], decode: Callable[[bytes], dict[str, Any]]
) -> list[JobTiming]:
    """Poll for the jobs' stored results until all are there (or 30 s have passed)."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        timings = await read_arq_results(target.redis, job_ids, decode)
        if len(timings) >= len(job_ids) or asyncio.get_running_loop().time() > deadline:
            return timings
        await asyncio.sleep(0.2)


async def _saq_drained(target: Target, queue: str) -> None:
    deadline = asyncio.get_running_loop().time() + 30
    while asyncio.get_running_loop().time() < deadline:
        if not await target.redis.zcard(f"saq:{queue}:incomplete"):
            return
        await asyncio.sleep(0.1)


def _arq_client(target: Target, queue: str) -> Awaitable[ArqRedis]:
    return create_pool(RedisSettings.from_dsn(target.opts.redis_url), default_queue_name=queue)


def _ours_client(target: Target, queue: str) -> AbstractAsyncContextManager[JobClient]:
    config = load_config(
        database_url=target.db.url, redis_url=target.opts.redis_url, queue_name=queue
    )
    return JobClient.connect(config)


async def latency(target: Target, system: str, tag: str) -> dict[str, Any]:
    """A worker at its defaults (DB job); jobs enqueued one by one at a fixed rate; enqueue→finish
    from the queue's own timestamps (ms)."""
    opts = target.opts
    n = max(int(opts.latency_rate * opts.latency_seconds), 1)
    queue, name = f"{tag}:queue", f"{tag}-latency-{system}"
    job_ids = [f"{tag}-{i}" for i in range(n)]
    user_ids = target.user_ids(n, seed=7)
    if system == "ours":
        async with _ours_client(target, queue) as client:
            proc = ours_worker(target, queue, name, {}, burst=False)
            warm_up = (await client.get_user(1, job_id=f"{tag}-warm")).result(timeout=90)
            async with running(proc, warm_up):

                async def send_ours(i: int) -> None:
                    await client.get_user(user_ids[i], job_id=job_ids[i])

                rate = await _paced(opts.latency_rate, n, send_ours)
                timings = await _arq_results(target, job_ids, decode_json)
    elif system == "arq":
        redis = await _arq_client(target, queue)
        try:
            proc = arq_worker(target, queue, name, ARQ_DEFAULT_MAX_JOBS, 10, burst=False)
            warm = await redis.enqueue_job("db_job", 1, _job_id=f"{tag}-warm")
            assert warm is not None
            async with running(proc, warm.result(timeout=90, poll_delay=0.05)):

                async def send_arq(i: int) -> None:
                    await redis.enqueue_job("db_job", user_ids[i], _job_id=job_ids[i])

                rate = await _paced(opts.latency_rate, n, send_arq)
                timings = await _arq_results(target, job_ids, decode_pickle)
        finally:
            await redis.aclose()
    else:
        saq_queue = Queue.from_url(opts.redis_url, name=tag)
        await saq_queue.connect()
        try:
            proc = saq_worker(target, tag, name, SAQ_DEFAULT_CONCURRENCY, 10, burst=False)
            async with running(proc, saq_queue.apply("db_job", timeout=90, user_id=1)):

                async def send_saq(i: int) -> None:
                    await saq_queue.enqueue("db_job", user_id=user_ids[i])

                rate = await _paced(opts.latency_rate, n, send_saq)
                await _saq_drained(target, tag)
        finally:
            await saq_queue.disconnect()
        timings = saq_timings(opts.workdir / f"{name}.json")[1:]  # the first one is the warm-up
    if len(timings) < n:
        raise BenchError(
            f"{system}: {len(timings)} of {n} jobs finished within 30 s:\n{proc.log_tail()}"
        )
    return _latencies(timings, n, rate)


def _latencies(timings: Sequence[JobTiming], n: int, rate: float) -> dict[str, Any]:
    e2e = [float(t.finished - t.enqueued) for t in timings]
    wait = [float(t.started - t.enqueued) for t in timings]
    return {
        "jobs": n,
        "completed": len(timings),
        "failed": sum(1 for t in timings if not t.success),
        "achieved_rate": rate,
        "p50_ms": percentile(e2e, 50),
        "p90_ms": percentile(e2e, 90),
        "p99_ms": percentile(e2e, 99),
        "max_ms": max(e2e) if e2e else None,
        "wait_p50_ms": percentile(wait, 50),
        "wait_p99_ms": percentile(wait, 99),
    }


async def idle(target: Target, system: str, tag: str) -> dict[str, Any]:
    """A worker at its defaults with an empty queue: CPU %, RSS and Postgres backends."""
    queue, name = f"{tag}:queue", f"{tag}-idle-{system}"
    if system == "ours":
        async with _ours_client(target, queue) as client:
            warm_up = (await client.get_user(1, job_id=f"{tag}-warm")).result(timeout=90)
            proc = ours_worker(target, queue, name, {}, burst=False)
            return await _idle(target, proc, warm_up)
    if system == "arq":
        redis = await _arq_client(target, queue)
        try:
            warm = await redis.enqueue_job("db_job", 1, _job_id=f"{tag}-warm")
            assert warm is not None
            proc = arq_worker(target, queue, name, ARQ_DEFAULT_MAX_JOBS, 10, burst=False)
            return await _idle(target, proc, warm.result(timeout=90, poll_delay=0.05))
        finally:
            await redis.aclose()
    saq_queue = Queue.from_url(target.opts.redis_url, name=tag)
    await saq_queue.connect()
    try:
        proc = saq_worker(target, tag, name, SAQ_DEFAULT_CONCURRENCY, 10, burst=False)
        return await _idle(target, proc, saq_queue.apply("db_job", timeout=90, user_id=1))
    finally:
        await saq_queue.disconnect()


async def _idle(target: Target, proc: Monitored, warm_up: Awaitable[Any]) -> dict[str, Any]:
    async with running(proc, warm_up):
        await asyncio.sleep(1.0)  # let start-up work settle
        t0 = now()
        await asyncio.sleep(target.opts.idle_seconds)
        t1 = now()
        assert proc.proc is not None
        rss = memory_kb(proc.proc.pid, "VmRSS")
        backends = [s.backends for s in proc.samples if s.at >= t0 and s.backends is not None]
        return {
            "idle_cpu_pct": proc.cpu_percent(t0, t1),
            "rss_mb": None if rss is None else rss / 1024,
            "pg_backends": max(backends) if backends else None,
        }


ENQUEUE_MODES = {
    "ours": ("seq", "gather", "bulk"),
    "arq": ("seq", "gather", "bulk"),
    "saq": ("seq", "gather"),
}


async def enqueue_rate(target: Target, system: str, mode: str, tag: str) -> dict[str, Any]:
    """N jobs enqueued with no worker running: one by one, 100 at a time, or in bulk."""
    n = target.opts.enqueue_jobs * (BULK_FACTOR if mode == "bulk" else 1)
    queue = f"{tag}:queue"
    job_ids = [f"{tag}-{i}" for i in range(n)]
    user_ids = target.user_ids(n, seed=11)
    function = FUNCTIONS[system]["db"]
    loop = asyncio.get_running_loop()
    if system == "ours":
        async with _ours_client(target, queue) as client:
            if mode == "bulk":
                arguments = [{"user_id": uid} for uid in user_ids]
                t0 = loop.time()
                await client.enqueue_many(function, arguments, job_ids=job_ids)
                elapsed = loop.time() - t0
            else:

                async def send_ours(i: int) -> None:
                    await client.get_user(user_ids[i], job_id=job_ids[i])

                elapsed = await _timed(n, mode, send_ours)
        queued = int(await target.redis.zcard(queue))
    elif system == "arq":
        redis = await _arq_client(target, queue)
        try:
            if mode == "bulk":
                jobs_arq = [(job_ids[i], function, (user_ids[i],)) for i in range(n)]
                t0 = loop.time()
                await arq_bulk_enqueue(target.redis, queue, jobs_arq)
                elapsed = loop.time() - t0
            else:

                async def send_arq(i: int) -> None:
                    await redis.enqueue_job(function, user_ids[i], _job_id=job_ids[i])

                elapsed = await _timed(n, mode, send_arq)
        finally:
            await redis.aclose()
        queued = int(await target.redis.zcard(queue))
    else:
        saq_queue = Queue.from_url(target.opts.redis_url, name=tag)
        await saq_queue.connect()
        try:
            if mode == "gather":
                t0 = loop.time()
                await saq_enqueue(saq_queue, function, user_ids)
                elapsed = loop.time() - t0
            else:

                async def send_saq(i: int) -> None:
                    await saq_queue.enqueue(function, user_id=user_ids[i])

                elapsed = await _timed(n, "seq", send_saq)
        finally:
            await saq_queue.disconnect()
        queued = int(await target.redis.llen(f"saq:{tag}:queued"))  # type: ignore[misc]
    if queued != n:
        raise BenchError(f"{system} {mode}: {queued} of {n} jobs reached the queue")
    return {"jobs_per_s": n / elapsed, "jobs": n}


async def _timed(n: int, mode: str, send: Callable[[int], Awaitable[Any]]) -> float:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    if mode == "seq":
        for i in range(n):
            await send(i)
    else:
        for start in range(0, n, 100):
            await asyncio.gather(*(send(i) for i in range(start, min(start + 100, n))))
    return loop.time() - t0
