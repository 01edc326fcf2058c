"""Unit tests of five-field cron expressions: parsing and refusals (next runs:
test_cron_next_runs.py)."""

from __future__ import annotations

from typing import Any

import pytest

from worker.core.cron_schedule import parse_schedule

pytestmark = pytest.mark.unit


def fields(expression: str) -> dict[str, Any]:
    """The parsed fields that differ from "every value" ("*")."""
    schedule = parse_schedule(expression)
    found = {
        "minute": set(schedule.minutes),
        "hour": set(schedule.hours),
        "day": set(schedule.days),
        "month": set(schedule.months),
        "weekday": set(schedule.weekdays),
    }
    full = {"minute": 60, "hour": 24, "day": 31, "month": 12, "weekday": 7}
    return {name: values for name, values in found.items() if len(values) != full[name]}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("15 3 * * *", {"minute": {15}, "hour": {3}}),
        ("* * * * *", {}),
        ("  0   0  *  *  *  ", {"minute": {0}, "hour": {0}}),
        ("0 12 1 1 *", {"minute": {0}, "hour": {12}, "day": {1}, "month": {1}}),
        ("1,15 * * * *", {"minute": {1, 15}}),
        ("0 9-12 * * *", {"minute": {0}, "hour": {9, 10, 11, 12}}),
        ("*/15 * * * *", {"minute": {0, 15, 30, 45}}),
        ("0-30/10 * * * *", {"minute": {0, 10, 20, 30}}),
        ("0 */6 * * *", {"minute": {0}, "hour": {0, 6, 12, 18}}),
        ("0 0 */10 * *", {"minute": {0}, "hour": {0}, "day": {1, 11, 21, 31}}),
        ("0 0 1 */3 *", {"minute": {0}, "hour": {0}, "day": {1}, "month": {1, 4, 7, 10}}),
        ("1,2,5-7,30-59/15 * * * *", {"minute": {1, 2, 5, 6, 7, 30, 45}}),
        ("5,5 * * * *", {"minute": {5}}),
        ("59 23 31 12 *", {"minute": {59}, "hour": {23}, "day": {31}, "month": {12}}),
    ],
)
def test_parse(expression: str, expected: dict[str, Any]) -> None:
    assert fields(expression) == expected


@pytest.mark.parametrize(
    ("weekday", "expected"),
    [
        ("1", {1}),  # Monday
        ("5", {5}),  # Friday
        ("0", {0}),  # Sunday
        ("7", {0}),  # Sunday again
        ("1-5", {1, 2, 3, 4, 5}),  # working days
        ("0,6", {0, 6}),  # weekend
        ("6,7", {0, 6}),
        ("0,7", {0}),  # both spell Sunday: one value
        ("*/2", {0, 2, 4, 6}),
    ],
)
def test_weekdays_keep_crons_numbering_with_7_as_sunday(weekday: str, expected: set[int]) -> None:
    assert parse_schedule(f"0 3 * * {weekday}").weekdays == expected
    assert parse_schedule("0 3 * * 0-7").weekdays == set(range(7))


@pytest.mark.parametrize(
    ("expression", "day_star", "weekday_star", "follows_clock"),
    [
        ("0 0 1 * 1", False, False, False),
        ("0 0 * * 1", True, False, False),
        ("0 0 */2 * 1", True, False, False),  # "*" with a step is still cron's DOM_STAR
        ("0 0 1 * */2", False, True, False),
        ("*/5 3 * * *", True, True, True),
        ("0 * * * *", True, True, True),
    ],
)
def test_star_flags_follow_the_fields_first_character(
    expression: str, day_star: bool, weekday_star: bool, follows_clock: bool
) -> None:
    schedule = parse_schedule(expression)
    assert (schedule.day_star, schedule.weekday_star) == (day_star, weekday_star)
    assert schedule.follows_clock is follows_clock


@pytest.mark.parametrize("expression", ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 30,31 2 */2"])
def test_an_expression_that_never_runs_is_refused(expression: str) -> None:
    with pytest.raises(ValueError, match="never runs: no month of"):
        parse_schedule(expression)


def test_february_29th_and_a_31st_in_a_short_month_list_are_accepted() -> None:
    parse_schedule("0 0 29 2 *")
    parse_schedule("0 0 31 4,12 *")
    parse_schedule("0 0 30 2 1")  # weekday restricted too: every Monday


@pytest.mark.parametrize("expression", ["", "* * * *", "* * * * * *", "15 3", "@daily"])
def test_wrong_number_of_fields(expression: str) -> None:
    count = len(expression.split())
    with pytest.raises(ValueError) as info:
        parse_schedule(expression)
    assert str(info.value) == (
        f"cron schedule {expression!r} needs 5 fields (minute hour day month weekday), got {count}"
    )


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("60 * * * *", "cron minute '60' is not a whole number from 0 to 59"),
        ("* 24 * * *", "cron hour '24' is not a whole number from 0 to 23"),
        ("* * 0 * *", "cron day '0' is not a whole number from 1 to 31"),
        ("* * 32 * *", "cron day '32' is not a whole number from 1 to 31"),
        ("* * * 0 *", "cron month '0' is not a whole number from 1 to 12"),
        ("* * * 13 *", "cron month '13' is not a whole number from 1 to 12"),
        ("* * * * 8", "cron weekday '8' is not a whole number from 0 to 7"),
        ("0-60 * * * *", "cron minute '60' is not a whole number from 0 to 59"),
        ("1,99 * * * *", "cron minute '99' is not a whole number from 0 to 59"),
    ],
)
def test_out_of_range_values_name_the_field(expression: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_schedule(expression)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("30-10 * * * *", "cron minute range '30-10' is backwards"),
        ("* 20-4 * * *", "cron hour range '20-4' is backwards"),
        ("* * * * 5-1", "cron weekday range '5-1' is backwards"),
    ],
)
def test_backwards_ranges_name_the_field(expression: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_schedule(expression)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("expression", "field", "bad"),
    [
        ("x * * * *", "minute", "x"),
        ("* ? * * *", "hour", "?"),
        ("* * L * *", "day", "L"),
        ("* * * JAN *", "month", "JAN"),
        ("* * * * MON", "weekday", "MON"),
        ("-1 * * * *", "minute", ""),
        ("1.5 * * * *", "minute", "1.5"),
        ("+5 * * * *", "minute", "+5"),
        ("1,,2 * * * *", "minute", ""),
        ("1- * * * *", "minute", ""),
        ("*/0 * * * *", "minute", "0"),
        ("*/x * * * *", "minute", "x"),
        ("*/ * * * *", "minute", ""),  # a slash without a step is not "every minute"
        ("* */ * * *", "hour", ""),
        ("² * * * *", "minute", "²"),  # str.isdigit() is true, int() refuses it
        ("\u0661 * * * *", "minute", "\u0661"),  # Arabic-Indic digit one: not a cron number
    ],
)
def test_non_numbers_name_the_field(expression: str, field: str, bad: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_schedule(expression)
    assert str(info.value).startswith(f"cron {field} {bad!r} is not a whole number from ")
