"""``python -m worker status``: the queue, jobs in progress, dead letters, the workers with their
health and the connection budget, as text or JSON (exit 0 when every listed worker is healthy)."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from typing import Any

from arq.connections import ArqRedis

from worker.config import Config
from worker.core.exit_codes import EXIT_FAILED, EXIT_OK
from worker.db.dead_letters import count_letters
from worker.db.outbox import outbox_summary
from worker.db.pool import connect
from worker.ops.budget_report import budget_status, render_budget
from worker.ops.limits_cli import render_limit
from worker.ops.output import emit
from worker.ops.pause_cli import render_paused
from worker.queue.connect import command_redis
from worker.queue.flow_usage import flow_state
from worker.queue.health import read_workers, recent_failures
from worker.queue.keys import arq_health_key
from worker.queue.stats import QueueStats, queue_stats


async def dead_letter_counts(config: Config) -> dict[str, Any]:
    """``{"total": n, "not_replayed": m}``, or ``{"error": ...}`` when PostgreSQL does not answer."""
    try:
        conn = await connect(config.database_url, config.pg_connect_timeout)
    except Exception as exc:  # noqa: BLE001  (shown, not raised: status reports what it can)
        return {"error": str(exc).split(". ")[0]}
    try:
        return dict(await count_letters(conn))
    finally:
        await conn.close()


async def outbox_status(config: Config) -> dict[str, Any]:
    """The queue's outbox rows not yet relayed, the oldest one's age and the recent relay lag
    (``worker.db.outbox.outbox_summary``, which the dashboard shows too), or ``{"error": ...}``."""
    try:
        conn = await connect(config.database_url, config.pg_connect_timeout)
    except Exception as exc:  # noqa: BLE001  (shown, not raised: status reports what it can)
        return {"error": str(exc).split(". ")[0]}
    try:
        return await outbox_summary(conn, config.queue_name)
    finally:
        await conn.close()


async def gather_status(config: Config, redis: ArqRedis) -> dict[str, Any]:
    queue = config.queue_name
    stats = await queue_stats(redis, queue, config.job_lease)
    workers = await read_workers(redis, queue)
    live = [w for w in workers if w["live"]]
    return {
        "queue": queue,
        "jobs": _queue_view(stats, sum(int(w.get("running", 0)) for w in live)),
        "dead_letters": await dead_letter_counts(config),
        "outbox": await outbox_status(config),  # transactional enqueue (docs/producers.md)
        "workers": {
            "alive": len(live),
            "healthy": sum(1 for w in workers if w["healthy"]),
            "listed": [_worker_view(w) for w in workers],
        },
        "recent_failures": await recent_failures(redis, queue, 5),
        "arq_health_check": _text(await redis.get(arq_health_key(queue))),
        "budget": await budget_status(config, redis),  # the fleet's connection budget
        "flow": (await flow_state(redis, queue)).view(),  # pauses and limits (flow_usage.py)
    }


def _text(value: bytes | None) -> str | None:
    return value.decode() if value is not None else None


def _queue_view(stats: QueueStats, in_progress: int) -> dict[str, Any]:
    return {
        "waiting": stats.waiting,
        "in_progress": in_progress,
        "scheduled": stats.scheduled,
        "blocked": stats.blocked,  # waiting on a flow-control limit, rate, pause or lane
        "oldest_waiting_age_s": round(stats.oldest_waiting_age, 3),
    }


def render_flow(flow: dict[str, Any]) -> list[str]:
    """The pauses (only when something is paused) and one line per limit."""
    lines = [render_paused(flow["paused"], flow["paused_waiting"])] if flow["paused"] else []
    return lines + [f"limit {render_limit(limit)}" for limit in flow["limits"]]


def _worker_view(w: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "state", "live", "ready", "checks", "heartbeat_age", "running", "max_jobs")
    view = {k: w.get(k) for k in keys}
    view.update({k: w.get(k) for k in ("complete", "failed", "retried", "aborted", "pool")})
    view["concurrency"] = w.get("concurrency")
    view["uptime_s"] = round(time.time() - float(w.get("started_at", time.time())), 1)
    return view


def _adaptive(concurrency: dict[str, Any] | None) -> str:
    """`` (auto 1-200)`` after the limit of a worker under WORKER_MAX_JOBS=auto."""
    if not concurrency:
        return ""
    return f" (auto {concurrency['min']}-{concurrency['max']})"


def render_status(status: dict[str, Any]) -> str:
    jobs, letters, workers = status["jobs"], status["dead_letters"], status["workers"]
    lines = [
        (
            f"queue {status['queue']}: {jobs['waiting']} waiting (oldest "
            f"{jobs['oldest_waiting_age_s']:.1f}s), {jobs['in_progress']} in progress, "
            f"{jobs['scheduled']} scheduled, {jobs.get('blocked', 0)} blocked"
        ),
        "dead letters: "
        + (
            f"{letters['total']} ({letters['not_replayed']} not replayed)"
            if "total" in letters
            else f"unavailable ({letters['error']})"
        ),
        f"workers: {workers['alive']} alive, {workers['healthy']} healthy",
    ]
    outbox = status.get("outbox", {})
    if "unrelayed" in outbox:
        lines.insert(
            2,
            f"outbox: {outbox['unrelayed']} not yet relayed (oldest "
            f"{outbox['oldest_unrelayed_age_s']:.1f}s), relay lag {outbox['relay_lag_p50_s']:.3f}s"
            f" median, {outbox['relay_lag_max_s']:.3f}s max over {outbox['recently_relayed']} rows"
            f" relayed in the last {outbox['lag_window_s']:.0f}s",
        )
    if "budget" in status:
        lines.append(render_budget(status["budget"]))
    for w in workers["listed"]:
        pool = w.get("pool") or {}
        health = "healthy" if w["live"] and w["ready"] else ("live" if w["live"] else "NOT LIVE")
        if w["live"] and not w["ready"]:
            failing = [f"{k}: {v}" for k, v in (w.get("checks") or {}).items() if v != "ok"]
            health = "NOT READY (" + "; ".join(failing) + ")"
        lines.append(
            f"  {w['id']:<28} {health:<9} {w['state']:<8} jobs {w['running']}/{w['max_jobs']}"
            f"{_adaptive(w.get('concurrency'))}"
            f"  done {w['complete']}  failed {w['failed']}  retried {w['retried']}"
            f"  pool {pool.get('in_use', 0)}/{pool.get('max', 0)} in use"
            f"  heartbeat {w['heartbeat_age']:.1f}s ago"
        )
    if "flow" in status:  # after the workers' rows, which follow their header line
        lines.extend(render_flow(status["flow"]))
    if status["recent_failures"]:
        lines.append("recent failures:")
        for f in status["recent_failures"]:
            at = datetime.fromtimestamp(f["at"], UTC).strftime("%H:%M:%S")
            lines.append(
                f"  {at} {f['job_id']} {f['function']} try {f['try']} {f['outcome']}: "
                f"{f['error']}: {f['message']}"
            )
    return "\n".join(lines) + "\n"


async def cmd_status(config: Config, args: argparse.Namespace) -> int:
    """0 when at least one worker is alive and every listed worker is healthy, else 1."""
    async with command_redis(config) as redis:
        status = await gather_status(config, redis)
    if args.json:
        emit(status)
    else:
        sys.stdout.write(render_status(status))
    workers = status["workers"]
    healthy = workers["alive"] > 0 and workers["healthy"] == len(workers["listed"])
    return EXIT_OK if healthy and "total" in status["dead_letters"] else EXIT_FAILED
