"""F1 to F4: crashes are redelivered within the lease; SIGTERM drains, then re-queues."""

from __future__ import annotations

import signal
import time
import uuid

import pytest
from arq.connections import ArqRedis

from tests.faults.conftest import Counters, Spawn, wait_until

pytestmark = pytest.mark.faults

LEASE = 2.0


async def test_f1_sigkill_mid_job_reruns_within_the_lease_with_one_effect(
    spawn: Spawn, arq_redis: ArqRedis, counters: Counters
) -> None:
    key = f"f1-{uuid.uuid4().hex[:8]}"
    first = await spawn()
    job = await arq_redis.enqueue_job("fault_write", key=key, hold=3.0)
    assert job is not None
    await wait_until(lambda: counters.runs(key), what="the first run")
    first.signal(signal.SIGKILL)
    first.wait(10)
    killed_at = time.monotonic()
    await spawn()

    async def rerun() -> bool:
        return len(await counters.runs(key)) >= 2

    await wait_until(rerun, timeout=LEASE + 15, what="the re-run")
    redelivered_after = time.monotonic() - killed_at
    result = await job.result(timeout=20)
    runs = await counters.runs(key)
    assert [r["try"] for r in runs] == [1, 2]
    assert result["job_try"] == 2
    assert await counters.effects(key) == 1
    # The lease (2 s), not job_timeout + 10 s (20 s here), bounds the wait; the second worker's
    # start-up (imports, pool) is in this figure too.
    assert redelivered_after < LEASE + 8, f"re-run took {redelivered_after:.1f}s"


async def test_f2_repeated_crashes_end_in_the_dead_letters(
    spawn: Spawn, arq_redis: ArqRedis, counters: Counters
) -> None:
    key = f"f2-{uuid.uuid4().hex[:8]}"
    job = await arq_redis.enqueue_job("fault_write", key=key, hold=5.0)
    assert job is not None
    for crash in range(1, 4):  # MAX_TRIES=3 for this test
        worker = await spawn(MAX_TRIES="3")

        async def started(n: int = crash) -> bool:
            return len(await counters.runs(key)) >= n

        await wait_until(started, timeout=20, what=f"run {crash}")
        worker.signal(signal.SIGKILL)
        worker.wait(10)
    await spawn(MAX_TRIES="3")

    async def dead() -> bool:
        return bool(await counters.dead_letters())

    await wait_until(dead, timeout=20, what="the dead letter")
    letters = await counters.dead_letters()
    assert len(letters) == 1
    assert letters[0]["reason"] == "tries-exhausted" and letters[0]["job_id"] == job.job_id
    assert letters[0]["attempts"] == 4
    assert len(await counters.runs(key)) == 3  # no fourth run
    assert await counters.effects(key) == 0


async def test_f3_sigterm_lets_a_short_job_finish_once(
    spawn: Spawn, arq_redis: ArqRedis, counters: Counters
) -> None:
    key = f"f3-{uuid.uuid4().hex[:8]}"
    worker = await spawn()  # SHUTDOWN_GRACE=3
    job = await arq_redis.enqueue_job("fault_write", key=key, hold=1.0)
    assert job is not None
    await wait_until(lambda: counters.runs(key), what="the run")
    signalled = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(15) == 0
    drained_in = time.monotonic() - signalled
    result = await job.result(timeout=5)
    assert result["job_try"] == 1
    assert len(await counters.runs(key)) == 1
    assert await counters.effects(key) == 1
    assert drained_in < 3 + 5, f"drain took {drained_in:.1f}s"


async def test_f4_sigterm_requeues_a_long_job_without_charging_a_try(
    spawn: Spawn, arq_redis: ArqRedis, counters: Counters
) -> None:
    key = f"f4-{uuid.uuid4().hex[:8]}"
    worker = await spawn(MAX_TRIES="1")  # a charged try would exhaust the job
    job = await arq_redis.enqueue_job("fault_write", key=key, hold=6.0)
    assert job is not None
    await wait_until(lambda: counters.runs(key), what="the run")
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    assert await counters.effects(key) == 0  # cancelled mid-transaction: rolled back
    await spawn(MAX_TRIES="1")
    result = await job.result(timeout=30)
    runs = await counters.runs(key)
    assert len(runs) == 2 and result["job_try"] == runs[-1]["try"] == 1
    assert await counters.effects(key) == 1
    assert await counters.dead_letters() == []
