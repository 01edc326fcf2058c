"""arq's RedisSettings from REDIS_URL (and REDIS_SENTINELS), and the policy every Redis connection
of the worker and of the client follows once Redis has answered. Never log the settings: their
repr carries the password.

* A failed command is retried with backoff (capped at 1 s) for REDIS_RETRY_WINDOW seconds, in
  time rather than in tries (``OutageRetry``); until Redis has answered once, for
  REDIS_CONNECT_TIMEOUT seconds, so that a worker or command that cannot reach it stops soon.
* A read waits REDIS_SOCKET_TIMEOUT seconds at most (a peer that went silent without closing the
  connection: power loss, a frozen VM, a failover that moved the address, a load balancer's idle
  drop); then the connection is dropped and the command retried on a new one. TCP keepalive
  probes idle connections.
* On shutdown (``OutageRetry.stop``) retries end within REDIS_SOCKET_TIMEOUT, so that a silent
  Redis cannot hold a stopping worker for the whole window.

arq passes none of the socket options to its pools: ``install_policy`` puts them on a pool after
arq's first PING answered (and a fresh connection class), as it does the retry policy that arq
leaves out of a Sentinel pool.
"""

from __future__ import annotations

import asyncio
import math
import socket
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import replace
from signal import Signals
from typing import Any, ClassVar, TypeVar

from arq.connections import RedisSettings
from arq.worker import Worker
from redis.asyncio import Redis
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import SentinelManagedConnection
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import AuthenticationError, AuthorizationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from worker.config import Config, parse_sentinels

T = TypeVar("T")

RETRY_ON: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError, OSError)
NOT_TRANSIENT = (AuthenticationError, AuthorizationError)  # wrong credentials: no retry
CONNECT_ATTEMPT = 5.0  # seconds one TCP (and TLS) connect may take, at most
# TCP keepalive of every connection: probes after 30 s idle, every 10 s, gone after 3 unanswered.
KEEPALIVE = (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3))
# The deadline of the outermost retried call of this task: redis-py nests a connect's retries in
# the command's, and the inner ones must not start the window again.
_deadline: ContextVar[float | None] = ContextVar("redis_retry_deadline", default=None)


class OutageRetry(Retry):
    """redis-py's ``Retry`` bounded in time: a failed call is retried with exponential backoff
    (capped at 1 s) until ``window`` seconds after it started, or ``connect_window`` seconds until
    ``established()`` (Redis has answered once), or a stop's deadline, whichever comes first.

    One instance is shared by every connection of a pool (redis-py deep-copies the policy into each
    connection; here the copy is the instance itself, which keeps no state per call).
    """

    __slots__ = ("answered", "connect_window", "gave_up", "stop_at", "window")
    shutdown_started: ClassVar[bool] = False  # a worker of this process began to stop

    def __init__(self, window: float, connect_window: float) -> None:
        super().__init__(ExponentialBackoff(cap=1.0, base=0.1), -1, RETRY_ON)  # type: ignore[arg-type]
        self.window = window
        self.connect_window = connect_window
        self.answered = False
        self.stop_at: float | None = None
        self.gave_up = False  # stopping, and Redis did not answer: every call fails at once

    def __deepcopy__(self, memo: dict[int, Any]) -> OutageRetry:
        return self

    def established(self) -> None:
        """Redis answered: from now on an outage is ridden out for the whole window."""
        self.answered = True

    def stop(self, within: float) -> None:
        """The worker stops: retry no call beyond ``within`` seconds from now; once one gave up,
        fail every call at once (the connections' connects would otherwise time out one after
        the other, each holding the pool's lock)."""
        self.stop_at = time.monotonic() + within
        OutageRetry.shutdown_started = True

    async def call_with_retry(
        self, do: Callable[[], Awaitable[T]], fail: Callable[[RedisError], Any]
    ) -> T:
        if self.gave_up:
            raise RedisConnectionError("no more tries: the worker is stopping")
        started = time.monotonic()
        deadline = started + (self.window if self.answered else self.connect_window)
        outer = _deadline.get()
        if outer is not None:
            deadline = min(deadline, outer)
        token = _deadline.set(deadline)
        try:
            failures = 0
            while True:
                try:
                    return await do()
                except NOT_TRANSIENT:
                    raise
                except self._supported_errors as error:
                    failures += 1
                    await fail(error)
                    end = deadline if self.stop_at is None else min(deadline, self.stop_at)
                    left = end - time.monotonic()
                    if left <= 0:
                        self.gave_up = self.stop_at is not None and self.stop_at <= deadline
                        raise error from None
                    await asyncio.sleep(min(self._backoff.compute(failures), left))
        finally:
            _deadline.reset(token)


def outage_retry(config: Config) -> OutageRetry:
    """The retry policy of REDIS_RETRY_WINDOW and REDIS_CONNECT_TIMEOUT."""
    return OutageRetry(config.redis_retry_window, config.redis_connect_timeout)


def redis_settings(config: Config) -> RedisSettings:
    """Connection settings for REDIS_URL; ``rediss://`` verifies the server's certificate and host.

    arq's first PING is not retried by arq itself: the policy retries it for REDIS_CONNECT_TIMEOUT
    (a worker or a command that cannot reach Redis stops then, with an error); every later command,
    once ``install_policy`` ran, for REDIS_RETRY_WINDOW.
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
    conn_timeout = math.ceil(min(CONNECT_ATTEMPT, config.redis_connect_timeout))
    return replace(
        settings,
        conn_timeout=conn_timeout,
        # arq gives its Sentinel pool no retry policy: arq's own tries then, as many as fit.
        conn_retries=int(config.redis_connect_timeout // (conn_timeout + 1))
        if settings.sentinel
        else 0,
        conn_retry_delay=1,
        retry=outage_retry(config),
        retry_on_error=list(RETRY_ON),
    )


def keepalive_options() -> dict[int, int]:
    """TCP keepalive's idle time, interval and count, where the platform has them."""
    options = {}
    for name, value in KEEPALIVE:
        option = getattr(socket, name, None)
        if option is None and name == "TCP_KEEPIDLE":
            option = getattr(socket, "TCP_KEEPALIVE", None)  # macOS's name for it
        if option is not None:
            options[option] = value
    return options


class ResilientConnection(Connection):
    """A TCP connection whose whole connect (TCP, TLS, then AUTH/SELECT) is retried by its policy.

    redis-py retries only the TCP part; a Redis that accepts but does not answer would fail the
    command that needed a new connection at its first socket timeout, unretried.
    """

    async def connect(self) -> None:
        if self.is_connected:
            return
        await self.retry.call_with_retry(super().connect, lambda _error: self.disconnect())


class ResilientSSLConnection(ResilientConnection, SSLConnection):
    """The same over TLS (``rediss://``)."""


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


async def install_policy(redis: Redis, config: Config) -> OutageRetry:
    """Put the worker's Redis policy on a pool that arq made and that answered: socket timeout,
    TCP keepalive, connect timeout and the retry policy (now for the whole REDIS_RETRY_WINDOW);
    returns the policy (``stop`` it on shutdown).

    arq passes none of the socket options, and builds a Sentinel pool without RedisSettings'
    retry policy: a failover (the old master refuses connections for a few seconds) would end the
    worker at its next heartbeat. Each connection is made by a class that retries its whole
    connect; through Sentinel each reconnect asks the sentinels for the master
    (``FailoverConnection``). The pool's first connections (arq's PING) are closed and dropped, so
    that every connection is made this way.
    """
    policy = outage_retry(config)
    policy.established()
    pool = redis.connection_pool
    if issubclass(pool.connection_class, SentinelManagedConnection):
        pool.connection_class = FailoverConnection
    elif issubclass(pool.connection_class, SSLConnection):
        pool.connection_class = ResilientSSLConnection
    elif issubclass(pool.connection_class, Connection):
        pool.connection_class = ResilientConnection
    pool.connection_kwargs.update(
        retry=policy,
        retry_on_error=list(RETRY_ON),
        socket_connect_timeout=min(CONNECT_ATTEMPT, config.redis_connect_timeout),
        socket_timeout=config.redis_socket_timeout,
        socket_keepalive=True,
        socket_keepalive_options=keepalive_options(),
    )
    await pool.disconnect()
    pool.reset()  # type: ignore[no-untyped-call]
    return policy


async def close_redis(redis: Redis) -> None:
    """Close a client and, for a Sentinel-managed one, its connections to the sentinels (which the
    client's own ``aclose`` leaves open)."""
    await redis.aclose()
    manager = getattr(redis.connection_pool, "sentinel_manager", None)
    for sentinel in getattr(manager, "sentinels", ()):
        await sentinel.aclose()


def stop_retrying_on_stop(worker: Worker, policy: OutageRetry, within: float) -> None:
    """When arq's ``worker`` begins to stop (its grace for running jobs over), let the pool's
    commands be retried only ``within`` more seconds: arq then deletes its health key before the
    worker's shutdown runs, and a silent Redis must not hold that for the whole window."""
    previous = worker.on_stop

    def on_stop(signum: Signals) -> None:
        policy.stop(within)
        if previous is not None:
            previous(signum)

    worker.on_stop = on_stop
