"""Flow control in the claim script (worker/runtime/flow_lua.py), against the real Redis: the
claims, the blocked sets, the outcomes that free gates, with explicit clocks (no waiting)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from arq.connections import ArqRedis

from pgpool_client.handle import ABORT_SCRIPT
from worker.config import Config
from worker.queue.enqueue import enqueue_many, enqueue_payload
from worker.queue.keys import (
    BLOCKED_SCORE,
    blocked_index_key,
    blocked_key,
    gate_key,
    limits_key,
    paused_key,
)
from worker.runtime.claimed import Claim
from worker.runtime.claims import Claimer
from worker.runtime.completer import RECENT_FAILURES, Completer, Outcome

pytestmark = pytest.mark.integration

LEASE_MS = "60000"


def job(name: str = "get_user", **flow: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"f": name, "a": [], "k": {}}
    if flow:
        payload["flow"] = flow
    return payload


def ids(count: int, tag: str = "j") -> list[str]:
    return [f"{tag}{i:03d}-{uuid.uuid4().hex[:6]}" for i in range(count)]


async def claim(claimer: Claimer, free: int, now: int | None = None) -> tuple[list[Claim], Any]:
    claimed, next_due, _ = await claimer.claim(now or int(time.time() * 1000), free)
    return [Claim.from_entry(e) for e in claimed], next_due


async def finish(redis: ArqRedis, queue: str, claims: list[Claim], kind: str = "finish") -> None:
    completer = Completer(redis, queue)
    args: list[Any] = [RECENT_FAILURES]
    for c in claims:
        outcome = Outcome(c.job_id, kind, gates=c.gates, priority=c.priority)
        if kind == "retry":
            outcome.new_score = int(time.time() * 1000)
        args += Completer._fields(outcome)
    await completer.finish_script(keys=[queue, f"{queue}:failures"], args=args)


async def test_a_concurrency_limit_holds_across_claims_and_frees_with_outcomes(
    config: Config, arq_redis: ArqRedis
) -> None:
    q = config.queue_name
    limited = job(concurrency=[{"name": "per-user", "key": "7", "max": 3}])
    job_ids = ids(10)
    await enqueue_many(arq_redis, q, [(i, limited) for i in job_ids])
    claimer = Claimer(arq_redis, q, LEASE_MS)
    first, _ = await claim(claimer, 50)
    assert [c.job_id for c in first] == job_ids[:3]
    assert all(c.gates == b'["c:per-user:7"]' for c in first)
    gate = "c:per-user:7"
    assert await arq_redis.zcard(blocked_key(q, gate)) == 7
    assert await arq_redis.zscore(q, job_ids[5]) == BLOCKED_SCORE  # out of the due range
    again, _ = await claim(claimer, 50)
    assert again == []  # nothing due: the blocked jobs are not looked at again
    await arq_redis.delete(f"{q}:wake")
    await finish(arq_redis, q, first[:2])
    assert await arq_redis.zscore(blocked_index_key(q), gate) == 0  # looked at next round
    assert await arq_redis.llen(f"{q}:wake") == 1  # type: ignore[misc]  # an idle consumer woken
    second, _ = await claim(claimer, 50)
    assert [c.job_id for c in second] == job_ids[3:5]  # in their order, two slots freed
    assert await arq_redis.zcard(gate_key(q, gate)) == 3
    # Another key of the same limit is not held back.
    other = ids(1, "other")[0]
    await enqueue_payload(
        arq_redis, q, other, job(concurrency=[{"name": "per-user", "key": "8", "max": 3}])
    )
    third, _ = await claim(claimer, 50)
    assert [c.job_id for c in third] == [other]


async def test_a_crashed_holders_slot_frees_when_its_lease_ends(
    config: Config, arq_redis: ArqRedis
) -> None:
    q = config.queue_name
    limited = job(concurrency=[{"name": "solo", "key": "", "max": 1}])
    job_ids = ids(3)
    await enqueue_many(arq_redis, q, [(i, limited) for i in job_ids])
    claimer = Claimer(arq_redis, q, LEASE_MS)
    now = int(time.time() * 1000)
    first, _ = await claim(claimer, 5, now)
    assert [c.job_id for c in first] == job_ids[:1]
    assert (await claim(claimer, 5, now + 1000))[0] == []
    # Its worker was SIGKILLed: no outcome; the lease key expires (here: deleted) and the lease's
    # end passes. The next claim after it frees the slot, runs the next job, and the crashed job
    # (due again at its lease's end) waits behind it for the one slot.
    await arq_redis.delete(f"arq:in-progress:{job_ids[0]}")
    later = now + int(LEASE_MS) + 1000
    second, _ = await claim(claimer, 5, later)
    assert len(second) == 1 and second[0].job_id in {job_ids[0], job_ids[1]}
    assert await arq_redis.zcard(gate_key(q, "c:solo:")) == 1
    # A holder whose lease is renewed (its key lives) keeps its slot past its score.
    assert (await claim(claimer, 5, later + int(LEASE_MS) + 1000))[0] == []
    assert await arq_redis.zcard(gate_key(q, "c:solo:")) == 1


async def test_a_rate_lets_one_start_per_interval_and_says_when_the_next_may(
    config: Config, arq_redis: ArqRedis
) -> None:
    q = config.queue_name
    rated = job(rate=[{"name": "partner", "key": "", "limit": 2, "per_ms": 1000, "burst": 1}])
    job_ids = ids(4)
    await enqueue_many(arq_redis, q, [(i, rated) for i in job_ids])
    claimer = Claimer(arq_redis, q, LEASE_MS)
    now = int(time.time() * 1000)
    first, _ = await claim(claimer, 10, now)
    assert [c.job_id for c in first] == job_ids[:1]
    none, next_due = await claim(claimer, 10, now + 10)
    assert none == [] and now + 400 <= float(next_due) <= now + 600
    second, _ = await claim(claimer, 10, now + 500)
    assert [c.job_id for c in second] == job_ids[1:2]
    third, _ = await claim(claimer, 10, now + 1000)
    assert [c.job_id for c in third] == job_ids[2:3]
    # A limit set at run time overrides the declared one: 10 per second, burst 5.
    override = '{"limit": 10, "per_ms": 1000, "burst": 5}'
    await arq_redis.hset(limits_key(q), "partner", override)  # type: ignore[misc]
    fourth, _ = await claim(claimer, 10, now + 3000)
    assert [c.job_id for c in fourth] == job_ids[3:]


async def test_a_paused_name_stays_queued_and_runs_once_resumed(
    config: Config, arq_redis: ArqRedis
) -> None:
    q = config.queue_name
    paused, other = ids(5, "paused"), ids(1, "other")
    await enqueue_many(arq_redis, q, [(i, job("count_users")) for i in paused])
    await enqueue_payload(arq_redis, q, other[0], job("get_user"))
    await arq_redis.sadd(paused_key(q), "count_users")  # type: ignore[misc]
    claimer = Claimer(arq_redis, q, LEASE_MS)
    first, _ = await claim(claimer, 10)
    assert [c.job_id for c in first] == other
    assert await arq_redis.zcard(blocked_key(q, "p:count_users")) == 5
    assert (await claim(claimer, 10))[0] == []
    await arq_redis.srem(paused_key(q), "count_users")  # type: ignore[misc]  # what `resume` does
    await arq_redis.zadd(blocked_index_key(q), {"p:count_users": 0}, xx=True)
    resumed, _ = await claim(claimer, 10)
    assert [c.job_id for c in resumed] == paused
    # The whole queue: nothing is claimed, nothing is moved.
    after = ids(1, "after")[0]
    await enqueue_payload(arq_redis, q, after, job("get_user"))
    await arq_redis.sadd(paused_key(q), "*")  # type: ignore[misc]
    assert (await claim(claimer, 10))[0] == []
    assert await arq_redis.zscore(q, after) != BLOCKED_SCORE
    await arq_redis.srem(paused_key(q), "*")  # type: ignore[misc]
    assert [c.job_id for c in (await claim(claimer, 10))[0]] == [after]


async def test_a_higher_priority_job_goes_first_and_one_claim_in_ten_to_the_oldest(
    config: Config, arq_redis: ArqRedis
) -> None:
    q = config.queue_name
    low = ids(100, "low")
    await enqueue_many(arq_redis, q, [(i, job()) for i in low])
    high = ids(20, "high")
    await enqueue_many(arq_redis, q, [(i, job(priority=9)) for i in high[:10]])
    await enqueue_many(arq_redis, q, [(i, job(priority=5)) for i in high[10:]])
    claimer = Claimer(arq_redis, q, LEASE_MS)
    one, _ = await claim(claimer, 1)
    assert [c.job_id for c in one] == high[:1] and one[0].priority == 9
    ten, _ = await claim(claimer, 10)
    # Nine by priority (9 first, then 5), one for the oldest due job whatever its priority.
    assert [c.job_id for c in ten] == [*high[1:10], low[0]]
    rest, _ = await claim(claimer, 10)
    assert [c.job_id for c in rest[:9]] == high[10:19]
    # A retried job keeps its priority; a finished one leaves the priority set.
    await finish(arq_redis, q, [rest[0]], "retry")
    await finish(arq_redis, q, rest[1:9])
    back, _ = await claim(claimer, 1)
    assert [c.job_id for c in back] == [high[19]]  # due before the retried one
    assert await arq_redis.zscore(f"{q}:flow:priority", high[10]) is not None
    assert await arq_redis.zscore(f"{q}:flow:priority", high[11]) is None
    again, _ = await claim(claimer, 1)
    assert [c.job_id for c in again] == [high[10]] and again[0].priority == 5


async def test_one_tenants_backlog_does_not_hold_back_anothers_job(
    config: Config, arq_redis: ArqRedis
) -> None:
    q = config.queue_name
    tenant_a = ids(1000, "a")
    await enqueue_many(arq_redis, q, [(i, job(fair="tenant-a")) for i in tenant_a])
    b = ids(1, "b")[0]
    await enqueue_payload(arq_redis, q, b, job(fair="tenant-b"))
    # One job of A waits in the queue; the others in A's lane, out of the due range.
    assert await arq_redis.zcard(blocked_key(q, "l:tenant-a")) == 999
    claimer = Claimer(arq_redis, q, LEASE_MS)
    two, _ = await claim(claimer, 2)
    assert {c.job_id for c in two} == {tenant_a[0], b}
    # Alone, a tenant's jobs still go many per round, in their order.
    five, _ = await claim(claimer, 5)
    assert [c.job_id for c in five] == tenant_a[1:6]


async def test_plain_and_undecodable_payloads_are_claimed_as_before(
    config: Config, arq_redis: ArqRedis
) -> None:
    """A payload without "flow" pays nothing: its claim never decodes it (a plain job's entry has
    no gates and priority 0), and payloads that are not JSON are claimed (the worker poisons them)."""
    q = config.queue_name
    plain, garbage = ids(1, "plain")[0], ids(1, "garbage")[0]
    await enqueue_payload(arq_redis, q, plain, job())
    await arq_redis.set(f"arq:job:{garbage}", b'\x80"flow"not json', px=60_000)
    await arq_redis.zadd(q, {garbage: int(time.time() * 1000)})
    claimer = Claimer(arq_redis, q, LEASE_MS)
    claimed, _ = await claim(claimer, 5)
    assert {c.job_id for c in claimed} == {plain, garbage}
    assert all(c.gates == b"" and c.priority == 0 for c in claimed)


async def test_an_aborted_job_is_claimed_to_end_whatever_holds_it_back(
    config: Config, arq_redis: ArqRedis
) -> None:
    q = config.queue_name
    await arq_redis.sadd(paused_key(q), "count_users")  # type: ignore[misc]
    job_id = ids(1, "aborted")[0]
    await enqueue_payload(arq_redis, q, job_id, job("count_users"))
    claimer = Claimer(arq_redis, q, LEASE_MS)
    assert (await claim(claimer, 5))[0] == []
    assert await arq_redis.zscore(q, job_id) == BLOCKED_SCORE
    # The client's abort: a job not due (here: held back) moves to the front of the queue.
    asked = str(int(time.time() * 1000))
    await arq_redis.eval(ABORT_SCRIPT, 2, q, "arq:abort", job_id, asked)  # type: ignore[misc]
    claimed, _ = await claim(claimer, 5)
    assert [(c.job_id, c.aborted) for c in claimed] == [(job_id, True)]
