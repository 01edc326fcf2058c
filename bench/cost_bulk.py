"""A bulk enqueue through one tree's own client, in a process of its own: ``python
bench/cost_bulk.py --jobs N --prefix TAG --max-id M`` with cwd and PYTHONPATH at the tree and
REDIS_URL, DATABASE_URL and QUEUE_NAME in the environment (no worker runs on that queue).

Run as a script, not as ``-m bench...``, so that ``worker`` is the measured tree's (only the
standard library, pydantic-free code of its own and the tree's ``worker`` package are imported).
Times ``JobClient.enqueue_many("get_user", ...)`` over N argument sets (every one validated by the
tree's registry, 1,000 per round trip), then checks that the queue holds N jobs, that enqueueing
the first ids again is refused (their handles are None) and that an invalid argument set enqueues
nothing. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

DUPLICATES = 100


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    from worker.client import JobClient  # the tree's (see the docstring)
    from worker.config import load_config

    rnd = random.Random(11)
    arguments = [{"user_id": rnd.randint(1, args.max_id)} for _ in range(args.jobs)]
    job_ids = [f"{args.prefix}-{i}" for i in range(args.jobs)]
    config = load_config()
    async with JobClient.connect(config) as client:
        t0 = time.perf_counter()
        handles = await client.enqueue_many("get_user", arguments, job_ids=job_ids)
        seconds = time.perf_counter() - t0
        queued = int(await client.redis.zcard(config.queue_name))
        again = min(DUPLICATES, args.jobs)
        repeated = await client.enqueue_many("get_user", arguments[:again], job_ids=job_ids[:again])
        bad = [f"{args.prefix}-bad{i}" for i in (1, 2)]
        try:  # the first argument set valid, the second not: nothing may be enqueued
            await client.enqueue_many("get_user", [{"user_id": 1}, {"user_id": "x"}], job_ids=bad)
            invalid_refused = False
        except Exception as exc:  # the tree's own class, wherever that tree defines it
            if type(exc).__name__ != "InvalidJobArguments":
                raise
            invalid_refused = True
        after = int(await client.redis.zcard(config.queue_name))
    return {
        "jobs": args.jobs,
        "seconds": seconds,
        "jobs_per_s": args.jobs / seconds if seconds > 0 else None,
        "added": sum(1 for h in handles if h is not None),
        "queued": queued,
        "duplicates_refused": all(h is None for h in repeated) and after == queued,
        "invalid_refused": invalid_refused and after == queued,
        "worker_module": sys.modules["worker.client"].__file__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/cost_bulk.py", description=__doc__)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--max-id", type=int, required=True)
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.max_id < 1:
        parser.error("--jobs and --max-id must be at least 1")
    found = asyncio.run(measure(args))
    where = Path(found.pop("worker_module")).resolve()
    found["worker_from_cwd"] = where.is_relative_to(Path.cwd().resolve())
    sys.stdout.write(json.dumps(found) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
