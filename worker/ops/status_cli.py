"""Operator commands of ``python -m worker``: health, status, inspect, abort, dashboard.

Exit codes (as the rest of the command line): 0 success / healthy; 1 unhealthy, or the job ended
otherwise than asked; 2 bad usage, configuration or an unreachable service; 3 not yet (an abort
that no worker has confirmed within ``--wait``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from arq.connections import ArqRedis, create_pool
from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)

from jobs.registry import JOBS_BY_NAME
from worker.config import Config
from worker.db.budget import budget_status, render_budget
from worker.db.pool import connect
from worker.errors import ResultNotFound
from worker.ops.waiting import waiting_reason
from worker.queue import codec
from worker.queue.connect import check_redis
from worker.queue.connection import redis_settings
from worker.queue.health import read_workers, recent_failures
from worker.queue.keys import arq_health_key
from worker.queue.stats import QueueStats, queue_stats

EXIT_UNHEALTHY, EXIT_USAGE, EXIT_PENDING = 1, 2, 3
# Argument names masked in displayed payloads, besides the jobs' declared secret fields.
SECRET_NAME = re.compile(r"pass|secret|token|credential|api_?key|auth", re.IGNORECASE)
HTTP_TIMEOUT = 5.0

Command = Callable[[Config, argparse.Namespace], Coroutine[Any, Any, int]]


def emit(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


@asynccontextmanager
async def redis_client(config: Config) -> AsyncIterator[ArqRedis]:
    """Redis for a command: fails at once (exit 2) when it does not answer."""
    await check_redis(config)
    redis = await create_pool(redis_settings(config))
    try:
        yield redis
    finally:
        await redis.aclose()


def mask_arguments(function: str, args: list[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """A job's arguments for display: secret ones (declared, or named like one) masked; every
    positional argument of a job with secret fields masked."""
    spec = JOBS_BY_NAME.get(function)
    declared = set(spec.secret_fields) if spec else set()
    masked = {
        k: codec.REDACTED if k in declared or SECRET_NAME.search(k) else v
        for k, v in kwargs.items()
    }
    positional = [codec.REDACTED] * len(args) if declared else list(args)
    return {"args": positional, "kwargs": masked}


def when(ms: float | None) -> str | None:
    if not ms:
        return None
    return datetime.fromtimestamp(float(ms) / 1000, UTC).isoformat(timespec="milliseconds")


# ---- health -----------------------------------------------------------------------------------


def _http(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as response:
            return int(response.status), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return int(exc.code), json.loads(exc.read() or b"null")
        except ValueError:
            return int(exc.code), None


async def cmd_health(config: Config, args: argparse.Namespace) -> int:
    """0 healthy; 1 unhealthy or not answering; 2 cannot tell (configuration, Redis down)."""
    if args.url or (config.metrics_port and not args.records):
        base = args.url or f"http://127.0.0.1:{config.metrics_port}"
        paths = [""] if args.url else ["/healthz"] + ([] if args.live else ["/readyz"])
        report: dict[str, Any] = {}
        healthy = True
        for path in paths:
            try:
                status, body = await asyncio.to_thread(_http, base + path)
            except (OSError, ValueError) as exc:
                status, body = 0, {"error": f"{type(exc).__name__}: {exc}"}
            report[base + path] = {"status": status, **(body if isinstance(body, dict) else {})}
            healthy = healthy and status == 200
        emit({"healthy": healthy, "checks": report})
        return 0 if healthy else EXIT_UNHEALTHY
    async with redis_client(config) as redis:
        workers = await read_workers(redis, config.queue_name)
    host = socket.gethostname()
    mine = workers if args.all else [w for w in workers if w.get("host") == host]
    key = "live" if args.live else "healthy"
    healthy = bool(mine) and all(w[key] for w in mine)
    emit(
        {
            "healthy": healthy,
            "host": None if args.all else host,
            "workers": [
                {k: w.get(k) for k in ("id", "live", "ready", "checks", "heartbeat_age", "state")}
                for w in mine
            ],
        }
    )
    return 0 if healthy else EXIT_UNHEALTHY


# ---- status -----------------------------------------------------------------------------------


async def dead_letter_counts(config: Config) -> dict[str, Any]:
    """``{"total": n, "not_replayed": m}``, or ``{"error": ...}`` when PostgreSQL does not answer."""
    try:
        conn = await connect(config.database_url, config.pg_connect_timeout)
    except Exception as exc:  # noqa: BLE001  (shown, not raised: status reports what it can)
        return {"error": str(exc).split(". ")[0]}
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS total, count(*) FILTER (WHERE replayed_at IS NULL) AS open"
            " FROM dead_letters"
        )
    finally:
        await conn.close()
    assert row is not None
    return {"total": int(row["total"]), "not_replayed": int(row["open"])}


async def gather_status(config: Config, redis: ArqRedis) -> dict[str, Any]:
    queue = config.queue_name
    stats = await queue_stats(redis, queue, config.job_lease)
    workers = await read_workers(redis, queue)
    live = [w for w in workers if w["live"]]
    return {
        "queue": queue,
        "jobs": _queue_view(stats, sum(int(w.get("running", 0)) for w in live)),
        "dead_letters": await dead_letter_counts(config),
        "workers": {
            "alive": len(live),
            "healthy": sum(1 for w in workers if w["healthy"]),
            "listed": [_worker_view(w) for w in workers],
        },
        "recent_failures": await recent_failures(redis, queue, 5),
        "arq_health_check": _text(await redis.get(arq_health_key(queue))),
        "budget": await budget_status(config, redis),  # the fleet's connection budget
    }


def _text(value: bytes | None) -> str | None:
    return value.decode() if value is not None else None


def _queue_view(stats: QueueStats, in_progress: int) -> dict[str, Any]:
    return {
        "waiting": stats.waiting,
        "in_progress": in_progress,
        "scheduled": stats.scheduled,
        "oldest_waiting_age_s": round(stats.oldest_waiting_age, 3),
    }


def _worker_view(w: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "state", "live", "ready", "checks", "heartbeat_age", "running", "max_jobs")
    view = {k: w.get(k) for k in keys}
    view.update({k: w.get(k) for k in ("complete", "failed", "retried", "aborted", "pool")})
    view["uptime_s"] = round(time.time() - float(w.get("started_at", time.time())), 1)
    return view


def render_status(status: dict[str, Any]) -> str:
    jobs, letters, workers = status["jobs"], status["dead_letters"], status["workers"]
    lines = [
        (
            f"queue {status['queue']}: {jobs['waiting']} waiting (oldest "
            f"{jobs['oldest_waiting_age_s']:.1f}s), {jobs['in_progress']} in progress, "
            f"{jobs['scheduled']} scheduled"
        ),
        "dead letters: "
        + (
            f"{letters['total']} ({letters['not_replayed']} not replayed)"
            if "total" in letters
            else f"unavailable ({letters['error']})"
        ),
        f"workers: {workers['alive']} alive, {workers['healthy']} healthy",
    ]
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
            f"  done {w['complete']}  failed {w['failed']}  retried {w['retried']}"
            f"  pool {pool.get('in_use', 0)}/{pool.get('max', 0)} in use"
            f"  heartbeat {w['heartbeat_age']:.1f}s ago"
        )
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
    async with redis_client(config) as redis:
        status = await gather_status(config, redis)
    if args.json:
        emit(status)
    else:
        sys.stdout.write(render_status(status))
    workers = status["workers"]
    healthy = workers["alive"] > 0 and workers["healthy"] == len(workers["listed"])
    return 0 if healthy and "total" in status["dead_letters"] else EXIT_UNHEALTHY


# ---- inspect ----------------------------------------------------------------------------------


async def job_status(redis: ArqRedis, queue: str, job_id: str) -> str:
    """complete, in_progress, deferred, queued or not_found (as arq's ``Job.status``)."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.exists(result_key_prefix + job_id)
        pipe.exists(in_progress_key_prefix + job_id)
        pipe.zscore(queue, job_id)
        done, running, score = await pipe.execute()
    if done:
        return "complete"
    if running and score is not None:
        return "in_progress"
    if score is not None:
        return "deferred" if score > time.time() * 1000 else "queued"
    return "not_found"


async def inspect_job(config: Config, redis: ArqRedis, job_id: str) -> dict[str, Any]:
    queue = config.queue_name
    async with redis.pipeline(transaction=True) as pipe:
        pipe.get(job_key_prefix + job_id)
        pipe.get(result_key_prefix + job_id)
        pipe.zscore(queue, job_id)
        pipe.get(retry_key_prefix + job_id)
        pipe.pttl(in_progress_key_prefix + job_id)
        pipe.zscore(abort_jobs_ss, job_id)
        payload, result, score, tries, lease_ms, abort_at = await pipe.execute()
    status = await job_status(redis, queue, job_id)
    info: dict[str, Any] = {
        "job_id": job_id,
        "queue": queue,
        "status": status,
        # A running job's score is its lease's end: when it is due again should its worker stop.
        "due_at": None if status == "in_progress" else when(score),
        "due_again_at": when(score) if status == "in_progress" else None,
        "tries_started": int(tries) if tries else 0,
        "lease_left_s": round(lease_ms / 1000, 3) if lease_ms and lease_ms > 0 else None,
        "abort_requested_at": when(abort_at),
    }
    if payload is not None:
        info["job"] = _job_view(payload)
        reason = waiting_reason(payload, config.unknown_job_grace)
        if reason and status in ("queued", "deferred"):
            info["waiting"] = reason  # what holds it back, and what the worker will do
    if result is not None:
        info["result"] = _result_view(result)
    workers = await read_workers(redis, queue)
    info["running_on"] = [
        w["id"] for w in workers if any(j["job_id"] == job_id for j in w.get("jobs", []))
    ]
    info["dead_letters"] = await _letters_of(config, job_id)
    return info


def _job_view(payload: bytes) -> dict[str, Any]:
    try:
        job = codec.deserialize(payload)
    except codec.PayloadError as exc:
        return {"undecodable": str(exc), "bytes": len(payload)}
    function = str(job.get("f"))
    return {
        "function": function,
        **mask_arguments(function, list(job.get("a") or []), dict(job.get("k") or {})),
        "enqueued_at": when(job.get("et")),
    }


def _result_view(data: bytes) -> dict[str, Any]:
    try:
        stored = codec.deserialize(data)
    except codec.PayloadError as exc:
        return {"undecodable": str(exc)}
    function = str(stored.get("f"))
    view: dict[str, Any] = {
        "success": stored.get("s"),
        "function": function,
        "try": stored.get("t"),
        "enqueued_at": when(stored.get("et")),
        "started_at": when(stored.get("st")),
        "finished_at": when(stored.get("ft")),
        **mask_arguments(function, list(stored.get("a") or []), dict(stored.get("k") or {})),
    }
    outcome = stored.get("r")
    if stored.get("s"):
        view["result"] = outcome
    elif isinstance(outcome, dict):
        view["error"], view["message"] = outcome.get("error"), outcome.get("message")
    else:
        view["error"] = outcome
    return view


async def _letters_of(config: Config, job_id: str) -> list[dict[str, Any]] | dict[str, str]:
    try:
        conn = await connect(config.database_url, config.pg_connect_timeout)
    except Exception as exc:  # noqa: BLE001  (shown, not raised)
        return {"error": str(exc).split(". ")[0]}
    try:
        rows = await conn.fetch(
            "SELECT id, reason, error_type, attempts, failed_at, replay_job_id FROM dead_letters"
            " WHERE job_id = $1 ORDER BY id",
            job_id,
        )
    finally:
        await conn.close()
    return [dict(r) for r in rows]


async def cmd_inspect(config: Config, args: argparse.Namespace) -> int:
    async with redis_client(config) as redis:
        info = await inspect_job(config, redis, args.job_id)
    known = info["status"] != "not_found" or info["dead_letters"]
    if not known:
        raise ResultNotFound(job_id=args.job_id, queue=config.queue_name)
    emit(info)
    return 0


# ---- abort ------------------------------------------------------------------------------------


async def request_abort(redis: ArqRedis, queue: str, job_id: str) -> str:
    """Put ``job_id`` in arq's abort set; a job still waiting moves to the queue's front, so that a
    worker claims it (and records it aborted) at once. Returns the job's status before."""
    status = await job_status(redis, queue, job_id)
    if status in ("complete", "not_found"):
        return status
    now = int(time.time() * 1000)
    first = await redis.zrange(queue, 0, 0, withscores=True)
    front = min(int(first[0][1]) - 1, now) if first else now
    # One transaction: no worker can claim the job moved to the front before it is in the set.
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zadd(abort_jobs_ss, {job_id: now})
        if status in ("queued", "deferred"):
            pipe.zadd(queue, {job_id: front}, xx=True)
        await pipe.execute()
    return status


async def cmd_abort(config: Config, args: argparse.Namespace) -> int:
    """0 aborted; 1 it had finished already or finished otherwise; 2 no such job; 3 not yet."""
    queue = config.queue_name
    async with redis_client(config) as redis:
        before = await request_abort(redis, queue, args.job_id)
        if before == "not_found":
            raise ResultNotFound(job_id=args.job_id, queue=queue)
        if before == "complete":
            emit({"job_id": args.job_id, "aborted": False, "status": "complete"})
            return EXIT_UNHEALTHY
        deadline = time.monotonic() + args.wait
        while True:
            stored = await redis.get(result_key_prefix + args.job_id)
            if stored is not None:
                result = _result_view(stored)
                aborted = result.get("error") == "CancelledError"
                emit({"job_id": args.job_id, "aborted": aborted, "was": before, "result": result})
                return 0 if aborted else EXIT_UNHEALTHY
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
    emit({"job_id": args.job_id, "aborted": None, "was": before, "status": "abort requested"})
    return EXIT_PENDING


# ---- dashboard --------------------------------------------------------------------------------


async def cmd_dashboard(config: Config, args: argparse.Namespace) -> int:
    import uvicorn

    from worker.ops.dashboard import create_app

    await check_redis(config)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            host=args.host,
            port=args.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
    )
    sys.stderr.write(f"dashboard on http://{args.host}:{args.port}/\n")
    await server.serve()
    return 0


COMMANDS: dict[str, Command] = {
    "health": cmd_health,
    "status": cmd_status,
    "inspect": cmd_inspect,
    "abort": cmd_abort,
    "dashboard": cmd_dashboard,
}


def add_parsers(sub: Any) -> None:
    """Add the operator commands to ``python -m worker``'s sub-parsers."""
    health = sub.add_parser(
        "health",
        help="is this machine's worker live and ready? (exit 0 yes, 1 no)",
        description="Probes http://127.0.0.1:METRICS_PORT/healthz and /readyz, or with "
        "METRICS_PORT=0 (or --records) the health records in Redis of this host's workers.",
    )
    health.add_argument("--live", action="store_true", help="liveness only (not readiness)")
    health.add_argument("--url", help="probe this URL instead (200 is healthy)")
    health.add_argument("--records", action="store_true", help="read the records in Redis")
    health.add_argument("--all", action="store_true", help="with records: every worker, any host")
    status = sub.add_parser(
        "status", help="queue, jobs in progress, dead letters, workers and their health"
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect = sub.add_parser("inspect", help="a job's status, payload (secrets masked), result")
    inspect.add_argument("job_id")
    abort = sub.add_parser("abort", help="abort a queued or running job (arq's abort)")
    abort.add_argument("job_id")
    abort.add_argument(
        "--wait", type=float, default=10.0, metavar="SECONDS", help="wait for the worker to confirm"
    )
    dashboard = sub.add_parser("dashboard", help="serve the read-only web dashboard")
    dashboard.add_argument("--host", default="127.0.0.1", help="address to listen on")
    dashboard.add_argument("--port", type=int, default=8080, help="port to listen on")
