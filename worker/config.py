"""The worker's configuration: one validated class read from the environment and ``.env``."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.core.cron_schedule import parse_schedule
from worker.errors import ConfigError

Seconds = Annotated[float, Field(gt=0)]


class Config(BaseSettings):
    """Every setting of the worker. Field ``x_y`` is read from the variable ``X_Y``."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    database_url: str = "postgresql://postgres@127.0.0.1:5432/jobs_worker"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_ca_file: str | None = None
    # Redis Sentinel (docs/scaling.md): "host:port,host:port"; the master's name. REDIS_URL then
    # gives only the password, database and TLS; its host is ignored.
    redis_sentinels: str | None = None
    redis_sentinel_master: Annotated[str, Field(min_length=1)] = "mymaster"
    queue_name: Annotated[str, Field(min_length=1, max_length=200)] = "arq:queue"

    worker_max_jobs: Annotated[int, Field(ge=1, le=10_000)] = 20
    pg_pool_min_size: Annotated[int | None, Field(ge=0)] = None
    pg_pool_max_size: Annotated[int | None, Field(ge=1)] = None
    pg_acquire_timeout: Seconds = 5.0
    pg_connect_timeout: Seconds = 5.0
    pg_statement_timeout: Seconds = 30.0
    # Scale-out (docs/scaling.md): asyncpg's prepared-statement cache (0 for PgBouncer < 1.21 in
    # transaction mode), a transaction pooler in DATABASE_URL, and the fleet's connection budget.
    pg_statement_cache_size: Annotated[int, Field(ge=0)] = 100
    pg_transaction_pooling: bool = False
    # asyncpg's session reset on every release (jobs keep no session state: worker/db/pool.py).
    pg_reset_session: bool = False
    pg_connection_budget: Annotated[int | None, Field(ge=1)] = None
    pg_pool_over_budget: Literal["refuse", "shrink"] = "refuse"

    pg_lock_timeout: Seconds = 10.0
    pg_idle_in_transaction_timeout: Seconds = 20.0

    job_timeout: Seconds = 60.0
    max_tries: Annotated[int, Field(ge=1, le=100)] = 10
    retry_backoff_base: Seconds = 1.0
    retry_backoff_max: Seconds = 60.0
    job_lease: Annotated[float, Field(ge=0.5)] = 30.0
    shutdown_grace: Annotated[float, Field(ge=0)] = 25.0
    unknown_job_grace: Annotated[float, Field(ge=0)] = 300.0
    redis_retry_window: Annotated[float, Field(ge=0)] = 60.0
    # A Redis that stops answering without closing the connection (worker/queue/connection.py): a
    # read waits this long, then the connection is dropped and the command retried. Above the
    # consumer's idle block on <queue>:wake (1 s).
    redis_socket_timeout: Annotated[float, Field(ge=2)] = 5.0
    # A worker or command that cannot reach Redis at its start stops with an error after this long.
    redis_connect_timeout: Seconds = 10.0
    keep_result: Annotated[float, Field(ge=0)] = 3600.0
    poll_delay: Seconds = 0.05
    health_check_interval: Seconds = 10.0

    # The outbox relay (worker/runtime/relay.py): a poll beside LISTEN (the only wake-up behind a
    # transaction pooler), and how long relayed rows are kept before they are deleted.
    outbox_poll_interval: Seconds = 1.0
    outbox_retention: Annotated[float, Field(ge=0)] = 3600.0

    cron_deactivate: str = "15 3 * * *"
    deactivate_after_days: Annotated[int, Field(ge=1)] = 90

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Operations (docs/operations.md): JSON log lines unless stderr is a terminal ("auto"); the
    # per-worker HTTP endpoint of /metrics, /healthz and /readyz (port 0: none).
    log_format: Literal["auto", "json", "text"] = "auto"
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9180
    # Loopback by default: the endpoint has no authentication and /readyz shows error texts.
    # A container that Prometheus scrapes listens on 0.0.0.0 (the Dockerfile and compose set it).
    metrics_host: Annotated[str, Field(min_length=1)] = "127.0.0.1"

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, url: str) -> str:
        return _check_url(
            url, ("postgres", "postgresql"), "postgresql://user:password@host:5432/dbname"
        )

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, url: str) -> str:
        return _check_url(url, ("redis", "rediss"), "redis://:password@host:6379/0")

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinels(cls, value: str | None) -> str | None:
        if value is not None:
            parse_sentinels(value)
        return value

    @field_validator("cron_deactivate")
    @classmethod
    def _cron(cls, expression: str) -> str:
        if expression.strip():
            parse_schedule(expression)
        return expression

    @model_validator(mode="after")
    def _pool_bounds(self) -> Config:
        if self.pg_pool_min_size is not None and self.pg_pool_min_size > self.pool_max_size:
            raise ValueError(
                f"PG_POOL_MIN_SIZE={self.pg_pool_min_size} is larger than the pool's max size "
                f"{self.pool_max_size}"
            )
        return self

    @model_validator(mode="after")
    def _lease_fences_transactions(self) -> Config:
        if self.pg_idle_in_transaction_timeout >= self.job_lease:
            raise ValueError(
                f"PG_IDLE_IN_TRANSACTION_TIMEOUT={self.pg_idle_in_transaction_timeout:g} must be "
                f"shorter than JOB_LEASE={self.job_lease:g}, so that a worker that lost its lease "
                "cannot keep a transaction open"
            )
        return self

    @property
    def pool_max_size(self) -> int:
        """The pool's max size: PG_POOL_MAX_SIZE, or one connection per concurrent job."""
        return self.pg_pool_max_size or self.worker_max_jobs

    @property
    def pool_min_size(self) -> int:
        """Connections kept open when idle: PG_POOL_MIN_SIZE, or up to 4."""
        if self.pg_pool_min_size is not None:
            return self.pg_pool_min_size
        return min(4, self.pool_max_size)


def parse_sentinels(value: str) -> list[tuple[str, int]]:
    """``"host1:26379,host2:26379"`` as ``[("host1", 26379), ("host2", 26379)]``."""
    found = []
    for item in value.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected host:port[,host:port...], got {item.strip()!r}")
        found.append((host.strip("[]"), int(port)))
    return found


def load_config(**overrides: object) -> Config:
    """Read the configuration; a bad value raises ConfigError naming its variable."""
    try:
        return Config(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(details=_describe(exc)) from None


def _check_url(url: str, schemes: tuple[str, ...], example: str) -> str:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (parses the port; raises ValueError when it is not a number)
    except ValueError:
        raise ValueError(f"not a valid URL; expected the form {example}") from None
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"expected a URL of the form {example}")
    return url


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        if not loc:  # a check across several variables names them in its message
            parts.append(err["msg"].removeprefix("Value error, "))
            continue
        name = loc[0].upper()
        value = "" if name.endswith("_URL") else f" (got {err.get('input')!r})"
        parts.append(f"{name}: {err['msg'].removeprefix('Value error, ')}{value}")
    return "; ".join(parts)
