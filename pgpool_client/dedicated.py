"""One Redis connection kept by a hot loop of the worker (the claim rounds, the outcome writes).

For every command redis-py's client checks a connection out of its pool and back in, reads the
socket once to see that it is clean, and sends under ``asyncio.wait_for`` (on Python 3.11 a task
per command). At light load, where each job's round trips are wake-ups of their own, that is most
of a round trip's cost. A ``DedicatedConnection`` takes one connection of the same pool, so it has
the same TLS, password, database, socket timeouts, keepalive, Sentinel failover and retry policy
(the worker's: ``worker/queue/connection.py``), and sends its commands on it in one write. One coroutine at a
time uses it: its loop's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT


class DedicatedConnection:
    """A connection of ``redis``'s pool, held from the first command until ``close``."""

    def __init__(self, redis: Redis) -> None:
        self.pool = redis.connection_pool
        self.conn: Connection | None = None

    async def execute(self, *commands: Sequence[EncodableT]) -> list[Any]:
        """Send ``commands`` in one write and read their replies; an error reply is returned as
        its exception, not raised. A lost connection is retried as every command of the pool is
        (the retry policy's window): a new connection, the same commands sent again."""
        conn = self.conn
        if conn is None:
            conn = self.conn = await self.pool.get_connection()
        packed = pack(commands)

        async def attempt() -> list[Any]:
            return await _round_trip(conn, packed, len(commands))

        async def failed(_error: Exception) -> None:
            await conn.disconnect()

        return await conn.retry.call_with_retry(attempt, failed)

    async def close(self) -> None:
        """Give the connection back to the pool."""
        conn, self.conn = self.conn, None
        if conn is not None:
            await self.pool.release(conn)

    async def execute_packed(self, packed: bytes, count: int) -> list[Any]:
        """``execute`` of ``count`` commands already in Redis's protocol (as ``pack`` writes
        them): for a caller that packs its own commands faster (pgpool_client.enqueue)."""
        conn = self.conn
        if conn is None:
            conn = self.conn = await self.pool.get_connection()

        async def attempt() -> list[Any]:
            return await _round_trip(conn, packed, count)

        async def failed(_error: Exception) -> None:
            await conn.disconnect()

        return await conn.retry.call_with_retry(attempt, failed)


def pack(commands: Sequence[Sequence[EncodableT]]) -> bytes:
    """``commands`` in Redis's protocol, as redis-py's ``pack_commands`` writes them (bytes as
    they are, text as UTF-8, numbers in decimal), in about half its time."""
    out: list[bytes] = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        for arg in command:
            data: bytes
            if isinstance(arg, bytes):
                data = arg
            elif isinstance(arg, str):
                data = arg.encode()
            elif isinstance(arg, int) and not isinstance(arg, bool):
                data = b"%d" % arg
            elif isinstance(arg, float):
                data = repr(arg).encode()
            else:
                raise TypeError(f"a Redis command's argument cannot be a {type(arg).__name__}")
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


async def _round_trip(conn: Connection, packed: bytes, count: int) -> list[Any]:
    writer = conn._writer  # redis-py's own send, without its task per command
    if writer is not None and writer.transport.is_closing():
        # The peer reset the connection while it was idle (between two rounds): redis-py notices
        # only on its next read, and a write to the closed transport would raise RuntimeError
        # (uvloop), which no retry policy knows. A connection lost is a new connection.
        await conn.disconnect(nowait=True)
    if not conn.is_connected:
        await conn.connect()  # type: ignore[no-untyped-call]
    writer = conn._writer
    assert writer is not None
    try:
        try:
            writer.write(packed)
        except RuntimeError as exc:  # closed under us (uvloop's "the handler is closed")
            raise RedisConnectionError(f"connection lost before the write: {exc}") from None
        if writer.transport.get_write_buffer_size():  # the socket did not take it all at once
            async with asyncio.timeout(conn.socket_timeout):
                await writer.drain()
    except TimeoutError:
        await conn.disconnect(nowait=True)
        raise RedisTimeoutError("Timeout writing to socket") from None
    except BaseException:
        await conn.disconnect(nowait=True)
        raise
    replies: list[Any] = []
    for _ in range(count):
        try:
            replies.append(await conn.read_response())
        except ResponseError as error:
            replies.append(error)
    return replies
