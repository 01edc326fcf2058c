"""The fleet's connection budget on the real Redis and PostgreSQL: registrations of other workers
are written straight into Redis, and PG_CONNECTION_BUDGET stands in for a small server."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from typing import Any

import pytest
from arq.connections import ArqRedis

from jobs.context import RESOURCES_KEY
from tests.conftest import RunWorker
from worker.client import JobClient
from worker.config import Config
from worker.db.budget_registry import (
    REGISTRATION_TTL,
    BudgetKeeper,
    Registration,
    _pid_namespace,
    fleet,
    register,
)
from worker.errors import OverBudget, PoolTooLarge
from worker.queue.keys import registration_key, registry_key
from worker.runtime.lifecycle import CONFIG_KEY, shutdown, startup

pytestmark = pytest.mark.integration


async def other_worker(
    redis: ArqRedis,
    queue: str,
    name: str,
    pool_max: int,
    pool_open: int = 0,
    pooled: bool = False,
    host: str = "elsewhere",
    pid: int = 4242,
) -> Registration:
    """Register a worker that is not this process, as another host's worker would."""
    reg = Registration(
        f"{host}:{pid}:{name}", host, pid, _pid_namespace(), pool_max, pool_open, pooled, 0.0
    )
    await register(redis, queue, reg)
    return reg


def budgeted(config: Config, budget: int, pool_max: int, **more: Any) -> Config:
    return config.model_copy(
        update={
            "pg_connection_budget": budget,
            "pg_pool_max_size": pool_max,
            "pg_pool_min_size": 1,
            **more,
        }
    )


async def test_startup_registers_the_pool_and_shutdown_removes_it(
    config: Config, arq_redis: ArqRedis
) -> None:
    ctx: dict[str, Any] = {"config": config, "redis": arq_redis}
    await startup(ctx)
    try:
        [reg] = await fleet(arq_redis, config.queue_name)
        assert (reg.host, reg.pid) == (socket.gethostname(), os.getpid())
        assert reg.worker == f"{reg.host}:{reg.pid}"
        assert (reg.pool_max, reg.pooled) == (config.pool_max_size, False)
        assert reg.pool_open == ctx[RESOURCES_KEY].pool.get_size() >= 1
        ttl = await arq_redis.pttl(registration_key(config.queue_name, reg.worker))
        assert 0 < ttl <= REGISTRATION_TTL * 1000
    finally:
        await shutdown(ctx)
    assert await fleet(arq_redis, config.queue_name) == []
    assert await arq_redis.exists(registration_key(config.queue_name, reg.worker)) == 0


async def test_a_pool_over_the_fleet_budget_is_refused_with_the_numbers(
    config: Config, arq_redis: ArqRedis
) -> None:
    queue = config.queue_name
    await other_worker(arq_redis, queue, "a", pool_max=4)
    await other_worker(arq_redis, queue, "b", pool_max=4)
    ctx: dict[str, Any] = {"config": budgeted(config, 12, 5), "redis": arq_redis}
    with pytest.raises(OverBudget) as info:
        await startup(ctx)
    message = str(info.value)
    assert message.startswith("PG_POOL_MAX_SIZE=5 is over the connection budget of PostgreSQL")
    assert f"the workers of queue {queue!r} may hold 12 connections (PG_CONNECTION_BUDGET=12;" in (
        message
    )
    assert "the server has max_connections=" in message
    assert "2 other live worker(s) may open 8 of them, which leaves 4 for this one" in message
    assert "PG_POOL_OVER_BUDGET=shrink" in message
    assert isinstance(info.value, PoolTooLarge)  # what the single-worker check always raised
    assert RESOURCES_KEY not in ctx
    assert sorted(r.worker for r in await fleet(arq_redis, queue)) == [
        "elsewhere:4242:a",
        "elsewhere:4242:b",
    ], "a refused worker takes its registration back"
    await shutdown(ctx)


async def test_a_pool_that_fits_exactly_starts(config: Config, arq_redis: ArqRedis) -> None:
    await other_worker(arq_redis, config.queue_name, "a", pool_max=4)
    await other_worker(arq_redis, config.queue_name, "b", pool_max=4)
    ctx: dict[str, Any] = {"config": budgeted(config, 12, 4), "redis": arq_redis}
    await startup(ctx)
    assert ctx[RESOURCES_KEY].pool.get_max_size() == 4
    assert len(await fleet(arq_redis, config.queue_name)) == 3
    await shutdown(ctx)


async def test_shrink_opens_a_smaller_pool_and_says_so(
    config: Config,
    arq_redis: ArqRedis,
    run_worker: RunWorker,
    users: list[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    await other_worker(arq_redis, config.queue_name, "a", pool_max=5)
    await other_worker(arq_redis, config.queue_name, "b", pool_max=4)
    cfg = budgeted(config, 12, 8, pg_pool_over_budget="shrink", pg_pool_min_size=4)
    ctx: dict[str, Any] = {"config": cfg, "redis": arq_redis}
    with caplog.at_level(logging.WARNING, logger="worker.db.budget"):
        await startup(ctx)
    try:
        pool = ctx[RESOURCES_KEY].pool
        assert (pool.get_max_size(), pool.get_min_size()) == (3, 3)
        assert ctx[CONFIG_KEY].pool_max_size == 3
        mine = [r for r in await fleet(arq_redis, config.queue_name) if r.pid == os.getpid()]
        assert [r.pool_max for r in mine] == [3]
    finally:
        await shutdown(ctx)
    [warning] = [r.getMessage() for r in caplog.records if r.name == "worker.db.budget"]
    assert warning.startswith("PG_POOL_MAX_SIZE=8 is over the connection budget")
    assert "2 other live worker(s) may open 9, which leaves 3" in warning
    assert "PG_POOL_OVER_BUDGET=shrink: this worker's pool is shrunk to 3 connections" in warning

    # A shrunk worker runs its jobs (20 at a time on 3 connections).
    async with JobClient.connect(cfg) as client:
        handles = await client.enqueue_many("get_user", [{"user_id": u["id"]} for u in users])
        worker = await run_worker(config=cfg.model_copy(update={"worker_max_jobs": 20}))
        assert (worker.jobs_complete, worker.jobs_failed) == (len(users), 0)
        for handle, user in zip(handles, users, strict=True):
            assert handle is not None
            result = await handle.result(timeout=1)
            assert result is not None and result.id == user["id"]


async def test_shrink_still_refuses_when_nothing_is_left(
    config: Config, arq_redis: ArqRedis
) -> None:
    await other_worker(arq_redis, config.queue_name, "a", pool_max=12)
    cfg = budgeted(config, 12, 4, pg_pool_over_budget="shrink")
    with pytest.raises(OverBudget, match="which leaves 0 for this one"):
        await startup({"config": cfg, "redis": arq_redis})


async def test_the_real_server_limit_counts_without_an_override(
    config: Config, arq_redis: ArqRedis
) -> None:
    await other_worker(arq_redis, config.queue_name, "big", pool_max=1000)
    ctx: dict[str, Any] = {"config": config, "redis": arq_redis}
    with pytest.raises(OverBudget) as info:
        await startup(ctx)
    message = str(info.value)
    assert "may hold" in message and "PG_CONNECTION_BUDGET" not in message
    assert "(max_connections=100 - superuser_reserved_connections=3 - " in message
    assert "used by other clients = " in message
    assert "1 other live worker(s) may open 1000 of them" in message


async def test_expired_dead_and_pooled_registrations_do_not_count(
    config: Config, arq_redis: ArqRedis
) -> None:
    queue = config.queue_name
    # Expired: its id is still in the set, its key is gone.
    await arq_redis.sadd(registry_key(queue), "elsewhere:1:expired")  # type: ignore[misc]
    # A worker of this host whose process is gone (a SIGKILLed child being replaced).
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    assert await proc.wait() == 0
    await other_worker(arq_redis, queue, "", 100, host=socket.gethostname(), pid=proc.pid)
    # Behind a transaction pooler: holds no server connections of its own.
    await other_worker(arq_redis, queue, "pooled", pool_max=100, pooled=True)
    ctx: dict[str, Any] = {"config": budgeted(config, 12, 12), "redis": arq_redis}
    await startup(ctx)
    try:
        workers = {r.worker for r in await fleet(arq_redis, queue)}
        assert workers == {f"{socket.gethostname()}:{os.getpid()}", "elsewhere:4242:pooled"}
        assert await arq_redis.sismember(registry_key(queue), "elsewhere:1:expired") == 0  # type: ignore[misc]
    finally:
        await shutdown(ctx)


async def test_a_live_worker_of_this_host_counts(config: Config, arq_redis: ArqRedis) -> None:
    await other_worker(
        arq_redis, config.queue_name, "", 10, host=socket.gethostname(), pid=os.getppid()
    )
    with pytest.raises(OverBudget, match="1 other live worker"):
        await startup({"config": budgeted(config, 12, 4), "redis": arq_redis})


async def test_two_workers_starting_at_once_do_not_both_overrun(
    config: Config, arq_redis: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each registers before it reads the others: at least the later reader sees both."""
    cfg = budgeted(config, 12, 8)
    ctxs: list[dict[str, Any]] = []
    for _ in range(2):
        ctxs.append({"config": cfg, "redis": arq_redis})
    # Two processes would have two ids; here two ids in one process, by registering as others.
    originals = Registration.this_process
    counter = iter(range(2))

    def distinct(pool_max: int, pool_open: int, pooled: bool) -> Registration:
        reg = originals(pool_max, pool_open, pooled)
        n = next(counter, 9)
        return Registration(**{**reg.__dict__, "worker": f"{reg.worker}#{n}", "host": "elsewhere"})

    monkeypatch.setattr(Registration, "this_process", staticmethod(distinct))
    try:
        outcomes = await asyncio.gather(*(startup(ctx) for ctx in ctxs), return_exceptions=True)
    finally:
        for ctx in ctxs:
            await shutdown(ctx)
    started = [o for o in outcomes if o is None]
    refused = [o for o in outcomes if isinstance(o, OverBudget)]
    assert len(started) + len(refused) == 2 and len(started) <= 1, outcomes


async def test_the_keeper_refreshes_the_registration(config: Config, arq_redis: ArqRedis) -> None:
    ctx: dict[str, Any] = {"config": config, "redis": arq_redis}
    await startup(ctx)
    try:
        keeper: BudgetKeeper = ctx["budget"]
        pool = ctx[RESOURCES_KEY].pool
        held = [await pool.acquire() for _ in range(6)]
        key = registration_key(config.queue_name, keeper.own.worker)
        await arq_redis.pexpire(key, 1000)
        await keeper.refresh()
        [reg] = await fleet(arq_redis, config.queue_name)
        # The refresh counted the open pool; the relay may open one more right after it.
        assert 6 <= reg.pool_open <= pool.get_size()
        assert await arq_redis.pttl(key) > 1000
        for conn in held:
            await pool.release(conn)
    finally:
        await shutdown(ctx)
