"""The results docs/wire-format.md promises for payloads that are not jobs and for job names no
worker knows, read with raw Redis commands after a real worker ran them; and the pages name the
error types the worker really reports."""

from __future__ import annotations

import json
import pickle
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis_py

from tests.conftest import RunWorker
from tests.integration.test_wire_format import raw, read_result
from worker.config import Config

pytestmark = pytest.mark.integration

__all__ = ["raw"]

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "wire-format.md"
POISON_ROW = (
    '| a payload that is not a job of this queue | `"<poison>"` | `[]` | `{}` | `PoisonPayload` |'
)
UNKNOWN_ROW = (
    "| a job name no worker knows (after `UNKNOWN_JOB_GRACE`) | the name the producer sent "
    '| one `"**********"` per positional argument (`[]` when there are none) '
    '| the producer\'s keyword names, every value `"**********"` | `UnknownJobName` |'
)


def job(function: str, kwargs: dict[str, Any]) -> bytes:
    now = int(time.time() * 1000)
    return json.dumps({"t": None, "f": function, "a": [], "k": kwargs, "et": now}).encode()


async def run_payload(
    config: Config, run_worker: RunWorker, raw: redis_py.Redis, payload: bytes
) -> dict[str, Any]:
    job_id = uuid.uuid4().hex
    await raw.psetex(f"arq:job:{job_id}", 86_400_000, payload)
    await raw.zadd(config.queue_name, {job_id: int(time.time() * 1000)})
    await run_worker()
    return await read_result(raw, job_id)


POISON = {
    "garbage": b"\x00\xffnot json at all",
    "json array": b"[1, 2, 3]",
    "wrong shape": b'{"f": "get_user", "a": {}, "k": [], "et": "now"}',
    "oversized": b'{"f": "get_user", "a": [], "k": {"x": "' + b"y" * 1_000_001 + b'"}, "et": 1}',
    "poison name": job("__poison__", {"payload": "eA==", "problem": "forged"}),
    "unknown name": job("__unknown__", {"function": "get_user", "args": [], "kwargs": {}}),
    "pickle": pickle.dumps({"t": None, "f": "get_user", "a": [], "k": {"user_id": 1}, "et": 1}),
}


@pytest.mark.parametrize("payload", POISON.values(), ids=POISON.keys())
async def test_a_payload_that_is_not_a_job_has_the_documented_result(
    config: Config, run_worker: RunWorker, raw: redis_py.Redis, payload: bytes
) -> None:
    result = await run_payload(config, run_worker, raw, payload)
    assert result["s"] is False
    assert (result["f"], result["a"], result["k"]) == ("<poison>", [], {})
    assert result["r"]["error"] == "PoisonPayload"
    if payload.startswith(b"\x80"):  # a pickle, as arq's default serializer writes
        assert "pickle" in result["r"]["message"]


async def test_an_unknown_job_name_has_the_documented_result(
    config: Config, run_worker: RunWorker, raw: redis_py.Redis
) -> None:
    payload = job("no_such_job", {"token": "s3cret-value", "n": 5})
    result = await run_payload(config, run_worker, raw, payload)  # UNKNOWN_JOB_GRACE=0 here
    assert result["s"] is False
    assert result["r"]["error"] == "UnknownJobName"
    assert (result["f"], result["a"]) == ("no_such_job", [])
    assert result["k"] == {"token": "**********", "n": "**********"}
    assert "s3cret-value" not in json.dumps(result)


def test_the_docs_name_the_error_types_and_results_the_worker_reports() -> None:
    page = DOC.read_text(encoding="utf-8")
    assert POISON_ROW in page and UNKNOWN_ROW in page
    before_arq_section = page.split("## From a plain arq client")[0]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for text in (before_arq_section, readme):
        assert "DeserializationError" not in text
        assert "JobExecutionFailed" not in text
        assert "PoisonPayload" in text and "UnknownJobName" in text
    assert "saved as `enqueue.lua`" in page


async def test_an_unknown_jobs_positional_arguments_are_masked_one_by_one(
    config: Config, run_worker: RunWorker, raw: redis_py.Redis
) -> None:
    now = int(time.time() * 1000)
    payload: dict[str, Any] = {"t": None, "f": "no_such_job", "a": ["s3cret-value", 7], "k": {}}
    payload["et"] = now
    result = await run_payload(config, run_worker, raw, json.dumps(payload).encode())
    assert result["r"]["error"] == "UnknownJobName"
    assert (result["f"], result["a"], result["k"]) == ("no_such_job", ["**********"] * 2, {})
    assert "s3cret-value" not in json.dumps(result)
