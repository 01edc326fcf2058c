"""Scale-out: `python -m worker run --processes N` supervises real worker processes; four of them
on one queue run 20,000 jobs, each exactly once, with the right result.

The supervisor's log (its own lines and its children's, which inherit its output) is in a file;
worker PIDs come from its "worker N started (pid P)" lines and from the fleet's registrations.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from arq.connections import ArqRedis
from arq.constants import result_key_prefix

from tests.faults.conftest import (
    ROOT,
    SETTINGS,
    Counters,
    wait_until,
    worker_environment,
)
from worker.config import Config
from worker.db.budget_registry import fleet
from worker.queue import codec
from worker.queue.enqueue import enqueue_many

pytestmark = pytest.mark.faults

SETTING = ("--settings", SETTINGS)
STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")
DRAINED = re.compile(r"shutdown on SIGTERM ◆ (\d+) jobs complete ◆ (\d+) failed ◆ (\d+) retries")


# SHUTDOWN_GRACE (25 s) bounds a worker's drain; the rest is slack for a busy machine.
DRAIN_TIMEOUT = 60.0


class SupervisorProcess:
    """One `python -m worker run` process and its log."""

    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def started(self) -> dict[int, int]:
        """Slot -> the PID of the last worker started in it."""
        return {int(slot): int(pid) for slot, pid in STARTED.findall(self.log())}

    def alive(self) -> bool:
        return self.proc.poll() is None

    def drain(self, timeout: float = DRAIN_TIMEOUT) -> int:
        """SIGTERM it and wait for its exit status; on a timeout the failure shows its log."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the supervisor did not drain within {timeout:g} s:\n{self.log()[-8000:]}"
            ) from None


StartSupervisor = Callable[..., Awaitable[SupervisorProcess]]


@pytest.fixture
async def supervisor(config: Config, tmp_path: Path) -> AsyncIterator[StartSupervisor]:
    """Start `python -m worker run`; at the end SIGTERM (then SIGKILL) it and its children by PID."""
    started: list[SupervisorProcess] = []

    async def start(processes: int, **env: str) -> SupervisorProcess:
        environment = worker_environment(config, **env)
        log_path = tmp_path / f"supervisor-{len(started)}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(  # noqa: ASYNC220  (fork+exec, returns at once)
                [sys.executable, "-m", "worker", "run", "--processes", str(processes), *SETTING],
                cwd=ROOT,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        sup = SupervisorProcess(proc, log_path)
        started.append(sup)
        return sup

    yield start
    for sup in started:
        if sup.alive():
            try:
                sup.drain()
            except AssertionError:
                for pid in sup.started().values():
                    _kill(pid)
                sup.proc.kill()
                sup.proc.wait()


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def ready(sup: SupervisorProcess, redis: ArqRedis, queue: str, n: int) -> dict[int, int]:
    """Wait until the last-started worker of each of the ``n`` slots has registered its pool."""

    async def registered() -> dict[int, int]:
        if not sup.alive():
            raise AssertionError(f"the supervisor exited:\n{sup.log()}")
        pids = sup.started()
        live = {r.pid for r in await fleet(redis, queue)}
        return pids if len(pids) == n and set(pids.values()) <= live else {}

    try:
        return await wait_until(registered, timeout=40, what=f"{n} registered workers")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the supervisor's log:\n{sup.log()}") from None


async def test_supervisor_restarts_a_killed_worker_and_drains_all_on_sigterm(
    supervisor: StartSupervisor, config: Config, arq_redis: ArqRedis, counters: Counters
) -> None:
    queue = config.queue_name
    sup = await supervisor(2)
    pids = await ready(sup, arq_redis, queue, 2)

    # The children run jobs.
    keys = [f"sup-{uuid.uuid4().hex[:8]}-{i}" for i in range(40)]
    jobs = [await arq_redis.enqueue_job("fault_write", key=k) for k in keys]
    for job in jobs:
        assert job is not None
        assert (await job.result(timeout=20))["key"] in keys

    # SIGKILL one child: the supervisor says why and starts another in its slot.
    os.kill(pids[1], signal.SIGKILL)

    async def replaced() -> int:
        new = sup.started().get(1, pids[1])
        return new if new != pids[1] else 0

    new_pid = await wait_until(replaced, timeout=20, what="the killed worker's replacement")
    assert re.search(
        rf"worker 1 \(pid {pids[1]}\) was killed by SIGKILL .* restarting it in", sup.log()
    )
    after = await ready(sup, arq_redis, queue, 2)
    assert after == {1: new_pid, 2: pids[2]}
    assert pids[1] not in {r.pid for r in await fleet(arq_redis, queue)}, (
        "the dead one's share is free"
    )

    # A job running when SIGTERM arrives finishes (once), then every child exits and so does the
    # supervisor, with status 0.
    key = f"drain-{uuid.uuid4().hex[:8]}"
    job = await arq_redis.enqueue_job("fault_write", key=key, hold=1.0)
    assert job is not None
    await wait_until(lambda: counters.runs(key), what="the long job to start")
    status = sup.drain()
    log = sup.log()
    assert status == 0, log
    assert "all drained cleanly" in log
    assert len(DRAINED.findall(log)) == 2, log
    assert (await job.result(timeout=5))["key"] == key
    assert len(await counters.runs(key)) == 1 and await counters.effects(key) == 1
    assert not any(_exists(pid) for pid in (new_pid, pids[2]))
    assert await fleet(arq_redis, queue) == [], "drained workers take their registrations back"


JOBS = 20_000
PROCESSES = 4


@pytest.mark.timeout(300)
async def test_four_processes_run_twenty_thousand_jobs_exactly_once(
    supervisor: StartSupervisor,
    config: Config,
    arq_redis: ArqRedis,
    counters: Counters,
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    queue = config.queue_name
    # 4 processes x 5 connections; if the shared server is short of that, shrink rather than fail.
    sup = await supervisor(
        PROCESSES,
        WORKER_MAX_JOBS="30",
        PG_POOL_MAX_SIZE="5",
        PG_POOL_OVER_BUDGET="shrink",
        JOB_LEASE="10",
        PG_IDLE_IN_TRANSACTION_TIMEOUT="5",
    )
    await ready(sup, arq_redis, queue, PROCESSES)
    run = uuid.uuid4().hex[:8]
    keys = [f"{run}-{i}" for i in range(JOBS)]
    jobs: list[tuple[str, dict[str, Any]]] = [
        (f"{key}-job", {"f": "fault_write", "a": [], "k": {"key": key}}) for key in keys
    ]
    assert all(await enqueue_many(arq_redis, queue, jobs))

    async def drained() -> bool:
        if not sup.alive():
            raise AssertionError(f"the supervisor exited:\n{sup.log()}")
        # A job leaves the queue when its result is recorded, after its effect committed.
        return bool(await arq_redis.zcard(queue) == 0)

    # ~45 s on this 2-core machine (every job: three commits, a claim and a fenced effect); the
    # deadline leaves room for a machine busy with other work.
    await wait_until(drained, timeout=200, what=f"{JOBS} jobs")

    # Each job ran once and applied its effect once.
    runs = await pool.fetchrow(
        "SELECT count(*) AS n, count(DISTINCT key) AS keys, max(try) AS max_try FROM fault_runs"
        " WHERE key LIKE $1",
        f"{run}-%",
    )
    assert runs is not None and (runs["n"], runs["keys"], runs["max_try"]) == (JOBS, JOBS, 1)
    effects = await pool.fetchrow(
        "SELECT count(*) AS n, count(DISTINCT key) AS keys FROM fault_effects WHERE key LIKE $1",
        f"{run}-%",
    )
    assert effects is not None and (effects["n"], effects["keys"]) == (JOBS, JOBS)
    assert await counters.dead_letters() == []

    # Every result is the right one (then removed: 20,000 results would sit in Redis for an hour).
    result_keys = [result_key_prefix + job_id for job_id, _ in jobs]
    raw = await arq_redis.mget(result_keys)
    for start in range(0, len(result_keys), 5000):
        await arq_redis.delete(*result_keys[start : start + 5000])
    for (job_id, job), data in zip(jobs, raw, strict=True):
        assert data is not None, f"no result for {job_id}"
        result = codec.deserialize(data)
        assert result["s"] is True, result
        assert result["r"] == {"key": job["k"]["key"], "job_try": 1, "token_seen": False}

    # All four processes took part, and together they ran each job once.
    assert sup.drain() == 0, sup.log()
    done = [(int(c), int(f), int(r)) for c, f, r in DRAINED.findall(sup.log())]
    assert len(done) == PROCESSES, sup.log()
    assert sum(c for c, _, _ in done) == JOBS and all(c > 0 for c, _, _ in done), done
    assert all((f, r) == (0, 0) for _, f, r in done), done
