"""``python -m bench.paired --against REV`` (``make bench-paired``): this tree's worker against
REV's, on the same DB-job drain, in interleaved rounds.

REV's tree is exported with ``git archive REV | tar -x`` and the working tree is copied (tracked and
untracked files) into scratch directories, so neither changes during the run and nothing is checked
out. Each round drains N ``get_user`` jobs (the same user ids every time) through each tree's own
``worker.Settings`` (``python -m arq worker.Settings --burst``, cwd and PYTHONPATH at that tree, this
interpreter), one after the other, the order alternating from round to round; each drain has a
queue name of its own on the bench's Redis db and database (the same as ``make bench``'s).

Prints, and writes to bench/results/paired.md and paired.json (or ``--output DIR``): jobs/s per round
of new and old, their medians and new/old.

``--tracing``: the new tree's workers trace (OTLP over HTTP to ``bench/otlp_sink.py``, which drops
what it gets); the old tree's never do. ``--against HEAD --tracing`` on a clean tree is tracing on vs
off. Without it no ``OTEL_*`` variable reaches either worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench import paired_report
from bench.common import ROOT, decode_json, delete_tagged, new_tag, read_arq_results, run_tag, say
from bench.database import BenchDatabase, prepare
from bench.options import parser as bench_parser
from bench.options import pool_for
from bench.otlp_sink import otlp_sink
from bench.paired_trees import (
    Tree,
    TreeError,
    check_importable,
    export_commit,
    resolve,
    snapshot_working_tree,
)
from bench.procs import Monitored, child_env
from bench.systems import ours_bulk_enqueue, summarize
from worker.core.masking import mask_url

SEED = 50  # the user ids of every drain
QUICK_JOBS = 300


@dataclass(frozen=True)
class PairedOptions:
    against: str
    settings: str
    jobs: int
    warmup: int
    concurrency: int
    rounds: int
    users: int
    target: float
    database_url: str
    redis_url: str
    quick: bool
    output: Path | None
    tracing: str | None = None  # the OTLP endpoint the new tree's workers export to (--tracing)


def parse_args(argv: list[str] | None) -> PairedOptions:
    parser = bench_parser(
        "python -m bench.paired",
        __doc__,
        quick=f"{QUICK_JOBS} jobs, 1 round, no warm-up",
        output="paired.md and paired.json (not bench/results/)",
    )
    parser.add_argument("--against", required=True, metavar="REV", help="the older commit")
    parser.add_argument("--jobs", type=int, help="jobs per drain (default 20,000)")
    parser.add_argument("--concurrency", type=int, default=50, help="WORKER_MAX_JOBS (50)")
    parser.add_argument("--warmup", type=int, help="jobs of one unmeasured drain per tree (1,000)")
    parser.add_argument("--users", type=int, default=100_000, help="users in the bench table")
    parser.add_argument("--settings", default="worker.Settings", help="each tree's arq settings")
    parser.add_argument("--target", type=float, default=0.95, help="wanted new/old (0.95)")
    parser.add_argument(
        "--tracing", action="store_true", help="the new tree's workers trace (OTLP to a local sink)"
    )
    args = parser.parse_args(argv)
    jobs = args.jobs or (QUICK_JOBS if args.quick else 20_000)
    for name, value in (("--jobs", jobs), ("--concurrency", args.concurrency)):
        if value < 1:
            parser.error(f"{name} must be at least 1")
    warmup = args.warmup if args.warmup is not None else (0 if args.quick else 1_000)
    return PairedOptions(
        against=args.against,
        settings=args.settings,
        jobs=jobs,
        warmup=max(warmup, 0),
        concurrency=args.concurrency,
        rounds=1 if args.quick else max(args.rounds, 1),
        users=max(args.users, 1),
        target=args.target,
        database_url=args.database_url,
        redis_url=args.redis_url,
        quick=bool(args.quick),
        output=args.output,
        tracing="on" if args.tracing else None,
    )


def worker_env(tree: Tree, opts: PairedOptions, db: BenchDatabase, queue: str) -> dict[str, str]:
    """A measured worker's environment: the bench's settings only, imports from ``tree``; with
    ``--tracing``, the new tree's traces (OTLP to the sink)."""
    env = child_env(
        {
            "PYTHONPATH": str(tree.path),
            "DATABASE_URL": db.url,
            "REDIS_URL": opts.redis_url,
            "QUEUE_NAME": queue,
            "CRON_DEACTIVATE": "",  # no scheduled job inside a measurement
            "METRICS_PORT": "0",  # no HTTP endpoint: nothing to collide with on a shared box
            "WORKER_MAX_JOBS": str(opts.concurrency),
            "PG_POOL_MAX_SIZE": str(pool_for(opts.concurrency)),
        }
    )
    env = {key: value for key, value in env.items() if not key.startswith("OTEL_")}
    if opts.tracing and tree.label == "new":
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=opts.tracing, OTEL_SERVICE_NAME="bench-paired")
    return env


async def drain(
    tree: Tree, opts: PairedOptions, db: BenchDatabase, redis: Redis, jobs: int
) -> dict[str, Any]:
    """Enqueue ``jobs`` get_user jobs on a queue of their own, run ``tree``'s worker in burst mode
    until it has drained them, and measure it (bench.systems.summarize: first start to last
    finish). Every job must have finished, successfully."""
    tag = new_tag()
    queue = f"{tag}:queue"
    rnd = random.Random(SEED)
    ids = [f"{tag}-{i}" for i in range(jobs)]
    payloads = [
        (job_id, {"f": "get_user", "a": [], "k": {"user_id": rnd.randint(1, db.max_user_id)}})
        for job_id in ids
    ]
    proc = Monitored(
        argv=["-m", "arq", opts.settings, "--burst"],
        env=worker_env(tree, opts, db, queue),
        workdir=tree.path,  # its cwd, and where its log goes
        name=f"{tag}-{tree.label}",
        admin_url=db.admin_url,
        database=db.name,
        queue_length=lambda: redis.zcard(queue),
    )
    load = os.getloadavg()[0]  # the box's load as the drain starts (others may share it)
    try:
        await ours_bulk_enqueue(redis, queue, payloads)
        try:
            await proc.start()
            code = await proc.wait(timeout=60 + jobs / 25)
        finally:
            await proc.stop()
        if code != 0:
            raise TreeError(
                details=f"{tree.label} worker exited with {code}; its log ends:\n{proc.log_tail()}"
            )
        timings = await read_arq_results(redis, ids, decode_json)
    finally:
        await delete_tagged(redis, tag)
    failed = sum(1 for t in timings if not t.success)
    if len(timings) != jobs or failed:
        raise TreeError(
            details=f"{tree.label} worker: {len(timings)} of {jobs} jobs have a result, {failed} "
            f"failed; its log ends:\n{proc.log_tail()}"
        )
    return {**summarize(timings, proc, jobs), "load_average_1m": load}


def _clock(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    return f"{seconds // 60}:{seconds % 60:02d}"


async def measure(
    trees: tuple[Tree, Tree], opts: PairedOptions, db: BenchDatabase, redis: Redis
) -> list[dict[str, Any]]:
    """The warm-up drains, then ``opts.rounds`` rounds of one drain per tree, new first in odd
    rounds and old first in even ones; one dict per round."""
    loop = asyncio.get_running_loop()
    begun = loop.time()
    if opts.warmup:
        for tree in trees:
            say(f"warm-up: {tree.label} drains {opts.warmup:,} jobs (not measured)")
            await drain(tree, opts, db, redis, opts.warmup)
    rounds: list[dict[str, Any]] = []
    took: list[float] = []
    total = 2 * opts.rounds
    for number in range(1, opts.rounds + 1):
        order = trees if number % 2 else trees[::-1]
        found: dict[str, Any] = {"round": number, "order": [t.label for t in order]}
        for tree in order:
            t0 = loop.time()
            metrics = await drain(tree, opts, db, redis, opts.jobs)
            took.append(loop.time() - t0)
            found[tree.label] = metrics
            left = total - len(took)
            say(
                f"[{len(took)}/{total}] round {number}/{opts.rounds}  {tree.label:<3}  "
                f"{opts.jobs:,} jobs  {paired_report.rate(metrics.get('jobs_per_s'))} jobs/s  "
                f"{took[-1]:5.1f}s  elapsed {_clock(loop.time() - begun)}  "
                f"ETA {_clock(left * sum(took) / len(took))}"
            )
        rounds.append(found)
    return rounds


async def run(opts: PairedOptions, scratch: Path) -> dict[str, Any]:
    started = datetime.now(UTC)
    t0 = asyncio.get_running_loop().time()
    commit, subject = resolve(opts.against)
    say(f"new: the working tree; old: {subject} (git archive into {scratch})")
    new = snapshot_working_tree(scratch / "new")
    old = export_commit(commit, subject, scratch / "old")
    say(f"bench database {mask_url(opts.database_url)}, Redis {mask_url(opts.redis_url)}")
    db = await prepare(opts.database_url, opts.users, show=True)
    for tree in (new, old):
        check_importable(tree, opts.settings, worker_env(tree, opts, db, "unused"))
    say(
        f"{opts.rounds} round(s) x 2 drains of {opts.jobs:,} get_user jobs at C = "
        f"{opts.concurrency} (pool {pool_for(opts.concurrency)})"
    )
    redis = Redis.from_url(opts.redis_url)
    try:
        rounds = await measure((new, old), opts, db, redis)
    finally:
        await delete_tagged(redis, run_tag())
        await redis.aclose()
    return paired_report.data(
        opts=vars(opts) | {"output": None if opts.output is None else str(opts.output)},
        trees={"new": new, "old": old},
        commit=commit,
        rounds=rounds,
        started=started,
        elapsed=asyncio.get_running_loop().time() - t0,
        db=db,
    )


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-paired-") as scratch, otlp_sink() as sink:
        if opts.tracing:
            opts = dataclasses.replace(opts, tracing=sink.url)
        try:
            data = asyncio.run(run(opts, Path(scratch)))
        except TreeError as exc:
            say(f"bench.paired: {exc}")
            return 1
        if opts.tracing:
            data["tracing"] = {"otlp_requests": sink.requests, "otlp_bytes": sink.bytes}
            say(
                f"tracing: the new tree exported {sink.requests} OTLP requests, {sink.bytes:,} bytes"
            )
    folder = opts.output if opts.output is not None else ROOT / "bench/results"
    md_path, json_path = paired_report.write(data, folder)
    sys.stdout.write(paired_report.table(data) + "\n")
    sys.stdout.write(f"\nwrote {md_path} and {json_path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
