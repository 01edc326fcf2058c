"""What one bench run measures, and how long each measurement lasts (full run or ``--quick``)."""

from __future__ import annotations

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
    enqueue_jobs: int
    workdir: Path
    output: Path | None


def default_urls() -> tuple[str, str]:
    return (
        os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
        os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL),
    )
