"""Five-field cron expressions ("minute hour day month weekday") as arq ``cron()`` arguments."""

from __future__ import annotations

from typing import Any

# (arq keyword, lowest value, highest value) for each of the five fields, in order.
FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day", 1, 31), ("month", 1, 12), ("weekday", 0, 7))


def parse_schedule(expression: str) -> dict[str, Any]:
    """Parse ``expression``; raises ValueError saying which field is wrong.

    Supports ``*``, numbers, lists (``1,15``), ranges (``1-5``) and steps (``*/10``, ``0-30/5``).
    Weekdays follow cron (0 or 7 = Sunday) and are converted to arq's (0 = Monday).
    """
    parts = expression.split()
    if len(parts) != len(FIELDS):
        raise ValueError(
            f"cron schedule {expression!r} needs 5 fields (minute hour day month weekday), "
            f"got {len(parts)}"
        )
    result: dict[str, Any] = {}
    for text, (name, low, high) in zip(parts, FIELDS, strict=True):
        values = _field_values(text, name, low, high)
        if values is None:
            continue
        if name == "weekday":
            values = {(v - 1) % 7 for v in values}
        result[name] = next(iter(values)) if len(values) == 1 else values
    return result


def _field_values(text: str, name: str, low: int, high: int) -> set[int] | None:
    if text == "*":
        return None
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
