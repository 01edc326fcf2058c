"""Redis Sentinel (REDIS_SENTINELS): a worker and a client follow a failover of the master.

A private master, replica and sentinel run on their own ports (tests/redis_sentinel.py); the
master is SIGKILLed and the sentinel promotes the replica within a few seconds. arq does not pass
the retry policy to a Sentinel pool (without it the worker dies at its next heartbeat), and with it
redis-py would retry the dead master's address for the whole retry window (the next job would wait
~40 s): ``apply_retry`` and ``FailoverConnection`` close both.
"""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg
import pytest

from jobs.errors import WorkerError
from tests.faults.conftest import Spawn, wait_until
from tests.redis_sentinel import SentinelSetup
from worker.client import JobClient
from worker.config import Config

pytestmark = pytest.mark.faults

UNUSED_HOST_URL = "redis://127.0.0.1:1/0"  # with REDIS_SENTINELS only its db and password count


@pytest.fixture
def sentinel() -> Iterator[SentinelSetup]:
    setup = SentinelSetup().start()
    yield setup
    setup.stop()


async def test_a_worker_on_sentinel_survives_a_failover(
    spawn: Spawn, config: Config, sentinel: SentinelSetup, users: list[asyncpg.Record]
) -> None:
    worker = await spawn(
        REDIS_SENTINELS=sentinel.sentinels,
        REDIS_URL=UNUSED_HOST_URL,
        HEALTH_CHECK_INTERVAL="0.2",  # arq's heartbeat writes to Redis during the failover
    )
    client_config = config.model_copy(
        update={"redis_sentinels": sentinel.sentinels, "redis_url": UNUSED_HOST_URL}
    )
    async with JobClient.connect(client_config) as client:
        before = await client.get_user(users[0]["id"])
        found = await before.result(timeout=10)
        assert found is not None and found.id == users[0]["id"]

        sentinel.kill_master()

        async def promoted() -> bool:
            return sentinel.master() == sentinel.replica_port

        await wait_until(promoted, timeout=30, what="the sentinel to promote the replica")
        after = await client.get_user(users[1]["id"])  # on the new master
        try:
            found = await after.result(timeout=10)  # not the whole REDIS_RETRY_WINDOW (40 s)
        except WorkerError as exc:
            raise AssertionError(
                f"{exc} (worker alive: {worker.alive()}):\n{worker.log()}"
            ) from exc
        assert found is not None and found.id == users[1]["id"]
    assert worker.alive(), worker.log()
