"""The named schedules: CRON_SCHEDULES (a JSON object, name → job, cron expression, arguments)
and the built-in CRON_DEACTIVATE, checked against the jobs' argument models."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobs.errors import InvalidJobArguments
from worker.core.cron_schedule import CronSchedule, parse_schedule
from worker.errors import ConfigError

if TYPE_CHECKING:
    from jobs.registry import JobSpec

EXAMPLE = '{"hourly-count": {"job": "count_users", "cron": "0 * * * *", "args": {}}}'
NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
KEYS = ("job", "cron", "args")
# The schedule CRON_DEACTIVATE sets (its job's argument is computed at each run).
DEACTIVATE = "deactivate_inactive_users"
TABLE_SOURCE = "CRON_SCHEDULES"
DEACTIVATE_SOURCE = "CRON_DEACTIVATE"


@dataclass(frozen=True)
class Schedule:
    """One named schedule: its job runs with ``arguments`` at each run of ``cron``."""

    name: str
    job: str
    cron: CronSchedule
    arguments: Mapping[str, Any] = field(default_factory=dict)
    source: str = TABLE_SOURCE  # the variable that set it


def parse_schedule_table(text: str) -> dict[str, Schedule]:
    """CRON_SCHEDULES's schedules by name (empty text: none); ValueError saying what to fix."""
    if not text.strip():
        return {}
    try:
        data = json.loads(text, object_pairs_hook=_refuse_duplicates)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"not valid JSON ({exc.msg} at character {exc.pos}); expected an object such as "
            f"{EXAMPLE}"
        ) from None
    if not isinstance(data, dict):
        raise _invalid(f"expected a JSON object of schedule name → schedule, such as {EXAMPLE}")
    return {name: _entry(name, item) for name, item in data.items()}


def schedules(table: str, deactivate: str, jobs: Mapping[str, JobSpec[Any, Any]]) -> list[Schedule]:
    """Every configured schedule: CRON_DEACTIVATE's (unless empty), then CRON_SCHEDULES's, each
    job known and its arguments fitting the job's model; else ConfigError naming the variable."""
    try:
        found = parse_schedule_table(table)
    except ValueError as exc:
        raise ConfigError(details=f"{TABLE_SOURCE}: {exc}") from None
    listed: list[Schedule] = []
    if deactivate.strip():
        if DEACTIVATE in found:
            raise ConfigError(
                details=f"{TABLE_SOURCE}: the schedule name {DEACTIVATE!r} is CRON_DEACTIVATE's; "
                "rename the schedule, or set CRON_DEACTIVATE empty"
            )
        try:
            listed.append(
                Schedule(DEACTIVATE, DEACTIVATE, parse_schedule(deactivate), {}, DEACTIVATE_SOURCE)
            )
        except ValueError as exc:
            raise ConfigError(details=f"{DEACTIVATE_SOURCE}: {exc}") from None
    for entry in found.values():
        spec = jobs.get(entry.job)
        if spec is None:
            raise ConfigError(
                details=f"{TABLE_SOURCE}: schedule {entry.name!r}: no job named {entry.job!r} "
                f"(jobs: {', '.join(sorted(jobs))})"
            )
        try:
            spec.parse((), dict(entry.arguments), strict=True)
        except InvalidJobArguments as exc:
            details = exc.context.get("details", exc)
            raise ConfigError(
                details=f"{TABLE_SOURCE}: schedule {entry.name!r}: the arguments of job "
                f"{entry.job!r} do not fit its model: {details}"
            ) from None
        listed.append(entry)
    return listed


def _entry(name: str, item: object) -> Schedule:
    if not NAME.fullmatch(name):
        raise ValueError(f"schedule name {name!r}: use 1 to 100 letters, digits, '_', '.' or '-'")
    if not isinstance(item, dict):
        raise _invalid(f'schedule {name!r}: expected an object {{"job": ..., "cron": ...}}')
    unknown = sorted(set(item) - set(KEYS))
    if unknown:
        raise ValueError(f"schedule {name!r}: unknown key {unknown[0]!r} (keys: job, cron, args)")
    job, expression, arguments = item.get("job"), item.get("cron"), item.get("args", {})
    if not isinstance(job, str) or not job:
        raise _invalid(f'schedule {name!r}: "job" must name a job')
    if not isinstance(expression, str):
        raise _invalid(f'schedule {name!r}: "cron" must be a cron expression such as "0 * * * *"')
    if not isinstance(arguments, dict):
        raise _invalid(f'schedule {name!r}: "args" must be a JSON object of the job\'s arguments')
    try:
        cron = parse_schedule(expression)
    except ValueError as exc:
        raise ValueError(f"schedule {name!r}: {exc}") from None
    return Schedule(name, job, cron, arguments)


def _invalid(message: str) -> ValueError:
    """A wrong JSON type is a ValueError, what a configuration validator reports as a bad value."""
    return ValueError(message)


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"the name {key!r} is given twice")
        result[key] = value
    return result
