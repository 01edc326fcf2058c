"""Health checks, per-worker health records, structured logs and the operator commands (status,
inspect, abort, health), against real worker subprocesses."""

from __future__ import annotations

import json
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as redis_py
from arq.connections import ArqRedis

from tests.acceptance.conftest import free_port, http_get, http_json, run_command, worker_cli
from tests.faults.conftest import SETTINGS, Counters, Spawn, WorkerProcess, wait_until
from worker.config import Config
from worker.queue.health import read_workers

pytestmark = pytest.mark.acceptance

SECRET = "hunter2-operations"


async def arq_check(config: Config) -> int:
    done = await run_command(config, sys.executable, "-m", "arq", "--check", SETTINGS)
    return done.returncode


async def test_arq_check_follows_the_short_health_interval(
    spawn: Spawn, config: Config, counters: Counters
) -> None:
    """HEALTH_CHECK_INTERVAL=1: `arq --check` passes while the worker runs and fails within a few
    seconds of its death (arq's default interval would leave it passing for an hour)."""
    worker = await spawn()

    async def passing() -> bool:
        return await arq_check(config) == 0

    await wait_until(passing, timeout=10, what="arq --check to pass")
    worker.signal(signal.SIGKILL)
    worker.wait(10)
    killed = time.monotonic()

    async def failing() -> bool:
        return await arq_check(config) == 1

    await wait_until(failing, timeout=10, what="arq --check to fail")
    assert time.monotonic() - killed < 6


async def test_each_worker_keeps_its_own_health_record(
    spawn: Spawn, config: Config, raw: redis_py.Redis, counters: Counters
) -> None:
    first, second = await spawn(), await spawn()

    async def both_listed() -> list[dict[str, Any]] | None:
        records = await read_workers(raw, config.queue_name)
        return records if len(records) == 2 and all(r["healthy"] for r in records) else None

    records = await wait_until(both_listed, timeout=10, what="two healthy records")
    assert records is not None
    assert sorted(r["pid"] for r in records) == sorted([first.pid, second.pid])
    assert all(r["checks"] == {"postgres": "ok", "redis": "ok"} for r in records)
    status = await worker_cli(config, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "2 alive, 2 healthy" in status.stdout
    assert (await worker_cli(config, "health", "--records", "--all")).returncode == 0

    first.signal(signal.SIGKILL)
    first.wait(10)

    async def first_not_live() -> dict[str, Any] | None:
        found = {r["pid"]: r for r in await read_workers(raw, config.queue_name)}
        gone = found.get(first.pid)
        return gone if gone is not None and not gone["live"] else None

    stale = await wait_until(first_not_live, timeout=10, what="the killed worker's stale record")
    assert stale is not None and stale["heartbeat_age"] >= stale["liveness_window"]
    status = await worker_cli(config, "status")
    assert status.returncode == 1 and "NOT LIVE" in status.stdout, status.stdout
    assert "1 alive, 1 healthy" in status.stdout
    assert (await worker_cli(config, "health", "--records", "--all")).returncode == 1
    # A clean exit removes the record at once; the killed worker's stays a while, not live.
    second.signal(signal.SIGTERM)
    assert second.wait(20) == 0
    assert [r["pid"] for r in await read_workers(raw, config.queue_name)] == [first.pid]
    status = await worker_cli(config, "status")
    assert status.returncode == 1 and "0 alive, 0 healthy" in status.stdout


async def test_liveness_fails_while_the_event_loop_is_blocked(
    spawn: Spawn, config: Config, arq_redis: ArqRedis, counters: Counters, tmp_path: Path
) -> None:
    port = free_port()
    await spawn(METRICS_PORT=str(port), JOB_LEASE="20")  # the job is not taken over meanwhile
    base = f"http://127.0.0.1:{port}"
    assert (await http_json(f"{base}/healthz"))[0] == 200
    assert (await worker_cli(config, "health", METRICS_PORT=str(port))).returncode == 0
    key = f"blocked-{uuid.uuid4().hex[:8]}"
    # The loop stays blocked while the flag file exists (15 s at most, below the lease): however
    # slowly the probes below start, they run while it is blocked.
    flag = tmp_path / "blocked"
    flag.touch()
    await arq_redis.enqueue_job("fault_write", key=key, block=15.0, block_while=str(flag))
    await wait_until(lambda: counters.runs(key), what="the blocking job to start")
    with pytest.raises(TimeoutError):  # the loop cannot answer
        await http_get(f"{base}/healthz", timeout=1.0)
    probe = await worker_cli(config, "health", "--live", METRICS_PORT=str(port))
    flag.unlink()
    assert probe.returncode == 1, probe.stdout
    assert json.loads(probe.stdout)["healthy"] is False

    async def live_again() -> bool:
        try:
            return (await http_json(f"{base}/healthz", timeout=1.0))[0] == 200
        except TimeoutError:
            return False

    await wait_until(live_again, timeout=15, what="liveness after the loop unblocked")
    assert (await worker_cli(config, "health", METRICS_PORT=str(port))).returncode == 0


async def test_abort_cancels_a_running_job_without_requeue(
    spawn: Spawn,
    config: Config,
    arq_redis: ArqRedis,
    raw: redis_py.Redis,
    counters: Counters,
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    port = free_port()
    await spawn(METRICS_PORT=str(port))
    key = f"abort-{uuid.uuid4().hex[:8]}"
    job = await arq_redis.enqueue_job("fault_write", key=key, hold=30.0)
    assert job is not None
    await wait_until(lambda: counters.runs(key), what="the job to start")

    async def sleeping() -> bool:
        found = await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'"
            " AND state = 'active'"
        )
        return bool(found)

    await wait_until(sleeping, what="the job's query")
    started = time.monotonic()
    done = await worker_cli(config, "abort", job.job_id, "--wait", "10")
    assert done.returncode == 0, done.stdout + done.stderr
    answer = json.loads(done.stdout)
    assert answer["aborted"] is True and answer["was"] == "in_progress"
    assert answer["result"]["error"] == "CancelledError"
    assert time.monotonic() - started < 8  # the command's start-up included
    # Not re-queued, nothing committed, no query left running, no dead letter.
    assert await raw.zscore(config.queue_name, job.job_id) is None
    assert await raw.exists(f"arq:in-progress:{job.job_id}", f"arq:job:{job.job_id}") == 0
    assert await raw.zscore("arq:abort", job.job_id) is None
    assert await counters.effects(key) == 0
    await wait_until(lambda: _not(sleeping), what="the cancelled query to end")
    assert [d for d in await counters.dead_letters() if d["job_id"] == job.job_id] == []
    _, metrics = await http_get(f"http://127.0.0.1:{port}/metrics")
    assert 'worker_jobs_aborted_total{function="fault_write"} 1.0' in metrics
    # The worker goes on with other jobs; the aborted one ran once.
    after = await arq_redis.enqueue_job("fault_write", key=f"{key}-after")
    assert after is not None and (await after.result(timeout=20))["job_try"] == 1
    assert len(await counters.runs(key)) == 1


async def _not(probe: Any) -> bool:
    return not await probe()


async def test_abort_of_waiting_finished_and_unknown_jobs(
    spawn: Spawn, config: Config, arq_redis: ArqRedis, raw: redis_py.Redis, counters: Counters
) -> None:
    deferred = await arq_redis.enqueue_job("count_users", _defer_by=3600)
    assert deferred is not None
    unconfirmed = await worker_cli(config, "abort", deferred.job_id, "--wait", "0.2")
    assert unconfirmed.returncode == 3, unconfirmed.stdout  # no worker yet to confirm it
    await spawn()  # takes the job at once (moved to the queue's front) and records the abort
    result = await wait_until(lambda: raw.get(f"arq:result:{deferred.job_id}"), what="a result")
    assert json.loads(result)["r"] == {"error": "CancelledError", "message": "job aborted"}
    another = await arq_redis.enqueue_job("count_users", _defer_by=3600)
    assert another is not None
    done = await worker_cli(config, "abort", another.job_id, "--wait", "10")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["aborted"] is True
    assert await raw.zscore(config.queue_name, another.job_id) is None
    finished = await worker_cli(config, "abort", another.job_id)
    assert finished.returncode == 1 and json.loads(finished.stdout)["status"] == "complete"
    missing = await worker_cli(config, "abort", "no-such-job")
    assert missing.returncode == 2 and "No job with id 'no-such-job'" in missing.stderr


async def test_status_and_inspect(
    spawn: Spawn,
    config: Config,
    arq_redis: ArqRedis,
    raw: redis_py.Redis,
    counters: Counters,
    users: list[asyncpg.Record],
) -> None:
    await spawn()
    key = f"inspect-{uuid.uuid4().hex[:8]}"
    failed = await arq_redis.enqueue_job(
        "fault_write", key=key, fail_permanently=True, token=SECRET
    )
    later = await arq_redis.enqueue_job(
        "fault_write", key=f"{key}-later", token=SECRET, _defer_by=600
    )
    ok = await arq_redis.enqueue_job("get_user", user_id=users[0]["id"])
    assert failed is not None and later is not None and ok is not None
    assert (await ok.result(timeout=20))["id"] == users[0]["id"]

    async def dead_lettered() -> bool:
        return any(d["job_id"] == failed.job_id for d in await counters.dead_letters())

    await wait_until(dead_lettered, what="the dead letter")

    async def recorded() -> dict[str, Any] | None:
        done = await worker_cli(config, "status", "--json")
        status: dict[str, Any] = json.loads(done.stdout)
        return status if status["workers"]["listed"][0]["complete"] >= 1 else None

    status = await wait_until(recorded, what="the worker's record to count the job")
    assert status is not None
    assert status["jobs"] == {
        "waiting": 0,
        "in_progress": 0,
        "scheduled": 1,
        "blocked": 0,
        "oldest_waiting_age_s": 0,
    }
    assert status["dead_letters"] == {"total": 1, "not_replayed": 1}
    assert status["workers"]["alive"] == 1 and status["workers"]["healthy"] == 1
    assert [f["job_id"] for f in status["recent_failures"]] == [failed.job_id]
    assert "j_complete=" in (status["arq_health_check"] or "")
    text = await worker_cli(config, "status")
    assert text.returncode == 0
    assert "0 waiting" in text.stdout and "1 scheduled" in text.stdout
    assert "dead letters: 1 (1 not replayed)" in text.stdout
    assert f"{failed.job_id} fault_write try 1 failed: ValueError" in text.stdout

    shown = await worker_cli(config, "inspect", later.job_id)
    assert shown.returncode == 0, shown.stderr
    job = json.loads(shown.stdout)
    assert job["status"] == "deferred" and job["job"]["function"] == "fault_write"
    # fault_write is not in the command's registry: which arguments are secret is not known there,
    # so every value is masked (worker/core/masking.py), as in its stored result.
    assert job["job"]["kwargs"]["token"] == "**********"
    assert job["job"]["kwargs"]["key"] == "**********"
    gone = await worker_cli(config, "inspect", failed.job_id)
    assert gone.returncode == 0
    result = json.loads(gone.stdout)
    assert result["status"] == "complete" and result["result"]["success"] is False
    assert result["result"]["error"] == "ValueError"
    assert [d["reason"] for d in result["dead_letters"]] == ["permanent-error"]
    assert SECRET not in shown.stdout + gone.stdout + text.stdout
    missing = await worker_cli(config, "inspect", "no-such-job")
    assert missing.returncode == 2 and "No job with id" in missing.stderr


async def test_a_running_job_is_shown_running_with_its_lease(
    spawn: Spawn, config: Config, arq_redis: ArqRedis, counters: Counters
) -> None:
    # Its score in the queue is its lease's end (ahead of now), yet it counts as running, not
    # scheduled, and inspect says when it would be due again.
    await spawn()
    job = await arq_redis.enqueue_job("fault_write", key=f"running-{uuid.uuid4().hex[:8]}", hold=4)
    assert job is not None

    async def running() -> bool:
        return bool(await arq_redis.exists(f"arq:in-progress:{job.job_id}"))

    await wait_until(running, what="the job to start")

    async def counted() -> dict[str, Any] | None:  # once the worker's record (every 1 s) has it
        done = await worker_cli(config, "status", "--json")
        jobs: dict[str, Any] = json.loads(done.stdout)["jobs"]
        return jobs if jobs["in_progress"] == 1 else None

    assert await wait_until(counted, what="status to count the running job") == {
        "waiting": 0,
        "in_progress": 1,
        "scheduled": 0,
        "blocked": 0,
        "oldest_waiting_age_s": 0,
    }
    shown = json.loads((await worker_cli(config, "inspect", job.job_id)).stdout)
    assert shown["status"] == "in_progress" and shown["due_at"] is None
    assert shown["due_again_at"] is not None and 0 < shown["lease_left_s"] <= 2
    assert (await job.result(timeout=20))["job_try"] == 1


async def test_commands_say_when_redis_is_unreachable(config: Config) -> None:
    for args in (["status"], ["inspect", "x"], ["abort", "x"], ["health", "--records"]):
        done = await worker_cli(config, *args, REDIS_URL="redis://:s3cret@127.0.0.1:1/0")
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "Cannot connect to Redis at redis://:***@127.0.0.1:1/0" in done.stderr
        assert "s3cret" not in done.stderr + done.stdout


def _log_lines(worker: WorkerProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in worker.log().splitlines() if line.strip()]


async def test_logs_are_json_lines_with_job_fields_and_no_arguments(
    spawn: Spawn, arq_redis: ArqRedis, counters: Counters, users: list[asyncpg.Record]
) -> None:
    """Not on a terminal (LOG_FORMAT=auto): every line is one JSON object, from arq's first line
    on; a job's events carry its id, name, try, duration, outcome and queue wait."""
    worker = await spawn(LOG_LEVEL="DEBUG")
    key = f"logs-{uuid.uuid4().hex[:8]}"
    ok = await arq_redis.enqueue_job("get_user", user_id=users[0]["id"])
    retried = await arq_redis.enqueue_job("fault_write", key=key, fail_tries=1, token=SECRET)
    failed = await arq_redis.enqueue_job("fault_write", key=f"{key}-x", fail_permanently=True)
    assert ok is not None and retried is not None and failed is not None
    await ok.result(timeout=20)
    await retried.result(timeout=20)

    async def failure_logged() -> bool:
        return any(e.get("outcome") == "failed" for e in _log_lines(worker))

    await wait_until(failure_logged, what="the failure's log line")
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    lines = _log_lines(worker)  # every line parses
    assert lines[0]["logger"] == "arq.worker" and lines[0]["msg"].startswith("Starting worker")
    assert all({"ts", "level", "logger", "msg"} <= set(e) for e in lines)
    events = {(e["job_id"], e["outcome"]): e for e in lines if e.get("event") == "job"}
    done = events[(ok.job_id, "succeeded")]
    assert done["function"] == "get_user" and done["try"] == 1 and done["level"] == "DEBUG"
    assert 0 <= done["duration"] < 5 and 0 <= done["queue_wait"] < 5
    assert events[(retried.job_id, "retrying")]["error"] == "ConnectionResetError"
    assert events[(retried.job_id, "succeeded")]["try"] == 2
    failure = events[(failed.job_id, "failed")]
    assert failure["level"] == "WARNING" and failure["error"] == "ValueError"
    assert SECRET not in worker.log()


async def test_text_logs_on_request(spawn: Spawn, arq_redis: ArqRedis, counters: Counters) -> None:
    worker = await spawn(LOG_FORMAT="text")
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    first = worker.log().splitlines()[0]
    assert ": Starting worker for" in first and not first.startswith("{")
