"""The fleet's pool registrations in Redis: each worker process's pool size, for the connection
budget (worker/db/budget.py).

Each worker keeps one key ``<queue>:pool:<host>:<pid>`` (a JSON registration, ``REGISTRATION_TTL``
seconds, refreshed every ``REFRESH_INTERVAL`` by its ``BudgetKeeper``) and its id in the set
``<queue>:pools`` (worker/queue/keys.py).
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

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from worker.queue.keys import registration_key, registry_key

logger = logging.getLogger(__name__)

REGISTRATION_TTL = 15.0
REFRESH_INTERVAL = 5.0


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


class BudgetKeeper:
    """Refreshes this worker's registration (with the connections its pool holds now)."""

    def __init__(
        self, redis: Redis, queue: str, own: Registration, pool: asyncpg.Pool[asyncpg.Record]
    ) -> None:
        self.redis = redis
        self.queue = queue
        self.own = own
        self.pool = pool
        # The connections the budget left this worker at startup (budget.py's ``left``; None: not
        # checked, behind a transaction pooler): the adaptive limit's ceiling (runtime/adaptive.py).
        self.left: int | None = None

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
