"""Typed access to what the worker puts into arq's ``ctx`` for jobs, and the ways jobs use the
database: a pooled connection, a deadline-bound transaction, and a fenced, effectively-once write."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from jobs.errors import PoolAcquireTimeout, StaleLease

if TYPE_CHECKING:
    import asyncpg

    Conn = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]

JobContext = dict[str, Any]
RESOURCES_KEY = "resources"
DEADLINE_KEY = "deadline"  # event-loop time by which the job must be done (set by the worker)
JOB_NAME_KEY = "job_name"


@dataclass(frozen=True, slots=True)
class Resources:
    """What jobs may use: the worker's one asyncpg pool and how long to wait for a connection.

    ``on_acquire``, when set, is called after each acquire with the seconds waited and whether a
    connection came (the worker's metrics; jobs know nothing of them). ``on_release``, when set, is
    called after each release with the seconds waited for the connection and the seconds it was
    held, and after a timed-out acquire with the seconds waited and 0 (the adaptive concurrency
    limiter's samples under WORKER_MAX_JOBS=auto)."""

    pool: asyncpg.Pool[asyncpg.Record]
    acquire_timeout: float
    # Behind a transaction pooler (PgBouncer) connections carry no session settings: each job
    # transaction then sets its server-side timeouts itself, in milliseconds: (statement, lock,
    # idle in transaction). None: the pool's connections already have them.
    transaction_timeouts: tuple[int, int, int] | None = None
    on_acquire: Callable[[float, bool], None] | None = None
    on_release: Callable[[float, float], None] | None = None
    # When the worker traces (OTEL_*): wraps each connection in spans (worker/runtime/tracing.py).
    tracing: ConnectionTracing | None = None


class ConnectionTracing(Protocol):
    """Wraps a job's acquire-and-release of a connection in spans (the acquire, each query)."""

    def connection(
        self, pooled: AbstractAsyncContextManager[Conn]
    ) -> AbstractAsyncContextManager[Conn]: ...


def resources(ctx: JobContext) -> Resources:
    """Return the worker's resources from ``ctx``; fails clearly if the worker did not start them."""
    found = ctx.get(RESOURCES_KEY)
    if not isinstance(found, Resources):
        raise RuntimeError(  # noqa: TRY004  (a wiring mistake, not a bad value)
            "ctx has no database pool: run jobs inside the worker (`arq worker.Settings`), "
            "whose startup creates it"
        )
    return found


def remaining(ctx: JobContext) -> float | None:
    """Seconds left before the job's deadline, or None when it has none."""
    deadline = ctx.get(DEADLINE_KEY)
    if deadline is None:
        return None
    return float(deadline) - asyncio.get_running_loop().time()


def connection(ctx: JobContext) -> AbstractAsyncContextManager[Conn]:
    """Acquire a pooled connection with the configured timeout; release it on every path
    (``async with connection(ctx) as conn``). Traced when the worker traces."""
    res = resources(ctx)
    if res.tracing is not None:
        return res.tracing.connection(_Pooled(ctx, res))
    return _Pooled(ctx, res)


class _Pooled:
    """``async with``: a connection of the pool within the acquire timeout (the job's remaining
    time at most), released on every path; the hooks of ``Resources`` told of both. A class, not
    an ``asynccontextmanager``: it is on every job's path, and a generator costs more."""

    __slots__ = ("acquired", "conn", "ctx", "res", "started")

    def __init__(self, ctx: JobContext, res: Resources) -> None:
        self.ctx, self.res = ctx, res
        self.conn: Conn | None = None
        self.started = self.acquired = 0.0

    async def __aenter__(self) -> Conn:
        res = self.res
        timeout = res.acquire_timeout
        left = remaining(self.ctx)
        if left is not None:
            timeout = max(min(timeout, left), 0.001)
        hook, released = res.on_acquire, res.on_release
        timed = hook is not None or released is not None
        started = self.started = time.perf_counter() if timed else 0.0
        try:
            async with asyncio.timeout(timeout):  # not acquire(timeout=): that wraps it in a task
                conn = self.conn = await res.pool.acquire()
        except TimeoutError as exc:
            waited = time.perf_counter() - started
            if hook is not None:
                hook(waited, False)
            if released is not None:
                released(waited, 0.0)
            raise PoolAcquireTimeout(timeout=timeout, max_size=res.pool.get_max_size()) from exc
        if timed:
            acquired = self.acquired = time.perf_counter()
            if hook is not None:
                hook(acquired - started, True)
        return conn

    async def __aexit__(self, *exc_info: object) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        res = self.res
        await res.pool.release(conn)
        if res.on_release is not None:
            res.on_release(self.acquired - self.started, time.perf_counter() - self.acquired)


@asynccontextmanager
async def transaction(ctx: JobContext) -> AsyncIterator[Conn]:
    """A connection in a transaction whose statement_timeout is the job's remaining time."""
    timeouts = resources(ctx).transaction_timeouts
    async with connection(ctx) as conn, conn.transaction():
        left = remaining(ctx)
        statement = None if left is None else max(int(left * 1000), 1)
        if timeouts is not None:
            default, lock, idle = timeouts
            await conn.execute(SET_TIMEOUTS, str(statement or default), str(lock), str(idle))
        elif statement is not None:
            await conn.execute(SET_STATEMENT_TIMEOUT, str(statement))
        yield conn


SET_STATEMENT_TIMEOUT = "SELECT set_config('statement_timeout', $1, true)"
SET_TIMEOUTS = (
    "SELECT set_config('statement_timeout', $1, true), set_config('lock_timeout', $2, true),"
    " set_config('idle_in_transaction_session_timeout', $3, true)"
)


@dataclass
class Effect:
    """A write in progress: ``done`` says a run with the same key already committed ``stored``."""

    key: str
    done: bool
    stored: Any = None
    result: Any = None
    _conn: Conn | None = field(default=None, repr=False)

    @property
    def conn(self) -> Conn:
        """The transaction's connection (only when ``done`` is False)."""
        if self._conn is None:
            raise RuntimeError("the effect was already applied: return effect.stored instead")
        return self._conn


CLAIM = """
INSERT INTO job_claims (job_id, try) VALUES ($1, $2)
ON CONFLICT (job_id) DO UPDATE SET try = excluded.try, claimed_at = now()
WHERE job_claims.try <= excluded.try
"""
OWNER = "SELECT try FROM job_claims WHERE job_id = $1 FOR UPDATE"
RECORD_KEY = """
INSERT INTO job_effects (idempotency_key, job_id, function) VALUES ($1, $2, $3)
ON CONFLICT (idempotency_key) DO NOTHING RETURNING true
"""


async def claim(ctx: JobContext) -> None:
    """Record this try as the job's owner (the fencing token); newer tries win."""
    if "job_id" not in ctx:
        return
    async with connection(ctx) as conn:
        await conn.execute(CLAIM, ctx["job_id"], int(ctx.get("job_try", 1)))


@asynccontextmanager
async def write_effect(ctx: JobContext, key: str | None = None) -> AsyncIterator[Effect]:
    """One transaction that applies a job's effect at most once per idempotency ``key`` (default:
    the job id) and only while this try owns the job. Set ``effect.result`` to what a repeated run
    should return; when ``effect.done``, return ``effect.stored`` and write nothing.

    A try that lost the job to a newer one (its worker was stalled past the lease) writes nothing
    and waits for the new owner's result, so that it ends with the same answer instead of a failure.
    """
    job_id = str(ctx.get("job_id", ""))
    job_try = int(ctx.get("job_try", 1))
    key = key or job_id
    if not key:
        raise ValueError("write_effect needs an idempotency key outside a worker")
    owner = None
    async with transaction(ctx) as conn:
        if job_id:
            owner = await conn.fetchval(OWNER, job_id)
        if owner is None or owner <= job_try:
            name = str(ctx.get(JOB_NAME_KEY, ""))
            if not await conn.fetchval(RECORD_KEY, key, job_id, name):
                yield Effect(key, done=True, stored=await conn.fetchval(STORED, key))
                return
            effect = Effect(key, done=False, _conn=conn)
            yield effect
            await conn.execute(SAVE_RESULT, key, effect.result)
            return
    # Fenced out: the transaction is over (it held the claim row the new owner needs).
    yield Effect(key, done=True, stored=await _new_owners_result(ctx, key, job_try, owner))


STORED = "SELECT result FROM job_effects WHERE idempotency_key = $1"
SAVE_RESULT = "UPDATE job_effects SET result = $2 WHERE idempotency_key = $1"


async def _new_owners_result(ctx: JobContext, key: str, job_try: int, owner: int) -> Any:
    """Wait (within this try's deadline) for the newer try to commit the effect; its result."""
    while True:
        async with connection(ctx) as conn:
            row = await conn.fetchrow(
                "SELECT result FROM job_effects WHERE idempotency_key = $1 AND result IS NOT NULL",
                key,
            )
        if row is not None:
            return row["result"]
        left = remaining(ctx)
        if left is not None and left <= 0.1:
            raise StaleLease(job_id=ctx.get("job_id"), job_try=job_try, owner=owner)
        await asyncio.sleep(0.05)
