"""The configured schedules (CRON_DEACTIVATE, CRON_SCHEDULES) as arq cron jobs whose next runs are
cron's, read in CRON_TIMEZONE (worker/core/cron_schedule.py says why arq's own are not used)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime, tzinfo
from typing import Any, cast

from arq.cron import CronJob, cron
from arq.typing import WorkerCoroutine

from jobs.context import JobContext
from jobs.registry import JOBS_BY_NAME, JobSpec
from worker.config import Config
from worker.core.cron_schedule import CronSchedule, parse_zone
from worker.core.schedule_table import DEACTIVATE_SOURCE, Schedule, schedules
from worker.runtime.execution import execute
from worker.runtime.functions import ARQ_MAX_TRIES, cron_name, deactivate_inactive_cron


@dataclass
class ScheduledJob(CronJob):
    """An arq CronJob whose next run is ``cron.next_run`` in ``zone`` (an instant in UTC, so its
    tick id ``{name}:{unix ms}`` is the same on every worker and the tick is enqueued once)."""

    cron: CronSchedule | None = None
    zone: tzinfo = UTC

    def calculate_next(self, prev_run: datetime) -> None:
        """arq calls this with the worker's clock (any zone) or the previous run."""
        if self.cron is None:
            super().calculate_next(prev_run)
            return
        self.next_run = self.cron.next_run(prev_run, self.zone)


def configured_schedules(config: Config) -> list[Schedule]:
    """The schedules of the configuration, checked against the jobs (ConfigError otherwise)."""
    return schedules(config.cron_schedules, config.cron_deactivate, JOBS_BY_NAME)


def cron_jobs(config: Config) -> list[CronJob]:
    """One arq cron job per configured schedule, named ``{queue}:cron:{schedule name}``."""
    zone = parse_zone(config.cron_timezone)
    return [_cron_job(config, schedule, zone) for schedule in configured_schedules(config)]


def _cron_job(config: Config, schedule: Schedule, zone: tzinfo) -> ScheduledJob:
    if schedule.source == DEACTIVATE_SOURCE:
        coroutine = cast(WorkerCoroutine, deactivate_inactive_cron)
    else:
        coroutine = _job_run(JOBS_BY_NAME[schedule.job], schedule.arguments)
    made = cron(
        coroutine,
        name=cron_name(config, f"cron:{schedule.name}"),
        unique=True,
        max_tries=ARQ_MAX_TRIES,
    )
    values = {f.name: getattr(made, f.name) for f in fields(CronJob)}
    return ScheduledJob(**values, cron=schedule.cron, zone=zone)


def _job_run(spec: JobSpec[Any, Any], arguments: Mapping[str, Any]) -> WorkerCoroutine:
    """The tick's function: the job under the worker's policy, with the schedule's arguments."""

    async def run(ctx: JobContext) -> Any:
        return await execute(ctx, spec, [], dict(arguments))

    run.__qualname__ = run.__name__ = f"scheduled_{spec.name}"
    return cast(WorkerCoroutine, run)
