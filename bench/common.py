"""Small shared pieces: output, statistics, unique key tags, Redis clean-up and arq results."""

from __future__ import annotations

import json
import os
import pickle
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from arq.constants import result_key_prefix
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent
QUERY = "select * from users where id=$1"
Metrics = dict[str, Any]


def say(line: str = "") -> None:
    """Progress and warnings, on standard error (the report itself goes to standard output)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def median(values: Iterable[float | int | None]) -> float | None:
    found = [float(v) for v in values if v is not None]
    return statistics.median(found) if found else None


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile (``pct`` in 0..100) of unsorted values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, round(pct / 100 * len(ordered) + 0.4999))
    return float(ordered[min(rank, len(ordered)) - 1])


_run = uuid.uuid4().hex[:6]
_counter = 0


def new_tag() -> str:
    """A key tag unique to one measurement: every Redis key it creates contains it."""
    global _counter
    _counter += 1
    return f"bench{_run}x{_counter}"


def run_tag() -> str:
    """The part of every tag that is unique to this process (for the final clean-up)."""
    return f"bench{_run}x"


async def delete_tagged(redis: Redis, tag: str) -> int:
    """Delete every key containing ``tag`` (never FLUSHDB: the logical db may be shared)."""
    deleted = 0
    batch: list[bytes] = []
    async for key in redis.scan_iter(match=f"*{tag}*", count=2000):
        batch.append(key)
        if len(batch) >= 1000:
            deleted += int(await redis.unlink(*batch))
            batch = []
    if batch:
        deleted += int(await redis.unlink(*batch))
    return deleted


@dataclass(frozen=True)
class JobTiming:
    """One finished job, times in ms since the epoch as the queue recorded them."""

    enqueued: int
    started: int
    finished: int
    success: bool


def decode_pickle(raw: bytes) -> dict[str, Any]:
    # Only the bench's own bare-arq worker wrote these (arq's default pickle serializer).
    value = pickle.loads(raw)
    return value if isinstance(value, dict) else {}


def decode_json(raw: bytes) -> dict[str, Any]:
    value = json.loads(raw)
    return value if isinstance(value, dict) else {}


async def read_arq_results(
    redis: Redis, job_ids: Sequence[str], decode: Callable[[bytes], dict[str, Any]]
) -> list[JobTiming]:
    """The timings in arq's stored results (``et``, ``st``, ``ft`` in ms) of the jobs that have one."""
    timings: list[JobTiming] = []
    for start in range(0, len(job_ids), 1000):
        keys = [result_key_prefix + job_id for job_id in job_ids[start : start + 1000]]
        for raw in await redis.mget(keys):
            if raw is None:
                continue
            data = decode(raw)
            try:
                timings.append(
                    JobTiming(int(data["et"]), int(data["st"]), int(data["ft"]), bool(data["s"]))
                )
            except (KeyError, TypeError, ValueError):
                continue
    return timings


def run_meta(started: datetime, elapsed: float, rounds: int, quick: bool) -> dict[str, Any]:
    """What every bench run records about itself: when, how long, how many rounds, on what box."""
    return {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "duration_s": elapsed,
        "rounds": rounds,
        "quick": quick,
        "cpus": cpu_count(),
        "load_average": os.getloadavg(),
    }


def now() -> float:
    return time.time()


def cpu_count() -> int:
    return os.cpu_count() or 1
