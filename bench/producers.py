"""The producers' measurements (``python -m bench --only producers``; part of ``make bench``):
transactional enqueue through the outbox (commit → job start at a paced rate, the relay's
throughput), the TypeScript client's bulk enqueue, and the slim Python client's bulk enqueue
against the worker's own ``JobClient.enqueue_many``."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from arq.constants import result_key_prefix

from bench.common import ROOT, decode_json, percentile
from bench.node_client import NodeUnavailable, built_client
from bench.options import BULK_FACTOR
from bench.probes import _arq_results, _ours_client, _paced, running
from bench.procs import child_env
from bench.systems import BenchError, Target, ours_worker
from pgpool_client import Client
from worker.db.outbox import ENQUEUE

NODE_SCRIPT = ROOT / "bench" / "node_enqueue.mjs"
RELAY_SETTINGS = {"WORKER_MAX_JOBS": "20"}  # the relayed rows run as no-op jobs meanwhile
_rounds = itertools.count()  # python_bulk alternates which client goes first
INSERT_MANY = """
SELECT count(enqueue_job('noop', jsonb_build_object('user_id', g), $2 || g, NULL, $1))
FROM generate_series(1, $3::int) AS g
"""


@asynccontextmanager
async def _outbox(target: Target, queue: str) -> AsyncIterator[asyncpg.Connection[asyncpg.Record]]:
    """A connection to the bench database; the queue's outbox rows are deleted on the way out."""
    conn = await asyncpg.connect(target.db.url, timeout=10)
    try:
        yield conn
    finally:
        await conn.execute("DELETE FROM job_outbox WHERE queue = $1", queue)
        await conn.close()


async def _warm_up(
    target: Target, conn: asyncpg.Connection[asyncpg.Record], queue: str, job_id: str
) -> None:
    """One row committed and run: the worker is up and its relay is LISTENing."""
    await conn.execute(ENQUEUE, "noop", '{"user_id": 1}', job_id, None, queue)
    deadline = time.monotonic() + 90
    while not await _arq_results(target, [job_id], decode_json):
        if time.monotonic() > deadline:
            raise BenchError("the warm-up row was not relayed and run within 90 s")
        await asyncio.sleep(0.05)


async def commit_to_start(target: Target, tag: str) -> dict[str, Any]:
    """A worker at its defaults (LISTEN wake-up, OUTBOX_POLL_INTERVAL 1 s); get_user rows inserted
    with ``SELECT enqueue_job(...)``, each its own transaction, at a fixed rate. Commit = when the
    statement's reply (its commit) reached the client; start = the job's ``st`` in its stored
    result (the worker's clock when it began the job, in whole ms); relay = the payload's ``et``
    (when the relay pushed it to Redis)."""
    opts = target.opts
    n = max(int(opts.latency_rate * opts.latency_seconds), 1)
    queue, name = f"{tag}:queue", f"{tag}-outbox-latency"
    job_ids = [f"{tag}-{i}" for i in range(n)]
    payloads = [json.dumps({"user_id": uid}) for uid in target.user_ids(n, seed=13)]
    committed = [0.0] * n
    round_trip = [0.0] * n
    async with _outbox(target, queue) as conn:
        proc = ours_worker(target, queue, name, {}, burst=False)
        async with running(proc, _warm_up(target, conn, queue, f"{tag}-warm")):

            async def send(i: int) -> None:
                t0 = time.time()
                await conn.execute(ENQUEUE, "get_user", payloads[i], job_ids[i], None, queue)
                committed[i] = time.time()
                round_trip[i] = committed[i] - t0

            rate = await _paced(opts.latency_rate, n, send)
            timings = await _arq_results(target, job_ids, decode_json)
    if len(timings) < n:
        raise BenchError(
            f"{len(timings)} of {n} committed jobs ran within 30 s:\n{proc.log_tail()}"
        )
    by_id = dict(zip(job_ids, committed, strict=True))
    start, relay = [], []
    results = await target.redis.mget([result_key_prefix + j for j in job_ids])
    for job_id, raw in zip(job_ids, results, strict=True):
        data = decode_json(raw) if raw is not None else {}
        # st and et are whole ms (truncated): + 0.5 ms, their expected truncation.
        start.append(float(data["st"]) + 0.5 - by_id[job_id] * 1000)
        relay.append(float(data["et"]) + 0.5 - by_id[job_id] * 1000)
    return {
        "jobs": n,
        "completed": len(timings),
        "failed": sum(1 for t in timings if not t.success),
        "achieved_rate": rate,
        "p50_ms": percentile(start, 50),
        "p95_ms": percentile(start, 95),
        "p99_ms": percentile(start, 99),
        "max_ms": max(start),
        "relay_p50_ms": percentile(relay, 50),
        "relay_p95_ms": percentile(relay, 95),
        "commit_round_trip_p50_ms": percentile([r * 1000 for r in round_trip], 50),
    }


async def relay_rate(target: Target, tag: str) -> dict[str, Any]:
    """N rows committed in one transaction (one NOTIFY) while a worker runs; relayed rows per
    second from that commit to the last row's ``relayed_at`` (PostgreSQL's clock, same host). The
    worker runs the relayed no-op jobs meanwhile, in the same process."""
    n = target.opts.relay_rows
    queue, name = f"{tag}:queue", f"{tag}-outbox-relay"
    async with _outbox(target, queue) as conn:
        proc = ours_worker(target, queue, name, RELAY_SETTINGS, burst=False)
        async with running(proc, _warm_up(target, conn, queue, f"{tag}-warm")):
            async with conn.transaction():
                inserted = await conn.fetchval(INSERT_MANY, queue, f"{tag}-row", n)
            committed = time.time()
            deadline = time.monotonic() + 60 + n / 1000
            while await conn.fetchval(
                "SELECT count(*) FROM job_outbox WHERE queue = $1 AND relayed_at IS NULL", queue
            ):
                if time.monotonic() > deadline:
                    raise BenchError(f"the relay did not move {n} rows in time:\n{proc.log_tail()}")
                await asyncio.sleep(0.02)
            row = await conn.fetchrow(
                "SELECT extract(epoch FROM max(relayed_at))::float8 AS last,"
                " count(*) FILTER (WHERE error IS NULL) AS relayed"
                " FROM job_outbox WHERE queue = $1 AND id LIKE $2",
                queue,
                f"{tag}-row%",
            )
    assert row is not None
    if inserted != n or int(row["relayed"]) != n:
        raise BenchError(f"{row['relayed']} of {n} rows relayed ({inserted} inserted)")
    window = float(row["last"]) - committed
    return {"jobs": n, "jobs_per_s": n / window if window > 0 else None, "window_s": window}


async def node_bulk(target: Target, tag: str) -> dict[str, Any]:
    """``JobClient.enqueueMany`` of the TypeScript client (clients/node, built first): N get_user
    jobs, timed inside node from the call to its return; no worker running."""
    n = target.opts.node_jobs
    queue = f"{tag}:queue"
    try:
        node = await asyncio.to_thread(built_client)
    except NodeUnavailable as exc:
        raise BenchError(str(exc)) from None
    proc = await asyncio.create_subprocess_exec(
        *(node, str(NODE_SCRIPT), str(n), f"{tag}-", str(target.db.max_user_id)),
        cwd=ROOT,
        env=child_env({"REDIS_URL": target.opts.redis_url, "QUEUE_NAME": queue}),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 120 + n / 1000)
    if proc.returncode != 0:
        raise BenchError(
            f"node exited {proc.returncode}: {stderr.decode(errors='replace')[-1500:]}"
        )
    found = json.loads(stdout)
    queued = int(await target.redis.zcard(queue))
    if found["added"] != n or queued != n:
        raise BenchError(f"TypeScript enqueueMany: {found['added']} added, {queued} of {n} queued")
    return {"jobs": n, "jobs_per_s": n / found["seconds"]}


async def python_bulk(target: Target, tag: str) -> dict[str, Any]:
    """``enqueue_many`` of N get_user jobs with the slim client (``pgpool_client.Client``, its own
    connect) and with the worker's ``JobClient`` (worker/client.py), one after the other (the
    order alternating between rounds), each on its own queue; no worker running."""
    n = target.opts.enqueue_jobs * BULK_FACTOR
    arguments = [{"user_id": uid} for uid in target.user_ids(n, seed=17)]
    loop = asyncio.get_running_loop()
    rates: dict[str, float] = {}

    async def slim() -> None:
        queue = f"{tag}:slim"
        async with Client.connect(redis_url=target.opts.redis_url, queue_name=queue) as client:
            t0 = loop.time()
            await client.enqueue_many(
                "get_user", arguments, job_ids=[f"{tag}-s{i}" for i in range(n)]
            )
            rates["slim"] = n / (loop.time() - t0)
        await _check_queued(target, queue, n)

    async def ours() -> None:
        queue = f"{tag}:worker"
        async with _ours_client(target, queue) as client:
            t0 = loop.time()
            await client.enqueue_many(
                "get_user", arguments, job_ids=[f"{tag}-w{i}" for i in range(n)]
            )
            rates["worker"] = n / (loop.time() - t0)
        await _check_queued(target, queue, n)

    order = (slim, ours) if next(_rounds) % 2 else (ours, slim)
    for measure in order:
        await measure()
    return {
        "jobs": n,
        "slim_jobs_per_s": rates["slim"],
        "worker_jobs_per_s": rates["worker"],
        "slim_over_worker": rates["slim"] / rates["worker"],
    }


async def _check_queued(target: Target, queue: str, n: int) -> None:
    queued = int(await target.redis.zcard(queue))
    if queued != n:
        raise BenchError(f"{queued} of {n} jobs reached {queue}")
