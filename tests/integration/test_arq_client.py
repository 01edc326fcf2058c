"""A plain arq client (arq's own ``create_pool`` and ``Job``, no code of this project) configured
as docs/wire-format.md says: JSON serializer and deserializer, ISO-8601 text for timestamps. Its
jobs run, its ``job.result()`` returns the result, and a failure raises what the page says."""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from arq.connections import RedisSettings, create_pool
from arq.jobs import DeserializationError, SerializationError

from tests.conftest import REDIS_URL, RunWorker
from worker.config import Config

pytestmark = pytest.mark.integration

DOCS = Path(__file__).resolve().parents[2] / "docs"


async def test_a_documented_arq_client_gets_its_results_and_failures(
    config: Config,
    run_worker: RunWorker,
    pool: asyncpg.Pool[asyncpg.Record],
    users: list[asyncpg.Record],
) -> None:
    redis = await create_pool(
        RedisSettings.from_dsn(REDIS_URL),
        # str, which redis-py writes as UTF-8 (arq's annotation says bytes: hence the ignore)
        job_serializer=json.dumps,  # type: ignore[arg-type]
        job_deserializer=json.loads,
        default_queue_name=config.queue_name,
    )
    try:
        found = await redis.enqueue_job("get_user", user_id=users[2]["id"])
        cutoff = (datetime.now(UTC) - timedelta(days=100)).isoformat()
        write = await redis.enqueue_job("deactivate_inactive_users", seen_before=cutoff)
        bad = await redis.enqueue_job("get_user", user_id="7")
        assert found is not None and write is not None and bad is not None
        await run_worker()
        user = await found.result(timeout=5)
        assert user["id"] == users[2]["id"] and user["email"] == users[2]["email"]
        assert (await write.result(timeout=5))["deactivated"] >= 0
        with pytest.raises(SerializationError) as failed:
            await bad.result(timeout=5)
        assert type(failed.value) is SerializationError  # not an exception of the job's own
        error = failed.value.args[0]
        assert error["error"] == "InvalidJobArguments"
        assert "user_id: Input should be a valid integer" in error["message"]
    finally:
        await redis.aclose()


async def test_arqs_default_pickle_client_gets_a_dead_letter_and_a_deserialization_error(
    config: Config,
    run_worker: RunWorker,
    pool: asyncpg.Pool[asyncpg.Record],
    users: list[asyncpg.Record],
) -> None:
    redis = await create_pool(
        RedisSettings.from_dsn(REDIS_URL), default_queue_name=config.queue_name
    )
    try:
        job = await redis.enqueue_job("get_user", user_id=1)
        assert job is not None
        await run_worker()
        with pytest.raises(DeserializationError, match="unable to deserialize job result"):
            await job.result(timeout=5)
        letter = await pool.fetchrow(
            "SELECT reason, error_type, payload FROM dead_letters WHERE job_id = $1", job.job_id
        )
        assert letter is not None
        assert (letter["reason"], letter["error_type"]) == ("poison", "PoisonPayload")
        assert pickle.loads(bytes(letter["payload"]))["f"] == "get_user"  # the bytes, kept
    finally:
        await redis.aclose()


def test_the_docs_say_what_an_arq_client_must_pass_and_gets() -> None:
    for page in ("wire-format.md", "reliability.md"):
        text = " ".join((DOCS / page).read_text(encoding="utf-8").split())
        for phrase in (
            "job_serializer=json.dumps",
            "job_deserializer=json.loads",
            "SerializationError",
            "DeserializationError: unable to deserialize job result",
        ):
            assert phrase in text, f"docs/{page} does not say {phrase!r}"
