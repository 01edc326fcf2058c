"""The worker's configuration: one validated class read from the environment and ``.env``."""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.core.cron_schedule import parse_schedule, parse_zone
from worker.core.schedule_table import parse_schedule_table
from worker.errors import ConfigError

Seconds = Annotated[float, Field(gt=0)]
# WORKER_MAX_JOBS=auto: the ceiling when WORKER_MAX_JOBS_MAX is unset, and the pool's default max
# size (the default WORKER_MAX_JOBS) when PG_POOL_MAX_SIZE is unset.
AUTO_MAX_JOBS_MAX = 200
AUTO_POOL_MAX_SIZE = 20
# METRICS_TOKEN: an RFC 6750 bearer token (what `secrets.token_urlsafe(32)` prints), 16 characters or more.
BEARER_TOKEN = re.compile(r"[A-Za-z0-9._~+/-]{16,}=*")


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

    # A number, or "auto": the adaptive limiter (worker/runtime/adaptive.py) between the bounds.
    worker_max_jobs: Annotated[int, Field(ge=1, le=10_000)] | Literal["auto"] = 20
    worker_max_jobs_min: Annotated[int | None, Field(ge=1, le=10_000)] = None
    worker_max_jobs_max: Annotated[int | None, Field(ge=1, le=10_000)] = None
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
    # Named schedules (README "Schedules"): a JSON object, name -> {"job", "cron", "args"}; every
    # schedule is read in CRON_TIMEZONE (an IANA zone name).
    cron_schedules: str = ""
    cron_timezone: str = "UTC"
    deactivate_after_days: Annotated[int, Field(ge=1)] = 90

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Operations (docs/operations.md): JSON log lines unless stderr is a terminal ("auto"); the
    # per-worker HTTP endpoint of /metrics, /healthz and /readyz (port 0: none).
    log_format: Literal["auto", "json", "text"] = "auto"
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9180
    # Loopback by default: the endpoint has no authentication and /readyz shows error texts.
    # A container that Prometheus scrapes listens on 0.0.0.0 (the Dockerfile and compose set it).
    metrics_host: Annotated[str, Field(min_length=1)] = "127.0.0.1"
    # METRICS_AUTH=bearer: /metrics answers only `Authorization: Bearer <METRICS_TOKEN>`; /healthz and
    # /readyz stay open to the probes (docs/security.md). The token is never logged or shown.
    metrics_auth: Literal["none", "bearer"] = "none"
    metrics_token: SecretStr | None = None

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, url: str) -> str:
        return _check_url(
            url, ("postgres", "postgresql"), "postgresql://user:password@host:5432/dbname"
        )

    @field_validator("worker_max_jobs", mode="before")
    @classmethod
    def _max_jobs(cls, value: object) -> object:
        """A number of jobs from 1 to 10000, or "auto" (any case): one message for either."""
        if isinstance(value, str):
            value = value.strip()
            if value.lower() == "auto":
                return "auto"
            value = int(value) if value.isdigit() else None
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 10_000:
            raise ValueError("expected a number of jobs from 1 to 10000, or auto")
        return value

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

    @field_validator("cron_schedules")
    @classmethod
    def _cron_schedules(cls, table: str) -> str:
        parse_schedule_table(table)  # the jobs and their arguments: at start-up (schedule_table)
        return table

    @field_validator("cron_timezone")
    @classmethod
    def _cron_timezone(cls, name: str) -> str:
        parse_zone(name)
        return name

    @model_validator(mode="after")
    def _pool_bounds(self) -> Config:
        if self.pg_pool_min_size is not None and self.pg_pool_min_size > self.pool_max_size:
            raise ValueError(
                f"PG_POOL_MIN_SIZE={self.pg_pool_min_size} is larger than the pool's max size "
                f"{self.pool_max_size}"
            )
        return self

    @model_validator(mode="after")
    def _adaptive_bounds(self) -> Config:
        bounds = (self.worker_max_jobs_min, self.worker_max_jobs_max)
        if not self.adaptive_concurrency and bounds != (None, None):
            raise ValueError(
                "WORKER_MAX_JOBS_MIN and WORKER_MAX_JOBS_MAX bound WORKER_MAX_JOBS=auto only: "
                f"set WORKER_MAX_JOBS=auto, or remove them (WORKER_MAX_JOBS={self.worker_max_jobs})"
            )
        if self.max_jobs_min > self.max_jobs:
            raise ValueError(
                f"WORKER_MAX_JOBS_MIN={self.max_jobs_min} is larger than WORKER_MAX_JOBS_MAX="
                f"{self.max_jobs}"
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

    @model_validator(mode="after")
    def _metrics_token(self) -> Config:  # the messages never show the token
        token = self.metrics_token.get_secret_value() if self.metrics_token else ""
        if self.metrics_auth == "none" and token.strip():
            raise ValueError(
                "METRICS_TOKEN is set but METRICS_AUTH=none leaves /metrics open: set "
                "METRICS_AUTH=bearer, or remove METRICS_TOKEN"
            )
        if self.metrics_auth == "bearer" and not token.strip():
            raise ValueError(
                "METRICS_AUTH=bearer needs METRICS_TOKEN, the secret Prometheus sends (make one: "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        if self.metrics_auth == "bearer" and not BEARER_TOKEN.fullmatch(token):
            raise ValueError(
                "METRICS_TOKEN: expected 16 or more of the characters A-Z a-z 0-9 - . _ ~ + / "
                "(then = padding), without spaces or line breaks"
            )
        return self

    @property
    def adaptive_concurrency(self) -> bool:
        """WORKER_MAX_JOBS=auto: the limiter sets the jobs run at once (worker/runtime/adaptive.py)."""
        return self.worker_max_jobs == "auto"

    @property
    def max_jobs(self) -> int:
        """The most jobs run at once: WORKER_MAX_JOBS, or WORKER_MAX_JOBS_MAX under auto."""
        if isinstance(self.worker_max_jobs, int):
            return self.worker_max_jobs
        return self.worker_max_jobs_max or AUTO_MAX_JOBS_MAX

    @property
    def max_jobs_min(self) -> int:
        """The adaptive limit's floor: WORKER_MAX_JOBS_MIN, default 1."""
        if self.worker_max_jobs_min is not None:
            return self.worker_max_jobs_min
        return 1

    @property
    def pool_max_size(self) -> int:
        """The pool's max size: PG_POOL_MAX_SIZE, or one connection per concurrent job (under auto,
        the default WORKER_MAX_JOBS, 20, at most the ceiling)."""
        if self.pg_pool_max_size:
            return self.pg_pool_max_size
        if isinstance(self.worker_max_jobs, int):
            return self.worker_max_jobs
        return min(AUTO_POOL_MAX_SIZE, self.max_jobs)

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
        value = "" if name.endswith(("_URL", "_TOKEN")) else f" (got {err.get('input')!r})"
        parts.append(f"{name}: {err['msg'].removeprefix('Value error, ')}{value}")
    return "; ".join(parts)
