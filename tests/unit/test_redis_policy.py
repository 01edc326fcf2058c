"""Unit tests of the Redis retry policy (worker.queue.connection.OutageRetry): bounded in time, not in
tries; the connect window until Redis answered; a stop's deadline; keepalive options."""

from __future__ import annotations

import copy
import socket
import time

import pytest
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError

from worker.config import load_config
from worker.errors import ConfigError
from worker.queue.connection import OutageRetry, keepalive_options, redis_settings

pytestmark = pytest.mark.unit


class Failing:
    """An operation that fails ``times`` times, then answers."""

    def __init__(self, times: int, error: Exception | None = None) -> None:
        self.times, self.calls = times, 0
        self.error = error or RedisConnectionError("refused")

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.times:
            raise self.error
        return "PONG"


async def nothing(_error: Exception) -> None:
    return None


async def test_until_redis_answered_the_connect_window_bounds_the_retries() -> None:
    policy = OutageRetry(window=60, connect_window=0.5)
    do = Failing(times=10**6)
    started = time.monotonic()
    with pytest.raises(RedisConnectionError):
        await policy.call_with_retry(do, nothing)
    assert 0.4 < time.monotonic() - started < 5
    assert do.calls > 1


async def test_once_established_an_outage_shorter_than_the_window_is_ridden_out() -> None:
    policy = OutageRetry(window=60, connect_window=0.01)
    policy.established()
    do = Failing(times=5)
    assert await policy.call_with_retry(do, nothing) == "PONG"
    assert do.calls == 6


async def test_nested_calls_share_the_outer_deadline() -> None:
    policy = OutageRetry(window=0.5, connect_window=0.5)
    policy.established()
    inner = Failing(times=10**6)

    async def outer() -> str:
        return await policy.call_with_retry(inner, nothing)

    started = time.monotonic()
    with pytest.raises(RedisConnectionError):
        await policy.call_with_retry(outer, nothing)
    assert time.monotonic() - started < 3  # not one window per nesting level and try


async def test_a_stop_ends_the_retries_then_every_call_fails_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(OutageRetry, "shutdown_started", False)  # restored afterwards
    policy = OutageRetry(window=60, connect_window=60)
    policy.established()
    policy.stop(within=0.3)
    with pytest.raises(RedisConnectionError):
        await policy.call_with_retry(Failing(times=10**6), nothing)
    answering = Failing(times=0)
    with pytest.raises(RedisConnectionError, match="stopping"):
        await policy.call_with_retry(answering, nothing)
    assert answering.calls == 0


async def test_a_stopped_policy_still_makes_the_first_try(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(OutageRetry, "shutdown_started", False)
    policy = OutageRetry(window=60, connect_window=60)
    policy.stop(within=0.3)
    assert await policy.call_with_retry(Failing(times=1), nothing) == "PONG"


async def test_wrong_credentials_are_not_retried() -> None:
    policy = OutageRetry(window=60, connect_window=60)
    do = Failing(times=10**6, error=AuthenticationError("invalid password"))
    with pytest.raises(AuthenticationError):
        await policy.call_with_retry(do, nothing)
    assert do.calls == 1


def test_every_connection_shares_the_one_policy() -> None:
    policy = OutageRetry(window=60, connect_window=10)
    assert copy.deepcopy(policy) is policy  # redis-py deep-copies it into each connection


def test_settings_carry_the_policy_and_no_arq_retries() -> None:
    settings = redis_settings(load_config(redis_connect_timeout=3, redis_retry_window=20))
    assert isinstance(settings.retry, OutageRetry)
    assert (settings.retry.window, settings.retry.connect_window) == (20, 3)
    assert settings.conn_retries == 0 and settings.conn_timeout <= 3


def test_keepalive_options_are_the_platforms() -> None:
    options = keepalive_options()
    if hasattr(socket, "TCP_KEEPIDLE"):
        assert options[socket.TCP_KEEPIDLE] == 30
    if hasattr(socket, "TCP_KEEPCNT"):
        assert options[socket.TCP_KEEPCNT] == 3


def test_the_socket_timeout_stays_above_the_consumers_block() -> None:
    with pytest.raises(ConfigError, match="REDIS_SOCKET_TIMEOUT"):
        load_config(redis_socket_timeout=1)
