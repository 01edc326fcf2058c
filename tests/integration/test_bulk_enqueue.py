"""Bulk enqueue (Client.enqueue_many over pgpool_client.enqueue.send_chunks) against the real Redis:
payloads byte for byte what the single enqueue writes for the same job and enqueue time (flow,
priority and trace included), many chunks in windows with duplicates refused in order, bad input
enqueuing nothing, a script Redis does not have loaded and its chunks sent again, an error reply
raised with the pool's connection still usable, and a cancelled bulk enqueue leaving it usable."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import orjson
import pytest
from arq.connections import ArqRedis
from opentelemetry.sdk.trace import TracerProvider
from redis.exceptions import ResponseError

from pgpool_client import Client, InvalidJobArguments, codec
from pgpool_client.client import payload_of
from pgpool_client.contracts import JobContract
from pgpool_client.dedicated import DedicatedConnection, pack
from pgpool_client.enqueue import (
    ENQUEUE_MANY_SCRIPT,
    Chunk,
    _send,
    answers,
    chunk_command,
    enqueue_many,
    send_chunks,
)
from pgpool_client.flow import Flow
from pgpool_client.jobs import CONTRACTS
from pgpool_client.keys import BLOCKED_SCORE, JOB_PREFIX, priority_key, wake_key
from pgpool_client.models import SearchUsersArgs
from tests.conftest import REDIS_URL
from worker.config import Config

pytestmark = pytest.mark.integration

TENANTS = JobContract("by_tenant", SearchUsersArgs, None, flow=Flow(fair="prefix", priority=3))


class TenantClient(Client):
    def contracts(self) -> Mapping[str, JobContract]:
        return {**CONTRACTS, "by_tenant": TENANTS}


@pytest.fixture
async def client(config: Config) -> AsyncIterator[Client]:
    async with TenantClient.connect(redis_url=REDIS_URL, queue_name=config.queue_name) as client:
        yield client


def ids(count: int) -> list[str]:
    return [f"bulk-{uuid.uuid4().hex}" for _ in range(count)]  # job ids are global: unique


async def stored(redis: ArqRedis, job_ids: list[str]) -> list[bytes]:
    payloads: list[bytes | None] = await redis.mget([JOB_PREFIX + job_id for job_id in job_ids])
    found = [payload for payload in payloads if payload is not None]
    assert len(found) == len(job_ids)
    return found


CASES: list[tuple[str, list[dict[str, Any]], int | None]] = [
    ("get_user", [{"user_id": 1}, {"user_id": "2"}], None),
    ("list_users", [{}, {"active": True, "created_from": "2024-01-01T00:00:00Z"}], None),
    ("search_users", [{"prefix": "zé"}], None),  # a declared concurrency limit
    ("count_users", [{"active": False}], 7),
    ("get_user", [{"user_id": 3}], 4),
    ("by_tenant", [{"prefix": "t1"}, {"prefix": "t1"}, {"prefix": "t2"}], None),
]


@pytest.mark.parametrize(("job", "arguments", "priority"), CASES)
async def test_a_payload_is_the_single_enqueues_byte_for_byte(
    client: Client,
    arq_redis: ArqRedis,
    job: str,
    arguments: list[dict[str, Any]],
    priority: int | None,
) -> None:
    contract = client.contracts()[job]
    job_ids = ids(len(arguments))
    handles = await client.enqueue_many(job, arguments, job_ids=job_ids, priority=priority)
    assert [h.job_id for h in handles if h is not None] == job_ids
    for kwargs, payload in zip(arguments, await stored(arq_redis, job_ids), strict=True):
        et = orjson.loads(payload)["et"]
        job_dict = payload_of(contract, contract.parse((), kwargs), priority)
        assert payload == codec.serialize({**job_dict, "t": None, "et": et})


async def test_a_span_active_at_the_call_is_in_every_payload(
    client: Client, arq_redis: ArqRedis
) -> None:
    provider = TracerProvider()
    try:
        with provider.get_tracer("test").start_as_current_span("bulk"):
            job_ids = ids(3)
            await client.enqueue_many("get_user", [{"user_id": 1}] * 3, job_ids=job_ids)
            contract = client.contracts()["get_user"]
            expected = payload_of(contract, contract.parse((), {"user_id": 1}), None)
    finally:
        provider.shutdown()
    assert "traceparent" in expected
    for payload in await stored(arq_redis, job_ids):
        et = orjson.loads(payload)["et"]
        assert payload == codec.serialize({**expected, "t": None, "et": et})


async def test_fairness_and_priority_are_placed_as_one_by_one(
    client: Client, arq_redis: ArqRedis, config: Config
) -> None:
    first, second, other = job_ids = ids(3)
    arguments = [{"prefix": "t1"}, {"prefix": "t1"}, {"prefix": "t2"}]
    await client.enqueue_many("by_tenant", arguments, job_ids=job_ids, chunk=2)
    queue = config.queue_name
    assert await arq_redis.zscore(queue, second) == BLOCKED_SCORE  # waits in its lane
    assert await arq_redis.zscore(queue, first) != BLOCKED_SCORE
    prioritised = await arq_redis.zrange(priority_key(queue), 0, -1)
    assert sorted(prioritised) == sorted([first.encode(), other.encode()])


async def test_many_chunks_in_order_with_duplicates_refused(
    client: Client, arq_redis: ArqRedis, config: Config
) -> None:
    taken = ids(1)
    await client.enqueue_many("get_user", [{"user_id": 1}], job_ids=taken)
    job_ids = ids(2345)
    job_ids[1500] = job_ids[10]  # the later of two jobs with one id is refused
    job_ids[2000] = taken[0]
    handles = await client.enqueue_many(
        "get_user", [{"user_id": n % 50 + 1} for n in range(2345)], job_ids=job_ids, chunk=100
    )
    refused = [n for n, handle in enumerate(handles) if handle is None]
    assert refused == [1500, 2000]
    assert await arq_redis.zcard(config.queue_name) == 2345 - 2 + 1
    assert await arq_redis.llen(wake_key(config.queue_name)) == 1  # type: ignore[misc]
    fresh = await client.enqueue_many("get_user", [{"user_id": 1}] * 1001)  # its own ids
    assert len({h.job_id for h in fresh if h is not None}) == 1001
    await arq_redis.unlink(*(JOB_PREFIX + job_id for job_id in set(job_ids)))


async def test_bad_input_anywhere_enqueues_nothing(
    client: Client, arq_redis: ArqRedis, config: Config
) -> None:
    arguments: list[dict[str, Any]] = [{"prefix": "ok"}] * 2500 + [{"prefix": "n\x00l"}]
    job_ids = ids(len(arguments))
    with pytest.raises(InvalidJobArguments, match="prefix: Value error, text must not contain"):
        await client.enqueue_many("search_users", arguments, job_ids=job_ids)
    with pytest.raises(ValueError, match="priority must be an integer"):
        await client.enqueue_many("get_user", [{"user_id": 1}], priority=10)
    with pytest.raises(ValueError, match="2 job ids for 1 jobs"):
        await client.enqueue_many("get_user", [{"user_id": 1}], job_ids=ids(2))
    with pytest.raises(ValueError, match="1 job ids for 2 jobs"):
        await client.enqueue_many("get_user", [{"user_id": 1}] * 2, job_ids=ids(1))
    with pytest.raises(ValueError, match="chunk must be at least 1"):
        await client.enqueue_many("get_user", [{"user_id": 1}], chunk=0)
    assert await arq_redis.zcard(config.queue_name) == 0
    assert await arq_redis.exists(*(JOB_PREFIX + job_id for job_id in job_ids)) == 0
    assert await client.enqueue_many("get_user", []) == []


def plain_chunks(job_ids: list[str]) -> Callable[[int, int], Chunk]:
    def build(start: int, stop: int) -> Chunk:
        job: dict[str, Any] = {"f": "get_user", "a": [], "k": {"user_id": 1}, "t": None, "et": 1}
        return 1, job_ids[start:stop], [codec.serialize(job)] * (stop - start), None

    return build


async def test_a_script_redis_lacks_is_loaded_and_its_chunks_sent_again(
    client: Client, arq_redis: ArqRedis, config: Config
) -> None:
    # A variant of the script no one has loaded (the Redis is shared: no SCRIPT FLUSH).
    script = f"{ENQUEUE_MANY_SCRIPT}\n-- {uuid.uuid4().hex}\n"
    assert await arq_redis.script_exists(_sha(script)) == [False]
    job_ids = ids(7)
    added = await send_chunks(
        client.redis, config.queue_name, 7, 2, plain_chunks(job_ids), script=script
    )
    assert added == [True] * 7  # the first window's chunk sent again, the others as they are
    assert await arq_redis.script_exists(_sha(script)) == [True]
    assert await arq_redis.zcard(config.queue_name) == 7
    again = await send_chunks(
        client.redis, config.queue_name, 7, 3, plain_chunks(job_ids), script=script
    )
    assert again == [False] * 7


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()


async def test_an_error_reply_is_raised_and_the_connection_stays_usable(
    client: Client, arq_redis: ArqRedis, config: Config
) -> None:
    await arq_redis.set(wake_key(config.queue_name), "not a list")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await client.enqueue_many("get_user", [{"user_id": 1}] * 5, chunk=2)
    for _ in range(3):
        assert await client.redis.echo("still in step") == b"still in step"
    await arq_redis.delete(wake_key(config.queue_name))
    assert all(await client.enqueue_many("get_user", [{"user_id": 1}] * 5, chunk=2))


async def test_the_pgpool_function_takes_id_and_job_pairs(
    client: Client, arq_redis: ArqRedis, config: Config
) -> None:
    job_ids = ids(3)
    jobs = [
        (job_ids[0], {"f": "get_user", "a": [], "k": {"user_id": 1}}),
        (job_ids[1], {"f": "get_user", "a": [], "k": {"user_id": 2}, "flow": {"priority": 5}}),
        (job_ids[0], {"f": "get_user", "a": [], "k": {"user_id": 3}}),
    ]
    assert await enqueue_many(client.redis, config.queue_name, jobs, chunk=2) == [True, True, False]
    payloads = await stored(arq_redis, job_ids[:2])
    for (_, job), payload in zip(jobs, payloads, strict=False):
        et = orjson.loads(payload)["et"]
        assert payload == codec.serialize({**job, "t": None, "et": et})
    assert await arq_redis.zrange(priority_key(config.queue_name), 0, -1) == [job_ids[1].encode()]


async def test_a_cancelled_bulk_enqueue_leaves_the_pool_usable(
    client: Client, config: Config
) -> None:
    job_ids = ids(2000)
    plain = plain_chunks(job_ids)

    def build(start: int, stop: int) -> Chunk:
        if start == 500:  # a window is in flight: the cancel lands in its read
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
        return plain(start, stop)

    with pytest.raises(asyncio.CancelledError):
        await send_chunks(client.redis, config.queue_name, 2000, 100, build)
    for _ in range(3):
        assert await client.redis.echo("in step") == b"in step"
    assert all(await client.enqueue_many("get_user", [{"user_id": 1}] * 3))


async def test_every_chunk_of_a_window_answered_noscript_is_sent_again_in_order(
    client: Client, arq_redis: ArqRedis, config: Config
) -> None:
    script = f"{ENQUEUE_MANY_SCRIPT}\n-- {uuid.uuid4().hex}\n"
    queue, key = config.queue_name, wake_key(config.queue_name)
    head = pack([("EVALSHA", _sha(script), 1, queue)])[len(b"*4\r\n") :]
    wake = pack([("LPUSH", key, b"1"), ("LTRIM", key, 0, 0)])
    job_ids = ids(3)
    build = plain_chunks(job_ids)
    chunks = [chunk_command(head, *build(0, 2)), chunk_command(head, *build(1, 3))]
    direct = DedicatedConnection(client.redis)
    try:
        replies = await _send(direct, chunks, wake, script)
    finally:
        await direct.close()
    assert answers(replies) == [True, True, False, True]  # the second chunk ran second
    assert await arq_redis.zcard(queue) == 3


async def test_a_large_chunk_of_plain_jobs_joins_the_queue_whole_with_its_duplicates_refused(
    config: Config, arq_redis: ArqRedis
) -> None:
    """The script adds a plain chunk's members in ZADDs of 500: a chunk of 1,700 jobs (with the
    same id twice, 600 apart) queues each id once, at the chunk's score."""
    job = {"f": "get_user", "a": [], "k": {"user_id": 1}}
    unique = ids(1_699)
    pairs = [(job_id, job) for job_id in unique]
    pairs.insert(1_200, (unique[600], job))  # taken by the same chunk
    added = await enqueue_many(arq_redis, config.queue_name, pairs, chunk=2_000)
    assert added.count(False) == 1 and not added[1_200]
    queued = await arq_redis.zrange(config.queue_name, 0, -1, withscores=True)
    assert sorted(m.decode() for m, _ in queued) == sorted(unique)
    assert len({score for _, score in queued}) == 1
