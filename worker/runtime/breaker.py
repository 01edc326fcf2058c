"""The PostgreSQL circuit breaker: while the database is unreachable the worker claims no jobs, and
the jobs that meet the outage get their try back, instead of every queued job spending its tries
(and becoming a ``tries-exhausted`` dead letter) on an outage longer than its backoff.

A job that fails with a connection-class error (``OUTAGE_ERRORS``) asks ``unreachable()``. A probe
answers: a fresh connection with the pool's URL and ``SELECT 1`` within PG_CONNECT_TIMEOUT (not the
pool, whose connections may all be busy). One probe serves every job that asks at once, and a
success is trusted for ``PROBE_FRESH`` seconds. If the probe succeeds the error was the job's own
and it is charged as usual (a job that breaks its own connection still runs out of tries). If not,
the breaker opens: the consumer stops claiming (its loop still beats its heart and watches the abort
set), and every job that fails with such an error while it is open, the first one included, has its
try given back and is re-queued ``RETRY_DELAY`` seconds later. ``run()`` probes again with backoff
(``PROBE_FIRST`` doubling up to ``PROBE_MAX`` seconds); on the first success the breaker closes, the
pool's connections are replaced on their next acquire, and claiming resumes.

The state is logged when it changes (the URL masked, with the reason), exported as the gauge
``worker_postgres_breaker_open``, and kept in the worker's health record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import asyncpg

from jobs.errors import JobTimeout, PoolAcquireTimeout
from worker.core.masking import mask_url

if TYPE_CHECKING:
    from worker.runtime.metrics import WorkerMetrics

logger = logging.getLogger(__name__)

# Errors that may mean "PostgreSQL is unreachable" (the probe decides): lost, refused or timed-out
# connections (OSError, TimeoutError, class 08, a backend gone mid-query), a server shutting down,
# starting up or full (it takes no new connection, so the pool can neither replace nor add one),
# a pool acquire that timed out (its connect may be what hangs), and a job that ran out of time (its
# query may have waited on a silent network).
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    PoolAcquireTimeout,
    JobTimeout,
)
PROBE_APPLICATION_NAME = "pgpool-worker-probe"
PROBE_FIRST = 0.5  # seconds before the first probe of an open breaker, doubled after each failure
PROBE_MAX = 5.0
PROBE_FRESH = 1.0  # seconds a successful probe is trusted for
RETRY_DELAY = 0.5  # seconds before a job given back during an outage is due again


def may_be_outage(exc: BaseException) -> bool:
    """True for an error that an unreachable PostgreSQL could have caused."""
    if isinstance(exc, asyncpg.InterfaceError) and "connection is closed" in str(exc):
        return True  # asyncpg's transaction exit masks the lost connection's error
    return isinstance(exc, OUTAGE_ERRORS)


class PostgresBreaker:
    """Whether this worker takes jobs while PostgreSQL may be unreachable (see the module doc)."""

    def __init__(
        self,
        url: str,
        connect_timeout: float,
        pool: asyncpg.Pool[asyncpg.Record] | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.url = url
        self.timeout = connect_timeout
        self.pool = pool
        self.metrics = metrics
        self.open = False
        self.reason = ""  # the last failed probe's error, while open
        self.since = 0.0  # wall clock of the last change
        self.on_close: list[Callable[[], None]] = []  # the consumer's wake-up
        self._opened = asyncio.Event()
        self._probe: asyncio.Task[str | None] | None = None
        self._fine_at = float("-inf")  # time.monotonic() of the last successful probe

    async def unreachable(self, exc: BaseException) -> bool:
        """True if ``exc`` came from a PostgreSQL this worker cannot reach now (the breaker is
        open, or a probe fails and opens it); False if it is the job's own error."""
        if not may_be_outage(exc):
            return False
        if self.open:
            return True
        if time.monotonic() - self._fine_at < PROBE_FRESH:
            return False
        problem = await self.probe()
        if problem is None:
            return False
        self._set(True, problem)
        return True

    async def probe(self) -> str | None:
        """None if a fresh connection answers ``SELECT 1``, else why not; callers at the same
        time share one probe (a caller's cancellation does not cancel it for the others)."""
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._probe_once())
        return await asyncio.shield(self._probe)

    async def _probe_once(self) -> str | None:
        try:
            async with asyncio.timeout(self.timeout):
                conn = await asyncpg.connect(
                    self.url,
                    timeout=self.timeout,
                    statement_cache_size=0,  # a transaction pooler may sit in between
                    server_settings={"application_name": PROBE_APPLICATION_NAME},
                )
                try:
                    await conn.fetchval("SELECT 1")
                finally:
                    await conn.close(timeout=self.timeout)
        except TimeoutError:
            return f"no answer within {self.timeout:g}s"
        except Exception as exc:  # noqa: BLE001  (any failure means "unreachable", with its reason)
            return f"{type(exc).__name__}: {exc}"[:200]
        self._fine_at = time.monotonic()
        return None

    async def run(self) -> None:
        """While open, probe with backoff and close on the first success; until cancelled."""
        try:
            while True:
                await self._opened.wait()
                delay = PROBE_FIRST
                while (problem := await self._probe_after(delay)) is not None:
                    self.reason = problem
                    delay = min(delay * 2, PROBE_MAX)
                if self.pool is not None:
                    await self.pool.expire_connections()  # none left from before the outage
                self._set(False, "")
        finally:
            if self._probe is not None:
                self._probe.cancel()

    async def _probe_after(self, delay: float) -> str | None:
        await asyncio.sleep(delay)
        return await self.probe()

    def _set(self, open_: bool, reason: str) -> None:
        if open_ == self.open:
            return
        now = time.time()
        lasted, self.open, self.reason, self.since = now - self.since, open_, reason, now
        if self.metrics is not None:
            self.metrics.postgres_breaker_open.set(int(open_))
        if open_:
            self._opened.set()
            logger.warning(
                "postgres at %s unreachable (%s): no new jobs claimed, and jobs that meet the "
                "outage get their try back, until a probe connects again",
                mask_url(self.url),
                reason,
            )
            return
        self._opened.clear()
        logger.info(
            "postgres at %s reachable again after %.1fs: claiming jobs again",
            mask_url(self.url),
            lasted,
        )
        for wake in self.on_close:
            wake()

    def state(self) -> dict[str, Any]:
        """For the health record: whether it is open, since when (wall clock), and why."""
        return {"open": self.open, "since": round(self.since, 3), "reason": self.reason}
