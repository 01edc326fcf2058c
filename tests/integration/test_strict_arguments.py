"""Job arguments off the queue are validated strictly against the published JSON schema: a value
of another JSON type is an InvalidJobArguments dead letter, never converted and run; only
timestamps are read from ISO-8601 text. The typed client still converts what it can before it
enqueues. And no job takes text with a NUL character (PostgreSQL text cannot hold one)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest
import redis.asyncio as redis_py

from jobs.registry import JOBS_BY_NAME
from tests.conftest import RunWorker
from tests.integration.test_wire_format import enqueue_raw, raw, read_result
from worker.client import JobClient
from worker.config import Config

pytestmark = pytest.mark.integration

__all__ = ["raw"]

REFUSED = [
    ("get_user", {"user_id": True}, "user_id"),
    ("get_user", {"user_id": "7"}, "user_id"),
    ("get_user", {"user_id": 7.0}, "user_id"),
    ("count_users", {"active": 1}, "active"),
    ("count_users", {"active": "true"}, "active"),
    ("search_users", {"prefix": 7}, "prefix"),
    ("list_users", {"limit": "5"}, "limit"),
    ("list_users", {"created_from": 1700000000}, "created_from"),
    ("search_users", {"prefix": "ad\u0000a"}, "prefix"),
    (
        "deactivate_inactive_users",
        {"seen_before": "2024-01-01T00:00:00Z", "idempotency_key": "k\u0000"},
        "idempotency_key",
    ),
]


async def run_raw(
    config: Config, run_worker: RunWorker, raw: redis_py.Redis, function: str, kwargs: Any
) -> dict[str, Any]:
    job_id = uuid.uuid4().hex
    assert await enqueue_raw(raw, config.queue_name, function, kwargs, job_id) == 1
    await run_worker()
    return await read_result(raw, job_id)


@pytest.mark.parametrize(("function", "kwargs", "field"), REFUSED)
async def test_a_value_of_another_json_type_is_an_invalid_arguments_dead_letter(
    config: Config,
    run_worker: RunWorker,
    raw: redis_py.Redis,
    pool: asyncpg.Pool[asyncpg.Record],
    users: list[asyncpg.Record],
    function: str,
    kwargs: dict[str, Any],
    field: str,
) -> None:
    result = await run_raw(config, run_worker, raw, function, kwargs)
    assert result["s"] is False
    assert result["r"]["error"] == "InvalidJobArguments", result["r"]
    assert f"{field}: " in result["r"]["message"]
    letter = await pool.fetchrow(
        "SELECT reason, error_type FROM dead_letters WHERE job_id = $1", result["id"]
    )
    assert letter is not None
    assert (letter["reason"], letter["error_type"]) == ("permanent-error", "InvalidJobArguments")


async def test_iso_timestamps_and_exact_types_run(
    config: Config, run_worker: RunWorker, raw: redis_py.Redis, users: list[asyncpg.Record]
) -> None:
    found = await run_raw(config, run_worker, raw, "get_user", {"user_id": 7})
    assert found["s"] is True and found["r"]["id"] == 7
    page = await run_raw(
        config,
        run_worker,
        raw,
        "list_users",
        {"active": True, "created_from": "2000-01-01T00:00:00Z", "limit": 5},
    )
    assert page["s"] is True, page["r"]
    assert len(page["r"]["users"]) == 5


async def test_the_typed_client_converts_before_it_enqueues(
    config: Config, run_worker: RunWorker, raw: redis_py.Redis, users: list[asyncpg.Record]
) -> None:
    async with JobClient.connect(config) as client:
        handle = await client.enqueue("get_user", user_id="7")
        many = await client.enqueue_many("count_users", [{"active": "true"}])
        await run_worker()
        user = await handle.result(timeout=5)
        assert user is not None and user.id == 7
        assert many[0] is not None
        assert (await many[0].result(timeout=5)).count > 0


def test_the_published_schema_keeps_its_types() -> None:
    schemas = {name: spec.args_model.model_json_schema() for name, spec in JOBS_BY_NAME.items()}
    assert schemas["get_user"]["properties"]["user_id"]["type"] == "integer"
    assert {"type": "boolean"} in schemas["count_users"]["properties"]["active"]["anyOf"]
    created = schemas["list_users"]["properties"]["created_from"]["anyOf"]
    assert {"format": "date-time", "type": "string"} in created
    seen = schemas["deactivate_inactive_users"]["properties"]["seen_before"]
    assert (seen["type"], seen["format"]) == ("string", "date-time")
