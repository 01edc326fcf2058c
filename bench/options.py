"""What one bench run measures, and how long each measurement lasts (full run or ``--quick``)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/bench_worker"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"
SYSTEMS = ("arq", "ours", "saq")
SYSTEM_LABELS = {
    "arq": "bare arq (defaults)",
    "ours": "this worker (defaults)",
    "saq": "SAQ (defaults)",
    "limit": "raw asyncpg pool (limit)",
}
JOB_KINDS = ("noop", "db")
BULK_FACTOR = 5  # a bulk enqueue of 4,000 jobs lasts ~50 ms: too short a window to time well
POOL_CAP = 20  # every system's pool: min(C, 20), as in the limit measurement


def pool_for(concurrency: int) -> int:
    return min(concurrency, POOL_CAP)


@dataclass(frozen=True)
class Options:
    database_url: str
    redis_url: str
    rounds: int
    quick: bool
    users: int
    jobs: int  # jobs per drain
    concurrencies: tuple[int, ...]
    connect_concurrencies: tuple[int, ...]
    limit_seconds: float
    connect_seconds: float
    latency_rate: float
    latency_seconds: float
    idle_seconds: float
    enqueue_jobs: int  # one by one and gathered; bulk enqueues BULK_FACTOR times as many
    workdir: Path
    output: Path | None
    relay_rows: int = 20_000  # outbox rows committed at once for the relay's throughput
    node_jobs: int = 50_000  # jobs of the TypeScript client's bulk enqueue


def default_urls() -> tuple[str, str]:
    return (
        os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
        os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL),
    )


def parser(prog: str, description: str | None, quick: str, output: str) -> argparse.ArgumentParser:
    """The options every bench command has: rounds, a quick smoke run, where it measures and where
    it writes (``output``: what ``--output`` replaces)."""
    database_url, redis_url = default_urls()
    found = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    found.add_argument("--rounds", type=int, default=3, help="rounds (medians are over these)")
    found.add_argument("--quick", action="store_true", help=f"a tiny smoke run ({quick})")
    found.add_argument("--database-url", default=database_url, help="the bench database")
    found.add_argument("--redis-url", default=redis_url, help="the bench's Redis logical db")
    found.add_argument("--output", type=Path, help=f"write {output} here instead")
    return found


def section_options(
    args: argparse.Namespace, workdir: Path, jobs: int = 0, limit_seconds: float = 0.0
) -> Options:
    """Options of a bench section that runs its own drains (growth, flow, adaptive): the command
    line's URLs, rounds and --quick, every phase of the main bench off."""
    quick = bool(args.quick)
    return Options(
        database_url=args.database_url,
        redis_url=args.redis_url,
        rounds=max(args.rounds, 1),
        quick=quick,
        users=2_000 if quick else 100_000,
        jobs=jobs,
        concurrencies=(),
        connect_concurrencies=(),
        limit_seconds=limit_seconds,
        connect_seconds=0,
        latency_rate=0,
        latency_seconds=0,
        idle_seconds=0,
        enqueue_jobs=0,
        workdir=workdir,
        output=args.output,
    )
