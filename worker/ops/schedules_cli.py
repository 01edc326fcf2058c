"""``python -m worker schedules``: the configured schedules (CRON_DEACTIVATE, CRON_SCHEDULES) with
their next runs, in CRON_TIMEZONE and in UTC, as text or JSON. Reads only the configuration."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from jobs.errors import WorkerError
from jobs.registry import JOBS_BY_NAME
from worker.config import Config
from worker.core.cron_schedule import parse_zone
from worker.core.exit_codes import EXIT_OK
from worker.core.schedule_table import DEACTIVATE_SOURCE, schedules
from worker.ops.output import emit


def schedule_listing(config: Config, after: datetime, count: int) -> dict[str, Any]:
    """The schedules and the next ``count`` runs of each after ``after``, as JSON-friendly data."""
    zone = parse_zone(config.cron_timezone)
    listed = []
    for schedule in schedules(config.cron_schedules, config.cron_deactivate, JOBS_BY_NAME):
        runs = schedule.cron.next_runs(after, zone, count)
        arguments: Any = dict(schedule.arguments)
        if schedule.source == DEACTIVATE_SOURCE:
            arguments = {"seen_before": f"each run's time - {config.deactivate_after_days} days"}
        listed.append(
            {
                "name": schedule.name,
                "job": schedule.job,
                "cron": schedule.cron.expression,
                "arguments": arguments,
                "source": schedule.source,
                "next_runs": [
                    {"local": run.astimezone(zone).isoformat(), "utc": run.isoformat()}
                    for run in runs
                ],
            }
        )
    return {"timezone": config.cron_timezone, "after": after.isoformat(), "schedules": listed}


def render(listing: dict[str, Any]) -> str:
    """The listing as text: one line per schedule, then one line per next run."""
    lines = [f"schedules in {listing['timezone']} (next runs after {listing['after']}):"]
    if not listing["schedules"]:
        lines.append("  none (CRON_DEACTIVATE is empty and CRON_SCHEDULES sets none)")
    for item in listing["schedules"]:
        arguments = json.dumps(item["arguments"], ensure_ascii=False)
        lines.append(
            f"{item['name']}: {item['job']} {arguments} at {item['cron']!r} ({item['source']})"
        )
        lines.extend(f"  {run['local']}  =  {run['utc']}" for run in item["next_runs"])
    return "\n".join(lines) + "\n"


def parse_after(text: str | None) -> datetime:
    """``--after``: an ISO-8601 time (without an offset: UTC), or now."""
    if text is None:
        return datetime.now(UTC)
    try:
        after = datetime.fromisoformat(text)
    except ValueError:
        raise WorkerError(
            f"--after {text!r} is not an ISO-8601 time such as 2026-12-01T00:00:00+00:00"
        ) from None
    return after if after.tzinfo else after.replace(tzinfo=UTC)


async def cmd_schedules(config: Config, args: argparse.Namespace) -> int:
    if not 1 <= args.count <= 100:
        raise WorkerError(f"--count must be from 1 to 100, got {args.count}")
    listing = schedule_listing(config, parse_after(args.after), args.count)
    if args.json:
        emit(listing)
    else:
        sys.stdout.write(render(listing))
    return EXIT_OK
