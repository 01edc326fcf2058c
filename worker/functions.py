"""The jobs of ``jobs.registry`` as arq functions, and the scheduled (cron) jobs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from arq.cron import CronJob, cron
from arq.worker import Function, func

from jobs.context import JobContext
from jobs.models import DeactivateInactiveArgs
from jobs.registry import JOBS, JOBS_BY_NAME, JobSpec
from worker.config import Config
from worker.cron_schedule import parse_schedule
from worker.lifecycle import config_of


def arq_function(spec: JobSpec[Any, Any]) -> Function:
    """Wrap a job so that arq's ``(ctx, *args, **kwargs)`` call is validated against its model."""

    async def run(ctx: JobContext, *args: Any, **kwargs: Any) -> Any:
        return await spec.run(ctx, spec.parse(args, kwargs))

    run.__qualname__ = run.__name__ = spec.name
    run.__doc__ = spec.function.__doc__
    return func(run, name=spec.name)


def arq_functions() -> list[Function]:
    """Every registered job as an arq function."""
    return [arq_function(spec) for spec in JOBS]


async def deactivate_inactive_cron(ctx: JobContext) -> Any:
    """Scheduled run of deactivate_inactive_users for users not seen for DEACTIVATE_AFTER_DAYS."""
    days = config_of(ctx).deactivate_after_days
    args = DeactivateInactiveArgs(seen_before=datetime.now(UTC) - timedelta(days=days))
    return await JOBS_BY_NAME["deactivate_inactive_users"].run(ctx, args)


def cron_jobs(config: Config) -> list[CronJob]:
    """The scheduled jobs; an empty CRON_DEACTIVATE disables the schedule.

    arq gives each tick a job id of its name and time, so several workers enqueue it once.
    """
    if not config.cron_deactivate.strip():
        return []
    return [
        cron(
            deactivate_inactive_cron,
            name="cron:deactivate_inactive_users",
            unique=True,
            **parse_schedule(config.cron_deactivate),
        )
    ]
