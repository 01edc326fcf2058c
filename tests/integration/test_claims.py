"""Claim rounds (worker/runtime/claims.py): a round sent again answers its own claims, never new ones."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from arq.connections import ArqRedis
from redis.exceptions import ResponseError

from pgpool_client.enqueue import enqueue_payload
from worker.config import Config
from worker.queue.enqueue import enqueue_many
from worker.queue.keys import wake_key
from worker.runtime.claims import CLAIM_SCRIPT, Claimer
from worker.runtime.completer import Completer, Outcome

pytestmark = pytest.mark.integration

LEASE_MS = "60000"


async def queue_jobs(arq_redis: ArqRedis, queue: str, count: int) -> list[str]:
    ids = [f"claim-{i}-{uuid.uuid4().hex[:6]}" for i in range(count)]
    await enqueue_many(arq_redis, queue, [(i, {"f": "get_user", "a": [], "k": {}}) for i in ids])
    return ids


async def send(claimer: Claimer, free: int, serial: int) -> list[list[Any]]:
    """One call of the script as the claimer makes it, under ``serial``, its reply kept."""
    now = int(time.time() * 1000)
    claimed, _, _ = await claimer.script(
        keys=[claimer.queue, claimer.key], args=[now, free, LEASE_MS, 3_600_000, str(serial)]
    )
    return list(claimed)


async def test_a_round_sent_again_answers_the_same_claims_and_charges_no_try(
    config: Config, arq_redis: ArqRedis
) -> None:
    ids = await queue_jobs(arq_redis, config.queue_name, 5)
    claimer = Claimer(arq_redis, config.queue_name, LEASE_MS)
    first = await send(claimer, 3, claimer.serial)  # its reply "lost"
    again = await send(claimer, 3, claimer.serial)  # redis-py's re-send
    assert [e[0] for e in again] == [e[0] for e in first] and len(first) == 3
    assert [(int(e[2]), e[3]) for e in again] == [(1, 0)] * 3
    assert all(e[4] for e in again)  # the payloads, read again
    for entry in first:
        assert await arq_redis.get(f"arq:retry:{entry[0].decode()}") == b"1"
        assert await arq_redis.pttl(f"arq:in-progress:{entry[0].decode()}") > 50_000

    # Once a reply arrived, the next round claims the other jobs.
    await claimer.claim(int(time.time() * 1000), 3)  # the re-sent round, answered this time
    rest = await claimer.claim(int(time.time() * 1000), 10)
    claimed = {e[0].decode() for e in (*first, *rest[0])}
    assert claimed == set(ids) and len(rest[0]) == 2
    assert await arq_redis.exists(claimer.key) == 1
    assert 0 < await arq_redis.pttl(claimer.key) <= int(LEASE_MS)


async def test_a_claim_another_worker_took_over_is_not_answered_again(
    config: Config, arq_redis: ArqRedis
) -> None:
    """Past the lease another worker may have claimed the job (its try counter moved on), or the
    job ended (its keys deleted): a late re-send must not hand it out a second time."""
    await queue_jobs(arq_redis, config.queue_name, 3)
    claimer = Claimer(arq_redis, config.queue_name, LEASE_MS)
    first = await send(claimer, 3, claimer.serial)
    taken, ended, kept = (e[0].decode() for e in first)
    await arq_redis.incr(f"arq:retry:{taken}")  # claimed again elsewhere
    await arq_redis.delete(f"arq:in-progress:{ended}", f"arq:retry:{ended}")
    again = await send(claimer, 3, claimer.serial)
    assert [e[0].decode() for e in again] == [kept]


async def test_a_new_consumer_does_not_answer_for_another_ones_round(
    config: Config, arq_redis: ArqRedis
) -> None:
    await queue_jobs(arq_redis, config.queue_name, 4)
    one = Claimer(arq_redis, config.queue_name, LEASE_MS)
    two = Claimer(arq_redis, config.queue_name, LEASE_MS)
    assert one.key != two.key
    mine = await send(one, 2, 1)
    theirs = await send(two, 2, 1)
    assert not {e[0] for e in mine} & {e[0] for e in theirs} and len(theirs) == 2


async def _blocked(arq_redis: ArqRedis, claimer: Claimer) -> None:
    """Until the claimer's own connection is blocked in its round's wait (CLIENT LIST flag b)."""
    for _ in range(500):
        conn = claimer.direct.conn
        if conn is not None:
            clients = await arq_redis.client_list()
            if any("b" in c["flags"] and c["cmd"] == "blpop" for c in clients):
                return
        await asyncio.sleep(0.01)
    raise AssertionError("the round never waited")


async def test_a_waiting_round_claims_what_was_enqueued_after_it_was_sent(
    config: Config, arq_redis: ArqRedis
) -> None:
    """The claim behind the wait runs when the wait ends: its now is Redis's clock then, not the
    (here 10 s stale) time it was sent at, so a job enqueued meanwhile is due for it."""
    claimer = Claimer(arq_redis, config.queue_name, LEASE_MS)
    stale = int(time.time() * 1000) - 10_000
    round_ = asyncio.create_task(claimer.claim_after_wake(stale, 5, 30.0))
    try:
        await _blocked(arq_redis, claimer)
        job = {"f": "get_user", "a": [], "k": {"user_id": 1}}
        job_id = f"after-wait-{uuid.uuid4().hex[:6]}"
        assert await enqueue_payload(arq_redis, config.queue_name, job_id, job)  # wakes it
        claimed, next_due, _ = await asyncio.wait_for(round_, 10)
    finally:
        round_.cancel()
    assert [e[0].decode() for e in claimed] == [job_id]
    assert int(next_due) > int(time.time() * 1000) + 1_000  # its lease's end: nothing more due
    assert claimer.serial == 2


async def test_stopping_ends_a_waiting_round_and_it_claims_nothing(
    config: Config, arq_redis: ArqRedis
) -> None:
    ids = await queue_jobs(arq_redis, config.queue_name, 2)
    await arq_redis.delete(wake_key(config.queue_name))  # no producer's wake-up pending
    claimer = Claimer(arq_redis, config.queue_name, LEASE_MS)
    round_ = asyncio.create_task(claimer.claim_after_wake(int(time.time() * 1000), 5, 30.0))
    try:
        await _blocked(arq_redis, claimer)
        await claimer.stop()
        claimed, _, _ = await asyncio.wait_for(round_, 10)
    finally:
        round_.cancel()
    assert claimed == []
    for job_id in ids:  # still queued, untouched: another worker takes them
        assert await arq_redis.exists(f"arq:in-progress:{job_id}", f"arq:retry:{job_id}") == 0
    await claimer.close()


async def test_a_round_whose_script_redis_lost_loads_it_and_claims(
    config: Config, arq_redis: ArqRedis
) -> None:
    """A restarted Redis has no scripts: the round loads its script and claims all the same."""
    ids = await queue_jobs(arq_redis, config.queue_name, 2)
    claimer = Claimer(arq_redis, config.queue_name, LEASE_MS)
    claimer.script = arq_redis.register_script(f"{CLAIM_SCRIPT}\n-- {uuid.uuid4().hex}")
    assert not (await arq_redis.script_exists(claimer.script.sha))[0]
    claimed, _, _ = await claimer.claim_after_wake(int(time.time() * 1000), 5, 0.05)
    assert sorted(e[0].decode() for e in claimed) == sorted(ids)
    await claimer.close()


async def test_a_round_that_took_fewer_than_its_free_slots_says_when_the_next_job_is_due(
    config: Config, arq_redis: ArqRedis
) -> None:
    """Then the consumer waits for a wake-up instead of claiming again at once (producer.py)."""
    await queue_jobs(arq_redis, config.queue_name, 2)
    later = int(time.time() * 1000) + 30_000  # before the claimed jobs' lease ends (60 s)
    job = {"f": "get_user", "a": [], "k": {"user_id": 1}}
    job_id = f"deferred-{uuid.uuid4().hex[:6]}"
    assert await enqueue_payload(arq_redis, config.queue_name, job_id, job, defer_ms=30_000)
    claimer = Claimer(arq_redis, config.queue_name, LEASE_MS)
    claimed, next_due, _ = await claimer.claim(int(time.time() * 1000), 10)
    assert len(claimed) == 2
    assert abs(int(next_due) - later) < 5_000
    full, none_due, _ = await claimer.claim(int(time.time() * 1000), 0)
    assert full == [] and none_due is None


async def test_outcomes_a_round_carries_are_written_and_given_back_when_redis_refuses_them(
    config: Config, arq_redis: ArqRedis
) -> None:
    """A claim round writes the completer's pending outcomes in its own round trip; when Redis
    answers the finish script with an error, the outcomes go back to the write loop, which
    writes them."""
    queue = config.queue_name
    first, second = await queue_jobs(arq_redis, queue, 2)
    claimer = Claimer(arq_redis, queue, LEASE_MS)
    completer = Completer(arq_redis, queue)
    await claimer.claim(int(time.time() * 1000), 2)
    completer.record(Outcome(first, "finish", b'{"r": 1}', 60_000))
    batch = completer.take()
    _, written = await claimer.round(
        int(time.time() * 1000), 0, before=(completer.finish_command(batch),)
    )
    completer.settle(batch, written[0])
    assert await arq_redis.get(f"arq:result:{first}") == b'{"r": 1}' and not completer.pending

    completer.record(Outcome(second, "finish", b'{"r": 2}', 60_000))
    batch = completer.take()
    refused = ("EVALSHA", "0" * 40, *completer.finish_command(batch)[2:])  # no such script
    _, written = await claimer.round(int(time.time() * 1000), 0, before=(refused,))
    assert isinstance(written[0], ResponseError)
    completer.settle(batch, written[0])
    # Handed back to the write loop alone (which loads the script): no later round takes them
    # again, or a Redis without the finish script would see them sent and refused forever.
    assert completer.handed_back == batch and completer.take() == []
    loop = asyncio.create_task(completer.write_loop())
    try:
        await asyncio.wait_for(completer.flush(5), 10)
    finally:
        loop.cancel()
    assert await arq_redis.get(f"arq:result:{second}") == b'{"r": 2}'
    assert await arq_redis.exists(f"arq:in-progress:{second}", f"arq:job:{second}") == 0
    await claimer.close()
    await completer.close()
