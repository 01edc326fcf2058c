"""``python -m worker inspect JOB_ID``: a job's status, payload and result (arguments masked:
worker/ops/job_arguments.py), what holds it back, where it runs and its dead letters."""

from __future__ import annotations

import argparse
from typing import Any

from arq.connections import ArqRedis

from jobs.registry import JOBS_BY_NAME
from worker.config import Config
from worker.core.clock import ms_to_iso, now_ms
from worker.core.exit_codes import EXIT_OK
from worker.db.dead_letters import letters_of_job
from worker.db.pool import connect
from worker.errors import ResultNotFound
from worker.ops.job_arguments import Registry, shown_arguments
from worker.ops.output import emit
from worker.ops.waiting import waiting_reason
from worker.queue import codec
from worker.queue.connect import command_redis
from worker.queue.flow_usage import blocked_on
from worker.queue.health import read_workers
from worker.queue.keys import (
    ABORT_SET,
    BLOCKED_SCORE,
    IN_PROGRESS_PREFIX,
    JOB_PREFIX,
    RESULT_PREFIX,
    RETRY_PREFIX,
)


async def job_status(redis: ArqRedis, queue: str, job_id: str) -> str:
    """complete, in_progress, deferred, queued or not_found (as arq's ``Job.status``); a job that
    waits on a flow-control gate (score ``BLOCKED_SCORE``) is queued, as ``JobHandle.status``
    says (``inspect`` names the gate)."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.exists(RESULT_PREFIX + job_id)
        pipe.exists(IN_PROGRESS_PREFIX + job_id)
        pipe.zscore(queue, job_id)
        done, running, score = await pipe.execute()
    if done:
        return "complete"
    if running and score is not None:
        return "in_progress"
    if score is not None:
        return "deferred" if score > now_ms() and score != BLOCKED_SCORE else "queued"
    return "not_found"


async def inspect_job(
    config: Config, redis: ArqRedis, job_id: str, jobs: Registry = JOBS_BY_NAME
) -> dict[str, Any]:
    """What ``inspect`` prints; ``jobs``: the job names known, with their secret fields."""
    queue = config.queue_name
    async with redis.pipeline(transaction=True) as pipe:
        pipe.get(JOB_PREFIX + job_id)
        pipe.get(RESULT_PREFIX + job_id)
        pipe.zscore(queue, job_id)
        pipe.get(RETRY_PREFIX + job_id)
        pipe.pttl(IN_PROGRESS_PREFIX + job_id)
        pipe.zscore(ABORT_SET, job_id)
        payload, result, score, tries, lease_ms, abort_at = await pipe.execute()
    status = await job_status(redis, queue, job_id)
    info: dict[str, Any] = {
        "job_id": job_id,
        "queue": queue,
        "status": status,
        # A running job's score is its lease's end: when it is due again should its worker stop.
        "due_at": None if status == "in_progress" or score == BLOCKED_SCORE else ms_to_iso(score),
        "due_again_at": ms_to_iso(score) if status == "in_progress" else None,
        "tries_started": int(tries) if tries else 0,
        "lease_left_s": round(lease_ms / 1000, 3) if lease_ms and lease_ms > 0 else None,
        "abort_requested_at": ms_to_iso(abort_at),
    }
    if payload is not None:
        info["job"] = _job_view(payload, jobs)
        reason = waiting_reason(payload, config.unknown_job_grace)
        if reason and status in ("queued", "deferred"):
            info["waiting"] = reason  # what holds it back, and what the worker will do
    if score == BLOCKED_SCORE:  # waits on a limit, a rate, a pause or a lane: which one
        info["blocked_on"] = await blocked_on(redis, queue, job_id, payload)
    if result is not None:
        info["result"] = result_view(result, jobs)
    workers = await read_workers(redis, queue)
    info["running_on"] = [
        w["id"] for w in workers if any(j["job_id"] == job_id for j in w.get("jobs", []))
    ]
    info["dead_letters"] = await _letters_of(config, job_id)
    return info


def _job_view(payload: bytes, jobs: Registry) -> dict[str, Any]:
    try:
        job = codec.deserialize(payload)
    except codec.PayloadError as exc:
        return {"undecodable": str(exc), "bytes": len(payload)}
    function = str(job.get("f"))
    return {
        "function": function,
        **shown_arguments(function, job.get("a"), job.get("k"), jobs),
        "enqueued_at": ms_to_iso(job.get("et")),
    }


def result_view(data: bytes, jobs: Registry = JOBS_BY_NAME) -> dict[str, Any]:
    """A stored result as ``inspect`` and ``abort`` show it (its arguments masked)."""
    try:
        stored = codec.deserialize(data)
    except codec.PayloadError as exc:
        return {"undecodable": str(exc)}
    function = str(stored.get("f"))
    view: dict[str, Any] = {
        "success": stored.get("s"),
        "function": function,
        "try": stored.get("t"),
        "enqueued_at": ms_to_iso(stored.get("et")),
        "started_at": ms_to_iso(stored.get("st")),
        "finished_at": ms_to_iso(stored.get("ft")),
        **shown_arguments(function, stored.get("a"), stored.get("k"), jobs),
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
        return await letters_of_job(conn, job_id)
    finally:
        await conn.close()


async def cmd_inspect(config: Config, args: argparse.Namespace) -> int:
    async with command_redis(config) as redis:
        info = await inspect_job(config, redis, args.job_id)
    known = info["status"] != "not_found" or info["dead_letters"]
    if not known:
        raise ResultNotFound(job_id=args.job_id, queue=config.queue_name)
    emit(info)
    return EXIT_OK
