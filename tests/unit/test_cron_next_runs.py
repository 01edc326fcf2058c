"""Unit tests of cron's next runs: the day rule (either day field when both are restricted), UTC by
default, a configured zone, and daylight saving time (worker/core/cron_schedule.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from worker.config import load_config
from worker.core.cron_schedule import CronSchedule, parse_schedule, parse_zone
from worker.runtime.schedules import ScheduledJob, cron_jobs

pytestmark = pytest.mark.unit

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def runs(expression: str, after: datetime, count: int, zone: ZoneInfo | None = None) -> list[str]:
    found = parse_schedule(expression).next_runs(after, zone or ZoneInfo("UTC"), count)
    return [run.astimezone(zone or UTC).isoformat() for run in found]


def test_first_of_the_month_or_monday_runs_on_both() -> None:
    # arq's own next_cron gives 2027-02-01 (a 1st that is a Monday) for this expression.
    assert runs("0 0 1 * 1", utc(2026, 12, 1), 7) == [
        "2026-12-07T00:00:00+00:00",  # 2026-12-01 itself is not after 00:00
        "2026-12-14T00:00:00+00:00",
        "2026-12-21T00:00:00+00:00",
        "2026-12-28T00:00:00+00:00",
        "2027-01-01T00:00:00+00:00",  # a Friday: the 1st
        "2027-01-04T00:00:00+00:00",
        "2027-01-11T00:00:00+00:00",
    ]


def test_a_day_matching_both_fields_runs_once() -> None:
    assert runs("0 0 1 * 1", utc(2027, 1, 30), 3) == [
        "2027-02-01T00:00:00+00:00",  # a Monday and a 1st
        "2027-02-08T00:00:00+00:00",
        "2027-02-15T00:00:00+00:00",
    ]


def test_friday_the_13th_means_every_13th_and_every_friday() -> None:
    assert runs("0 12 13 * 5", utc(2026, 2, 1), 4) == [
        "2026-02-06T12:00:00+00:00",
        "2026-02-13T12:00:00+00:00",  # both a Friday and the 13th: once
        "2026-02-20T12:00:00+00:00",
        "2026-02-27T12:00:00+00:00",
    ]
    assert runs("0 12 13 * 5", utc(2026, 3, 7), 2) == [
        "2026-03-13T12:00:00+00:00",
        "2026-03-20T12:00:00+00:00",
    ]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("0 0 * * 1", ["2026-12-07", "2026-12-14", "2026-12-21"]),  # weekday only
        ("0 0 1 * *", ["2027-01-01", "2027-02-01", "2027-03-01"]),  # day only
        # A day field starting with "*" counts as unrestricted (cron's DOM_STAR): both must match,
        # here odd days that are Mondays.
        ("0 0 */2 * 1", ["2026-12-07", "2026-12-21", "2027-01-11"]),
        ("0 0 1 * */2", ["2027-04-01", "2027-05-01", "2027-06-01"]),  # 1sts on Sun/Tue/Thu/Sat
    ],
)
def test_a_star_in_either_day_field_means_both_must_match(
    expression: str, expected: list[str]
) -> None:
    assert [run[:10] for run in runs(expression, utc(2026, 12, 1), 3)] == expected


def test_the_next_run_is_strictly_after_and_months_and_leap_days_hold() -> None:
    assert runs("15 3 * * *", utc(2026, 6, 1, 3, 15), 1) == ["2026-06-02T03:15:00+00:00"]
    assert runs("0 0 29 2 *", utc(2026, 1, 1), 2) == [
        "2028-02-29T00:00:00+00:00",
        "2032-02-29T00:00:00+00:00",
    ]
    assert runs("59 23 31 * *", utc(2026, 4, 1), 2) == [
        "2026-05-31T23:59:00+00:00",
        "2026-07-31T23:59:00+00:00",
    ]


def test_schedules_are_read_in_utc_whatever_the_hosts_zone(
    monkeypatch: pytest.MonkeyPatch, clean_env: object
) -> None:
    monkeypatch.setenv("TZ", "America/Los_Angeles")
    time.tzset()
    try:
        (job,) = cron_jobs(load_config(cron_deactivate="15 3 * * *"))
        job.calculate_next(datetime.now().astimezone())  # arq passes the worker's clock
        assert job.next_run is not None and job.next_run.tzinfo is UTC
        assert (job.next_run.hour, job.next_run.minute) == (3, 15)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_configured_zone_reads_the_schedule_in_that_zone(clean_env: object) -> None:
    config = load_config(
        cron_deactivate="",
        cron_timezone="America/New_York",
        cron_schedules='{"nine": {"job": "count_users", "cron": "0 9 * * 1-5"}}',
    )
    (job,) = cron_jobs(config)
    assert isinstance(job, ScheduledJob) and job.zone == NEW_YORK
    job.calculate_next(utc(2026, 1, 2, 15))  # a Friday, 10:00 in New York
    assert job.next_run == utc(2026, 1, 5, 14)  # Monday 09:00 EST
    job.calculate_next(utc(2026, 7, 1, 12))
    assert job.next_run == utc(2026, 7, 1, 13)  # 09:00 EDT


def test_a_fixed_time_the_clock_skips_runs_when_the_clock_jumps() -> None:
    # Europe/Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00 UTC).
    assert runs("30 2 * * *", utc(2026, 3, 28, 12), 3, BERLIN) == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    # New York, 2026-03-08: 02:00 EST becomes 03:00 EDT.
    assert runs("0 2 * * *", utc(2026, 3, 7, 12), 2, NEW_YORK) == [
        "2026-03-08T03:00:00-04:00",
        "2026-03-09T02:00:00-04:00",
    ]


def test_a_fixed_time_the_clock_repeats_runs_once() -> None:
    # Europe/Berlin, 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
    assert runs("30 2 * * *", utc(2026, 10, 24, 12), 2, BERLIN) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]
    # Asked from inside the repeated hour (its second pass), the next run is the next day's.
    assert runs("30 2 * * *", utc(2026, 10, 25, 1, 10), 1, BERLIN) == ["2026-10-26T02:30:00+01:00"]


def test_a_schedule_with_a_star_follows_the_clock_through_both_changes() -> None:
    assert runs("*/30 * * * *", utc(2026, 3, 29, 0), 3, BERLIN) == [
        "2026-03-29T01:30:00+01:00",
        "2026-03-29T03:00:00+02:00",  # 02:00 and 02:30 never happen
        "2026-03-29T03:30:00+02:00",
    ]
    assert runs("*/30 * * * *", utc(2026, 10, 24, 23, 45), 6, BERLIN) == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:00:00+01:00",  # the repeated hour runs again: every 30 minutes of real time
        "2026-10-25T02:30:00+01:00",
        "2026-10-25T03:00:00+01:00",
        "2026-10-25T03:30:00+01:00",
    ]


def minutes(start: datetime, end: datetime) -> Iterator[datetime]:
    while start < end:
        yield start
        start += timedelta(minutes=1)


def clock_matches(schedule: CronSchedule, instant: datetime, zone: ZoneInfo) -> bool:
    local = instant.astimezone(zone)
    return (
        local.minute in schedule.minutes
        and local.hour in schedule.hours
        and schedule.day_matches(local.date())
    )


@pytest.mark.parametrize("expression", ["*/7 * * * *", "* 2 * * *", "0 * 25 * 0", "*/20 1-3 * * *"])
@pytest.mark.parametrize(
    ("zone", "start"),
    [
        ("Europe/Berlin", utc(2026, 3, 28, 12)),
        ("Europe/Berlin", utc(2026, 10, 24, 12)),
        ("America/New_York", utc(2026, 11, 1, 0)),
        ("Australia/Lord_Howe", utc(2026, 4, 4, 10)),  # a 30-minute change
    ],
)
def test_clock_following_schedules_run_at_every_minute_whose_wall_time_matches(
    expression: str, zone: str, start: datetime
) -> None:
    tz, schedule = parse_zone(zone), parse_schedule(expression)
    end = start + timedelta(days=2)
    expected = [
        m for m in minutes(start + timedelta(minutes=1), end) if clock_matches(schedule, m, tz)
    ]
    found, after = [], start
    while True:
        after = schedule.next_run(after, tz)
        if after >= end:
            break
        found.append(after)
    assert found == expected


@pytest.mark.parametrize("name", ["Mars/Base", "", "../etc/passwd", "Europe/", "UTC "])
def test_a_bad_zone_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="is not an IANA time zone name"):
        parse_zone(name)
