"""A running worker's health record: written to Redis every HEALTH_CHECK_INTERVAL (its format and
readers: ``worker/queue/health.py``), with the liveness and readiness the HTTP endpoint
(``worker/runtime/operations.py``) also answers with:

* live: the consumer loop made progress (its heartbeat is younger than three
  HEALTH_CHECK_INTERVALs), or it is draining on shutdown;
* ready: PostgreSQL and Redis answer, each probe bounded by ``PROBE_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from worker.queue.health import INDEX_KEEP_MS, liveness_window, record_ttl
from worker.queue.keys import worker_key, workers_index_key

if TYPE_CHECKING:
    import asyncpg
    from redis.asyncio import Redis

    from worker.config import Config
    from worker.runtime.consumer import Consumer
    from worker.runtime.metrics import WorkerMetrics

logger = logging.getLogger(__name__)

PROBE_TIMEOUT = 2.0
HISTORY_SECONDS = 600
MAX_HISTORY = 120
LISTED_JOBS = 50


class HealthRecord:
    """Writes this worker's health record and checks its liveness and readiness."""

    def __init__(
        self,
        config: Config,
        consumer: Consumer,
        pool: asyncpg.Pool[asyncpg.Record],
        redis: Redis,
        metrics: WorkerMetrics,
    ) -> None:
        self.config = config
        self.consumer = consumer
        self.pool = pool
        self.redis = redis
        self.metrics = metrics
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.key = worker_key(config.queue_name, self.host, self.pid)
        self.interval = config.health_check_interval
        self.window = liveness_window(self.interval)
        self.started_at = time.time()
        samples = min(int(HISTORY_SECONDS / self.interval) + 1, MAX_HISTORY)
        self.history: deque[list[float]] = deque(maxlen=samples)
        self.checks: dict[str, str] = {"postgres": "not checked yet", "redis": "not checked yet"}
        self.port: int | None = None  # the HTTP endpoint's, once it listens
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start writing the record."""
        self.task = asyncio.create_task(self._record_loop())

    async def stop(self) -> None:
        """Stop writing the record."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def remove(self) -> None:
        """Remove the record (a clean exit), giving up after ``PROBE_TIMEOUT``."""
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(PROBE_TIMEOUT):
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.delete(self.key)
                    pipe.zrem(workers_index_key(self.config.queue_name), self.key)
                    await pipe.execute()

    def heartbeat_age(self) -> float:
        return max(time.time() - self.consumer.heartbeat, 0.0)

    def live(self) -> bool:
        """The consumer loop made progress within the window, or the worker is draining."""
        return not self.consumer.accepting or self.heartbeat_age() < self.window

    async def readiness(self) -> dict[str, str]:
        """Whether PostgreSQL and Redis answer this worker: ``{"postgres": "ok", "redis": ...}``."""
        postgres, redis = await asyncio.gather(
            self._probe(self._check_postgres()), self._probe(self._check_redis())
        )
        if redis != "ok":
            self.metrics.redis_error("health")
        self.checks = {"postgres": postgres, "redis": redis}
        return self.checks

    @staticmethod
    async def _probe(check: Any) -> str:
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                await check
        except TimeoutError:
            return f"no answer within {PROBE_TIMEOUT:g}s"
        except Exception as exc:  # noqa: BLE001  (any failure means "not ready", with its reason)
            return f"{type(exc).__name__}: {exc}"[:200]
        return "ok"

    async def _check_postgres(self) -> None:
        pool = self.pool
        if time.monotonic() - self.metrics.last_acquire < PROBE_TIMEOUT:
            return  # a job got a connection just now
        if pool.get_idle_size() == 0 and pool.get_size() >= pool.get_max_size():
            return  # every connection is busy with a job: the server answers them
        await pool.fetchval("SELECT 1")

    async def _check_redis(self) -> None:
        await self.redis.ping()

    def record(self) -> dict[str, Any]:
        """This worker's health record (what ``python -m worker status`` and the dashboard show)."""
        c, w, pool = self.consumer, self.consumer.worker, self.pool
        size, idle = pool.get_size(), pool.get_idle_size()
        jobs = [
            {"job_id": job_id, "function": a.name, "try": a.job_try, "started": a.started}
            for job_id, a in list(c.active.items())[:LISTED_JOBS]
            if a.started
        ]
        return {
            "id": f"{self.host}:{self.pid}",
            "host": self.host,
            "pid": self.pid,
            "queue": self.config.queue_name,
            "state": "running" if c.accepting else "draining",
            "started_at": round(self.started_at, 3),
            "written_at": round(time.time(), 3),
            "heartbeat": round(c.heartbeat, 3),
            "interval": self.interval,
            "liveness_window": self.window,
            "ready": all(v == "ok" for v in self.checks.values()),
            "checks": self.checks,
            "postgres_breaker": c.breaker.state() if c.breaker is not None else None,
            "max_jobs": c.max_jobs,  # now: WORKER_MAX_JOBS, or the adaptive limit
            "concurrency": None if c.limiter is None else c.limiter.as_dict(),
            "running": c.running,
            "complete": w.jobs_complete,
            "failed": w.jobs_failed,
            "retried": w.jobs_retried,
            "aborted": c.jobs_aborted,
            "pool": {"size": size, "idle": idle, "in_use": size - idle, "max": pool.get_max_size()},
            "metrics_port": self.port,
            "jobs": jobs,
            "history": list(self.history),
        }

    async def write_record(self) -> None:
        """Check readiness, take a history sample, and write the record with its expiry."""
        await self.readiness()
        c, w = self.consumer, self.consumer.worker
        in_use = self.pool.get_size() - self.pool.get_idle_size()
        now = time.time()
        self.history.append([round(now, 3), w.jobs_complete, w.jobs_failed, c.running, in_use])
        index = workers_index_key(self.config.queue_name)
        now_ms = int(now * 1000)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.key, json.dumps(self.record()), px=int(record_ttl(self.interval) * 1000))
            pipe.zadd(index, {self.key: now_ms})
            pipe.zremrangebyscore(index, "-inf", now_ms - INDEX_KEEP_MS)
            await pipe.execute()

    async def _record_loop(self) -> None:
        while True:
            try:
                await self.write_record()
            except (RedisError, OSError) as exc:
                self.metrics.redis_error("health")
                logger.warning("could not write the worker's health record: %s", exc)
            await asyncio.sleep(self.interval)
