"""Per-worker health records in Redis, and how readers (CLI, dashboard) interpret them.

arq's own health key (``<queue>:health-check``, read by ``arq --check worker.Settings``) is one per
queue: several workers overwrite each other's. Each worker of this project also writes its own
record, ``<queue>:workers:<host>:<pid>``, every HEALTH_CHECK_INTERVAL seconds, with an expiry, and
lists it in the sorted set ``<queue>:workers`` (scored by the time of the last write), so that
readers need no SCAN. A record holds the worker's counts, its readiness checks, its consumer's
heartbeat, its pool, the jobs it runs and a short history (throughput over the last minutes).

A worker is *live* while its consumer's heartbeat is younger than three intervals (or while it
drains on shutdown), and *ready* while PostgreSQL and Redis answer it.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from redis.asyncio import Redis

from worker.queue.keys import failures_key, workers_index_key

# Readers drop index entries whose record expired long ago; the writer trims them.
INDEX_KEEP_MS = 3_600_000
# A dead worker's record stays this long past its liveness window, listed as not live.
DEAD_RECORD_KEPT = 30.0


def liveness_window(interval: float) -> float:
    """A heartbeat older than this means the worker's consumer loop is stuck."""
    return 3 * interval


def record_ttl(interval: float) -> float:
    """A record outlives its liveness window, so that a stuck or killed worker shows as such for a
    while (a worker that exits cleanly deletes its record)."""
    return liveness_window(interval) + max(interval, DEAD_RECORD_KEPT)


def assess(record: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """``record`` with ``heartbeat_age``, ``live`` and ``healthy`` computed at ``now``."""
    now = time.time() if now is None else now
    age = max(now - float(record.get("heartbeat", 0)), 0.0)
    live = record.get("state") == "draining" or age < float(record.get("liveness_window", 0))
    return {
        **record,
        "heartbeat_age": round(age, 3),
        "live": live,
        "healthy": live and bool(record.get("ready")),
    }


async def read_workers(redis: Redis, queue: str) -> list[dict[str, Any]]:
    """The records of the queue's workers (those not expired), assessed now, by id."""
    keys = await redis.zrange(workers_index_key(queue), 0, -1)
    if not keys:
        return []
    values = await redis.mget(keys)
    now = time.time()
    records = [assess(json.loads(raw), now) for raw in values if raw is not None]
    return sorted(records, key=lambda r: str(r.get("id")))


async def recent_failures(redis: Redis, queue: str, count: int = 20) -> list[dict[str, Any]]:
    """The newest failed, retried and aborted tries (no job arguments), newest first."""
    raw = await redis.lrange(failures_key(queue), 0, count - 1)  # type: ignore[misc]
    return [json.loads(item) for item in raw]


# A history sample: [time, jobs complete, jobs failed, jobs running, pool connections in use].
T, COMPLETE, FAILED, RUNNING, POOL_IN_USE = range(5)


def throughput(
    records: list[dict[str, Any]], bucket: float = 10.0, now: float | None = None
) -> list[dict[str, float]]:
    """Jobs done and failed per second, and pool connections in use, summed over the workers'
    histories in ``bucket``-second steps (oldest first), the step still under way (at ``now``)
    left out. ``bucket`` should be at least the workers' HEALTH_CHECK_INTERVAL, the spacing of
    their samples."""
    ongoing = int((time.time() if now is None else now) // bucket)
    steps: dict[int, dict[str, float]] = {}
    for record in records:
        history = record.get("history") or []
        in_use: dict[int, list[float]] = {}
        for before, after in itertools.pairwise(history):
            if after[T] <= before[T]:
                continue
            key = int(after[T] // bucket)
            if key >= ongoing:
                continue
            step = steps.setdefault(key, {"done": 0.0, "failed": 0.0, "in_use": 0.0})
            step["done"] += max(after[COMPLETE] - before[COMPLETE], 0)
            step["failed"] += max(after[FAILED] - before[FAILED], 0)
            in_use.setdefault(key, []).append(after[POOL_IN_USE])
        for key, values in in_use.items():
            steps[key]["in_use"] += sum(values) / len(values)
    return [
        {
            "t": key * bucket,
            "jobs_per_s": round(steps[key]["done"] / bucket, 2),
            "failed_per_s": round(steps[key]["failed"] / bucket, 2),
            "pool_in_use": round(steps[key]["in_use"], 2),
        }
        for key in sorted(steps)
    ]
