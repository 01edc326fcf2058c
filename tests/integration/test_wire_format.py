"""The documented wire format (docs/wire-format.md), spoken with raw Redis commands: no arq import on
the producer side, exactly as a service in another language would."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as redis_py

from tests.conftest import REDIS_URL, RunWorker
from worker.config import Config

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / "docs" / "wire-format.md"


def documented_lua() -> str:
    """The enqueue script exactly as the documentation shows it."""
    text = DOC.read_text()
    start = text.index("```lua\n") + len("```lua\n")
    return text[start : text.index("```", start)]


def documented_flow_lua() -> str:
    """The enqueue script of the Flow control section, exactly as the documentation shows it."""
    text = DOC.read_text()
    start = text.index("```lua\n", text.index("## Flow control")) + len("```lua\n")
    return text[start : text.index("```", start)]


@pytest.fixture
async def raw() -> AsyncIterator[redis_py.Redis]:
    client = redis_py.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


async def enqueue_raw(
    raw: redis_py.Redis, queue: str, function: str, kwargs: dict[str, Any], job_id: str
) -> int:
    now = int(time.time() * 1000)
    payload = json.dumps({"t": None, "f": function, "a": [], "k": kwargs, "et": now})
    keys = [f"arq:job:{job_id}", f"arq:result:{job_id}", queue]
    added: int = await raw.eval(documented_lua(), 3, *keys, payload, "86400000", str(now), job_id)  # type: ignore[misc]
    return added


async def read_result(raw: redis_py.Redis, job_id: str) -> dict[str, Any]:
    data = await raw.get(f"arq:result:{job_id}")
    assert data is not None, "no result stored"
    result: dict[str, Any] = json.loads(data)
    return result


async def test_raw_enqueue_runs_and_result_reads_raw(
    config: Config, run_worker: RunWorker, raw: redis_py.Redis, users: list[asyncpg.Record]
) -> None:
    job_id = uuid.uuid4().hex
    assert await enqueue_raw(raw, config.queue_name, "get_user", {"user_id": 3}, job_id) == 1
    assert await enqueue_raw(raw, config.queue_name, "get_user", {"user_id": 4}, job_id) == 0
    assert await raw.zscore(config.queue_name, job_id) is not None
    await run_worker()
    result = await read_result(raw, job_id)
    assert result["s"] is True and result["id"] == job_id and result["f"] == "get_user"
    assert result["q"] == config.queue_name and result["t"] == 1
    assert result["r"]["email"] == users[2]["email"]
    assert result["r"]["created_at"].endswith("Z")
    assert await raw.exists(f"arq:job:{job_id}", f"arq:in-progress:{job_id}") == 0
    assert await enqueue_raw(raw, config.queue_name, "get_user", {"user_id": 3}, job_id) == 0


async def test_raw_failures_are_json_errors(
    config: Config, run_worker: RunWorker, raw: redis_py.Redis, users: list[asyncpg.Record]
) -> None:
    bad_args, unknown = uuid.uuid4().hex, uuid.uuid4().hex
    await enqueue_raw(raw, config.queue_name, "get_user", {"user_id": "x"}, bad_args)
    await enqueue_raw(raw, config.queue_name, "nope", {}, unknown)
    await run_worker()
    first = await read_result(raw, bad_args)
    assert first["s"] is False and first["r"]["error"] == "InvalidJobArguments"
    assert "user_id" in first["r"]["message"]
    second = await read_result(raw, unknown)
    assert second["s"] is False and second["r"]["error"] == "UnknownJobName"
    assert "No worker knows job 'nope'" in second["r"]["message"]


async def test_non_json_payloads_are_refused_not_run(
    config: Config, run_worker: RunWorker, raw: redis_py.Redis, tmp_path: Path
) -> None:
    import pickle

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            import os

            return (os.system, (f"touch {marker}",))

    payloads = {
        "pickle": pickle.dumps(
            {"f": "get_user", "a": [], "k": {}, "t": None, "et": 1, "x": Exploit()}
        ),
        "garbage": b"\xff\xfe\x00garbage",
        "array": b"[1, 2, 3]",
        "oversized": json.dumps({"f": "get_user", "k": {"x": "a" * 1_100_000}}).encode(),
    }
    now = int(time.time() * 1000)
    for name, payload in payloads.items():
        await raw.psetex(f"arq:job:{name}-{config.queue_name}", 60_000, payload)
        await raw.zadd(config.queue_name, {f"{name}-{config.queue_name}": now})
    worker = await run_worker()
    assert worker.jobs_failed == len(payloads)
    assert not marker.exists(), "the pickle payload ran code in the worker"
    for name in payloads:
        result = await read_result(raw, f"{name}-{config.queue_name}")
        assert result["s"] is False
        assert result["r"]["error"] == "PoisonPayload"


async def enqueue_flow_raw(
    raw: redis_py.Redis, queue: str, function: str, kwargs: dict[str, Any], flow: dict[str, Any]
) -> tuple[str, int]:
    """Enqueue with the documented flow-control script, as a producer in another language would;
    returns the job id and its score."""
    job_id, now = uuid.uuid4().hex, int(time.time() * 1000)
    payload: dict[str, Any] = {"t": None, "f": function, "a": [], "k": kwargs, "et": now}
    payload["flow"] = flow
    keys = [f"arq:job:{job_id}", f"arq:result:{job_id}", queue]
    argv = [json.dumps(payload), "86400000", str(now), job_id]
    argv += [str(flow.get("priority", 0)), str(flow.get("fair", "")), str(now)]
    added = await raw.eval(documented_flow_lua(), 3, *keys, *argv)  # type: ignore[misc]
    assert added == 1
    return job_id, now


def test_the_documented_flow_script_is_the_clients() -> None:
    from pgpool_client.enqueue import ENQUEUE_SCRIPT

    assert ENQUEUE_SCRIPT.strip() in documented_flow_lua()


async def test_raw_flow_jobs_are_placed_run_and_a_malformed_flow_is_poison(
    config: Config, run_worker: RunWorker, raw: redis_py.Redis, users: list[asyncpg.Record]
) -> None:
    q = config.queue_name
    heavy = {"concurrency": [{"name": "heavy-db", "key": "", "max": 20}], "priority": 5}
    counted, score = await enqueue_flow_raw(raw, q, "count_users", {}, heavy)
    assert await raw.zscore(f"{q}:flow:priority", counted) == 4 * 2**41 + score
    bad, _ = await enqueue_flow_raw(raw, q, "get_user", {"user_id": 1}, {"priority": 12})
    await run_worker()
    result = await read_result(raw, counted)
    assert result["s"] is True and result["r"] == {"count": len(users)}
    poisoned = await read_result(raw, bad)
    assert poisoned["s"] is False and poisoned["r"]["error"] == "PoisonPayload"
    assert "flow.priority: priority must be an integer from 0 to 9" in poisoned["r"]["message"]


async def test_raw_fairness_jobs_wait_in_their_tenants_lane(raw: redis_py.Redis) -> None:
    q = f"test:lanes:{uuid.uuid4().hex[:12]}"  # no worker reads it
    tenant = {"fair": "tenant-7"}
    first, _ = await enqueue_flow_raw(raw, q, "get_user", {"user_id": 1}, tenant)
    second, score = await enqueue_flow_raw(raw, q, "get_user", {"user_id": 2}, tenant)
    other, _ = await enqueue_flow_raw(raw, q, "get_user", {"user_id": 3}, {"fair": "tenant-8"})
    try:
        assert await raw.get(f"{q}:flow:lane-head:tenant-7") == first.encode()
        assert await raw.zscore(q, second) == 2**50  # shown deferred while it waits
        lane = await raw.zrange(f"{q}:flow:blocked:l:tenant-7", 0, -1, withscores=True)
        assert lane == [(second.encode(), 9 * 2**41 + score)]
        assert (await raw.zscore(q, other) or 0) < 2**50
    finally:
        lanes = [f"{q}:flow:{k}" for k in ("due", "lane-head:tenant-7", "lane-head:tenant-8")]
        jobs = [f"arq:job:{i}" for i in (first, second, other)]
        await raw.delete(q, f"{q}:flow:blocked:l:tenant-7", *lanes, *jobs)
