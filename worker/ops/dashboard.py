"""The web dashboard: ``python -m worker dashboard --port 8080`` (a Starlette app on uvicorn).

One page (``/``, ``worker/ops/dashboard.html``) that refreshes itself every two seconds from
``/api/overview``: the queue, the jobs in progress, recent failures and dead letters, the outbox
(rows not yet relayed, the oldest one's age and the relay lag, as ``python -m worker status`` shows
them), flow control (paused job names, each limit with its jobs in use and blocked:
``worker/queue/flow_usage.py``), the workers with their health, pool usage and throughput over the last minutes (from the
workers' health records, ``worker/queue/health.py``), and the audit log of the actions.

Every route but ``/healthz`` needs a signed-in viewer or operator (worker/ops/dashboard_auth.py);
operators act through ``POST /api/actions/...`` (worker/ops/dashboard_routes.py). No job's
arguments or result are shown to anyone. Text is inserted with ``textContent`` only, so job ids
and error messages cannot inject markup.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
from arq.connections import ArqRedis, create_pool
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from worker.config import Config
from worker.db.dead_letters import count_letters, list_letters
from worker.db.outbox import outbox_summary
from worker.db.pool import create_reader_pool
from worker.ops.dashboard_auth import Authenticator, AuthMiddleware, load_settings
from worker.ops.dashboard_routes import ActionEndpoints
from worker.queue.connection import redis_settings
from worker.queue.flow_usage import POLL_GATES, POLL_SCAN, flow_state
from worker.queue.health import read_workers, recent_failures, throughput
from worker.queue.stats import queue_stats

PG_TIMEOUT = 3.0
DASHBOARD_ROLE = "dashboard"  # its pool's application_name: pgpool-worker-dashboard
HISTORY_BUCKET = 10.0


class Sources:
    """The dashboard's connections: Redis always, PostgreSQL (dead letters) when it answers."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.redis: ArqRedis | None = None
        self.pool: asyncpg.Pool[asyncpg.Record] | None = None

    async def open(self) -> None:
        self.redis = await create_pool(redis_settings(self.config))

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
        if self.pool is not None:
            await self.pool.close()

    async def postgres(self) -> asyncpg.Pool[asyncpg.Record]:
        if self.pool is None:
            self.pool = await create_reader_pool(self.config, DASHBOARD_ROLE)
        return self.pool

    async def dead_letters(self) -> dict[str, Any]:
        try:
            async with asyncio.timeout(PG_TIMEOUT):
                pool = await self.postgres()
                async with pool.acquire() as conn:
                    counts = await count_letters(conn)
                    recent = await list_letters(conn, 10)
        except Exception as exc:  # noqa: BLE001  (shown on the page; the rest still renders)
            return {"error": f"PostgreSQL: {type(exc).__name__}: {exc}"[:200]}
        return {
            **counts,
            "recent": [
                {k: letter[k] for k in ("id", "job_id", "function", "reason", "error_type")}
                | {"attempts": letter["attempts"], "failed_at": letter["failed_at"].timestamp()}
                for letter in recent
            ],
        }

    async def outbox(self) -> dict[str, Any]:
        """The outbox as ``python -m worker status`` shows it (``outbox_summary``)."""
        try:
            async with asyncio.timeout(PG_TIMEOUT):
                pool = await self.postgres()
                async with pool.acquire() as conn:
                    return await outbox_summary(conn, self.config.queue_name)
        except Exception as exc:  # noqa: BLE001  (shown on the page; the rest still renders)
            return {"error": f"PostgreSQL: {type(exc).__name__}: {exc}"[:200]}

    async def overview(self) -> dict[str, Any]:
        assert self.redis is not None
        queue = self.config.queue_name
        stats = await queue_stats(self.redis, queue, self.config.job_lease)
        records = await read_workers(self.redis, queue)
        live = [w for w in records if w["live"]]
        in_progress = [{**job, "worker": w["id"]} for w in live for job in (w.get("jobs") or [])]
        bucket = max([HISTORY_BUCKET, *(float(w.get("interval", 0)) for w in records)])
        pool = {
            key: sum(int((w.get("pool") or {}).get(key, 0)) for w in live)
            for key in ("in_use", "size", "max")
        }
        totals = {
            key: sum(int(w.get(key, 0)) for w in records)
            for key in ("complete", "failed", "retried", "aborted")
        }
        return {
            "queue": queue,
            "generated_at": time.time(),
            "jobs": {
                "waiting": stats.waiting,
                "in_progress": sum(int(w.get("running", 0)) for w in live),
                "scheduled": stats.scheduled,
                "blocked": stats.blocked,
                "oldest_waiting_age_s": round(stats.oldest_waiting_age, 3),
            },
            # Pauses and limits with their use, as `status` shows them (flow_usage.py).
            "flow": (
                await flow_state(self.redis, queue, max_gates=POLL_GATES, max_scan=POLL_SCAN)
            ).view(),
            "workers": [
                {k: v for k, v in w.items() if k not in ("history", "jobs")} for w in records
            ],
            "in_progress": sorted(in_progress, key=lambda j: j.get("started", 0)),
            "failures": await recent_failures(self.redis, queue, 10),
            "dead_letters": await self.dead_letters(),
            "outbox": await self.outbox(),
            "pool": pool,
            "totals": totals,
            "throughput": {"bucket_s": bucket, "series": throughput(records, bucket)},
        }


def create_app(
    config: Config, auth: Authenticator | None = None, host: str = "127.0.0.1"
) -> Starlette:
    """The dashboard for ``config``'s queue, Redis and database, behind ``auth`` (default: from
    the ``DASHBOARD_*`` variables, for a server listening on ``host``)."""
    sources = Sources(config)
    auth = auth or Authenticator(load_settings(), host)
    actions = ActionEndpoints(config, auth, lambda: sources.redis, sources.postgres)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await sources.open()
        try:
            yield
        finally:
            await sources.close()

    async def page(_: Request) -> Response:
        return HTMLResponse(PAGE.replace("{{queue}}", _escape(config.queue_name)))

    async def script(_: Request) -> Response:
        return Response(SCRIPT, media_type="text/javascript")

    async def overview(_: Request) -> Response:
        try:
            return JSONResponse(await sources.overview())
        except (RedisError, OSError) as exc:
            return JSONResponse({"error": f"Redis: {type(exc).__name__}: {exc}"}, 503)

    async def healthz(_: Request) -> Response:
        assert sources.redis is not None
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(PG_TIMEOUT):
                await sources.redis.ping()
            return JSONResponse({"ok": True})
        return JSONResponse({"ok": False, "redis": "no answer"}, 503)

    return Starlette(
        routes=[
            Route("/", page),
            Route("/dashboard_actions.js", script),
            Route("/api/overview", overview),
            Route("/healthz", healthz),
            *actions.routes(),
        ],
        middleware=[Middleware(AuthMiddleware, auth=auth)],
        lifespan=lifespan,
    )


def _escape(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


PAGE = (Path(__file__).parent / "dashboard.html").read_text(encoding="utf-8")
SCRIPT = (Path(__file__).parent / "dashboard_actions.js").read_text(encoding="utf-8")
