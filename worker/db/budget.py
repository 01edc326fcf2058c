"""The connection budget of a fleet of workers: every worker process registers its pool's size in
Redis, and a worker starts only if the fleet's pools fit in what PostgreSQL has left.

Each worker registers its pool in Redis (worker/db/budget_registry.py). At startup,
after opening its pool, a worker registers first and then reads the others (so of two workers
starting at once, at least the later reader sees both) and checks::

    allowance = max_connections - superuser_reserved_connections - used by other clients
                (or PG_CONNECTION_BUDGET, if that is smaller)
    left      = allowance - the pool max sizes of the other live workers
    PG_POOL_MAX_SIZE <= left, or refuse to start (OverBudget) or shrink the pool to ``left``

"Used by other clients" is every client backend of the server except the connections the fleet's
pools hold now (as registered). Workers behind a transaction pooler (PG_TRANSACTION_POOLING) hold
no server connections of their own: they register, for ``python -m worker budget``, but are neither
checked nor counted; the pooler's own pool size is what the server sees.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import asyncpg
from redis.asyncio import Redis

from worker.config import Config
from worker.core.masking import mask_url
from worker.db.budget_registry import BudgetKeeper, Registration, fleet, register, unregister
from worker.db.pool import check_ready, create_pool, session_settings
from worker.errors import OverBudget

logger = logging.getLogger(__name__)

USAGE = (
    "SELECT current_setting('max_connections')::int AS max_connections,"
    " current_setting('superuser_reserved_connections')::int AS reserved,"
    " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int"
    " AS in_use"
)


@dataclass(frozen=True)
class ServerUsage:
    """PostgreSQL's connection limits and use at one moment."""

    max_connections: int
    reserved: int
    in_use: int  # client backends, the fleet's included


async def server_usage(conn: Any) -> ServerUsage:
    """The server's connection limits and how many client backends it has now."""
    row = await conn.fetchrow(USAGE)
    return ServerUsage(row["max_connections"], row["reserved"], row["in_use"])


@dataclass(frozen=True)
class BudgetCheck:
    """The arithmetic of one check, in connections."""

    usage: ServerUsage
    budget: int | None  # PG_CONNECTION_BUDGET
    fleet_open: int  # held now by the fleet's pools (this worker's included)
    fleet_max: int  # the other live workers' pool max sizes
    fleet: int  # how many other live workers
    pool_max: int  # this worker's

    @property
    def others(self) -> int:
        """Connections held by clients other than this fleet."""
        return max(self.usage.in_use - self.fleet_open, 0)

    @property
    def server_room(self) -> int:
        return self.usage.max_connections - self.usage.reserved - self.others

    @property
    def allowance(self) -> int:
        """What the whole fleet may hold."""
        room = self.server_room
        return room if self.budget is None else min(self.budget, room)

    @property
    def left(self) -> int:
        """What this worker may hold."""
        return self.allowance - self.fleet_max

    @property
    def fits(self) -> bool:
        return self.pool_max <= self.left

    def limits(self) -> str:
        server = (
            f"max_connections={self.usage.max_connections} - superuser_reserved_connections="
            f"{self.usage.reserved} - {self.others} used by other clients = {self.server_room}"
        )
        if self.budget is None:
            return server
        return f"PG_CONNECTION_BUDGET={self.budget}; the server has {server}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "max_connections": self.usage.max_connections,
            "superuser_reserved_connections": self.usage.reserved,
            "client_backends": self.usage.in_use,
            "used_by_other_clients": self.others,
            "server_room": self.server_room,
            "pg_connection_budget": self.budget,
            "allowance": self.allowance,
            "fleet_pool_max": self.fleet_max + self.pool_max,
            "left": self.allowance - self.fleet_max - self.pool_max,
        }


def check(
    usage: ServerUsage, config: Config, own: Registration, others: list[Registration]
) -> BudgetCheck:
    """The budget check of worker ``own`` against the other live registrations (direct ones)."""
    direct = [r for r in others if not r.pooled and r.worker != own.worker]
    return BudgetCheck(
        usage=usage,
        budget=config.pg_connection_budget,
        fleet_open=own.pool_open + sum(r.pool_open for r in direct),
        fleet_max=sum(r.pool_max for r in direct),
        fleet=len(direct),
        pool_max=own.pool_max,
    )


async def fit(
    pool: asyncpg.Pool[asyncpg.Record], config: Config, redis: Redis
) -> tuple[int, Registration, int | None]:
    """Register this worker and check the budget; the pool max size it may have (the configured
    one, or less with PG_POOL_OVER_BUDGET=shrink), its registration, and the connections the budget
    leaves it (``BudgetCheck.left``; None behind a transaction pooler). Raises OverBudget."""
    queue = config.queue_name
    own = Registration.this_process(
        config.pool_max_size, pool.get_size(), config.pg_transaction_pooling
    )
    await register(redis, queue, own)
    if config.pg_transaction_pooling:
        logger.info(
            "behind a transaction pooler (PG_TRANSACTION_POOLING): the connection budget is the "
            "pooler's; this worker's %d client connections are not checked against PostgreSQL",
            config.pool_max_size,
        )
        return config.pool_max_size, own, None
    async with pool.acquire(timeout=config.pg_acquire_timeout) as conn:
        usage = await server_usage(conn)
    result = check(usage, config, own, await fleet(redis, queue))
    if result.fits:
        return config.pool_max_size, own, result.left
    error = OverBudget(
        pool_max=config.pool_max_size,
        url=mask_url(config.database_url),
        queue=queue,
        allowance=result.allowance,
        limits=result.limits(),
        fleet=result.fleet,
        fleet_max=result.fleet_max,
        left=result.left,
        max_connections=usage.max_connections,
        reserved=usage.reserved,
        in_use=usage.in_use,
    )
    if config.pg_pool_over_budget == "shrink" and result.left >= 1:
        logger.warning(
            "PG_POOL_MAX_SIZE=%d is over the connection budget: the workers of queue %r may hold "
            "%d connections (%s); %d other live worker(s) may open %d, which leaves %d. "
            "PG_POOL_OVER_BUDGET=shrink: this worker's pool is shrunk to %d connections "
            "(WORKER_MAX_JOBS=%d stays: jobs wait for a free connection).",
            config.pool_max_size,
            queue,
            result.allowance,
            result.limits(),
            result.fleet,
            result.fleet_max,
            result.left,
            result.left,
            config.max_jobs,
        )
        own = Registration.this_process(result.left, pool.get_size(), pooled=False)
        await register(redis, queue, own)
        return result.left, own, result.left
    await unregister(redis, queue, own.worker)
    raise error


BUDGET_KEY = "budget"  # in the worker's ctx: its BudgetKeeper


async def open_pool(
    config: Config, redis: Redis
) -> tuple[asyncpg.Pool[asyncpg.Record], Config, BudgetKeeper]:
    """Open the worker's pool, check the schema and the fleet's connection budget (shrinking the
    pool if so configured); the pool, the configuration it was opened with (PG_POOL_MAX_SIZE set
    to the shrunk size), and the keeper of this worker's registration."""
    pool = await create_pool(config)
    try:
        await check_ready(pool, config)
        size, own, left = await fit(pool, config, redis)
    except BaseException:
        await pool.close()
        raise
    if size != config.pool_max_size:
        await pool.close()
        config = config.model_copy(
            update={"pg_pool_max_size": size, "pg_pool_min_size": min(config.pool_min_size, size)}
        )
        pool = await create_pool(config)
    keeper = BudgetKeeper(redis, config.queue_name, own, pool)
    keeper.left = left
    return pool, config, keeper


def transaction_timeouts(config: Config) -> tuple[int, int, int] | None:
    """What each job transaction sets behind a transaction pooler (``Resources``), else None."""
    if not config.pg_transaction_pooling:
        return None
    settings = session_settings(config)
    return (
        int(settings["statement_timeout"]),
        int(settings["lock_timeout"]),
        int(settings["idle_in_transaction_session_timeout"]),
    )
