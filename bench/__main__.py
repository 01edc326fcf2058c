"""``python -m bench`` (``make bench``): this worker measured side by side with the raw asyncpg
limit, connection-per-query, bare arq and SAQ; writes docs/performance.md, docs/performance.png and
bench/results/latest.json (or all three into ``--output DIR``).

Uses its own database (BENCH_DATABASE_URL, default .../bench_worker, created and seeded if needed)
and its own Redis logical db (BENCH_REDIS_URL, default db 12), deleting only the keys it created.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import platform
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench import adaptive_report, cost_report, flow_report, growth_report, producers_report, report
from bench.common import ROOT, delete_tagged, out, run_meta, run_tag, say
from bench.database import prepare
from bench.options import Options
from bench.options import parser as bench_parser
from bench.runner import execute, plan
from bench.systems import Target
from worker.core.masking import mask_url

PACKAGES = ("arq", "asyncpg", "redis", "hiredis", "uvloop", "saq", "pydantic")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = bench_parser(
        "python -m bench",
        __doc__,
        quick="under ~90 s",
        output="performance.md, performance.png and latest.json (not docs/ and bench/results/)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="measure nothing: write the report again from bench/results/latest.json (and "
        "growth.json)",
    )
    parser.add_argument(
        "--only",
        choices=["producers"],
        help="measure only these (producers: the outbox, the TypeScript and slim Python clients; "
        "writes bench/results/producers.json and the report's Producers section)",
    )
    parser.add_argument("--users", type=int, help="users in the bench table (default 100,000)")
    parser.add_argument("--jobs", type=int, help="jobs per drain (default 4,000; quick 300)")
    parser.add_argument(
        "--concurrency",
        help="comma-separated concurrencies (default 10,50,100; quick 10,50)",
    )
    return parser.parse_args(argv)


def options(args: argparse.Namespace, workdir: Path) -> Options:
    quick = bool(args.quick)
    default_cs = "10,50" if quick else "10,50,100"
    concurrencies = tuple(int(c) for c in (args.concurrency or default_cs).split(","))
    return Options(
        database_url=args.database_url,
        redis_url=args.redis_url,
        rounds=max(args.rounds, 1),
        quick=quick,
        users=args.users if args.users is not None else 100_000,
        jobs=args.jobs or (300 if quick else 4_000),
        concurrencies=concurrencies,
        connect_concurrencies=(10,) if quick else (10, 50),
        limit_seconds=1.0 if quick else 4.0,
        connect_seconds=1.0 if quick else 3.0,
        latency_rate=200.0,
        latency_seconds=1.5 if quick else 5.0,
        idle_seconds=1.5 if quick else 5.0,
        enqueue_jobs=300 if quick else 4_000,
        workdir=workdir,
        output=args.output,
        relay_rows=1_000 if quick else 20_000,
        node_jobs=1_000 if quick else 50_000,
    )


def git_description() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=10
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "worker", "jobs")
    return commit + (" + uncommitted changes in worker/ or jobs/" if dirty else "")


def source_digest() -> str:
    """A digest of the worker's code (worker/, jobs/), to notice it changing during a run."""
    digest = hashlib.sha256()
    for path in sorted([*ROOT.glob("worker/**/*.py"), *ROOT.glob("jobs/**/*.py")]):
        digest.update(path.relative_to(ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def package_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


async def run(opts: Options, only: str | None = None) -> dict[str, Any]:
    started = datetime.now(UTC)
    t0 = asyncio.get_running_loop().time()
    git, digest = git_description(), source_digest()
    say(f"bench database {mask_url(opts.database_url)}, Redis {mask_url(opts.redis_url)}")
    db = await prepare(opts.database_url, opts.users, show=True)
    redis = Redis.from_url(opts.redis_url)
    try:
        info = await redis.info("server")
        target = Target(opts, db, redis)
        steps = plan(target, only)
        say(f"{len(steps)} measurements x {opts.rounds} round(s), {opts.jobs:,} jobs per drain")
        results = await execute(target, steps, opts.rounds)
    finally:
        await delete_tagged(redis, run_tag())
        await redis.aclose()
    entries = report.aggregate(steps, results)
    versions = package_versions()
    versions["redis server"] = str(info.get("redis_version"))
    versions["postgresql"] = db.server_version
    return {
        "meta": {
            **run_meta(started, asyncio.get_running_loop().time() - t0, opts.rounds, opts.quick),
            "git": git,
            "worker_source_digest": digest,
            "worker_changed_during_run": source_digest() != digest,
            "users": db.users,
            "max_connections": db.max_connections,
            "redis_url": mask_url(opts.redis_url),
            "database": db.name,
            "versions": versions,
        },
        "options": {
            "jobs": opts.jobs,
            "concurrencies": list(opts.concurrencies),
            "connect_concurrencies": list(opts.connect_concurrencies),
            "limit_seconds": opts.limit_seconds,
            "connect_seconds": opts.connect_seconds,
            "latency_rate": opts.latency_rate,
            "latency_seconds": opts.latency_seconds,
            "idle_seconds": opts.idle_seconds,
            "enqueue_jobs": opts.enqueue_jobs,
            "relay_rows": opts.relay_rows,
            "node_jobs": opts.node_jobs,
        },
        "measurements": entries,
        "ratios": report.ratios(entries, opts.concurrencies) if only is None else {},
    }


def growth_section(output: Path | None) -> str:
    """The last ``make bench-growth`` run's section, kept in docs/performance.md (not in --output)."""
    path = ROOT / "bench/results/growth.json"
    if output is not None or not path.exists():
        return ""
    return growth_report.markdown(json.loads(path.read_text()), "performance-growth.png")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = args.output if args.output is not None else ROOT / "bench/results"
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        opts = options(args, Path(scratch))
        if (
            args.report_only
        ):  # the last run's numbers, written out again (the report's code changed)
            data = json.loads((ROOT / "bench/results/latest.json").read_text())
            producers = _last_producers(ROOT / "bench/results/producers.json")
        elif args.only == "producers":  # the rest of the page: the last full run's
            producers = producers_report.split(asyncio.run(run(opts, args.only)))
            data = json.loads((ROOT / "bench/results/latest.json").read_text())
        else:
            data = asyncio.run(run(opts))
            producers = producers_report.split(data)
    if opts.output is not None:
        md_path, png_path = opts.output / "performance.md", opts.output / "performance.png"
        json_path = opts.output / "latest.json"
    else:
        md_path, png_path = ROOT / "docs/performance.md", ROOT / "docs/performance.png"
        json_path = ROOT / "bench/results/latest.json"
    if args.only is None:
        report.write_json(data, json_path)
        report.plot(data, png_path)
    if producers is not None:
        report.write_json(producers, results / "producers.json")
    section = producers_report.markdown(producers) if producers is not None else ""
    md_path.parent.mkdir(parents=True, exist_ok=True)
    kept = growth_section(opts.output) + flow_report.last_section(opts.output)
    kept += adaptive_report.last_section(opts.output) + cost_report.last_section(opts.output)
    md_path.write_text(report.markdown(data, png_path.name, kept, section))
    if args.only is None:
        out(report.console_summary(data))
    if producers is not None:
        out(producers_report.console(producers))
    out(f"\nwrote {md_path}" + ("" if args.only else f", {png_path} and {json_path}") + "\n")
    return 0


def _last_producers(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


if __name__ == "__main__":
    sys.exit(main())
