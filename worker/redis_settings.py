"""arq's RedisSettings from REDIS_URL. Never log the result: its repr carries the password."""

from __future__ import annotations

from dataclasses import replace

from arq.connections import RedisSettings
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from worker.config import Config


def redis_settings(config: Config) -> RedisSettings:
    """Connection settings for REDIS_URL; ``rediss://`` verifies the server's certificate and host.

    Every command is retried with backoff (capped at 1 s) for about REDIS_RETRY_WINDOW seconds, so
    a Redis outage shorter than that stalls the worker instead of ending it.
    """
    settings = RedisSettings.from_dsn(config.redis_url)
    if settings.ssl:
        settings = replace(
            settings,
            ssl_cert_reqs="required",
            ssl_check_hostname=True,
            ssl_ca_certs=config.redis_ca_file,
        )
    retries = int(config.redis_retry_window) + 3  # ~0.1 + 0.2 + 0.4 + 0.8 s, then 1 s each
    return replace(
        settings,
        conn_timeout=5,
        conn_retries=5,
        conn_retry_delay=1,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.1), retries),
        retry_on_error=[RedisConnectionError, RedisTimeoutError, OSError],
    )
