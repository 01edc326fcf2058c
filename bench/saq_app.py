"""SAQ on the same no-op and DB jobs, as its own process (``python -m bench.saq_app``).

SAQ's defaults (JSON, a blocking ``BLMOVE`` per slot, logging left unconfigured as its CLI does by
default), an asyncpg pool in the context. ``--burst`` stops once the queue is empty. On exit it
writes each job's (queued, started, completed, success) times in ms, as SAQ recorded them, to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import asyncpg
from saq import Queue, Worker
from saq.job import Status
from saq.types import Context

from bench.common import QUERY


class BenchContext(Context, total=False):
    pool: asyncpg.Pool[asyncpg.Record]


async def noop(ctx: BenchContext, *, user_id: int) -> None:
    """The no-op job."""


async def db_job(ctx: BenchContext, *, user_id: int) -> int | None:
    """The DB job: one indexed lookup on a pooled connection."""
    async with ctx["pool"].acquire() as conn:
        row = await conn.fetchrow(QUERY, user_id)
    return None if row is None else int(row["id"])


async def run(args: argparse.Namespace) -> list[tuple[int, int, int, bool]]:
    queue = Queue.from_url(args.redis_url, name=args.queue)
    # By job key: SAQ may run a job twice (its sweep re-queues one whose heartbeat looked stale on a
    # loaded box), and calls after_process for each run; the last run counts, once.
    timings: dict[str, tuple[int, int, int, bool]] = {}

    async def startup(ctx: BenchContext) -> None:
        size = args.pool
        ctx["pool"] = await asyncpg.create_pool(args.dsn, min_size=min(10, size), max_size=size)

    async def shutdown(ctx: BenchContext) -> None:
        await ctx["pool"].close()

    async def after_process(ctx: BenchContext) -> None:
        job = ctx.get("job")
        if job is not None:
            timings[job.key] = (
                job.queued,
                job.started,
                job.completed,
                job.status == Status.COMPLETE,
            )

    worker: Worker[BenchContext] = Worker(
        queue,
        functions=[noop, db_job],
        concurrency=args.concurrency,
        startup=startup,
        shutdown=shutdown,
        after_process=after_process,
        burst=args.burst,
        dequeue_timeout=0.5 if args.burst else 0.0,
    )
    try:
        await queue.connect()
        await worker.start()
    finally:
        await queue.disconnect()
    return list(timings.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.saq_app", description=__doc__)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--pool", type=int, default=10)
    parser.add_argument("--burst", action="store_true")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    timings = asyncio.run(run(args))
    Path(args.out).write_text(json.dumps({"timings": timings}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
