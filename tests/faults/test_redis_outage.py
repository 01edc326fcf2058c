"""F8: Redis unreachable for seconds: the worker process stays up, resumes by itself, and a job
that finished during the outage is recorded once, its effect applied once."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from arq.connections import ArqRedis

from tests.faults.conftest import Counters, Spawn, url_via, wait_until
from tests.faults.proxy import Proxy
from worker.config import Config

pytestmark = pytest.mark.faults


@pytest.mark.parametrize("outage", [3.0, 12.0, 30.0])
async def test_f8_redis_outage_does_not_end_the_worker(
    outage: float,
    config: Config,
    spawn: Spawn,
    arq_redis: ArqRedis,
    counters: Counters,
    redis_proxy: Proxy,
) -> None:
    worker = await spawn(REDIS_URL=url_via(config.redis_url, redis_proxy.port))
    key = f"f8-{uuid.uuid4().hex[:8]}"
    during = await arq_redis.enqueue_job("fault_write", key=key, hold=2.0)
    assert during is not None
    await wait_until(lambda: counters.runs(key), what="the job to start")
    redis_proxy.cut()
    await asyncio.sleep(outage)  # the outage itself: nothing to poll while it lasts
    assert worker.alive(), f"the worker exited during a {outage:g}s Redis outage:\n{worker.log()}"
    redis_proxy.restore()

    result = await during.result(timeout=30)
    assert result["key"] == key
    assert await counters.effects(key) == 1

    after = f"f8-after-{uuid.uuid4().hex[:8]}"
    job = await arq_redis.enqueue_job("fault_write", key=after)
    assert job is not None
    assert (await job.result(timeout=30))["key"] == after
    assert await counters.effects(after) == 1
    assert worker.alive()
    assert await counters.dead_letters() == []
