"""A running worker's operations side: its health record in Redis (``worker/queue/health.py``) and its
HTTP endpoint on METRICS_PORT:

* ``GET /metrics``: Prometheus metrics (``worker/runtime/metrics.py``), queue gauges read at scrape time;
* ``GET /healthz``: liveness, 200 while the consumer loop makes progress (its heartbeat is younger
  than three HEALTH_CHECK_INTERVALs, or it is draining on shutdown), else 503;
* ``GET /readyz``: readiness, 200 while PostgreSQL and Redis answer, else 503 with the reason.

The endpoint runs on the worker's own event loop: a loop blocked by a job cannot answer, which a
probe sees as a failure, as it should.
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
from worker.queue.stats import queue_stats
from worker.runtime.http_head import MAX_LINE, HeadRefused, discard_rest, read_head
from worker.runtime.metrics import CONTENT_TYPE, QueueGauges, WorkerMetrics

if TYPE_CHECKING:
    import asyncpg
    from redis.asyncio import Redis

    from worker.config import Config
    from worker.runtime.consumer import Consumer
    from worker.runtime.execution import Runtime

logger = logging.getLogger(__name__)

PROBE_TIMEOUT = 2.0
HISTORY_SECONDS = 600
MAX_HISTORY = 120
LISTED_JOBS = 50
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
REASONS.update({431: "Request Header Fields Too Large", 503: "Service Unavailable"})


class Operations:
    """Writes this worker's health record and serves its HTTP endpoint (see the module docstring)."""

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
        self.server: asyncio.Server | None = None
        self.port: int | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Serve the endpoint (when METRICS_PORT is set) and start writing the record."""
        if self.config.metrics_port:
            host, port = self.config.metrics_host, self.config.metrics_port
            try:
                self.server = await asyncio.start_server(self._serve, host, port, limit=MAX_LINE)
            except OSError as exc:
                logger.warning(
                    "metrics endpoint not started: cannot listen on %s:%d (%s); give each worker "
                    "process its own METRICS_PORT",
                    host,
                    port,
                    exc,
                )
            else:
                self.port = self.server.sockets[0].getsockname()[1]
                logger.info("metrics, /healthz and /readyz on http://%s:%d", host, self.port)
        self.task = asyncio.create_task(self._record_loop())

    async def stop(self) -> None:
        """Stop the endpoint and the record loop, and remove the record (a clean exit)."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PROBE_TIMEOUT):
                    await self.server.wait_closed()
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(PROBE_TIMEOUT):
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.delete(self.key)
                    pipe.zrem(workers_index_key(self.config.queue_name), self.key)
                    await pipe.execute()

    # ---- health -------------------------------------------------------------------------------

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
            "max_jobs": w.max_jobs,
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

    # ---- metrics ------------------------------------------------------------------------------

    async def metrics_text(self) -> bytes:
        """The metrics, with the state gauges (queue, pool, jobs in progress) read now."""
        queue = None
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                stats = await queue_stats(self.redis, self.config.queue_name, self.config.job_lease)
            queue = QueueGauges(stats.due, stats.scheduled, stats.oldest_waiting_age)
        except (RedisError, OSError, TimeoutError):
            self.metrics.redis_error("metrics")
        self.metrics.set_state(
            self.consumer.running,
            self.consumer.worker.max_jobs,
            self.pool,
            queue,
            self.heartbeat_age(),
        )
        return self.metrics.exposition()

    # ---- HTTP ---------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer one request and close. A head over the bounds of ``worker/runtime/http_head.py`` gets
        431, a malformed request line 400; neither is logged (anyone who reaches the port can
        send them)."""
        try:
            async with asyncio.timeout(PROBE_TIMEOUT * 2):
                try:
                    method, path = await read_head(reader)
                except HeadRefused as refused:
                    status, body = refused.context["status"], f"{refused}\n".encode()
                    writer.write(_response(status, "text/plain", body))
                    await discard_rest(reader, writer)  # so that the client reads the answer
                    return
                status, content_type, body = await self._route(method, path)
                writer.write(_response(status, content_type, b"" if method == "HEAD" else body))
                await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _route(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"only GET\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE, await self.metrics_text()
        if path == "/healthz":
            live = self.live()
            state = {"live": live, "heartbeat_age": round(self.heartbeat_age(), 3)}
            return (200 if live else 503), "application/json", json.dumps(state).encode()
        if path == "/readyz":
            checks = await self.readiness()
            ready = all(v == "ok" for v in checks.values()) and self.consumer.accepting
            report: dict[str, Any] = {"ready": ready, "draining": not self.consumer.accepting}
            report.update(checks)
            return (200 if ready else 503), "application/json", json.dumps(report).encode()
        if path == "/":
            return 200, "text/plain", b"/metrics /healthz /readyz\n"
        return 404, "text/plain", b"not found: /metrics /healthz /readyz\n"


def _response(status: int, content_type: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status} {REASONS[status]}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


async def start_operations(rt: Runtime, pool: asyncpg.Pool[asyncpg.Record]) -> Operations:
    """Count the runtime's Redis errors and dead letters, and start the record and the endpoint."""
    metrics = rt.metrics
    assert rt.consumer is not None, "operations watch the consumer: start it first"
    rt.leases.on_error = lambda: metrics.redis_error("leases")
    rt.dead_letters.on_add = lambda letter: metrics.dead_lettered.labels(
        letter.function, letter.reason
    ).inc()

    def flush_error(exc: BaseException) -> None:
        if isinstance(exc, RedisError):
            metrics.redis_error("dead-letters")
        else:
            metrics.postgres_error(exc)

    rt.dead_letters.on_error = flush_error
    ops = Operations(rt.config, rt.consumer, pool, rt.redis, metrics)
    await ops.start()
    return ops
