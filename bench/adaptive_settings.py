"""``arq bench.adaptive_settings.AdaptiveBenchSettings``: the real ``worker.Settings`` plus the
bench-only ``held_user`` job of ``bench.adaptive``'s slowed database.

``held_user`` reads one user and holds its connection ``hold`` seconds in ``pg_sleep`` (a slow
query, as a lock or an overloaded server makes them), timing its own wait for the pool. A timed-out
acquire (PG_ACQUIRE_TIMEOUT) is caught and recorded in the result, so that the drain stays N jobs
(a real job would be retried); the limiter saw it all the same (``jobs.context.connection`` feeds
it before raising). Each result also says the concurrency limit the job started under.
"""

from __future__ import annotations

import time

from pydantic import BaseModel

from jobs.context import JobContext, connection
from jobs.errors import PoolAcquireTimeout
from jobs.models import JobArgs
from jobs.registry import JobSpec
from worker.runtime.lifecycle import SERVICES_KEY, Services
from worker.settings import settings_with


class HeldArgs(JobArgs):
    user_id: int
    hold: float  # seconds the connection is held in pg_sleep


class Held(BaseModel):
    waited: float  # seconds waited for a connection (the timeout's, if it timed out)
    timed_out: bool
    limit: int | None  # the adaptive limit when the job started (None: a fixed WORKER_MAX_JOBS)


def _limit(ctx: JobContext) -> int | None:
    services = ctx.get(SERVICES_KEY)
    if not isinstance(services, Services) or services.consumer is None:
        return None
    limiter = services.consumer.limiter
    return None if limiter is None else limiter.limit


async def held_user(ctx: JobContext, args: HeldArgs) -> Held:
    """One user by id, its connection held ``args.hold`` s; the wait for the pool measured."""
    limit = _limit(ctx)
    started = time.perf_counter()
    try:
        async with connection(ctx) as conn:
            waited = time.perf_counter() - started
            await conn.fetchrow("SELECT id FROM users WHERE id = $1", args.user_id)
            await conn.execute("SELECT pg_sleep($1)", args.hold)
    except PoolAcquireTimeout:
        return Held(waited=time.perf_counter() - started, timed_out=True, limit=limit)
    return Held(waited=waited, timed_out=False, limit=limit)


HELD: JobSpec[HeldArgs, Held] = JobSpec("held_user", held_user, HeldArgs)
AdaptiveBenchSettings = settings_with([HELD], name="AdaptiveBenchSettings")
