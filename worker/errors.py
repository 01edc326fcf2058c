"""Errors of the worker's assembly: configuration, services, schema. Docstrings are the messages."""

from __future__ import annotations

from jobs.errors import WorkerError

# The errors a producer meets are the slim client's (pgpool_client/errors.py): the same classes.
from pgpool_client.errors import (
    DuplicateJob,
    JobFailed,
    RedisUnavailable,
    ResultNotFound,
    ResultTimeout,
    UnknownJob,
)

__all__ = [
    "START_POSTGRES",
    "START_REDIS",
    "ConfigError",
    "DashboardNotInstalled",
    "DatabaseMissing",
    "DatabaseUnavailable",
    "DeadLetterNotFound",
    "DuplicateJob",
    "JobFailed",
    "NotReplayable",
    "OverBudget",
    "PoisonPayload",
    "PoolTooLarge",
    "RedisUnavailable",
    "ResultNotFound",
    "ResultTimeout",
    "SchemaMissing",
    "TriesExhausted",
    "UnknownJob",
    "UnknownJobName",
    "connection_advice",
]


class ConfigError(WorkerError):
    """Invalid configuration: {details}. Fix the variable in the environment or in .env
    (every variable is listed with its default in .env.example)."""


START_POSTGRES = (
    "Start it (on this machine: `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) "
    "main start`; with Docker: `docker compose up -d postgres`) or fix DATABASE_URL."
)
START_REDIS = (
    "Start it (on this machine: `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 "
    "--save '' --appendonly no`; with Docker: `docker compose up -d redis`) or fix REDIS_URL."
)


def connection_advice(exc: BaseException, variable: str, start: str) -> str:
    """What to do about a failed connection: fix TLS, fix credentials, or start the server."""
    text = f"{type(exc).__name__} {exc}".lower()
    if "certificate" in text or "ssl" in text or "tls" in text:
        return (
            f"The server's TLS certificate was not accepted: the host name in {variable} must "
            "match the certificate, and its CA must be trusted (REDIS_CA_FILE for Redis, "
            "sslrootcert for PostgreSQL)."
        )
    if "password" in text or "authentication" in text or "auth" in type(exc).__name__.lower():
        return f"The server refused the credentials: check the user and password in {variable}."
    return start


class DatabaseUnavailable(WorkerError):
    """Cannot connect to PostgreSQL at {url}: {reason} {advice}"""


class DatabaseMissing(WorkerError):
    """Database {name!r} does not exist on the server at {url}. Create it and apply the schema:
    `python -m worker setup` (or `make run`, which does it for you)."""


class SchemaMissing(WorkerError):
    """Table "{table}" does not exist in the database at {url}. Apply the schema first:
    `python -m worker setup` (or `make run`, which does it for you)."""


class PoolTooLarge(WorkerError):
    """PG_POOL_MAX_SIZE={pool_max} is more than PostgreSQL at {url} can give this worker
    (max_connections={max_connections}, reserved={reserved}, already in use={in_use}).
    Lower PG_POOL_MAX_SIZE or use PgBouncer."""


class OverBudget(PoolTooLarge):
    """PG_POOL_MAX_SIZE={pool_max} is over the connection budget of PostgreSQL at {url}: the workers
    of queue {queue!r} may hold {allowance} connections ({limits}); {fleet} other live worker(s) may
    open {fleet_max} of them, which leaves {left} for this one. Lower PG_POOL_MAX_SIZE, run fewer
    workers, set PG_POOL_OVER_BUDGET=shrink, or put PgBouncer in front (docs/scaling.md)."""


class DeadLetterNotFound(WorkerError):
    """No dead letter with id {letter_id}. List them with `python -m worker dead-letters list`."""


class NotReplayable(WorkerError):
    """Dead letter {letter_id} ({reason}) has no job to replay: its payload was not a job of this
    queue. Inspect it with `python -m worker dead-letters show {letter_id}`, then purge it."""


class TriesExhausted(WorkerError):
    """Job {job_id} ({function}) reached try {job_try} of at most {max_tries}: it crashed or was cut
    off too often (or failed transiently every time). It is in the dead letters."""


class UnknownJobName(WorkerError):
    """No worker knows job {function!r} after waiting {grace:g} s (UNKNOWN_JOB_GRACE). Deploy a
    worker that has it, then replay the dead letter. Known jobs: {known}."""


class PoisonPayload(WorkerError):
    """Job {job_id} is not a job of this queue: {problem}. Its bytes are kept in the dead letters."""


class DashboardNotInstalled(WorkerError):
    """The dashboard needs starlette and uvicorn, which the worker alone does not install: pip
    install 'pgpool-worker[dashboard]'"""
