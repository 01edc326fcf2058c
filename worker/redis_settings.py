"""arq's RedisSettings from REDIS_URL. Never log the result: its repr carries the password."""

from __future__ import annotations

from dataclasses import replace

from arq.connections import RedisSettings

from worker.config import Config


def redis_settings(config: Config) -> RedisSettings:
    """Connection settings for REDIS_URL; ``rediss://`` verifies the server's certificate and host."""
    settings = RedisSettings.from_dsn(config.redis_url)
    if settings.ssl:
        settings = replace(settings, ssl_cert_reqs="required", ssl_check_hostname=True)
    return replace(settings, conn_timeout=5, conn_retries=5, conn_retry_delay=1)
