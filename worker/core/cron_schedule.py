"""Five-field cron expressions ("minute hour day month weekday") and their next runs in a time zone.

The worker computes the next runs itself rather than handing arq ``cron()`` arguments, for two
reasons (arq 0.28, ``arq/cron.py`` and ``arq/worker.py``):

- **The day rule.** arq's ``next_cron`` requires the day of the month *and* the weekday to match,
  so ``0 0 1 * 1`` would run only on 1sts that are Mondays. cron runs it on every 1st and every
  Monday. An arq CronJob cannot say "or"; two CronJobs sharing one name (arq's tick ids are
  ``{name}:{unix ms}``, so a day matching both would be enqueued once) would express it, but would
  keep the second problem.
- **Time zones.** arq evaluates schedules in its Worker's ``timezone`` (default: the host's UTC
  offset when the worker started, a fixed offset that goes wrong at the next DST change), by
  wall-clock arithmetic on aware datetimes: with a zoneinfo zone it plans times the clock skips,
  and a ``*/15`` schedule stays silent through the hour the clock repeats.

So each schedule is one arq CronJob whose ``calculate_next`` is :meth:`CronSchedule.next_run`
(worker/runtime/schedules.py): an absolute instant (UTC), hence the same tick id ``{name}:{unix
ms}`` on every worker, enqueued once (arq's ``unique``) however many workers run.

Rules (Vixie cron's, as in cronie and ISC cron 4.1):

- A day runs when its month matches and: if the day field or the weekday field starts with ``*``
  (``*``, ``*/2``: cron's DOM_STAR / DOW_STAR), both the day and the weekday match; otherwise
  (both restricted) either one does. ``0 0 1 * 1``: every 1st and every Monday.
- Weekdays 0 or 7 are Sunday. Supported: ``*``, numbers, lists, ranges and steps; no names
  (``mon``, ``jan``) and no ``@daily`` macros. An expression that can never run (``0 0 30 2 *``)
  is refused.
- Daylight saving time: a schedule at fixed times (neither minute nor hour starts with ``*``)
  runs once per matching wall-clock time: a time the clock skips runs at the moment the clock
  jumps (``30 2 * * *`` on a night 02:00 becomes 03:00 runs at 03:00), a time the clock repeats
  runs at its first occurrence only. A schedule with ``*`` in its minute or hour field follows the
  clock: skipped times do not happen, repeated times run each time the clock shows them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# (name, lowest value, highest value) of the five fields, in order.
FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day", 1, 31), ("month", 1, 12), ("weekday", 0, 7))
# Days searched for a next run: more than 28 years, the calendar's cycle of weekdays and leap days.
SEARCH_DAYS = 29 * 366
_LONGEST_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


@dataclass(frozen=True)
class CronSchedule:
    """A parsed expression (weekdays in cron's numbering: 0 = Sunday ... 6 = Saturday)."""

    expression: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    day_star: bool  # the day field starts with "*"
    weekday_star: bool  # the weekday field starts with "*"
    follows_clock: bool  # the minute or hour field starts with "*" (see DST in the docstring)

    def day_matches(self, day: date) -> bool:
        """Whether the schedule runs on ``day`` (cron's rule for the two day fields)."""
        if day.month not in self.months:
            return False
        by_day = day.day in self.days
        by_weekday = day.isoweekday() % 7 in self.weekdays
        if self.day_star or self.weekday_star:
            return by_day and by_weekday
        return by_day or by_weekday

    def next_run(self, after: datetime, zone: tzinfo = UTC) -> datetime:
        """The first run strictly after the aware instant ``after``, the schedule read in ``zone``;
        an aware datetime in UTC."""
        after = after.astimezone(UTC)
        # Wall times up to this far before `after` can still run after it (a repeated hour).
        span = _offset_span(after, zone)
        start = (after.astimezone(zone).replace(tzinfo=None) - span).replace(
            second=0, microsecond=0
        )
        best: datetime | None = None
        stop: datetime | None = None
        for wall in self._wall_times(start):
            if stop is not None and wall > stop:
                break
            for instant in self._instants(wall, zone):
                if instant > after and (best is None or instant < best):
                    best = instant
                    stop = best.astimezone(zone).replace(tzinfo=None) + span
        if best is None:
            raise ValueError(f"cron schedule {self.expression!r} has no run after {after:%Y-%m-%d}")
        return best

    def next_runs(self, after: datetime, zone: tzinfo = UTC, count: int = 3) -> list[datetime]:
        """The next ``count`` runs after ``after`` (aware datetimes in UTC)."""
        runs: list[datetime] = []
        for _ in range(count):
            after = self.next_run(after, zone)
            runs.append(after)
        return runs

    def _wall_times(self, start: datetime) -> Iterator[datetime]:
        """Matching wall-clock minutes (naive), from ``start`` on, in order."""
        day = start.date()
        for _ in range(SEARCH_DAYS):
            if self.day_matches(day):
                for hour in self.hours:
                    for minute in self.minutes:
                        wall = datetime(day.year, day.month, day.day, hour, minute)
                        if wall >= start:
                            yield wall
            day += timedelta(days=1)

    def _instants(self, wall: datetime, zone: tzinfo) -> list[datetime]:
        """The instants (UTC) at which the wall-clock time ``wall`` in ``zone`` runs."""
        early = wall.replace(tzinfo=zone).astimezone(UTC)
        late = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
        if early == late:
            return [early]
        if early.astimezone(zone).replace(tzinfo=None) == wall:  # the clock shows it twice
            return [early, late] if self.follows_clock else [early]
        # The clock skips it (PEP 495: fold=0 reads it with the offset before the jump).
        return [] if self.follows_clock else [_jump(late, early, wall, zone)]


def parse_schedule(expression: str) -> CronSchedule:
    """Parse ``expression``; raises ValueError saying which field is wrong."""
    parts = expression.split()
    if len(parts) != len(FIELDS):
        raise ValueError(
            f"cron schedule {expression!r} needs 5 fields (minute hour day month weekday), "
            f"got {len(parts)}"
        )
    values = [
        _field_values(text, name, low, high)
        for text, (name, low, high) in zip(parts, FIELDS, strict=True)
    ]
    minutes, hours, days, months, weekdays = values
    schedule = CronSchedule(
        expression=expression,
        minutes=tuple(sorted(minutes)),
        hours=tuple(sorted(hours)),
        days=frozenset(days),
        months=frozenset(months),
        weekdays=frozenset(v % 7 for v in weekdays),
        day_star=parts[2].startswith("*"),
        weekday_star=parts[4].startswith("*"),
        follows_clock=parts[0].startswith("*") or parts[1].startswith("*"),
    )
    if schedule.weekday_star and not any(
        day <= _LONGEST_MONTH[month - 1] for day in schedule.days for month in schedule.months
    ):
        raise ValueError(
            f"cron schedule {expression!r} never runs: no month of {parts[3]!r} has a day "
            f"{parts[2]!r}"
        )
    return schedule


def parse_zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name`` (``UTC``, ``Europe/Berlin``); ValueError if there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{name!r} is not an IANA time zone name (for example UTC, Europe/Berlin, "
            "America/New_York)"
        ) from None


def _offset_span(instant: datetime, zone: tzinfo) -> timedelta:
    """How much the zone's UTC offset changes within a day either side of ``instant``."""
    offsets = [
        (instant + timedelta(days=d)).astimezone(zone).utcoffset() or timedelta()
        for d in (-1, 0, 1)
    ]
    return max(offsets) - min(offsets)


def _jump(before: datetime, after: datetime, wall: datetime, zone: tzinfo) -> datetime:
    """The instant the clock jumps over ``wall``: the first second between the instants
    ``before`` (whose wall time is earlier than ``wall``) and ``after`` showing a later time."""
    while after - before > timedelta(seconds=1):
        middle = before + timedelta(seconds=(after - before).total_seconds() // 2)
        if middle.astimezone(zone).replace(tzinfo=None) > wall:
            after = middle
        else:
            before = middle
    return after


def _field_values(text: str, name: str, low: int, high: int) -> set[int]:
    values: set[int] = set()
    for item in text.split(","):
        span, slash, step_text = item.partition("/")
        if span == "*":
            start, stop = low, high
        elif "-" in span:
            start, stop = (_number(p, name, low, high) for p in span.split("-", 1))
        else:
            start = stop = _number(span, name, low, high)
        step = _number(step_text, name, 1, high) if slash else 1
        if start > stop:
            raise ValueError(f"cron {name} range {span!r} is backwards")
        values.update(range(start, stop + 1, step))
    return values


def _number(text: str, name: str, low: int, high: int) -> int:
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise ValueError(f"cron {name} {text!r} is not a whole number from {low} to {high}")
    return int(text)
