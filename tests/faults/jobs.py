"""Jobs for the fault suite: a write whose every run and every committed effect can be counted."""

from __future__ import annotations

import os
import time
from typing import Annotated, Any

from pydantic import BaseModel, Field, SecretStr

from jobs.context import JobContext, connection, write_effect
from jobs.models import JobArgs
from jobs.registry import JobSpec

SCHEMA = """
CREATE TABLE IF NOT EXISTS fault_runs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, key text NOT NULL, job_id text NOT NULL,
    try integer NOT NULL, pid integer NOT NULL DEFAULT pg_backend_pid(),
    at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE IF NOT EXISTS fault_effects (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, key text NOT NULL, job_id text NOT NULL,
    try integer NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
"""


class FaultWriteArgs(JobArgs):
    key: Annotated[str, Field(min_length=1)]
    hold: float = 0.0  # seconds of pg_sleep inside the write transaction (a running query)
    block: float = 0.0  # seconds the event loop is blocked (time.sleep) before the write
    block_while: str | None = None  # a file: the block ends early once it is gone
    fail_tries: int = 0  # tries up to this one fail with a transient error before writing
    fail_permanently: bool = False
    token: SecretStr | None = None  # a secret argument: must never be logged or stored in results


class FaultWriteResult(BaseModel):
    key: str
    job_try: int
    token_seen: bool


async def fault_write(ctx: JobContext, args: FaultWriteArgs) -> FaultWriteResult:
    """Record the run, then write one effect row per idempotency key (``args.key``)."""
    job_try = int(ctx.get("job_try", 1))
    async with connection(ctx) as conn:
        await conn.execute(
            "INSERT INTO fault_runs (key, job_id, try) VALUES ($1, $2, $3)",
            args.key,
            str(ctx.get("job_id")),
            job_try,
        )
    if args.block:  # the fault: a blocked event loop
        end = time.monotonic() + args.block
        while (left := end - time.monotonic()) > 0:
            if args.block_while is not None and not os.path.exists(args.block_while):  # noqa: ASYNC240
                break
            time.sleep(min(left, 0.05))  # noqa: ASYNC251
    if job_try <= args.fail_tries:
        raise ConnectionResetError(f"injected transient fault on try {job_try}")
    if args.fail_permanently:
        raise ValueError("injected permanent fault")
    async with write_effect(ctx, args.key) as effect:
        if effect.done:
            return FaultWriteResult.model_validate(effect.stored)
        await effect.conn.execute(
            "INSERT INTO fault_effects (key, job_id, try) VALUES ($1, $2, $3)",
            args.key,
            str(ctx.get("job_id")),
            job_try,
        )
        if args.hold:
            await effect.conn.execute("SELECT pg_sleep($1)", args.hold)
        result = FaultWriteResult(key=args.key, job_try=job_try, token_seen=args.token is not None)
        effect.result = result.model_dump(mode="json")
    return result


FAULT_JOBS: tuple[JobSpec[Any, Any], ...] = (
    JobSpec("fault_write", fault_write, FaultWriteArgs, writes=True),
)
