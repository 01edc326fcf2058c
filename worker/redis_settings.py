"""arq's RedisSettings from REDIS_URL (and REDIS_SENTINELS). Never log the result: its repr carries
the password."""

from __future__ import annotations

from dataclasses import replace

from arq.connections import RedisSettings
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import SentinelManagedConnection
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from worker.config import Config, parse_sentinels


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
    if config.redis_sentinels:
        # arq asks the sentinels for the master's address (and again after a failover); the
        # password, database and TLS still come from REDIS_URL. Sentinels themselves take no
        # password here (arq passes none to them).
        settings = replace(
            settings,
            host=parse_sentinels(config.redis_sentinels),
            sentinel=True,
            sentinel_master=config.redis_sentinel_master,
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


class FailoverConnection(SentinelManagedConnection):
    """A connection to the master the sentinels name, tried once per try of the retry policy.

    redis-py retries the connect to the address it got with the same policy that retries the
    connect through the sentinels, so after a failover a worker would keep knocking at the dead
    master's address for the whole REDIS_RETRY_WINDOW. Here each try asks the sentinels again.
    """

    async def connect_to(self, address: tuple[str, int]) -> None:
        policy, self.retry = self.retry, Retry(NoBackoff(), 0)
        try:
            await super().connect_to(address)  # type: ignore[no-untyped-call]
        finally:
            self.retry = policy


async def apply_retry(redis: Redis, settings: RedisSettings) -> None:
    """Give a Sentinel-managed pool the retry policy of ``settings``, so that it follows a failover.

    arq builds its Sentinel pool without RedisSettings' ``retry`` and ``retry_on_error``, so a
    failover (the old master refuses connections for a few seconds) would end the worker at its
    next heartbeat. With the policy each command is retried, and each reconnect asks the sentinels
    for the master (``FailoverConnection``). The pool's first connections (arq's PING) are closed
    and dropped so that every connection is made this way. Other pools are left as they are.
    """
    if not settings.sentinel or settings.retry is None:
        return
    pool = redis.connection_pool
    pool.connection_class = FailoverConnection
    pool.connection_kwargs.update(
        retry=settings.retry,
        retry_on_error=list(settings.retry_on_error or []),
        socket_connect_timeout=settings.conn_timeout,
    )
    await pool.disconnect()
    pool.reset()  # type: ignore[no-untyped-call]


async def close_redis(redis: Redis) -> None:
    """Close a client and, for a Sentinel-managed one, its connections to the sentinels (which the
    client's own ``aclose`` leaves open)."""
    await redis.aclose()
    manager = getattr(redis.connection_pool, "sentinel_manager", None)
    for sentinel in getattr(manager, "sentinels", ()):
        await sentinel.aclose()
