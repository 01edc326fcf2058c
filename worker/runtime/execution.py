"""How every job runs: validated arguments, a deadline, a renewed lease, fencing for writes, and a
policy outcome for every error (retry with backoff, or a dead letter). Built on arq's ``Retry``."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from arq.worker import Retry
from redis.asyncio import Redis

from jobs.context import DEADLINE_KEY, JOB_NAME_KEY, JobContext, claim
from jobs.errors import JobTimeout
from jobs.registry import JobSpec
from worker.config import Config
from worker.core.logs import job_event
from worker.db.dead_letters import (
    EXHAUSTED,
    PERMANENT,
    POISON,
    UNKNOWN,
    DeadLetter,
    DeadLetterStore,
)
from worker.errors import PoisonPayload, TriesExhausted, UnknownJobName
from worker.queue import codec
from worker.queue.keys import RETRY_PREFIX
from worker.runtime.breaker import RETRY_DELAY, PostgresBreaker
from worker.runtime.leases import LEASE_SET_KEY, LeaseKeeper
from worker.runtime.metrics import WorkerMetrics
from worker.runtime.retry_policy import RetryPolicy, is_transient

logger = logging.getLogger(__name__)

RUNTIME_KEY = "runtime"


@dataclass
class Runtime:
    """What a job's run needs of the worker (its reliability machinery), created at startup and kept
    in ``ctx``. What runs beside the jobs (the consumer, the endpoint, the background tasks) is the
    lifecycle's (``worker/runtime/lifecycle.py``)."""

    config: Config
    redis: Redis
    leases: LeaseKeeper
    dead_letters: DeadLetterStore
    known: Sequence[str]
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)
    policies: dict[str | None, RetryPolicy] = field(default_factory=dict)  # by job name
    breaker: PostgresBreaker | None = None  # PostgreSQL unreachable: no claims, tries given back

    def policy(self, spec: JobSpec[Any, Any] | None = None) -> RetryPolicy:
        """The retry policy of ``spec`` (the worker's own without one), made once per job name."""
        name = spec.name if spec else None
        found = self.policies.get(name)
        if found is None:
            max_tries = spec.max_tries if spec and spec.max_tries else self.config.max_tries
            found = self.policies[name] = RetryPolicy(
                max_tries, self.config.retry_backoff_base, self.config.retry_backoff_max
            )
        return found


def runtime(ctx: JobContext) -> Runtime:
    found = ctx.get(RUNTIME_KEY)
    if not isinstance(found, Runtime):
        raise RuntimeError("ctx has no runtime: the worker's startup did not run")  # noqa: TRY004
    return found


def dead_letter(
    ctx: JobContext,
    function: str,
    args: Sequence[Any],
    kwargs: dict[str, Any],
    reason: str,
    exc: BaseException,
    payload: bytes | None = None,
) -> DeadLetter:
    """A dead letter for the running job, its payload rebuilt in the wire format."""
    enqueued: datetime | None = ctx.get("enqueue_time")
    if payload is None:
        et = int(enqueued.timestamp() * 1000) if enqueued else 0
        payload = codec.serialize(
            {"t": None, "f": function, "a": list(args), "k": kwargs, "et": et}
        )
    return DeadLetter(
        job_id=str(ctx.get("job_id", "")),
        queue=runtime(ctx).config.queue_name,
        function=function,
        payload=payload,
        reason=reason,
        error_type=type(exc).__name__,
        error_message=str(exc),
        attempts=int(ctx.get("job_try", 1)),
        enqueued_at=enqueued,
    )


async def uncharge(ctx: JobContext) -> None:
    """Give back the try arq counted for this run (shutdown cancellations, waiting for a deploy)."""
    await runtime(ctx).redis.decr(RETRY_PREFIX + str(ctx["job_id"]))


async def execute(
    ctx: JobContext, spec: JobSpec[Any, Any], args: Sequence[Any], kwargs: dict[str, Any]
) -> Any:
    """Run one try of a job under the worker's policy (the body of every arq function)."""
    rt = runtime(ctx)
    policy = rt.policy(spec)
    job_id, job_try = str(ctx["job_id"]), int(ctx["job_try"])
    ctx[JOB_NAME_KEY] = spec.name
    if job_try > policy.max_tries:
        exhausted = TriesExhausted(
            job_id=job_id, function=spec.name, job_try=job_try, max_tries=policy.max_tries
        )
        await rt.dead_letters.add(dead_letter(ctx, spec.name, args, kwargs, EXHAUSTED, exhausted))
        raise exhausted
    await rt.leases.hold(job_id, lease_set=bool(ctx.get(LEASE_SET_KEY)))
    try:
        return await _attempt(ctx, spec, args, kwargs, rt.config)
    except asyncio.CancelledError:
        # Only the worker's shutdown cancels a job (timeouts end as JobTimeout): not its fault.
        await asyncio.shield(uncharge(ctx))
        raise
    except Exception as exc:
        rt.metrics.postgres_error(exc)
        if await _outage(ctx, rt.breaker, exc):
            logger.info(
                "job %s try %d: %s while postgres is unreachable; try given back, due in %gs",
                job_id,
                job_try,
                type(exc).__name__,
                RETRY_DELAY,
                extra=job_event(job_id, spec.name, job_try, None, "retrying", error=exc),
            )
            raise Retry(defer=RETRY_DELAY) from exc
        if is_transient(exc) and job_try < policy.max_tries:
            delay = policy.delay(job_try)
            logger.info(
                "job %s try %d: %s; retrying in %.2fs",
                job_id,
                job_try,
                type(exc).__name__,
                delay,
                extra=job_event(job_id, spec.name, job_try, None, "retrying", error=exc),
            )
            raise Retry(defer=delay) from exc
        reason = EXHAUSTED if is_transient(exc) else PERMANENT
        await rt.dead_letters.add(dead_letter(ctx, spec.name, args, kwargs, reason, exc))
        raise
    finally:
        rt.leases.release(job_id)


async def _outage(ctx: JobContext, breaker: PostgresBreaker | None, exc: BaseException) -> bool:
    """True if ``exc`` is an unreachable PostgreSQL's (the breaker says so): the try is given back."""
    try:
        if breaker is None or not await breaker.unreachable(exc):
            return False
    except asyncio.CancelledError:  # shutdown while the probe runs: not the job's fault either
        await asyncio.shield(uncharge(ctx))
        raise
    await uncharge(ctx)
    return True


async def _attempt(
    ctx: JobContext,
    spec: JobSpec[Any, Any],
    args: Sequence[Any],
    kwargs: dict[str, Any],
    config: Config,
) -> Any:
    params = spec.parse(args, kwargs, strict=True)  # the queue's JSON: no "7" for an integer
    timeout = spec.timeout or config.job_timeout
    ctx[DEADLINE_KEY] = asyncio.get_running_loop().time() + timeout
    try:
        async with asyncio.timeout(timeout):
            if spec.writes:
                await claim(ctx)
            return await spec.run(ctx, params)
    except (TimeoutError, asyncpg.QueryCanceledError) as exc:
        # The server's statement_timeout (the remaining time) may fire just before our deadline.
        if ctx[DEADLINE_KEY] > asyncio.get_running_loop().time() + 0.05:
            raise  # a timeout of the job's own (asyncpg command_timeout, acquire, lock)
        raise JobTimeout(job_id=ctx["job_id"], function=spec.name, timeout=timeout) from exc


async def poison_job(ctx: JobContext, payload: str, problem: str) -> None:
    """Handler of payloads that are not jobs of this queue: dead-lettered with their bytes."""
    exc = PoisonPayload(job_id=ctx["job_id"], problem=problem)
    raw = base64.b64decode(payload)
    letter = dead_letter(ctx, codec.POISON_FUNCTION, [], {}, POISON, exc, raw)
    await runtime(ctx).dead_letters.add(letter)
    raise exc


async def unknown_job(
    ctx: JobContext, function: str, args: list[Any], kwargs: dict[str, Any]
) -> None:
    """Handler of jobs no worker here knows: wait for a deploy that has them, then dead-letter."""
    rt = runtime(ctx)
    grace = rt.config.unknown_job_grace
    enqueued: datetime = ctx["enqueue_time"]
    waited = datetime.now(enqueued.tzinfo).timestamp() - enqueued.timestamp()
    if waited < grace:
        await uncharge(ctx)
        delay = min(grace / 10, grace - waited)  # about ten looks during the grace window
        logger.warning(
            "job %s: no worker knows %r yet; retrying in %.1fs", ctx["job_id"], function, delay
        )
        raise Retry(defer=max(delay, 0.05))
    exc = UnknownJobName(function=function, grace=grace, known=", ".join(sorted(rt.known)))
    await rt.dead_letters.add(dead_letter(ctx, function, args, kwargs, UNKNOWN, exc))
    raise exc
