"""Which errors are worth another try, and how long to wait before it."""

from __future__ import annotations

import random
from dataclasses import dataclass

import asyncpg
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from jobs.errors import WorkerError

# Lost or refused connections, a server shutting down or full, contention that a retry resolves.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable (ConnectionError is an OSError)
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.AdminShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.LockNotAvailableError,
    asyncpg.QueryCanceledError,  # statement_timeout
    asyncpg.IdleInTransactionSessionTimeoutError,
    RedisConnectionError,
    RedisTimeoutError,
)


def is_transient(exc: BaseException) -> bool:
    """True for errors that another try may not meet (outages, contention, timeouts)."""
    if isinstance(exc, WorkerError):
        return bool(getattr(exc, "retryable", False))
    if isinstance(exc, asyncpg.InterfaceError) and "connection is closed" in str(exc):
        return True  # a connection lost mid-transaction: asyncpg's __aexit__ masks the real error
    return isinstance(exc, TRANSIENT_ERRORS)


@dataclass(frozen=True)
class RetryPolicy:
    """Up to ``max_tries`` runs; try n waits about base * 2**(n-1) s (capped), with jitter."""

    max_tries: int
    backoff_base: float
    backoff_max: float

    def delay(self, job_try: int, rng: random.Random | None = None) -> float:
        """Seconds before the next try after try ``job_try`` failed: "equal jitter" backoff."""
        ceiling = min(self.backoff_max, self.backoff_base * 2.0 ** max(job_try - 1, 0))
        jitter = (rng or random.Random()).uniform(0, ceiling / 2)
        return ceiling / 2 + jitter
