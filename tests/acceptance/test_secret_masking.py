"""One masking rule for a job's arguments (worker/core/masking.py), wherever they are shown: a
stored result, ``python -m worker inspect`` and ``python -m worker dead-letters show`` agree.

A job's secret fields (SecretStr, SecretBytes) and, when it has any, all its positional arguments
read "**********"; a job whose name is not known has every argument value masked.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest
from arq.connections import ArqRedis
from pydantic import BaseModel, SecretStr

from jobs.context import JobContext
from jobs.models import JobArgs
from jobs.registry import JOBS_BY_NAME, JobSpec
from tests.acceptance.conftest import worker_cli
from tests.conftest import RunWorker
from worker.config import Config
from worker.core.masking import REDACTED
from worker.db.dead_letters import get_letter
from worker.ops.inspect_cli import inspect_job
from worker.ops.job_arguments import redact_letter
from worker.queue.keys import RESULT_PREFIX

pytestmark = pytest.mark.acceptance

SECRET = "s3cret-value-1f0e"


class SecretEchoArgs(JobArgs):
    note: str
    token: SecretStr
    fail: bool = False


class SecretEchoResult(BaseModel):
    note: str
    token_seen: bool


async def secret_echo(ctx: JobContext, args: SecretEchoArgs) -> SecretEchoResult:
    """Returns its note; with ``fail``, fails for good (a dead letter)."""
    if args.fail:
        raise ValueError("asked to fail")
    return SecretEchoResult(note=args.note, token_seen=bool(args.token.get_secret_value()))


SECRET_ECHO: JobSpec[SecretEchoArgs, SecretEchoResult] = JobSpec(
    "secret_echo", secret_echo, SecretEchoArgs
)
KNOWN = {**JOBS_BY_NAME, SECRET_ECHO.name: SECRET_ECHO}  # what a deploy with the job would know


async def stored_result(arq_redis: ArqRedis, job_id: str) -> tuple[bytes, dict[str, Any]]:
    raw = await arq_redis.get(RESULT_PREFIX + job_id)
    assert raw is not None, "no stored result"
    return raw, json.loads(raw)


async def letter_of(pool: asyncpg.Pool[asyncpg.Record], job_id: str) -> int:
    letter_id = await pool.fetchval("SELECT id FROM dead_letters WHERE job_id = $1", job_id)
    assert letter_id is not None, "no dead letter"
    return int(letter_id)


async def test_a_job_added_through_settings_with_has_its_secrets_redacted_from_its_result(
    run_worker: RunWorker, arq_redis: ArqRedis
) -> None:
    job = await arq_redis.enqueue_job(SECRET_ECHO.name, note="visible", token=SECRET)
    assert job is not None
    worker = await run_worker(specs=[SECRET_ECHO])
    assert worker.jobs_complete == 1, "the job ran"
    raw, result = await stored_result(arq_redis, job.job_id)
    assert result["s"] is True and result["r"] == {"note": "visible", "token_seen": True}
    assert result["k"] == {"note": "visible", "token": REDACTED}
    assert SECRET.encode() not in raw


async def test_inspect_dead_letters_show_and_the_stored_result_mask_a_job_alike(
    run_worker: RunWorker, arq_redis: ArqRedis, config: Config, pool: asyncpg.Pool[asyncpg.Record]
) -> None:
    # "visible" is given by position: it fills the first field (note), so it is masked too.
    job = await arq_redis.enqueue_job(SECRET_ECHO.name, "visible", token=SECRET, fail=True)
    assert job is not None
    await run_worker(specs=[SECRET_ECHO])
    expected = ([REDACTED], {"token": REDACTED, "fail": True})

    _, result = await stored_result(arq_redis, job.job_id)
    assert result["s"] is False and (result["a"], result["k"]) == expected
    shown = (await inspect_job(config, arq_redis, job.job_id, KNOWN))["result"]
    assert (shown["args"], shown["kwargs"]) == expected
    conn = await pool.acquire()
    try:
        letter = redact_letter(await get_letter(conn, await letter_of(pool, job.job_id)), KNOWN)
    finally:
        await pool.release(conn)
    assert (letter["payload"]["a"], letter["payload"]["k"]) == expected
    assert SECRET not in json.dumps([result, shown, letter], default=str)


async def test_a_job_no_worker_knows_is_masked_alike_by_the_commands_and_its_result(
    run_worker: RunWorker, arq_redis: ArqRedis, config: Config, pool: asyncpg.Pool[asyncpg.Record]
) -> None:
    # Which of an unknown job's arguments are secret is not known: none is shown, anywhere.
    job = await arq_redis.enqueue_job("no_such_job", "by-position", token=SECRET, note="plain")
    assert job is not None
    await run_worker()  # UNKNOWN_JOB_GRACE=0 in the tests' config: dead-lettered at once
    expected = ([REDACTED], {"token": REDACTED, "note": REDACTED})

    _, result = await stored_result(arq_redis, job.job_id)
    assert result["f"] == "no_such_job" and (result["a"], result["k"]) == expected
    inspected = await worker_cli(config, "inspect", job.job_id)
    assert inspected.returncode == 0, inspected.stderr
    shown = json.loads(inspected.stdout)["result"]
    assert (shown["args"], shown["kwargs"]) == expected
    letter_id = await letter_of(pool, job.job_id)
    dead = await worker_cli(config, "dead-letters", "show", str(letter_id))
    assert dead.returncode == 0, dead.stderr
    payload = json.loads(dead.stdout)["payload"]
    assert payload["f"] == "no_such_job" and (payload["a"], payload["k"]) == expected
    for output in (inspected.stdout, dead.stdout):
        assert SECRET not in output and "by-position" not in output and "plain" not in output
