"""Pre-flight checks that PostgreSQL and Redis answer, with errors that say how to start them."""

from __future__ import annotations

from dataclasses import replace

from arq.connections import create_pool
from redis.exceptions import RedisError

from worker.config import Config
from worker.database import connect
from worker.errors import START_REDIS, RedisUnavailable, connection_advice
from worker.redis_settings import redis_settings
from worker.urls import mask_url


async def check_postgres(config: Config, url: str | None = None) -> None:
    """Connect once to ``url`` (default DATABASE_URL); raises DatabaseUnavailable if it cannot."""
    conn = await connect(url or config.database_url, config.pg_connect_timeout)
    await conn.close()


async def check_redis(config: Config) -> None:
    """PING Redis once, without arq's retries; raises RedisUnavailable if it cannot."""
    settings = replace(redis_settings(config), conn_retries=0, retry=None, retry_on_error=None)
    try:
        redis = await create_pool(settings)
    except (OSError, RedisError, TimeoutError) as exc:
        raise RedisUnavailable(
            url=mask_url(config.redis_url),
            reason=f"{type(exc).__name__}: {str(exc).rstrip('.')}.",
            advice=connection_advice(exc, "REDIS_URL", START_REDIS),
        ) from None
    await redis.aclose()
