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


# asyncpg's words for a connection that died under (or just before) an operation: a lost connection
# seen by a transaction's __aexit__ (which masks the real error), or by an operation in flight.
LOST_CONNECTION_INTERFACE_ERRORS = (
    "connection is closed",
    "connection was closed in the middle of operation",
)
# A backend terminated while its connection sat idle in the pool sends its FATAL error before it
# closes the socket; asyncpg then waits for a ReadyForQuery that never comes, and the next operation
# on that connection fails with this (asyncpg aborts the connection then, so no later try meets it).
BROKEN_PROTOCOL_STATE = "cannot switch to state "


def is_transient(exc: BaseException) -> bool:
    """True for errors that another try may not meet (outages, contention, timeouts)."""
    if isinstance(exc, WorkerError):
        return bool(getattr(exc, "retryable", False))
    if isinstance(exc, asyncpg.InterfaceError):
        if any(words in str(exc) for words in LOST_CONNECTION_INTERFACE_ERRORS):
            return True
    elif isinstance(exc, asyncpg.InternalClientError) and str(exc).startswith(
        BROKEN_PROTOCOL_STATE
    ):
        return True
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
