"""A job's flow declaration that cannot work (a key naming no argument, a limit of 0, a rate with
no period) stops the worker at start-up with one line that says what to fix: exit 2, no traceback
(the rule of tests/acceptance/test_edges_startup_errors.py)."""

from __future__ import annotations

import pytest

from tests.acceptance.test_edges_startup_errors import run, the_error
from worker.config import Config

pytestmark = pytest.mark.acceptance

SETTINGS = "tests.acceptance.bad_flow_settings.BadFlowSettings"

EXPECTED = {
    "unknown-argument": ("'bad_flow'", "'user_id'", "is not one of its arguments", "key, hold"),
    "zero": ("'per-user'", "max must be 1..1000000", "got 0"),
    "no-period": ("'partner-api'", "per 0.001..86400 seconds", "got 14 per 0"),
}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_a_bad_flow_declaration_stops_the_worker_with_one_line(config: Config, case: str) -> None:
    error = the_error(run(config, "-m", "arq", SETTINGS, BAD_FLOW=case))
    for part in EXPECTED[case]:
        assert part in error, error
