"""A hot loop's own Redis connection (worker/queue/dedicated.py), against the real Redis: its
packing is redis-py's, error replies come back as values, and a lost connection is retried under
the pool's policy."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

import pytest
import uvloop
from arq.connections import ArqRedis
from redis.asyncio.connection import Connection
from redis.exceptions import ResponseError

from pgpool_client.dedicated import DedicatedConnection, pack
from tests.faults.conftest import url_via, wait_until
from tests.faults.proxy import Proxy
from worker.config import Config
from worker.queue.connection import install_policy

pytestmark = pytest.mark.integration


def test_packing_is_the_same_as_redis_py() -> None:
    commands = [
        ("EVALSHA", "ab" * 20, 2, "q", "q:failures", 100, -7, 0.25, b"\x00\xffraw", "zé"),
        ("BLPOP", "q:wake", 0.5),
        ("SET", "k", b"x" * 7000),  # redis-py sends a large value as a buffer of its own
    ]
    assert pack(commands) == b"".join(Connection().pack_commands(commands))


@pytest.mark.parametrize("bad", [True, None, object()])
def test_an_argument_redis_cannot_take_is_refused(bad: object) -> None:
    with pytest.raises(TypeError, match="cannot be a"):
        pack([("SET", "k", bad)])  # type: ignore[list-item]


async def test_replies_come_in_order_and_an_error_reply_is_a_value(
    config: Config, arq_redis: ArqRedis
) -> None:
    key = f"{config.queue_name}:dedicated:{uuid.uuid4().hex[:6]}"
    direct = DedicatedConnection(arq_redis)
    try:
        replies = await direct.execute(
            ("SET", key, "v"), ("LPUSH", key, "x"), ("GET", key), ("DEL", key)
        )
        assert replies[0] is True or replies[0] == b"OK"
        assert isinstance(replies[1], ResponseError) and "WRONGTYPE" in str(replies[1])
        assert replies[2:] == [b"v", 1]
        # The connection is still in step: the next round answers its own commands.
        assert await direct.execute(("ECHO", "next")) == [b"next"]
    finally:
        await direct.close()


async def test_a_killed_connection_is_replaced_and_the_commands_sent_again(
    config: Config, arq_redis: ArqRedis
) -> None:
    await install_policy(arq_redis, config)  # the worker's retry policy on the pool
    direct = DedicatedConnection(arq_redis)
    try:
        (first,) = await direct.execute(("CLIENT", "ID"))
        await arq_redis.client_kill_filter(_id=first)
        (second,) = await direct.execute(("CLIENT", "ID"))
        assert second != first
    finally:
        await direct.close()
    assert direct.conn is None


def test_a_connection_reset_while_idle_is_replaced_on_uvloop(config: Config) -> None:
    """The worker runs on uvloop, where a write to a transport the peer has reset raises
    RuntimeError (no retry policy knows it): the next round opens a new connection instead. A
    reset between two claim rounds once ended the claim loop for good, unseen."""
    parts = urlsplit(config.redis_url)
    proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 6379).start()

    async def scenario() -> None:
        redis = ArqRedis.from_url(url_via(config.redis_url, proxy.port))
        await install_policy(redis, config)
        direct = DedicatedConnection(redis)
        try:
            (first,) = await direct.execute(("CLIENT", "ID"))
            proxy.cut()  # every connection reset (RST), none accepted
            proxy.restore()
            assert direct.conn is not None and direct.conn._writer is not None
            transport = direct.conn._writer.transport

            async def closed() -> bool:  # the loop saw the reset (no read was pending)
                return transport.is_closing()

            await wait_until(closed, 10, "the reset to close the transport")
            (second,) = await direct.execute(("CLIENT", "ID"))
            assert second != first
        finally:
            await direct.close()
            await redis.aclose()

    try:
        uvloop.run(scenario())
    finally:
        proxy.stop()
