"""Claim rounds (worker/runtime/claims.py): a round sent again answers its own claims, never new ones."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from arq.connections import ArqRedis

from worker.config import Config
from worker.queue.enqueue import enqueue_many
from worker.runtime.claims import Claimer

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
