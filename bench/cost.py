"""``python -m bench.cost`` (``make bench-cost``): what a job costs the worker in CPU ("Cost per
job"), at light load and at full load, beside what the same work costs without any queue.

Every tree (the working tree, copied as it is now; with ``--against REV`` also REV's tree, exported
with ``git archive`` as ``bench.paired`` does) runs its own ``python -m arq worker.Settings`` (not in
burst mode; cwd and PYTHONPATH at that tree, this interpreter, METRICS_PORT=0, CRON_DEACTIVATE="")
on a queue of its own. Per tree and round, the trees in turn (their order alternating):

- light load, a worker at its defaults, warmed up: its idle CPU %, then ``--rate`` ``get_user``
  jobs a second enqueued one by one for ``--seconds``: its CPU % of one core and µs per job
  (/proc, from the first enqueue to the last result), p50/p95 enqueue→finish (the results' et/ft);
- full load at C = 10, 50, 100 (a worker per C, WORKER_MAX_JOBS=C, PG_POOL_MAX_SIZE=min(C, 20)),
  warmed up, then the queue paused, ``--jobs`` jobs bulk-enqueued and the queue resumed: jobs/s
  from the first start to the last finish, and its CPU µs per job;
- a bulk enqueue of ``--bulk`` jobs with the tree's own ``JobClient.enqueue_many`` (validated,
  duplicate ids refused; bench/cost_bulk.py in a process of its own): jobs/s.

Once per round: the raw asyncpg pool without the reset query (``python -m bench.limit pool-keep``)
at C = 10, 50, 100, and the floor (``python -m bench.cost_floor``: the three round trips of a job at
light load, paced at ``--rate``, nothing else). Figures are medians over the rounds; targets are
reported, never asserted. Writes bench/results/cost.json and the "Cost per job" section of
docs/performance.md (or cost.json and cost.md into ``--output DIR``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench import cost_report, report
from bench.common import delete_tagged, out, run_tag, say
from bench.cost_phases import CONCURRENCIES, Bench, CostOptions, bulk, full, light, shared
from bench.database import prepare
from bench.options import parser as bench_parser
from bench.options import section_options
from bench.paired_trees import (
    Tree,
    TreeError,
    check_importable,
    export_commit,
    resolve,
    snapshot_working_tree,
)
from bench.procs import child_env
from bench.systems import BenchError, Target
from worker.core.masking import mask_url


def parse_args(argv: list[str] | None) -> CostOptions:
    parser = bench_parser(
        "python -m bench.cost", __doc__, quick="a few seconds a phase", output="cost.json, cost.md"
    )
    parser.add_argument("--against", metavar="REV", help="also measure REV's tree, interleaved")
    parser.add_argument("--rate", type=float, default=200.0, help="paced jobs a second (200)")
    parser.add_argument("--seconds", type=float, help="paced duration (20; quick 3)")
    parser.add_argument("--jobs", type=int, help="jobs per full-load drain (20,000; quick 1,000)")
    parser.add_argument("--bulk", type=int, help="jobs of the bulk enqueue (100,000; quick 5,000)")
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    found = CostOptions(
        against=args.against,
        rounds=max(args.rounds, 1),
        quick=quick,
        rate=args.rate,
        seconds=args.seconds if args.seconds is not None else (3.0 if quick else 20.0),
        jobs=args.jobs or (1_000 if quick else 20_000),
        bulk=args.bulk or (5_000 if quick else 100_000),
        warmup=100 if quick else 2_000,
        idle_seconds=1.0 if quick else 5.0,
        raw_seconds=1.0 if quick else 4.0,
        users=2_000 if quick else 100_000,
        database_url=args.database_url,
        redis_url=args.redis_url,
        output=args.output,
    )
    if found.rate <= 0 or found.seconds <= 0 or found.jobs < 1 or found.bulk < 1:
        parser.error("--rate, --seconds, --jobs and --bulk must be positive")
    return found


async def measure(bench: Bench, trees: list[Tree]) -> list[dict[str, Any]]:
    """``rounds`` rounds: each tree in turn (order alternating), then the shared figures."""
    progress = cost_report.Progress(bench.opts.rounds * (len(trees) * 5 + 1))
    rounds: list[dict[str, Any]] = []
    for number in range(1, bench.opts.rounds + 1):
        order = trees if number % 2 else trees[::-1]
        found: dict[str, Any] = {"round": number, "order": [t.label for t in order]}
        for tree in order:
            steps: list[tuple[str, Callable[[], Awaitable[dict[str, Any]]]]] = [
                ("light", partial(light, bench, tree)),
                *((f"full C={c}", partial(full, bench, tree, c)) for c in CONCURRENCIES),
                ("bulk", partial(bulk, bench, tree)),
            ]
            metrics: dict[str, Any] = {}
            for name, step in steps:
                got = await step()
                metrics |= got
                progress.done(
                    f"round {number}/{bench.opts.rounds}  {tree.label:<3} {name:<10}", got
                )
            found[tree.label] = metrics
        found["shared"] = await shared(bench)
        progress.done(f"round {number}/{bench.opts.rounds}  raw pool + floor", found["shared"])
        rounds.append(found)
    return rounds


async def run(opts: CostOptions, scratch: Path) -> dict[str, Any]:
    started = datetime.now(UTC)
    t0 = asyncio.get_running_loop().time()
    commit, subject = resolve(opts.against) if opts.against is not None else (None, "")
    trees = [snapshot_working_tree(scratch / "new")]
    if commit is not None:
        trees.append(export_commit(commit, subject, scratch / "old"))
    for tree in trees:
        if not (tree.path / "worker/queue/flow_admin.py").is_file():
            raise TreeError(details=f"{tree.label} tree has no queue pause (flow control)")
        say(f"{tree.label}: {tree.describe} ({tree.path})")
    say(f"bench database {mask_url(opts.database_url)}, Redis {mask_url(opts.redis_url)}")
    db = await prepare(opts.database_url, opts.users, show=True)
    for tree in trees:
        check_importable(tree, "worker.Settings", child_env({"PYTHONPATH": str(tree.path)}))
    namespace = argparse.Namespace(**vars(opts))
    target_opts = section_options(namespace, scratch / "work", limit_seconds=opts.raw_seconds)
    target_opts.workdir.mkdir(parents=True)
    redis = Redis.from_url(opts.redis_url)
    try:
        bench = Bench(opts, db, redis, Target(target_opts, db, redis))
        rounds = await measure(bench, trees)
    finally:
        await delete_tagged(redis, run_tag())
        await redis.aclose()
    elapsed = asyncio.get_running_loop().time() - t0
    return cost_report.data(vars(opts), trees, commit, rounds, started, elapsed, CONCURRENCIES)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-cost-") as scratch:
        try:
            data = asyncio.run(run(opts, Path(scratch)))
        except (TreeError, BenchError) as exc:
            say(f"bench.cost: {str(exc).strip()}")
            return 1
    section = cost_report.markdown(data)
    json_path, md_path = report.write_section(
        data, "cost", section, cost_report.replace_section, opts.output
    )
    out(cost_report.console(data))
    out(f"\nwrote {json_path} and {md_path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
