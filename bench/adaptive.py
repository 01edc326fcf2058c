"""``python -m bench.adaptive`` (``make bench-adaptive``): ``WORKER_MAX_JOBS=auto`` against fixed
limits (issue #12's adaptive concurrency targets), measured side by side in one run, the variants
of a round in turn (their order rotating), every worker on a pool of 20 (PG_POOL_MAX_SIZE=20):

- **DB job.** N ``get_user`` jobs drained by a burst worker with ``WORKER_MAX_JOBS=auto`` and with
  10, 20, 50, 100 and 200; throughput from the first start to the last finish (the results' ``st``
  and ``ft``). The figure: per round, auto over the best fixed limit of that round; the median.
- **Slowed database.** M ``held_user`` jobs (``bench/adaptive_settings.py``: each holds its
  connection HOLD s in ``pg_sleep``) with ``PG_ACQUIRE_TIMEOUT`` = ACQUIRE_TIMEOUT, by ``auto`` and
  by a fixed 200: the acquire timeouts counted and the p99 of the waits for a connection (each
  job times its own), against ``PG_ACQUIRE_TIMEOUT / 4``.

Each worker starts fresh, so ``auto`` starts at the pool's size and its slow start is in every
figure. Writes bench/results/adaptive.json and the "Adaptive concurrency" section of
docs/performance.md (or adaptive.json and adaptive.md into ``--output DIR``). Figures, never
asserted anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from arq.constants import result_key_prefix
from redis.asyncio import Redis

from bench import adaptive_report, report
from bench.common import (
    decode_json,
    delete_tagged,
    new_tag,
    out,
    percentile,
    read_arq_results,
    run_meta,
    run_tag,
    say,
)
from bench.database import prepare
from bench.options import Options, section_options
from bench.options import parser as bench_parser
from bench.procs import Monitored, child_env
from bench.systems import BenchError, Target, ours_bulk_enqueue, summarize

SETTINGS = "bench.adaptive_settings.AdaptiveBenchSettings"
POOL = 20
STATIC = (10, 20, 50, 100, 200)
FAST = ("auto", *(str(c) for c in STATIC))  # WORKER_MAX_JOBS of the DB-job drains
SLOWED = ("auto", "200")  # ... and of the slowed database's
HOLD = 0.15  # seconds each slowed job holds its connection
ACQUIRE_TIMEOUT = 1.0  # PG_ACQUIRE_TIMEOUT of the slowed drains: a fixed 200 waits ~9 x HOLD


def _worker(target: Target, queue: str, name: str, settings: dict[str, str]) -> Monitored:
    env = {
        "DATABASE_URL": target.db.url,
        "REDIS_URL": target.opts.redis_url,
        "QUEUE_NAME": queue,
        "CRON_DEACTIVATE": "",  # no scheduled job inside a measurement
        "PG_POOL_MAX_SIZE": str(POOL),
        **settings,
    }
    return Monitored(
        argv=["-m", "arq", SETTINGS, "--burst"],
        env=child_env(env),
        workdir=target.opts.workdir,
        name=name,
        admin_url=target.db.admin_url,
        database=target.db.name,
        queue_length=lambda: target.redis.zcard(queue),
    )


async def _run_worker(proc: Monitored, n: int, per_job: float) -> None:
    try:
        await proc.start()
        code = await proc.wait(timeout=60 + n * per_job)
    finally:
        await proc.stop()
    if code != 0:
        raise BenchError(f"{proc.name} worker exited with {code}:\n{proc.log_tail()}")


async def fast_drain(target: Target, max_jobs: str, n: int) -> dict[str, Any]:
    """N ``get_user`` jobs under WORKER_MAX_JOBS=``max_jobs``: throughput and the rest."""
    tag = new_tag()
    queue = f"{tag}:queue"
    try:
        job_ids = [f"{tag}-{i}" for i in range(n)]
        jobs = [
            (j, {"f": "get_user", "a": [], "k": {"user_id": u}})
            for j, u in zip(job_ids, target.user_ids(n, seed=7), strict=True)
        ]
        await ours_bulk_enqueue(target.redis, queue, jobs)
        proc = _worker(target, queue, f"{tag}-db-{max_jobs}", {"WORKER_MAX_JOBS": max_jobs})
        await _run_worker(proc, n, 1 / 50)
        timings = await read_arq_results(target.redis, job_ids, decode_json)
        return summarize(timings, proc, n)
    finally:
        await delete_tagged(target.redis, tag)


async def _held_results(redis: Redis, job_ids: list[str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for start in range(0, len(job_ids), 1000):
        keys = [result_key_prefix + j for j in job_ids[start : start + 1000]]
        for raw in await redis.mget(keys):
            if raw is not None:
                result = decode_json(raw).get("r")
                if isinstance(result, dict):
                    found.append(result)
    return found


async def slowed_drain(target: Target, max_jobs: str, n: int) -> dict[str, Any]:
    """N ``held_user`` jobs under WORKER_MAX_JOBS=``max_jobs``: acquire timeouts and waits."""
    tag = new_tag()
    queue = f"{tag}:queue"
    try:
        job_ids = [f"{tag}-{i}" for i in range(n)]
        jobs = [
            (j, {"f": "held_user", "a": [], "k": {"user_id": u, "hold": HOLD}})
            for j, u in zip(job_ids, target.user_ids(n, seed=11), strict=True)
        ]
        await ours_bulk_enqueue(target.redis, queue, jobs)
        settings = {"WORKER_MAX_JOBS": max_jobs, "PG_ACQUIRE_TIMEOUT": str(ACQUIRE_TIMEOUT)}
        proc = _worker(target, queue, f"{tag}-slowed-{max_jobs}", settings)
        await _run_worker(proc, n, HOLD)
        timings = await read_arq_results(target.redis, job_ids, decode_json)
        held = await _held_results(target.redis, job_ids)
        waits = [float(r["waited"]) for r in held]
        limits = [int(r["limit"]) for r in held if r.get("limit") is not None]
        return {
            **summarize(timings, proc, n),
            "timeouts": sum(1 for r in held if r.get("timed_out")),
            "wait_p50_s": percentile(waits, 50),
            "wait_p99_s": percentile(waits, 99),
            "wait_max_s": max(waits, default=None),
            "limit_p50": percentile([float(v) for v in limits], 50),
            "limit_max": max(limits, default=None),
        }
    finally:
        await delete_tagged(target.redis, tag)


def _rotated(variants: tuple[str, ...], r: int) -> tuple[str, ...]:
    return variants[r % len(variants) :] + variants[: r % len(variants)]


async def run(opts: Options, slowed_jobs: int) -> dict[str, Any]:
    started = datetime.now(UTC)
    t0 = asyncio.get_running_loop().time()
    db = await prepare(opts.database_url, opts.users, show=True)
    redis = Redis.from_url(opts.redis_url)
    rounds: list[dict[str, dict[str, dict[str, Any]]]] = []
    total = opts.rounds * (len(FAST) + len(SLOWED))
    done = 0
    try:
        target = Target(opts, db, redis)
        for r in range(opts.rounds):
            found: dict[str, dict[str, dict[str, Any]]] = {"db": {}, "slowed": {}}
            for max_jobs in _rotated(FAST, r):
                m = found["db"][max_jobs] = await fast_drain(target, max_jobs, opts.jobs)
                done += 1
                say(
                    f"[{done}/{total}] round {r + 1}: DB job, WORKER_MAX_JOBS={max_jobs}: "
                    f"{m['jobs_per_s'] or 0:,.0f} jobs/s"
                )
            for max_jobs in _rotated(SLOWED, r):
                m = found["slowed"][max_jobs] = await slowed_drain(target, max_jobs, slowed_jobs)
                done += 1
                say(
                    f"[{done}/{total}] round {r + 1}: slowed database, WORKER_MAX_JOBS={max_jobs}: "
                    f"{m['timeouts']} acquire timeouts, p99 wait {m['wait_p99_s'] or 0:.3f} s"
                )
            rounds.append(found)
    finally:
        await delete_tagged(redis, run_tag())
        await redis.aclose()
    return {
        "meta": run_meta(started, asyncio.get_running_loop().time() - t0, opts.rounds, opts.quick),
        "options": {
            "jobs": opts.jobs,
            "slowed_jobs": slowed_jobs,
            "pool": POOL,
            "static": list(STATIC),
            "hold_s": HOLD,
            "acquire_timeout_s": ACQUIRE_TIMEOUT,
        },
        "rounds": rounds,
        "figures": adaptive_report.figures(rounds, ACQUIRE_TIMEOUT),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = bench_parser(
        "python -m bench.adaptive",
        __doc__,
        quick="under a minute",
        output="adaptive.json and adaptive.md",
    )
    parser.set_defaults(rounds=5)
    parser.add_argument("--jobs", type=int, help="get_user jobs per drain (default 10,000)")
    parser.add_argument(
        "--slowed-jobs", type=int, help="held_user jobs per slowed drain (default 800)"
    )
    return parser.parse_args(argv)


def options(args: argparse.Namespace, workdir: Path) -> Options:
    return section_options(args, workdir, jobs=args.jobs or (300 if args.quick else 10_000))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    slowed = args.slowed_jobs or (300 if args.quick else 800)
    with tempfile.TemporaryDirectory(prefix="bench-adaptive-") as scratch:
        data = asyncio.run(run(options(args, Path(scratch)), slowed))
    section = adaptive_report.markdown(data)
    json_path, md_path = report.write_section(
        data, "adaptive", section, adaptive_report.replace_section, args.output
    )
    out(adaptive_report.console(data))
    out(f"\nwrote {json_path} and {md_path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
