"""Flow control (issue #12) with real worker processes: a fleet-wide concurrency limit, a rate, a
SIGKILLed holder's slots, pause and resume, priorities and fairness, a malformed "flow" payload.

Every job is the fault suite's ``fault_write`` (one row in ``fault_runs`` when its function starts,
one effect once, ``hold`` seconds of ``pg_sleep`` after the effect's row in its transaction), with
its "flow" in the payload as docs/wire-format.md allows any producer to set it. A run's span,
from its ``fault_runs`` row to its effect's time plus ``hold`` (both the database's clock, one clock
for every process), lies inside the time its job holds its slot (the claim to the recorded
outcome), so the spans' maximum overlap bounds the holders from below, exactly, after the fact.
A sampler beside it counts the live holders of the gate in Redis every 10 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
from arq.connections import ArqRedis

from tests.faults.conftest import Counters, Spawn, WorkerProcess, wait_until
from worker.config import Config
from worker.queue.enqueue import enqueue_many
from worker.queue.keys import blocked_index_key, blocked_key, gate_key, paused_key

pytestmark = pytest.mark.faults

FLOW_SETTINGS = "tests.faults.flow_settings.FlowSettings"
LEASE = 2.0  # JOB_LEASE of FAULT_ENV
MAX_JOBS = 10  # WORKER_MAX_JOBS of FAULT_ENV

# The members of a concurrency gate whose lease lives: the slots in use (as flow.md counts them).
LIVE_HOLDERS = """
local n = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  n = n + redis.call('EXISTS', 'arq:in-progress:' .. id)
end
return n
"""


def jobs_of(
    run: str, count: int, flow: dict[str, Any] | None, name: str = "fault_write", **kwargs: Any
) -> list[tuple[str, dict[str, Any]]]:
    """``count`` payloads of ``name`` with keys ``<run>-00000``... (ids sort as they are numbered)."""
    out: list[tuple[str, dict[str, Any]]] = []
    for i in range(count):
        key = f"{run}-{i:05d}"
        job: dict[str, Any] = {"f": name, "a": [], "k": {"key": key, **kwargs}}
        if flow is not None:
            job["flow"] = flow
        out.append((f"{key}-job", job))
    return out


async def start_fleet(spawn: Spawn, n: int, **env: str) -> list[WorkerProcess]:
    workers = [await spawn(ready=False, settings=FLOW_SETTINGS, **env) for _ in range(n)]
    for worker in workers:
        await worker.ready(timeout=40)
    return workers


async def finished(pool: asyncpg.Pool[asyncpg.Record], run: str) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM fault_effects WHERE key LIKE $1", f"{run}-%"
    )
    return count


async def drained(
    pool: asyncpg.Pool[asyncpg.Record], run: str, count: int, workers: list[WorkerProcess]
) -> bool:
    for worker in workers:
        if not worker.alive():
            raise AssertionError(f"a worker exited:\n{worker.log()}")
    return await finished(pool, run) >= count


async def assert_each_once(pool: asyncpg.Pool[asyncpg.Record], run: str, count: int) -> None:
    """Every one of the run's ``count`` jobs applied its effect exactly once."""
    row = await pool.fetchrow(
        "SELECT count(*) AS n, count(DISTINCT key) AS keys FROM fault_effects WHERE key LIKE $1",
        f"{run}-%",
    )
    assert row is not None and (row["n"], row["keys"]) == (count, count)


async def spans(pool: asyncpg.Pool[asyncpg.Record], run: str) -> list[tuple[datetime, datetime]]:
    """Each effect's run: from its try's start to its effect's time plus its hold."""
    rows = await pool.fetch(
        "SELECT r.at AS started, e.at + make_interval(secs => $2) AS ended"
        " FROM fault_effects e JOIN fault_runs r ON r.key = e.key AND r.try = e.try"
        " WHERE e.key LIKE $1",
        f"{run}-%",
        HOLD,
    )
    return [(r["started"], r["ended"]) for r in rows]


def max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    """The most intervals [start, end) that contain one instant."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    depth = most = 0
    for _, step in events:  # at one instant, an end (-1) sorts before a start (+1)
        depth += step
        most = max(most, depth)
    return most


@contextlib.asynccontextmanager
async def sampling(redis: ArqRedis, gate: str) -> AsyncIterator[list[int]]:
    """Count the live holders of ``gate`` every 10 ms while the block runs: the samples."""
    samples: list[int] = []
    script = redis.register_script(LIVE_HOLDERS)

    async def sample() -> None:
        while True:
            samples.append(int(await script(keys=[gate])))
            await asyncio.sleep(0.01)

    task = asyncio.create_task(sample())
    try:
        yield samples
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


HOLD = 0.01  # seconds of pg_sleep in each limited job: long enough for runs to overlap
LIMITED = 2000
LIMIT = 3


@pytest.mark.timeout(300)
async def test_four_processes_never_run_more_than_the_limit_of_one_key(
    spawn: Spawn,
    config: Config,
    arq_redis: ArqRedis,
    counters: Counters,
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    """2,000 jobs on key K with a limit of 3, four processes of 10 slots each: never more than 3
    run at once (sampled every 10 ms, and exactly from the runs' spans); all 2,000 done once."""
    q = config.queue_name
    workers = await start_fleet(spawn, 4)
    run = uuid.uuid4().hex[:8]
    flow = {"concurrency": [{"name": "per-key", "key": "K", "max": LIMIT}]}
    gate = gate_key(q, "c:per-key:K")
    async with sampling(arq_redis, gate) as samples:
        assert all(await enqueue_many(arq_redis, q, jobs_of(run, LIMITED, flow, hold=HOLD)))
        await wait_until(
            lambda: drained(pool, run, LIMITED, workers), timeout=240, what=f"{LIMITED} jobs"
        )
    assert await counters.dead_letters() == []
    await assert_each_once(pool, run, LIMITED)
    runs: int = await pool.fetchval("SELECT count(*) FROM fault_runs WHERE key LIKE $1", f"{run}-%")
    assert runs == LIMITED  # no job ran twice
    assert len(samples) > 100 and max(samples) <= LIMIT, max(samples)
    assert max(samples) == LIMIT  # the limit was reached: the runs did overlap
    overlap = max_overlap(await spans(pool, run))
    assert 2 <= overlap <= LIMIT, overlap
    assert await arq_redis.zcard(gate) == 0, "every slot was given back"
    assert await arq_redis.exists(blocked_key(q, "c:per-key:K")) == 0


RATED = 2000
RATE = 50  # starts per second on key R


@pytest.mark.timeout(300)
async def test_a_rate_holds_across_four_processes(
    spawn: Spawn,
    config: Config,
    arq_redis: ArqRedis,
    counters: Counters,
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    """2,000 jobs at 50 per second on key R over four processes (about 40 s): in every 1 s window
    at most 50 start (one more where a window holds both of its ends), and the starts take at
    least (2,000 - 1) / 50 s less a tenth (a lower bound only: the rate is a ceiling)."""
    q = config.queue_name
    workers = await start_fleet(spawn, 4)
    run = uuid.uuid4().hex[:8]
    flow = {"rate": [{"name": "partner", "key": "R", "limit": RATE, "per_ms": 1000, "burst": 1}]}
    assert all(await enqueue_many(arq_redis, q, jobs_of(run, RATED, flow)))
    await wait_until(lambda: drained(pool, run, RATED, workers), timeout=200, what=f"{RATED} jobs")
    assert await counters.dead_letters() == []
    await assert_each_once(pool, run, RATED)
    starts = [
        r["at"]
        for r in await pool.fetch(
            "SELECT at FROM fault_runs WHERE key LIKE $1 ORDER BY at", f"{run}-%"
        )
    ]
    assert len(starts) == RATED
    second = timedelta(seconds=1)
    ahead, most = 0, 0
    for i, start in enumerate(starts):  # the window [start, start + 1 s] of every start
        while ahead < len(starts) and starts[ahead] <= start + second:
            ahead += 1
        most = max(most, ahead - i)
    assert most <= RATE + 1, f"{most} starts in one second"
    took = (starts[-1] - starts[0]).total_seconds()
    assert took >= 0.9 * (RATED - 1) / RATE, f"{RATED} starts in {took:.1f}s"


KILLED_HOLD = 3.0  # the jobs running when their worker is SIGKILLed


@pytest.mark.timeout(120)
async def test_a_sigkilled_holders_slots_free_within_the_lease(
    spawn: Spawn,
    config: Config,
    arq_redis: ArqRedis,
    counters: Counters,
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    """A worker holding all 3 slots of K is SIGKILLed: another worker, idle because K is full,
    starts K's jobs once the dead holders' leases end (JOB_LEASE=2 s), never more than 3 at once;
    every job is done once (the killed runs' transactions rolled back, re-run)."""
    q = config.queue_name
    gate_name = "c:crash:K"
    flow = {"concurrency": [{"name": "crash", "key": "K", "max": LIMIT}]}
    run = uuid.uuid4().hex[:8]
    first = (await start_fleet(spawn, 1))[0]
    # The first three hold their slots for 3 s (their effect's transaction open); then 27 short.
    jobs = jobs_of(run, 30, flow, hold=HOLD)
    for _, job in jobs[:LIMIT]:
        job["k"]["hold"] = KILLED_HOLD
    async with sampling(arq_redis, gate_key(q, gate_name)) as samples:
        assert all(await enqueue_many(arq_redis, q, jobs))

        async def holding() -> bool:
            return (
                len(await counters.runs(f"{run}-00002")) == 1
                and (await counters.runs(f"{run}-00000")) != []
            )

        await wait_until(holding, timeout=20, what="the first worker to hold the 3 slots")
        second = (await start_fleet(spawn, 1))[0]
        started_before: int = await pool.fetchval(
            "SELECT count(*) FROM fault_runs WHERE key LIKE $1", f"{run}-%"
        )
        assert started_before == LIMIT, "K is full: the second worker started none"
        first.signal(signal.SIGKILL)
        first.wait(10)
        killed_at: datetime = await pool.fetchval("SELECT clock_timestamp()")
        await wait_until(lambda: drained(pool, run, 30, [second]), timeout=60, what="30 jobs")
    after_kill: datetime = await pool.fetchval(
        "SELECT min(at) FROM fault_runs WHERE key LIKE $1 AND at > $2", f"{run}-%", killed_at
    )
    freed_after = (after_kill - killed_at).total_seconds()
    # The lease bounds the wait (the dead holders' in-progress keys expire), plus a claim round.
    assert freed_after < LEASE + 3, f"the slots freed {freed_after:.1f}s after the kill"
    await assert_each_once(pool, run, 30)
    for i in range(LIMIT):  # killed on try 1, done on try 2
        assert [r["try"] for r in await counters.runs(f"{run}-{i:05d}")] == [1, 2]
    assert await counters.dead_letters() == []
    assert max(samples) <= LIMIT, max(samples)
    assert max_overlap(await spans(pool, run)) <= LIMIT
    assert await arq_redis.zcard(gate_key(q, gate_name)) == 0


PAUSED = 50
OTHERS = 300


@pytest.mark.timeout(120)
async def test_a_paused_name_never_starts_and_resumed_runs_once(
    spawn: Spawn,
    config: Config,
    arq_redis: ArqRedis,
    counters: Counters,
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    """``fault_write_b`` paused (flow.md's SADD): its 50 jobs stay queued while 300 of the other
    name run (the workers are live), and through a restart of the fleet; resumed (SREM, then the
    gate looked at again), each of the 50 runs once."""
    q = config.queue_name
    await arq_redis.sadd(paused_key(q), "fault_write_b")  # type: ignore[misc]
    workers = await start_fleet(spawn, 2)
    paused_run, other_run = uuid.uuid4().hex[:8], uuid.uuid4().hex[:8]
    assert all(await enqueue_many(arq_redis, q, jobs_of(paused_run, PAUSED, None, "fault_write_b")))
    assert all(await enqueue_many(arq_redis, q, jobs_of(other_run, OTHERS, None)))
    await wait_until(lambda: drained(pool, other_run, OTHERS, workers), timeout=60, what="others")
    assert await counters_started(pool, paused_run) == 0
    assert await arq_redis.zcard(blocked_key(q, "p:fault_write_b")) == PAUSED
    # The pause is kept in Redis: a new fleet (a deployment) keeps it.
    for worker in workers:
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0, worker.log()
    workers = await start_fleet(spawn, 2)
    later = uuid.uuid4().hex[:8]
    assert all(await enqueue_many(arq_redis, q, jobs_of(later, 100, None)))
    await wait_until(lambda: drained(pool, later, 100, workers), timeout=60, what="more others")
    assert await counters_started(pool, paused_run) == 0
    # resume (flow.md): SREM, then the pause gate is looked at again by the next claim.
    await arq_redis.srem(paused_key(q), "fault_write_b")  # type: ignore[misc]
    await arq_redis.zadd(blocked_index_key(q), {"p:fault_write_b": 0}, xx=True)
    await wait_until(lambda: drained(pool, paused_run, PAUSED, workers), timeout=60, what="paused")
    await assert_each_once(pool, paused_run, PAUSED)
    assert await counters_started(pool, paused_run) == PAUSED  # each ran once
    assert await counters.dead_letters() == []
    assert await arq_redis.exists(blocked_key(q, "p:fault_write_b")) == 0


async def counters_started(pool: asyncpg.Pool[asyncpg.Record], run: str) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM fault_runs WHERE key LIKE $1", f"{run}-%"
    )
    return count


BACKLOG = 10_000
BACKLOG_HOLD = 0.05


async def first_claim_round(
    spawn: Spawn,
    config: Config,
    arq_redis: ArqRedis,
    pool: asyncpg.Pool[asyncpg.Record],
    backlog: list[tuple[str, dict[str, Any]]],
    late: tuple[str, dict[str, Any]],
) -> int:
    """The late job's place among the runs (1 = first) when the whole queue, paused while the
    backlog and then the late job were enqueued, is resumed before one idle worker of 10 slots.

    One claim round claims 10 jobs; the next one only once one of them finished, and each job
    holds its connection for ``BACKLOG_HOLD`` s, so the first round's jobs start first: the late
    job started "within one claim round" when it is among the first 10 to start."""
    q = config.queue_name
    await arq_redis.sadd(paused_key(q), "*")  # type: ignore[misc]  # pause the whole queue (flow.md)
    workers = await start_fleet(spawn, 1)
    assert all(await enqueue_many(arq_redis, q, backlog))
    assert all(await enqueue_many(arq_redis, q, [late]))
    await arq_redis.srem(paused_key(q), "*")  # type: ignore[misc]
    late_key = late[1]["k"]["key"]

    async def late_started() -> bool:
        for worker in workers:
            assert worker.alive(), worker.log()
        return bool(await pool.fetchval("SELECT 1 FROM fault_runs WHERE key = $1", late_key))

    await wait_until(late_started, timeout=120, what="the late job to start")
    place: int = await pool.fetchval(
        "SELECT count(*) FROM fault_runs WHERE at <= (SELECT at FROM fault_runs WHERE key = $1)",
        late_key,
    )
    left: int = await arq_redis.zcard(q)
    assert left > BACKLOG // 2, "the backlog was still due when the late job started"
    return place


@pytest.mark.timeout(200)
async def test_a_high_priority_job_starts_in_the_first_claim_round_before_a_backlog(
    spawn: Spawn,
    config: Config,
    arq_redis: ArqRedis,
    counters: Counters,
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    """10,000 jobs of priority 0 due, then one of priority 9: it starts in the first claim round
    (among the first 10 runs of a worker of 10 slots), not after the 10,000."""
    run = uuid.uuid4().hex[:8]
    backlog = jobs_of(run, BACKLOG, None, hold=BACKLOG_HOLD)
    late = jobs_of(f"{run}-high", 1, {"priority": 9})[0]
    place = await first_claim_round(spawn, config, arq_redis, pool, backlog, late)
    assert place <= MAX_JOBS, f"the high-priority job was run {place}th"


@pytest.mark.timeout(200)
async def test_one_tenants_backlog_does_not_delay_anothers_job_past_a_claim_round(
    spawn: Spawn,
    config: Config,
    arq_redis: ArqRedis,
    counters: Counters,
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    """Tenant A's 10,000 jobs due (fairness key "tenant-a"), then tenant B's one: B's starts in
    the first claim round (among the first 10 runs of a worker of 10 slots)."""
    run = uuid.uuid4().hex[:8]
    backlog = jobs_of(run, BACKLOG, {"fair": "tenant-a"}, hold=BACKLOG_HOLD)
    late = jobs_of(f"{run}-b", 1, {"fair": "tenant-b"})[0]
    place = await first_claim_round(spawn, config, arq_redis, pool, backlog, late)
    assert place <= MAX_JOBS, f"tenant B's job was run {place}th"


async def test_a_malformed_flow_is_one_poison_dead_letter_with_the_reason(
    spawn: Spawn, config: Config, arq_redis: ArqRedis, counters: Counters
) -> None:
    """A payload whose "flow" breaks docs/wire-format.md's rules is refused, never run outside
    its limits: one dead letter (poison) whose message says what is wrong; the worker runs on."""
    q = config.queue_name
    await start_fleet(spawn, 1)
    run = uuid.uuid4().hex[:8]
    bad = {
        "zero": {"concurrency": [{"name": "per-key", "key": "K", "max": 0}]},
        "no-burst": {
            "rate": [{"name": "partner", "key": "", "limit": 5, "per_ms": 1000, "burst": 0}]
        },
        "no-period": {"rate": [{"name": "partner", "key": "", "limit": 5}]},
        "priority": {"priority": 12},
    }
    jobs = [
        (
            f"{run}-{case}",
            {"f": "fault_write", "a": [], "k": {"key": f"{run}-{case}"}, "flow": flow},
        )
        for case, flow in bad.items()
    ]
    assert all(await enqueue_many(arq_redis, q, jobs))

    async def all_dead() -> list[dict[str, Any]]:
        letters = await counters.dead_letters()
        return letters if len(letters) >= len(bad) else []

    letters = {d["job_id"]: d for d in await wait_until(all_dead, what="the dead letters")}
    assert set(letters) == {job_id for job_id, _ in jobs}
    for letter in letters.values():
        assert (letter["reason"], letter["error_type"]) == ("poison", "PoisonPayload")
    assert "max 1..1000000" in letters[f"{run}-zero"]["error_message"]
    assert "per_ms" in letters[f"{run}-no-period"]["error_message"]
    assert "priority" in letters[f"{run}-priority"]["error_message"]
    for job_id, _ in jobs:
        assert await counters.runs(job_id) == []
    good = jobs_of(run, 1, {"concurrency": [{"name": "per-key", "key": "K", "max": 1}]})
    assert all(await enqueue_many(arq_redis, q, good))
    await wait_until(lambda: counters.effects(f"{run}-00000"), what="a good job after them")
    assert len(await counters.dead_letters()) == len(bad)
