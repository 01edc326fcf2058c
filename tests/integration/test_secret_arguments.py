"""A job's secret arguments (SecretStr) travel in clear in the payload it is enqueued with, so that
the job gets the real value; only logs and stored results mask them. Pydantic's JSON dump writes a
SecretStr as "**********", which the client once enqueued instead of the secret."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest
from arq.connections import ArqRedis
from pydantic import BaseModel, SecretStr

from jobs.context import JobContext
from jobs.models import JobArgs
from jobs.registry import JobSpec
from pgpool_client.contracts import JobContract, wire_arguments
from tests.conftest import RunWorker
from worker.client import JobClient
from worker.config import Config
from worker.queue.keys import JOB_PREFIX, RESULT_PREFIX

pytestmark = pytest.mark.integration

SECRET = "s3cret-7c1d"


class TokenArgs(JobArgs):
    token: SecretStr


class TokenSeen(BaseModel):
    matches: bool


async def check_token(ctx: JobContext, args: TokenArgs) -> TokenSeen:
    """Says whether the job got the real secret (never returns the secret itself)."""
    return TokenSeen(matches=args.token.get_secret_value() == SECRET)


SPEC = JobSpec("check_token", check_token, TokenArgs)


class TokenClient(JobClient):
    def contracts(self) -> Mapping[str, JobContract]:
        return {SPEC.name: JobContract(SPEC.name, TokenArgs, TokenSeen)}


def test_wire_arguments_carry_the_secret_in_clear() -> None:
    assert wire_arguments(TokenArgs(token=SecretStr(SECRET))) == {"token": SECRET}


async def test_a_secret_argument_reaches_the_job_and_stays_out_of_its_result(
    config: Config, arq_redis: ArqRedis, run_worker: RunWorker
) -> None:
    async with TokenClient.connect(config) as client:
        handle = await client.enqueue(SPEC.name, token=SECRET)
    payload = json.loads(await arq_redis.get(JOB_PREFIX + handle.job_id))
    assert payload["k"] == {"token": SECRET}
    await run_worker(specs=[SPEC])
    stored = json.loads(await arq_redis.get(RESULT_PREFIX + handle.job_id))
    assert stored["s"] is True and stored["r"] == {"matches": True}
    assert SECRET not in json.dumps(stored)
