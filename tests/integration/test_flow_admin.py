"""The operator side of flow control (worker/queue/flow_admin.py) against the real Redis, with the
real claim script (worker/runtime/claims.py): pause and resume, limits set and cleared at run
time, and each limit's use as status, /metrics and the dashboard read it."""

from __future__ import annotations

import time

import pytest
from arq.connections import ArqRedis

from pgpool_client.handle import JobHandle, JobStatus
from tests.integration.test_flow_claims import LEASE_MS, claim, finish, ids, job
from worker.config import Config
from worker.ops.inspect_cli import inspect_job, job_status
from worker.queue import flow_admin, flow_usage
from worker.queue.enqueue import enqueue_many
from worker.queue.keys import BLOCKED_SCORE, blocked_index_key, limits_key, paused_key
from worker.queue.stats import queue_stats
from worker.runtime.claims import Claimer

pytestmark = pytest.mark.integration


def limit_of(state: flow_usage.FlowState, name: str) -> flow_usage.LimitUse:
    return next(u for u in state.limits if u.name == name)


async def test_a_paused_name_waits_queued_and_blocked_and_resume_runs_every_job(
    config: Config, arq_redis: ArqRedis
) -> None:
    q = config.queue_name
    paused, other = ids(5, "paused"), ids(1, "other")
    await enqueue_many(arq_redis, q, [(i, job("count_users")) for i in paused])
    await enqueue_many(arq_redis, q, [(other[0], job("get_user"))])
    assert await flow_admin.pause(arq_redis, q, ["count_users"]) == ["count_users"]
    assert await flow_admin.pause(arq_redis, q, ["count_users"]) == ["count_users"]  # idempotent
    claimer = Claimer(arq_redis, q, LEASE_MS)
    assert [c.job_id for c in (await claim(claimer, 10))[0]] == other
    # Blocked: queued (not deferred) for status, inspect and the client; counted apart.
    assert await arq_redis.zscore(q, paused[0]) == BLOCKED_SCORE
    stats = await queue_stats(arq_redis, q, int(LEASE_MS) / 1000)  # the claims' lease
    assert (stats.blocked, stats.scheduled, stats.waiting, stats.running) == (5, 0, 0, 1)
    assert await job_status(arq_redis, q, paused[0]) == "queued"
    assert await JobHandle(arq_redis, paused[0], q).status() == JobStatus.queued
    info = await inspect_job(config, arq_redis, paused[0])
    assert info["status"] == "queued" and info["blocked_on"] == ["p:count_users"]
    assert info["due_at"] is None
    state = await flow_usage.flow_state(arq_redis, q)
    assert state.paused == ["count_users"] and state.paused_waiting == {"count_users": 5}

    assert await flow_admin.resume(arq_redis, q, ["count_users"]) == []
    assert await flow_admin.resume(arq_redis, q, ["count_users"]) == []  # idempotent
    assert [c.job_id for c in (await claim(claimer, 10))[0]] == paused
    assert (await queue_stats(arq_redis, q, config.job_lease)).blocked == 0


async def test_resume_all_ends_the_whole_queue_pause_and_frees_every_unpaused_names_jobs(
    config: Config, arq_redis: ArqRedis
) -> None:
    q = config.queue_name
    counted, listed = ids(3, "count"), ids(2, "list")
    await enqueue_many(arq_redis, q, [(i, job("count_users")) for i in counted])
    await enqueue_many(arq_redis, q, [(i, job("list_users")) for i in listed])
    await flow_admin.pause(arq_redis, q, ["count_users", "list_users"])
    claimer = Claimer(arq_redis, q, LEASE_MS)
    assert (await claim(claimer, 10))[0] == []  # both names' jobs moved aside
    # The pause of count_users was dropped outside `resume` (no re-check asked): its gate stays
    # out of sight until a resume looks again at every pause gate whose name is not paused.
    await arq_redis.srem(paused_key(q), "count_users")  # type: ignore[misc]
    assert await flow_admin.pause(arq_redis, q, [flow_admin.WHOLE_QUEUE]) == ["*", "list_users"]
    assert (await claim(claimer, 10))[0] == []
    # Names paused one by one stay paused.
    assert await flow_admin.resume(arq_redis, q, [flow_admin.WHOLE_QUEUE]) == ["list_users"]
    assert [c.job_id for c in (await claim(claimer, 10))[0]] == counted
    assert await arq_redis.zscore(blocked_index_key(q), "p:list_users") == float("inf")
    await flow_admin.resume(arq_redis, q, ["list_users"])
    assert [c.job_id for c in (await claim(claimer, 10))[0]] == listed


async def test_a_limit_set_at_run_time_lets_waiting_jobs_go_and_clear_restores_the_declared(
    config: Config, arq_redis: ArqRedis
) -> None:
    q = config.queue_name
    limited = job("count_users", concurrency=[{"name": "heavy-db", "key": "", "max": 1}])
    job_ids = ids(6)
    await enqueue_many(arq_redis, q, [(i, limited) for i in job_ids])
    claimer = Claimer(arq_redis, q, LEASE_MS)
    first, _ = await claim(claimer, 10)
    assert [c.job_id for c in first] == job_ids[:1]
    heavy = limit_of(await flow_usage.flow_state(arq_redis, q), "heavy-db")
    assert (heavy.in_use, heavy.blocked, heavy.gates) == (1, 5, 1)
    assert heavy.declared == {"max": 20} and heavy.jobs == ["search_users", "count_users"]

    assert await flow_admin.set_limit(arq_redis, q, "heavy-db", {"max": 3}) == 1
    assert await arq_redis.hget(limits_key(q), "heavy-db") == b'{"max": 3}'  # type: ignore[misc]
    second, _ = await claim(claimer, 10)
    assert [c.job_id for c in second] == job_ids[1:3]  # two more slots, no outcome needed
    heavy = limit_of(await flow_usage.flow_state(arq_redis, q), "heavy-db")
    assert (heavy.in_use, heavy.blocked, heavy.override) == (3, 3, {"max": 3})

    # 0: an emergency brake; the jobs that finish free slots nobody takes.
    await flow_admin.set_limit(arq_redis, q, "heavy-db", {"max": 0})
    await finish(arq_redis, q, [*first, *second])
    assert (await claim(claimer, 10))[0] == []
    heavy = limit_of(await flow_usage.flow_state(arq_redis, q), "heavy-db")
    assert (heavy.in_use, heavy.blocked) == (0, 3)
    # Cleared: the payloads' own max (1) holds again.
    await flow_admin.clear_limit(arq_redis, q, "heavy-db")
    assert [c.job_id for c in (await claim(claimer, 10))[0]] == job_ids[3:4]
    assert limit_of(await flow_usage.flow_state(arq_redis, q), "heavy-db").override is None


async def test_use_sums_every_key_of_a_limit_and_counts_only_live_holders(
    config: Config, arq_redis: ArqRedis
) -> None:
    q = config.queue_name

    def per_user(user: str) -> dict[str, object]:
        return job("get_user", concurrency=[{"name": "per-user", "key": user, "max": 1}])

    seven, eight, nine = ids(3, "u7"), ids(1, "u8"), ids(1, "u9")
    await enqueue_many(arq_redis, q, [(i, per_user("7")) for i in seven])
    await enqueue_many(arq_redis, q, [(eight[0], per_user("8")), (nine[0], per_user("9"))])
    claimer = Claimer(arq_redis, q, LEASE_MS)
    now = int(time.time() * 1000)
    assert len((await claim(claimer, 10, now))[0]) == 3  # one per key
    use = limit_of(await flow_usage.flow_state(arq_redis, q), "per-user")
    # Keys 8 and 9 never blocked: their gates are found by the SCAN, not the gates hash.
    assert (use.kind, use.in_use, use.blocked, use.gates, use.declared) == (
        "concurrency",
        3,
        2,
        3,
        None,
    )
    # A holder whose worker died (no lease key) and whose lease has passed holds nothing.
    await arq_redis.delete(f"arq:in-progress:{eight[0]}")
    await arq_redis.zadd(f"{q}:flow:gate:c:per-user:8", {eight[0]: now - 1})
    use = limit_of(await flow_usage.flow_state(arq_redis, q), "per-user")
    assert use.in_use == 2
    # Bounded: past max_gates the sums cover the gates read and say so.
    state = await flow_usage.flow_state(arq_redis, q, max_gates=1)
    assert not state.complete


async def test_a_rates_waiting_jobs_are_counted_and_its_value_can_be_set(
    config: Config, arq_redis: ArqRedis
) -> None:
    q = config.queue_name
    rated = job(rate=[{"name": "partner", "key": "", "limit": 1, "per_ms": 60_000, "burst": 1}])
    job_ids = ids(4)
    await enqueue_many(arq_redis, q, [(i, rated) for i in job_ids])
    claimer = Claimer(arq_redis, q, LEASE_MS)
    assert len((await claim(claimer, 10))[0]) == 1
    partner = limit_of(await flow_usage.flow_state(arq_redis, q), "partner")
    assert (partner.kind, partner.in_use, partner.blocked) == ("rate", None, 3)
    await flow_admin.set_limit(arq_redis, q, "partner", {"limit": 100, "per_ms": 1000, "burst": 5})
    assert len((await claim(claimer, 10))[0]) == 3
    partner = limit_of(await flow_usage.flow_state(arq_redis, q), "partner")
    assert partner.blocked == 0 and partner.override == {"limit": 100, "per_ms": 1000, "burst": 5}
