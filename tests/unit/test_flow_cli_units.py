"""The checks of ``pause``, ``resume`` and ``limits set`` (worker/ops/pause_cli.py,
worker/ops/limits_cli.py) before anything reaches Redis, and how limits are printed."""

from __future__ import annotations

import argparse

import pytest

from worker.ops.cli_parser import build_parser
from worker.ops.limits_cli import describe_value, limit_value, render_limit
from worker.ops.pause_cli import chosen_names, render_paused

pytestmark = pytest.mark.unit

KNOWN = {"heavy-db": "concurrency", "partner": "rate"}


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_pause_takes_known_names_or_all_and_refuses_the_rest() -> None:
    assert chosen_names(parse("pause", "count_users", "count_users")) == ["count_users"]
    assert chosen_names(parse("resume", "--all")) == ["*"]
    assert chosen_names(parse("pause", "billing_sync", "--force")) == ["billing_sync"]
    with pytest.raises(ValueError, match=r"unknown job name 'billing_sync'; known: count_users, "):
        chosen_names(parse("pause", "billing_sync"))
    with pytest.raises(ValueError, match="give the job names to resume"):
        chosen_names(parse("resume"))
    with pytest.raises(ValueError, match="not both"):
        chosen_names(parse("pause", "get_user", "--all"))
    with pytest.raises(ValueError, match="--all"):
        chosen_names(parse("pause", "*", "--force"))


def test_limits_set_checks_its_values() -> None:
    assert limit_value(parse("limits", "set", "heavy-db", "--max", "5"), KNOWN) == {"max": 5}
    assert limit_value(parse("limits", "set", "heavy-db", "--max", "0"), KNOWN) == {"max": 0}
    rate = parse("limits", "set", "partner", "--rate", "14", "--per", "1", "--burst", "3")
    assert limit_value(rate, KNOWN) == {"limit": 14, "per_ms": 1000, "burst": 3}
    assert limit_value(parse("limits", "set", "partner", "--rate", "2", "--per", "0.5"), KNOWN) == {
        "limit": 2,
        "per_ms": 500,
    }
    refused = {
        ("heavy-db", "--max", "-1"): "--max must be 0..",
        ("heavy-db", "--rate", "3", "--per", "1"): "is a concurrency limit",
        ("partner", "--max", "3"): "is a rate",
        ("partner", "--rate", "0", "--per", "1"): "--rate must be 1..",
        ("partner", "--rate", "3", "--per", "0"): "--per must be 0.001..86400",
        ("partner", "--rate", "3"): "--rate needs --per",
        ("partner", "--rate", "3", "--per", "1", "--burst", "0"): "--burst must be 1..",
        ("heavy-db",): "give either --max N or --rate",
        ("heavy-db", "--max", "1", "--per", "2"): "--per and --burst go with --rate",
        ("nope", "--max", "1"): "unknown limit 'nope'; known: heavy-db, partner",
    }
    for argv, message in refused.items():
        with pytest.raises(ValueError, match=message.replace(".", r"\.")):
            limit_value(parse("limits", "set", *argv), KNOWN)
    assert limit_value(parse("limits", "set", "nope", "--max", "1", "--force"), KNOWN) == {"max": 1}


def test_limits_and_pauses_print_one_line_each() -> None:
    assert describe_value("concurrency", {"max": 0}) == "max 0 (none may start)"
    assert describe_value("rate", {"limit": 14, "per_ms": 1000}) == "14 per 1s"
    limit = {
        "name": "heavy-db",
        "kind": "concurrency",
        "declared": {"max": 20},
        "override": {"max": 5},
        "jobs": ["search_users", "count_users"],
        "in_use": 5,
        "blocked": 12,
        "keys": 1,
    }
    assert render_limit(limit) == (
        "heavy-db: concurrency max 5 (set at run time; declared max 20); jobs search_users, "
        "count_users: 5 in use, 12 blocked over 1 key"
    )
    assert render_paused(["*", "count_users"], {"count_users": 3}) == (
        "paused now: the whole queue (*), count_users (3 waiting)"
    )
    assert render_paused([], {}) == "nothing is paused"
