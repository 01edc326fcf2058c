"""``python -m bench.growth`` (``make bench-growth``): how this worker's cost grows.

Throughput of the DB job (``get_user``) against ``WORKER_MAX_JOBS`` (pool fixed) and against the
pool size (``max_jobs`` fixed); against worker processes on one queue; against the number of jobs
waiting in the queue; against the number of rows in ``users``. With each: worker CPU, peak RSS,
PostgreSQL backends, and Redis CPU per job (the queue's own cost). Medians of ``--rounds`` rounds,
run round-robin with a progress line per measurement.

Writes bench/results/growth.json, docs/performance-growth.png and the "How cost grows" section of
docs/performance.md (re-rendered from bench/results/latest.json); with ``--output DIR``, all of it
(``growth.json``, ``performance-growth.png``, ``growth.md``) into DIR instead.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench import flow_report, growth_report, report
from bench.common import (
    ROOT,
    decode_json,
    delete_tagged,
    out,
    read_arq_results,
    run_meta,
    run_tag,
    say,
)
from bench.database import BenchDatabase, prepare
from bench.growth_report import sizes_label
from bench.options import Options, section_options
from bench.options import parser as bench_parser
from bench.probes import limit
from bench.procs import postgres_cpu_seconds
from bench.runner import Step, execute
from bench.systems import BenchError, Target, ours_bulk_enqueue, ours_worker, until_done
from worker.core.masking import mask_url
from worker.db.pool import with_database


@dataclass(frozen=True)
class Plan:
    """The points of each sweep, and how many jobs each point measures."""

    max_jobs: tuple[int, ...] = (10, 50, 100, 200, 500)
    pools: tuple[int, ...] = (5, 10, 20, 40)
    processes: tuple[int, ...] = (1, 2, 4)
    depths: tuple[int, ...] = (1_000, 10_000, 100_000, 1_000_000)
    table_sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000, 10_000_000)
    jobs: int = 5_000


QUICK = Plan((10, 50), (5, 10), (1, 2), (500, 2_000), (2_000, 5_000), 300)
POOL_OF_MAX_JOBS_SWEEP = 20  # the pool while max_jobs varies (the main bench's cap)
MAX_JOBS_OF_POOL_SWEEP = 100  # max_jobs while the pool varies
FLEET_MAX_JOBS, FLEET_POOL = 50, 10  # each process of the processes sweep
DEFAULT_MAX_JOBS, DEFAULT_POOL = (
    50,
    20,
)  # the depth and table-size sweeps, and the limit beside them
ENQUEUE_CHUNK = 50_000  # jobs built in memory at a time while filling a deep queue


# One measurement: `processes` workers drain `jobs` measured jobs at the front of a queue that holds
# `depth` jobs in all (the rest are filler behind them, which is what makes the queue deep).


async def fleet_drain(
    target: Target,
    settings: dict[str, str],
    processes: int,
    jobs: int,
    depth: int,
    tag: str,
) -> dict[str, Any]:
    queue = f"{tag}:queue"
    measured = [f"{tag}-a-{i}" for i in range(jobs)]
    ids = target.user_ids(jobs, seed=processes * 7 + depth)
    await ours_bulk_enqueue(
        target.redis,
        queue,
        [
            (j, {"f": "get_user", "a": [], "k": {"user_id": u}})
            for j, u in zip(measured, ids, strict=True)
        ],
    )
    memory_before = await _redis_memory(target.redis)
    await _fill(target, queue, tag, depth - jobs)
    memory_per_job = (await _redis_memory(target.redis) - memory_before) / max(depth - jobs, 1)
    burst = depth == jobs  # nothing behind the measured jobs: the workers stop when it is empty
    procs = [
        ours_worker(target, queue, f"{tag}-w{i}", settings, burst=burst) for i in range(processes)
    ]
    redis_cpu0, pg_cpu0 = await _redis_cpu(target.redis), postgres_cpu_seconds()
    try:
        for proc in procs:
            await proc.start()
        if burst:
            codes = [await proc.wait(timeout=60 + jobs / 20) for proc in procs]
            if any(code != 0 for code in codes):
                raise BenchError(f"a worker exited with {codes}:\n{procs[0].log_tail()}")
            await asyncio.sleep(0.3)  # the workers' backends end and are counted in the postmaster
        else:
            await until_done(target.redis, measured, timeout=60 + jobs / 20)
        redis_cpu = await _redis_cpu(target.redis) - redis_cpu0
        pg_cpu = postgres_cpu_seconds() - pg_cpu0
    finally:
        for proc in procs:
            await proc.stop()
    timings = await read_arq_results(target.redis, measured, decode_json)
    if not timings:
        raise BenchError(f"no results:\n{procs[0].log_tail()}")
    t0 = min(t.started for t in timings) / 1000
    t1 = max(t.finished for t in timings) / 1000
    window = max(t1 - t0, 1e-6)
    return {
        "jobs_per_s": len(timings) / window,
        "jobs": jobs,
        "completed": len(timings),
        "failed": sum(1 for t in timings if not t.success),
        "worker_cpu_pct": _mean(p.cpu_percent(t0, t1) for p in procs),
        "peak_rss_mb": max((p.peak_rss_mb() or 0.0) for p in procs),
        "pg_backends_max": max((p.backends_max() or 0) for p in procs),
        # Over the whole run (start-up and the filler jobs run after the measured ones included):
        # an upper bound of what the queue costs Redis per job.
        "redis_cpu_us_per_job": 1e6 * redis_cpu / len(timings),
        # The same for every PostgreSQL process (the bench's samplers included; if others use the
        # server meanwhile, theirs too).
        "pg_cpu_us_per_job": 1e6 * pg_cpu / len(timings),
        "redis_bytes_per_waiting_job": memory_per_job if depth > jobs else None,
    }


def _mean(values: Any) -> float | None:
    found = [v for v in values if v is not None]
    return sum(found) / len(found) if found else None


async def _fill(target: Target, queue: str, tag: str, count: int) -> None:
    """``count`` filler jobs behind the measured ones (ids sort after them at an equal score)."""
    for start in range(0, count, ENQUEUE_CHUNK):
        batch = [
            (f"{tag}-z-{i}", {"f": "get_user", "a": [], "k": {"user_id": 1}})
            for i in range(start, min(start + ENQUEUE_CHUNK, count))
        ]
        await ours_bulk_enqueue(target.redis, queue, batch)


async def _redis_cpu(redis: Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _redis_memory(redis: Redis) -> int:
    return int((await redis.info("memory"))["used_memory"])


def _settings(max_jobs: int, pool: int) -> dict[str, str]:
    return {"WORKER_MAX_JOBS": str(max_jobs), "PG_POOL_MAX_SIZE": str(pool), "METRICS_PORT": "0"}


async def _at(
    dbs: dict[int, BenchDatabase], target: Target, size: int, run: Any, tag: str
) -> dict[str, Any]:
    """``run`` against the database of ``size`` users."""
    result: dict[str, Any] = await run(dataclasses.replace(target, db=dbs[size]), tag=tag)
    return result


def plan_steps(target: Target, plan: Plan, dbs: dict[int, BenchDatabase]) -> list[Step]:
    """Every point of every sweep, as bench.runner steps (keys ``<sweep>:<point>``)."""
    n = plan.jobs
    est = n / 3000 + 4
    fixed_pool, fixed_jobs = POOL_OF_MAX_JOBS_SWEEP, MAX_JOBS_OF_POOL_SWEEP

    def drain(key: str, label: str, settings: dict[str, str], processes: int = 1) -> Step:
        jobs = n if processes == 1 else 2 * n  # the processes sweep: twice the jobs
        run = partial(fleet_drain, target, settings, processes, jobs, jobs)
        return Step(key, label, est + (jobs - n) / 3000 + processes, run)

    steps = [
        drain(f"max_jobs:{m}", f"max_jobs={m} pool={fixed_pool}", _settings(m, fixed_pool))
        for m in plan.max_jobs
    ]
    steps += [
        drain(f"pool:{p}", f"pool={p} max_jobs={fixed_jobs}", _settings(fixed_jobs, p))
        for p in plan.pools
    ]
    fleet = _settings(FLEET_MAX_JOBS, FLEET_POOL)
    steps += [
        drain(f"processes:{k}", f"{k} process(es) x max_jobs={FLEET_MAX_JOBS}", fleet, k)
        for k in plan.processes
    ]
    default = _settings(DEFAULT_MAX_JOBS, DEFAULT_POOL)
    steps += [
        Step(
            f"depth:{d}",
            f"{sizes_label(d)} jobs waiting",
            est + d / 40_000,
            partial(fleet_drain, target, default, 1, min(n, d), d),
        )
        for d in plan.depths
    ]
    for size in plan.table_sizes:
        steps.append(
            Step(
                f"users:{size}",
                f"{sizes_label(size)} users",
                est,
                partial(
                    _at,
                    dbs,
                    target,
                    size,
                    partial(fleet_drain, settings=default, processes=1, jobs=n, depth=n),
                ),
            )
        )
        steps.append(
            Step(
                f"limit:{size}",
                f"raw pool limit, {sizes_label(size)} users",
                target.opts.limit_seconds + 1.5,
                partial(_at, dbs, target, size, partial(_limit, concurrency=DEFAULT_MAX_JOBS)),
            )
        )
    return steps


async def _limit(target: Target, tag: str, concurrency: int) -> dict[str, Any]:
    return await limit(target, "pool", concurrency, tag)


async def prepare_databases(base_url: str, sizes: Sequence[int]) -> dict[int, BenchDatabase]:
    """One database per table size (``<base>_growth_<size>``), seeded once and kept."""
    base = base_url.rsplit("/", 1)[-1].split("?")[0]
    dbs = {}
    for size in sizes:
        url = with_database(base_url, f"{base}_growth_{sizes_label(size).lower()}")
        say(f"database for {sizes_label(size)} users: {mask_url(url)}")
        dbs[size] = await prepare(url, size, show=True)
    return dbs


async def run(opts: Options, plan: Plan) -> dict[str, Any]:
    started = datetime.now(UTC)
    t0 = asyncio.get_running_loop().time()
    say(f"bench database {mask_url(opts.database_url)}, Redis {mask_url(opts.redis_url)}")
    main_db = await prepare(opts.database_url, opts.users, show=True)
    dbs = await prepare_databases(opts.database_url, plan.table_sizes)
    redis = Redis.from_url(opts.redis_url)
    try:
        target = Target(opts, main_db, redis)
        steps = plan_steps(target, plan, dbs)
        say(f"{len(steps)} measurements x {opts.rounds} round(s), {plan.jobs:,} jobs each")
        results = await execute(target, steps, opts.rounds)
    finally:
        await delete_tagged(redis, run_tag())
        await redis.aclose()
    return {
        "meta": {
            **run_meta(started, asyncio.get_running_loop().time() - t0, opts.rounds, opts.quick),
            "users": main_db.users,
        },
        "plan": dataclasses.asdict(plan),
        "settings": {
            "pool_of_max_jobs_sweep": POOL_OF_MAX_JOBS_SWEEP,
            "max_jobs_of_pool_sweep": MAX_JOBS_OF_POOL_SWEEP,
            "fleet": [FLEET_MAX_JOBS, FLEET_POOL],
            "default": [DEFAULT_MAX_JOBS, DEFAULT_POOL],
        },
        "measurements": report.aggregate(steps, results),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = bench_parser(
        "python -m bench.growth",
        __doc__,
        quick="about a minute",
        output="growth.json, performance-growth.png and growth.md",
    )
    return parser.parse_args(argv)


def options(args: argparse.Namespace, workdir: Path) -> Options:
    return section_options(args, workdir, limit_seconds=1.0 if args.quick else 4.0)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else Plan()
    with tempfile.TemporaryDirectory(prefix="bench-growth-") as scratch:
        opts = options(args, Path(scratch))
        data = asyncio.run(run(opts, plan))
    if opts.output is not None:
        json_path, png_path = opts.output / "growth.json", opts.output / "performance-growth.png"
    else:
        json_path = ROOT / "bench/results/growth.json"
        png_path = ROOT / "docs/performance-growth.png"
    report.write_json(data, json_path)
    growth_report.plot(data, png_path)
    section = growth_report.markdown(data, png_path.name)
    if opts.output is not None:
        (opts.output / "growth.md").write_text(section)
        written = opts.output / "growth.md"
    else:
        latest = ROOT / "bench/results/latest.json"
        written = ROOT / "docs/performance.md"
        main_data = json.loads(latest.read_text())
        flow = flow_report.last_section(None)  # make bench-flow's section stays
        written.write_text(report.markdown(main_data, "performance.png", section + flow))
    out(growth_report.console_summary(data))
    out(f"\nwrote {json_path}, {png_path} and {written}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
