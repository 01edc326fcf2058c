"""The command line on jobs that failed or wait (a real worker subprocess): `result` and `enqueue
--wait` print a failed job's error, `inspect` says why a job with an unknown name waits."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import pytest
import redis.asyncio as redis_py
from arq.connections import ArqRedis
from arq.jobs import JobStatus

from tests.acceptance.conftest import worker_cli
from tests.faults.conftest import Counters, Spawn, wait_until
from worker.config import Config
from worker.errors import JobFailed

pytestmark = pytest.mark.acceptance


def test_a_job_failed_error_names_the_job_and_the_error() -> None:
    exc = JobFailed(job_id="j1", function="get_user", error_type="InvalidJobArguments", message="m")
    assert str(exc) == "Job j1 (get_user) failed: InvalidJobArguments: m"
    assert exc.context["message"] == "m"


async def test_result_of_a_failed_job_prints_its_error(
    spawn: Spawn, arq_redis: ArqRedis, config: Config, counters: Counters
) -> None:
    job = await arq_redis.enqueue_job("get_user", user_id=-5)
    assert job is not None
    await spawn()

    async def complete() -> bool:
        return await job.status() == JobStatus.complete

    await wait_until(complete, timeout=30, what="the job's result")
    done = await worker_cli(config, "result", job.job_id)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    printed = json.loads(done.stdout)
    assert printed["job_id"] == job.job_id and printed["success"] is False
    assert printed["error"] == "InvalidJobArguments"
    assert "user_id" in printed["message"]


async def test_enqueue_wait_prints_the_error_of_a_job_that_failed(
    spawn: Spawn, raw: redis_py.Redis, config: Config, counters: Counters
) -> None:
    await spawn()
    job_id = f"abort-{uuid.uuid4().hex[:8]}"
    waiting = asyncio.create_task(
        worker_cli(
            config,
            "enqueue",
            "count_users",
            "--job-id",
            job_id,
            "--defer-by",
            "600",
            "--wait",
            "50",
        )
    )

    async def queued() -> bool:
        return await raw.zscore(config.queue_name, job_id) is not None

    await wait_until(queued, timeout=30, what="the job in the queue")
    aborted = await worker_cli(config, "abort", job_id, "--wait", "30")
    assert aborted.returncode == 0, aborted.stdout + aborted.stderr
    done = await waiting
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    printed = json.loads(done.stdout)
    assert (printed["job_id"], printed["success"], printed["error"]) == (
        job_id,
        False,
        "CancelledError",
    )


async def test_inspect_says_why_a_job_no_worker_knows_waits(
    spawn: Spawn, arq_redis: ArqRedis, config: Config, counters: Counters
) -> None:
    job = await arq_redis.enqueue_job("no_such_job", note="x")
    assert job is not None
    before = await worker_cli(config, "inspect", job.job_id, UNKNOWN_JOB_GRACE="300")
    assert before.returncode == 0, before.stdout + before.stderr
    enqueued = json.loads(before.stdout)["job"]["enqueued_at"]
    due = datetime.fromtimestamp(datetime.fromisoformat(enqueued).timestamp() + 300, UTC)
    expected = (
        "no worker knows job 'no_such_job'; it becomes an UnknownJobName dead letter "
        f"UNKNOWN_JOB_GRACE (300 s) after its enqueue (at {due.isoformat(timespec='seconds')})"
    )
    assert json.loads(before.stdout)["waiting"] == expected

    await spawn(UNKNOWN_JOB_GRACE="300")

    async def deferred() -> bool:
        return await job.status() == JobStatus.deferred

    await wait_until(deferred, timeout=30, what="the worker to defer the unknown job")
    during = await worker_cli(config, "inspect", job.job_id, UNKNOWN_JOB_GRACE="300")
    shown = json.loads(during.stdout)
    assert shown["status"] == "deferred" and shown["waiting"] == expected


async def test_inspect_says_a_poison_payload_becomes_a_dead_letter(
    raw: redis_py.Redis, config: Config
) -> None:
    job_id = uuid.uuid4().hex
    await raw.set(f"arq:job:{job_id}", b"\x80\x04not json")
    await raw.zadd(config.queue_name, {job_id: 1})
    done = await worker_cli(config, "inspect", job_id)
    assert done.returncode == 0, done.stdout + done.stderr
    waiting = json.loads(done.stdout)["waiting"]
    assert waiting.startswith("its payload is not a job of this queue (")
    assert waiting.endswith("the next worker to take it makes it a PoisonPayload dead letter")
