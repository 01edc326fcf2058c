"""Pre-flight check that Redis answers, with errors that say how to start it, and
the Redis client of the command line, which stops within REDIS_CONNECT_TIMEOUT when it cannot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from arq.connections import ArqRedis, create_pool
from redis.exceptions import RedisError

from worker.config import Config
from worker.core.masking import mask_url
from worker.errors import START_REDIS, RedisUnavailable, connection_advice
from worker.queue.connection import close_redis, install_policy, redis_settings

REDIS_ERRORS = (OSError, RedisError, TimeoutError)


async def check_redis(config: Config) -> None:
    """PING Redis once, without retries, within REDIS_CONNECT_TIMEOUT; raises RedisUnavailable if
    it cannot."""
    settings = replace(redis_settings(config), conn_retries=0, retry=None, retry_on_error=None)
    try:
        async with asyncio.timeout(config.redis_connect_timeout):
            redis = await create_pool(settings)
    except REDIS_ERRORS as exc:
        raise redis_unavailable(config, exc) from None
    await redis.aclose()


@asynccontextmanager
async def command_redis(config: Config) -> AsyncIterator[ArqRedis]:
    """Redis for an operator command: fails at once (RedisUnavailable) when it does not answer."""
    await check_redis(config)
    redis = await create_pool(redis_settings(config))
    try:
        yield redis
    finally:
        await redis.aclose()


async def open_redis(config: Config, **options: Any) -> ArqRedis:
    """arq's client for REDIS_URL (``options``: create_pool's), with the worker's policy (socket
    timeout, keepalive, retries: worker/queue/connection.py); raises RedisUnavailable when Redis has
    not answered within REDIS_CONNECT_TIMEOUT."""
    try:
        # The policy gives up after REDIS_CONNECT_TIMEOUT with the cause; this bounds the rest (a
        # Redis that accepts connections and never answers them).
        async with asyncio.timeout(config.redis_connect_timeout + 1):
            redis = await create_pool(redis_settings(config), **options)
    except REDIS_ERRORS as exc:
        raise redis_unavailable(config, exc) from None
    try:
        await install_policy(redis, config)
    except BaseException:
        await close_redis(redis)
        raise
    return redis


def redis_unavailable(config: Config, exc: BaseException) -> RedisUnavailable:
    """The error for a Redis that did not answer: the URL masked, the cause, what to do."""
    text = str(exc).rstrip(".")
    if isinstance(exc, TimeoutError) and not text:
        text = f"no answer within {config.redis_connect_timeout:g} s (REDIS_CONNECT_TIMEOUT)"
    return RedisUnavailable(
        url=mask_url(config.redis_url),
        reason=f"{type(exc).__name__}: {text}.",
        advice=connection_advice(exc, "REDIS_URL", START_REDIS),
    )
