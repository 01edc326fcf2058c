"""A running worker's operations side: its HTTP endpoint on METRICS_PORT, and its health record in
Redis (written by ``worker/runtime/health_record.py``, read by ``worker/queue/health.py``):

* ``GET /metrics``: Prometheus metrics (``worker/runtime/metrics.py``), queue gauges read at scrape time
  (and the flow-control ones, ``worker/runtime/flow_metrics.py``); under ``METRICS_AUTH=bearer``
  only with ``Authorization: Bearer <METRICS_TOKEN>``, else 401 (the same answer whatever was wrong);
* ``GET /healthz``: liveness, 200 while the consumer loop makes progress (its heartbeat is younger
  than three HEALTH_CHECK_INTERVALs, or it is draining on shutdown), else 503;
* ``GET /readyz``: readiness, 200 while PostgreSQL and Redis answer, else 503 with the reason.

``/healthz`` and ``/readyz`` are never authenticated: the kubelet's probes send no credentials.
The endpoint runs on the worker's own event loop: a loop blocked by a job cannot answer, which a
probe sees as a failure, as it should.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from worker.queue.flow_usage import flow_state
from worker.queue.stats import queue_stats
from worker.runtime.flow_metrics import MAX_GATES, MAX_SCAN, FlowGauges
from worker.runtime.health_record import PROBE_TIMEOUT, HealthRecord
from worker.runtime.http_head import MAX_LINE, HeadRefused, discard_rest, read_head
from worker.runtime.metrics import CONTENT_TYPE, QueueGauges

if TYPE_CHECKING:
    import asyncpg

    from worker.config import Config
    from worker.runtime.consumer import Consumer
    from worker.runtime.execution import Runtime

logger = logging.getLogger(__name__)

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}
REASONS[405] = "Method Not Allowed"
REASONS.update({431: "Request Header Fields Too Large", 503: "Service Unavailable"})
CHALLENGE = 'Bearer realm="pgpool-worker metrics"'  # every 401's WWW-Authenticate
UNAUTHORIZED = b"unauthorized: /metrics needs its bearer token\n"


class Operations:
    """Serves this worker's HTTP endpoint and writes its health record (see the module docstring)."""

    def __init__(self, config: Config, health: HealthRecord) -> None:
        self.config = config
        self.health = health
        self.consumer = health.consumer
        self.redis = health.redis
        self.metrics = health.metrics
        self.flow_gauges = FlowGauges(self.metrics.registry)  # worker/runtime/flow_metrics.py
        self.server: asyncio.Server | None = None
        self.port: int | None = None
        # METRICS_AUTH=bearer: the token's digest (a missing token, which Config refuses, lets none in).
        token = config.metrics_token.get_secret_value() if config.metrics_token else ""
        self._token_digest = hashlib.sha256(token.encode()).digest() if token else b""

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
                self.port = self.health.port = self.server.sockets[0].getsockname()[1]
                logger.info(
                    "metrics, /healthz and /readyz on http://%s:%d (/metrics: %s)",
                    host,
                    self.port,
                    "bearer token" if self.config.metrics_auth == "bearer" else "no authentication",
                )
        self.health.start()

    async def stop(self) -> None:
        """Stop the endpoint and the record loop, and remove the record (a clean exit)."""
        await self.health.stop()
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PROBE_TIMEOUT):
                    await self.server.wait_closed()
        await self.health.remove()

    # ---- metrics ------------------------------------------------------------------------------

    async def metrics_text(self) -> bytes:
        """The metrics, with the state gauges (queue, pool, jobs in progress) read now."""
        queue = None
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                stats = await queue_stats(self.redis, self.config.queue_name, self.config.job_lease)
            queue = QueueGauges(stats.due, stats.scheduled, stats.oldest_waiting_age, stats.blocked)
            async with asyncio.timeout(PROBE_TIMEOUT):  # pauses and limits, bounded
                flow = await flow_state(
                    self.redis, self.config.queue_name, max_gates=MAX_GATES, max_scan=MAX_SCAN
                )
            self.flow_gauges.set(flow)
        except (RedisError, OSError, TimeoutError):
            self.metrics.redis_error("metrics")
        self.metrics.set_state(
            self.consumer.running,
            self.consumer.worker.max_jobs,
            self.health.pool,
            queue,
            self.health.heartbeat_age(),
            limit=self.consumer.max_jobs,
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
                    method, path, headers = await read_head(reader)
                except HeadRefused as refused:
                    status, body = refused.context["status"], f"{refused}\n".encode()
                    writer.write(_response(status, "text/plain", body))
                    await discard_rest(reader, writer)  # so that the client reads the answer
                    return
                status, content_type, body = await self._route(method, path, headers)
                writer.write(_response(status, content_type, b"" if method == "HEAD" else body))
                await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    def authorized(self, headers: dict[str, str]) -> bool:
        """Whether a request may read /metrics: always under METRICS_AUTH=none; under bearer, its
        ``Authorization: Bearer`` token is METRICS_TOKEN (their digests compared in constant time)."""
        if self.config.metrics_auth == "none":
            return True
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        given = hashlib.sha256(credentials.strip().encode("latin-1")).digest()
        match = hmac.compare_digest(given, self._token_digest)
        return match and scheme.lower() == "bearer" and bool(self._token_digest)

    async def _route(
        self, method: str, path: str, headers: dict[str, str]
    ) -> tuple[int, str, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"only GET\n"
        if path == "/metrics":
            if not self.authorized(headers):  # before any Redis read
                return 401, "text/plain", UNAUTHORIZED
            return 200, CONTENT_TYPE, await self.metrics_text()
        if path == "/healthz":
            live = self.health.live()
            state = {"live": live, "heartbeat_age": round(self.health.heartbeat_age(), 3)}
            return (200 if live else 503), "application/json", json.dumps(state).encode()
        if path == "/readyz":
            checks = await self.health.readiness()
            ready = all(v == "ok" for v in checks.values()) and self.consumer.accepting
            report: dict[str, Any] = {"ready": ready, "draining": not self.consumer.accepting}
            report.update(checks)
            return (200 if ready else 503), "application/json", json.dumps(report).encode()
        if path == "/":
            return 200, "text/plain", b"/metrics /healthz /readyz\n"
        return 404, "text/plain", b"not found: /metrics /healthz /readyz\n"


def _response(status: int, content_type: str, body: bytes) -> bytes:
    challenge = f"WWW-Authenticate: {CHALLENGE}\r\n" if status == 401 else ""
    head = (
        f"HTTP/1.1 {status} {REASONS[status]}\r\nContent-Type: {content_type}\r\n{challenge}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


async def start_operations(
    rt: Runtime, consumer: Consumer, pool: asyncpg.Pool[asyncpg.Record]
) -> Operations:
    """Count the runtime's Redis errors and dead letters, and start the record and the endpoint."""
    metrics = rt.metrics
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
    ops = Operations(rt.config, HealthRecord(rt.config, consumer, pool, rt.redis, metrics))
    await ops.start()
    return ops
