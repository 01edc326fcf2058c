"""The jobs of ``jobs.registry`` as arq functions, the handlers of bad jobs, and the scheduled
run of deactivate_inactive_users (the cron jobs themselves: worker/runtime/schedules.py)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from arq.cron import CronJob
from arq.typing import WorkerCoroutine
from arq.worker import Function, func

from jobs.context import JobContext
from jobs.registry import JOBS, JOBS_BY_NAME, JobSpec
from worker.config import Config
from worker.queue import codec
from worker.runtime.execution import execute, poison_job, runtime, unknown_job

# arq's own try limit, only a backstop: the worker's policy (MAX_TRIES) dead-letters jobs first.
ARQ_MAX_TRIES = 1000
CRON_DEACTIVATE = "cron:deactivate_inactive_users"


def cron_name(config: Config, name: str) -> str:
    """A cron job's name, qualified by the queue: arq derives tick job ids from the name alone, so
    this keeps two queues on one Redis from refusing each other's ticks as duplicates."""
    return f"{config.queue_name}:{name}"


def arq_function(spec: JobSpec[Any, Any]) -> Function:
    """Wrap a job so that arq's ``(ctx, *args, **kwargs)`` call runs under the worker's policy.

    ``ctx`` is positional-only: a job argument named "ctx" is one of ``kwargs``, which the job's
    argument model refuses (InvalidJobArguments), not a TypeError of the call."""
    if spec.name.startswith(codec.RESERVED_PREFIX):
        raise ValueError(
            f"job {spec.name!r}: names starting with {codec.RESERVED_PREFIX!r} are reserved"
        )

    async def run(ctx: JobContext, /, *args: Any, **kwargs: Any) -> Any:
        return await execute(ctx, spec, args, kwargs)

    run.__qualname__ = run.__name__ = spec.name
    run.__doc__ = spec.function.__doc__
    run.job_spec = spec  # type: ignore[attr-defined]  # read by job_specs()
    # arq's protocol names ctx a keyword too; arq itself only ever passes it by position.
    return func(cast(WorkerCoroutine, run), name=spec.name, max_tries=ARQ_MAX_TRIES)


def job_specs(functions: Iterable[Function | Any]) -> dict[str, JobSpec[Any, Any]]:
    """The jobs among a worker's arq functions (those ``arq_function`` made), by name."""
    found = {}
    for function in functions:
        spec = getattr(getattr(function, "coroutine", None), "job_spec", None)
        if isinstance(spec, JobSpec):
            found[function.name] = spec
    return found


def arq_functions(specs: Iterable[JobSpec[Any, Any]] = JOBS) -> list[Function]:
    """Every job as an arq function, plus the handlers of poison payloads and unknown job names."""
    handlers = [
        func(poison_job, name=codec.POISON_JOB, max_tries=ARQ_MAX_TRIES),
        func(unknown_job, name=codec.UNKNOWN_JOB, max_tries=ARQ_MAX_TRIES),
    ]
    return [arq_function(spec) for spec in specs] + handlers


async def deactivate_inactive_cron(ctx: JobContext) -> Any:
    """Scheduled run of deactivate_inactive_users for users not seen for DEACTIVATE_AFTER_DAYS."""
    days = runtime(ctx).config.deactivate_after_days
    seen_before = (datetime.now(UTC) - timedelta(days=days)).isoformat()
    spec = JOBS_BY_NAME["deactivate_inactive_users"]
    return await execute(ctx, spec, [], {"seen_before": seen_before})


def secret_fields(specs: Iterable[JobSpec[Any, Any]] = JOBS) -> dict[str, tuple[str, ...]]:
    """Job name → its secret argument fields, for the worker's result encoder."""
    return {spec.name: spec.secret_fields for spec in specs if spec.secret_fields}


def job_names(functions: Iterable[Function | Any], crons: Iterable[CronJob] = ()) -> list[str]:
    """The names the worker's decoder treats as known."""
    return [f.name for f in functions if isinstance(f, Function)] + [c.name for c in crons]
