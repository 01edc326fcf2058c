"""Unit tests of five-field cron expressions turned into arq cron() arguments."""

from __future__ import annotations

from typing import Any

import pytest

from worker.core.cron_schedule import parse_schedule

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("15 3 * * *", {"minute": 15, "hour": 3}),
        ("* * * * *", {}),
        ("  0   0  *  *  *  ", {"minute": 0, "hour": 0}),
        ("0 12 1 1 *", {"minute": 0, "hour": 12, "day": 1, "month": 1}),
        ("1,15 * * * *", {"minute": {1, 15}}),
        ("0 9-12 * * *", {"minute": 0, "hour": {9, 10, 11, 12}}),
        ("*/15 * * * *", {"minute": {0, 15, 30, 45}}),
        ("0-30/10 * * * *", {"minute": {0, 10, 20, 30}}),
        ("0 */6 * * *", {"minute": 0, "hour": {0, 6, 12, 18}}),
        ("0 0 */10 * *", {"minute": 0, "hour": 0, "day": {1, 11, 21, 31}}),
        ("0 0 1 */3 *", {"minute": 0, "hour": 0, "day": 1, "month": {1, 4, 7, 10}}),
        ("1,2,5-7,30-59/15 * * * *", {"minute": {1, 2, 5, 6, 7, 30, 45}}),
        ("5,5 * * * *", {"minute": 5}),
        ("59 23 31 12 *", {"minute": 59, "hour": 23, "day": 31, "month": 12}),
    ],
)
def test_parse(expression: str, expected: dict[str, Any]) -> None:
    assert parse_schedule(expression) == expected


@pytest.mark.parametrize(
    ("weekday", "expected"),
    [
        ("1", 0),  # Monday
        ("2", 1),
        ("5", 4),  # Friday
        ("6", 5),  # Saturday
        ("0", 6),  # Sunday
        ("7", 6),  # Sunday again
        ("1-5", {0, 1, 2, 3, 4}),  # working days
        ("0,6", {5, 6}),  # weekend
        ("6,7", {5, 6}),
        ("0,7", 6),  # both spell Sunday: one value
        ("0-7", {0, 1, 2, 3, 4, 5, 6}),
        ("*/2", {6, 1, 3, 5}),  # cron 0, 2, 4, 6
    ],
)
def test_weekday_is_converted_from_cron_to_arq(weekday: str, expected: int | set[int]) -> None:
    assert parse_schedule(f"0 3 * * {weekday}") == {"minute": 0, "hour": 3, "weekday": expected}


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
