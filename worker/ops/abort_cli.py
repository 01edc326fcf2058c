"""``python -m worker abort JOB_ID``: arq's abort of a queued or running job, and waiting for a
worker to confirm it (exit 0 aborted, 1 it finished otherwise, 2 no such job, 3 not yet)."""

from __future__ import annotations

import argparse
import asyncio
import time

from arq.connections import ArqRedis

from worker.config import Config
from worker.core.clock import now_ms
from worker.core.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_PENDING
from worker.errors import ResultNotFound
from worker.ops.inspect_cli import job_status, result_view
from worker.ops.output import emit
from worker.queue.connect import command_redis
from worker.queue.keys import ABORT_SET, RESULT_PREFIX


async def request_abort(redis: ArqRedis, queue: str, job_id: str) -> str:
    """Put ``job_id`` in arq's abort set; a job still waiting moves to the queue's front, so that a
    worker claims it (and records it aborted) at once. Returns the job's status before."""
    status = await job_status(redis, queue, job_id)
    if status in ("complete", "not_found"):
        return status
    now = now_ms()
    first = await redis.zrange(queue, 0, 0, withscores=True)
    front = min(int(first[0][1]) - 1, now) if first else now
    # One transaction: no worker can claim the job moved to the front before it is in the set.
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zadd(ABORT_SET, {job_id: now})
        if status in ("queued", "deferred"):
            pipe.zadd(queue, {job_id: front}, xx=True)
        await pipe.execute()
    return status


async def cmd_abort(config: Config, args: argparse.Namespace) -> int:
    """0 aborted; 1 it had finished already or finished otherwise; 2 no such job; 3 not yet."""
    queue = config.queue_name
    async with command_redis(config) as redis:
        before = await request_abort(redis, queue, args.job_id)
        if before == "not_found":
            raise ResultNotFound(job_id=args.job_id, queue=queue)
        if before == "complete":
            emit({"job_id": args.job_id, "aborted": False, "status": "complete"})
            return EXIT_FAILED
        deadline = time.monotonic() + args.wait
        while True:
            stored = await redis.get(RESULT_PREFIX + args.job_id)
            if stored is not None:
                result = result_view(stored)
                aborted = result.get("error") == "CancelledError"
                emit({"job_id": args.job_id, "aborted": aborted, "was": before, "result": result})
                return EXIT_OK if aborted else EXIT_FAILED
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
    emit({"job_id": args.job_id, "aborted": None, "was": before, "status": "abort requested"})
    return EXIT_PENDING
