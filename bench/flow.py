"""``python -m bench.flow`` (``make bench-flow``): what flow control costs (issue #12's targets),
measured side by side in one run, the variants of a round in turn (their order rotating):

- ``none``: N database jobs (``get_user``), plain payloads;
- ``limit``: the same with a concurrency limit declared that never binds (max 1,000,000);
- ``blocked``: the same plain jobs while 100,000 jobs wait, blocked on a full limit of their own,
  in the same queue (moved to their blocked set before the measured drain starts);
- ``priority``: the same with priorities 1..9 in turn.

Every variant: one worker (its defaults), started after the jobs are queued, runs until each of
the N jobs has a result; throughput from the first start to the last finish (the results' ``st``
and ``ft``). Writes bench/results/flow.json and the "Flow control" section of docs/performance.md
(or flow.json and flow.md into ``--output DIR``). Figures, never asserted anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench import flow_report, report
from bench.common import (
    decode_json,
    delete_tagged,
    new_tag,
    out,
    read_arq_results,
    run_meta,
    run_tag,
    say,
)
from bench.database import prepare
from bench.options import Options, section_options
from bench.options import parser as bench_parser
from bench.systems import BenchError, Target, ours_bulk_enqueue, ours_worker, summarize, until_done
from worker.queue.keys import blocked_key, gate_key
from worker.runtime.claims import Claimer

VARIANTS = ("none", "limit", "blocked", "priority")
NEVER_BINDING = {"concurrency": [{"name": "bench-never", "key": "", "max": 1_000_000}]}
BLOCKING = {"concurrency": [{"name": "bench-full", "key": "", "max": 1}]}
SETTINGS = {"WORKER_MAX_JOBS": "50", "PG_POOL_MAX_SIZE": "20"}


def _flow(variant: str, i: int) -> dict[str, Any] | None:
    if variant == "limit":
        return NEVER_BINDING
    if variant == "priority":
        return {"priority": 1 + i % 9}
    return None


async def _block(target: Target, queue: str, tag: str, count: int) -> None:
    """``count`` jobs on a limit of 1 that a holder (a live lease) fills, all moved to the limit's
    blocked set by claim rounds (1,000 a round) before the measurement."""
    redis = target.redis
    holder = f"{tag}-holder"
    await redis.set(f"arq:in-progress:{holder}", "1", px=3_600_000)
    await redis.zadd(gate_key(queue, "c:bench-full:"), {holder: time.time() * 1000 + 3_600_000})
    user_ids = target.user_ids(count, seed=99)
    jobs = [
        (f"{tag}-b{i}", {"f": "get_user", "a": [], "k": {"user_id": u}, "flow": BLOCKING})
        for i, u in enumerate(user_ids)
    ]
    await ours_bulk_enqueue(redis, queue, jobs)
    claimer = Claimer(redis, queue, "60000")
    blocked = blocked_key(queue, "c:bench-full:")
    while await redis.zcard(blocked) < count:
        claimed, _, _ = await claimer.claim(int(time.time() * 1000), 1)
        if claimed:
            raise BenchError("a job of the full limit was claimed")


async def drain(target: Target, variant: str, blocked: int) -> dict[str, Any]:
    """One variant's measured drain (see the module docstring)."""
    n, tag = target.opts.jobs, new_tag()
    queue = f"{tag}:queue"
    try:
        if variant == "blocked":
            await _block(target, queue, tag, blocked)
        job_ids = [f"{tag}-{i}" for i in range(n)]
        jobs = []
        for i, (job_id, user_id) in enumerate(
            zip(job_ids, target.user_ids(n, seed=7), strict=True)
        ):
            job: dict[str, Any] = {"f": "get_user", "a": [], "k": {"user_id": user_id}}
            flow = _flow(variant, i)
            if flow is not None:
                job["flow"] = flow
            jobs.append((job_id, job))
        await ours_bulk_enqueue(target.redis, queue, jobs)
        proc = ours_worker(target, queue, f"{tag}-flow-{variant}", SETTINGS, burst=False)
        try:
            await proc.start()
            await until_done(target.redis, job_ids, 60 + n / 50)
        finally:
            await proc.stop()
        timings = await read_arq_results(target.redis, job_ids, decode_json)
        found = summarize(timings, proc, n)
        if variant == "blocked":
            found["still_blocked"] = int(
                await target.redis.zcard(blocked_key(queue, "c:bench-full:"))
            )
        return found
    finally:
        await delete_tagged(target.redis, tag)


async def run(opts: Options, blocked: int) -> dict[str, Any]:
    started = datetime.now(UTC)
    t0 = asyncio.get_running_loop().time()
    db = await prepare(opts.database_url, opts.users, show=True)
    redis = Redis.from_url(opts.redis_url)
    rounds: list[dict[str, dict[str, Any]]] = []
    try:
        target = Target(opts, db, redis)
        for r in range(opts.rounds):
            order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]
            found: dict[str, dict[str, Any]] = {}
            for variant in order:
                found[variant] = await drain(target, variant, blocked)
                say(f"round {r + 1}: {variant} {found[variant]['jobs_per_s']:,.0f} jobs/s")
            rounds.append(found)
    finally:
        await delete_tagged(redis, run_tag())
        await redis.aclose()
    return {
        "meta": run_meta(started, asyncio.get_running_loop().time() - t0, opts.rounds, opts.quick),
        "options": {"jobs": opts.jobs, "blocked": blocked, "settings": SETTINGS},
        "rounds": rounds,
        "ratios": flow_report.ratios(rounds),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = bench_parser(
        "python -m bench.flow",
        __doc__,
        quick="under a minute",
        output="flow.json and flow.md",
    )
    parser.add_argument("--jobs", type=int, help="measured jobs per drain (default 4,000)")
    parser.add_argument("--blocked", type=int, help="blocked jobs beside them (default 100,000)")
    return parser.parse_args(argv)


def options(args: argparse.Namespace, workdir: Path) -> Options:
    return section_options(args, workdir, jobs=args.jobs or (200 if args.quick else 4_000))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    blocked = args.blocked if args.blocked is not None else (2_000 if args.quick else 100_000)
    with tempfile.TemporaryDirectory(prefix="bench-flow-") as scratch:
        data = asyncio.run(run(options(args, Path(scratch)), blocked))
    section = flow_report.markdown(data)
    json_path, md_path = report.write_section(
        data, "flow", section, flow_report.replace_section, args.output
    )
    out(flow_report.console(data))
    out(f"\nwrote {json_path} and {md_path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
