"""The connection budget of a fleet of workers: every worker process registers its pool's size in
Redis, and a worker starts only if the fleet's pools fit in what PostgreSQL has left.

Each worker keeps one key ``<queue>:pool:<host>:<pid>`` (a JSON registration, ``REGISTRATION_TTL``
seconds, refreshed every ``REFRESH_INTERVAL``) and its id in the set ``<queue>:pools``. At startup,
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

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from jobs.errors import WorkerError
from worker.config import Config
from worker.core.masking import mask_url
from worker.db.pool import check_ready, connect, create_pool, session_settings
from worker.errors import OverBudget
from worker.queue.keys import registration_key, registry_key

logger = logging.getLogger(__name__)

REGISTRATION_TTL = 15.0
REFRESH_INTERVAL = 5.0

USAGE = (
    "SELECT current_setting('max_connections')::int AS max_connections,"
    " current_setting('superuser_reserved_connections')::int AS reserved,"
    " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int"
    " AS in_use"
)


def _pid_namespace() -> str:
    """This process's PID namespace (Linux), so that PIDs are compared only where they mean the
    same process; empty where unknown (registrations are then only dropped when they expire)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


@dataclass(frozen=True)
class Registration:
    """One worker process's pool, as the fleet sees it."""

    worker: str  # host:pid
    host: str
    pid: int
    pid_namespace: str
    pool_max: int
    pool_open: int
    pooled: bool  # behind a transaction pooler: holds no server connections of its own
    started_at: float

    @classmethod
    def this_process(cls, pool_max: int, pool_open: int, pooled: bool) -> Registration:
        host, pid = socket.gethostname(), os.getpid()
        return cls(
            f"{host}:{pid}", host, pid, _pid_namespace(), pool_max, pool_open, pooled, time.time()
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Registration | None:
        try:
            return cls(**json.loads(raw))
        except (ValueError, TypeError):
            return None

    def is_gone(self) -> bool:
        """True when this registration is of a process on this host (same PID namespace) that no
        longer exists, e.g. a SIGKILLed child the supervisor is replacing."""
        namespace = _pid_namespace()
        if not namespace or self.pid_namespace != namespace or self.host != socket.gethostname():
            return False
        if self.pid == os.getpid():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


async def register(
    redis: Redis, queue: str, reg: Registration, ttl: float = REGISTRATION_TTL
) -> None:
    """Write (or refresh) this worker's registration."""
    ttl_ms = int(ttl * 1000)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(registration_key(queue, reg.worker), reg.to_json(), px=ttl_ms)
        pipe.sadd(registry_key(queue), reg.worker)
        pipe.pexpire(registry_key(queue), ttl_ms)
        await pipe.execute()


async def unregister(redis: Redis, queue: str, worker: str) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(registration_key(queue, worker))
        pipe.srem(registry_key(queue), worker)
        await pipe.execute()


async def fleet(redis: Redis, queue: str) -> list[Registration]:
    """The live registrations on ``queue``; expired and dead ones are removed from the set."""
    members = await redis.smembers(registry_key(queue))  # type: ignore[misc]
    ids = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)
    if not ids:
        return []
    values = await redis.mget([registration_key(queue, worker) for worker in ids])
    live, gone = [], []
    for worker, raw in zip(ids, values, strict=True):
        reg = None if raw is None else Registration.from_json(raw)
        if reg is None or reg.is_gone():
            gone.append(worker)
        else:
            live.append(reg)
    if gone:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.srem(registry_key(queue), *gone)
            pipe.delete(*(registration_key(queue, worker) for worker in gone))
            await pipe.execute()
    return live


@dataclass(frozen=True)
class ServerUsage:
    max_connections: int
    reserved: int
    in_use: int  # client backends, the fleet's included


async def server_usage(conn: Any) -> ServerUsage:
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
) -> tuple[int, Registration]:
    """Register this worker and check the budget; the pool max size it may have (the configured
    one, or less with PG_POOL_OVER_BUDGET=shrink) and its registration. Raises OverBudget."""
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
        return config.pool_max_size, own
    async with pool.acquire(timeout=config.pg_acquire_timeout) as conn:
        usage = await server_usage(conn)
    result = check(usage, config, own, await fleet(redis, queue))
    if result.fits:
        return config.pool_max_size, own
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
            config.worker_max_jobs,
        )
        own = Registration.this_process(result.left, pool.get_size(), pooled=False)
        await register(redis, queue, own)
        return result.left, own
    await unregister(redis, queue, own.worker)
    raise error


class BudgetKeeper:
    """Refreshes this worker's registration (with the connections its pool holds now)."""

    def __init__(
        self, redis: Redis, queue: str, own: Registration, pool: asyncpg.Pool[asyncpg.Record]
    ) -> None:
        self.redis = redis
        self.queue = queue
        self.own = own
        self.pool = pool

    async def refresh(self) -> None:
        self.own = Registration(**{**asdict(self.own), "pool_open": self.pool.get_size()})
        await register(self.redis, self.queue, self.own)

    async def run(self) -> None:
        """Refresh every REFRESH_INTERVAL until cancelled; Redis errors are logged, not fatal."""
        while True:
            await asyncio.sleep(REFRESH_INTERVAL)
            try:
                await self.refresh()
            except (RedisError, OSError) as exc:
                logger.warning("could not refresh the pool registration: %s", exc)

    async def close(self) -> None:
        """Remove the registration (a worker that stops frees its share of the budget at once)."""
        with contextlib.suppress(RedisError, OSError):
            await unregister(self.redis, self.queue, self.own.worker)


BUDGET_KEY = "budget"  # in the worker's ctx: its BudgetKeeper


async def open_pool(
    config: Config, redis: Redis
) -> tuple[asyncpg.Pool[asyncpg.Record], Config, BudgetKeeper]:
    """Open the worker's pool, check the schema and the fleet's connection budget (shrinking the
    pool if so configured); the pool, the configuration it was opened with (PG_POOL_MAX_SIZE set
    to the shrunk size), and the keeper of this worker's registration."""
    pool = await create_pool(config)
    try:
        await check_ready(pool, config, room=False)
        size, own = await fit(pool, config, redis)
    except BaseException:
        await pool.close()
        raise
    if size != config.pool_max_size:
        await pool.close()
        config = config.model_copy(
            update={"pg_pool_max_size": size, "pg_pool_min_size": min(config.pool_min_size, size)}
        )
        pool = await create_pool(config)
    return pool, config, BudgetKeeper(redis, config.queue_name, own, pool)


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


async def fleet_report(config: Config, redis: Redis, conn: Any) -> dict[str, Any]:
    """The fleet's registrations and the budget, for ``python -m worker budget`` (and status)."""
    now = time.time()
    workers = await fleet(redis, config.queue_name)
    usage = await server_usage(conn)
    # This command's own connection is neither the fleet's nor another client's.
    me = Registration("status", "", 0, "", pool_max=0, pool_open=1, pooled=False, started_at=now)
    result = check(usage, config, me, workers)
    direct = [w for w in workers if not w.pooled]
    return {
        "queue": config.queue_name,
        "workers": [
            {
                "worker": w.worker,
                "pool_max": w.pool_max,
                "pool_open": w.pool_open,
                "via_pooler": w.pooled,
                "up_seconds": round(now - w.started_at, 1),
            }
            for w in workers
        ],
        "fleet": {
            "workers": len(workers),
            "direct_workers": len(direct),
            "pool_max": sum(w.pool_max for w in direct),
            "pool_open": sum(w.pool_open for w in direct),
            "via_pooler_workers": len(workers) - len(direct),
        },
        "budget": {**result.as_dict(), "over_budget_policy": config.pg_pool_over_budget},
    }


async def budget_status(config: Config, redis: Redis) -> dict[str, Any]:
    """``fleet_report`` for ``python -m worker status``; with PostgreSQL unreachable, the
    registrations and the error instead of the server's numbers."""
    try:
        conn = await connect(config.database_url, config.pg_connect_timeout)
    except WorkerError as exc:
        workers = await fleet(redis, config.queue_name)
        return {
            "workers": len(workers),
            "pool_max": sum(w.pool_max for w in workers if not w.pooled),
            "error": str(exc),
        }
    try:
        report = await fleet_report(config, redis, conn)
    finally:
        await conn.close()
    return {**report["fleet"], **report["budget"]}


def render_budget(section: dict[str, Any]) -> str:
    """One line of ``status``: the fleet's pools against what the server allows."""
    if "error" in section:
        return (
            f"connection budget: {section['workers']} registered workers, pools up to "
            f"{section['pool_max']} connections; server unavailable ({section['error']})"
        )
    via = section["via_pooler_workers"]
    pooled = f" (+{via} behind a pooler, not counted)" if via else ""
    return (
        f"connection budget: {section['direct_workers']} workers{pooled} may open "
        f"{section['fleet_pool_max']} of {section['allowance']} connections "
        f"({section['left']} left; max_connections {section['max_connections']}, reserved "
        f"{section['superuser_reserved_connections']}, other clients "
        f"{section['used_by_other_clients']}"
        + (
            f", PG_CONNECTION_BUDGET {section['pg_connection_budget']})"
            if section["pg_connection_budget"]
            else ")"
        )
    )
