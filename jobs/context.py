"""Typed access to what the worker puts into arq's ``ctx`` for jobs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jobs.errors import PoolAcquireTimeout

if TYPE_CHECKING:
    import asyncpg

JobContext = dict[str, Any]
RESOURCES_KEY = "resources"


@dataclass(frozen=True, slots=True)
class Resources:
    """What jobs may use: the worker's one asyncpg pool and how long to wait for a connection."""

    pool: asyncpg.Pool[asyncpg.Record]
    acquire_timeout: float


def resources(ctx: JobContext) -> Resources:
    """Return the worker's resources from ``ctx``; fails clearly if the worker did not start them."""
    found = ctx.get(RESOURCES_KEY)
    if not isinstance(found, Resources):
        raise RuntimeError(  # noqa: TRY004  (a wiring mistake, not a bad value)
            "ctx has no database pool: run jobs inside the worker (`arq worker.Settings`), "
            "whose startup creates it"
        )
    return found


@asynccontextmanager
async def connection(
    ctx: JobContext,
) -> AsyncIterator[asyncpg.pool.PoolConnectionProxy[asyncpg.Record]]:
    """Acquire a pooled connection with the configured timeout; release it on every path."""
    res = resources(ctx)
    try:
        conn = await res.pool.acquire(timeout=res.acquire_timeout)
    except TimeoutError as exc:
        raise PoolAcquireTimeout(
            timeout=res.acquire_timeout, max_size=res.pool.get_max_size()
        ) from exc
    try:
        yield conn
    finally:
        await res.pool.release(conn)
