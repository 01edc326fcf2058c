"""``python -m worker schedules`` as a process: the README's transcript printed exactly (default
CRON_DEACTIVATE beside a CRON_SCHEDULES schedule, in Europe/Berlin), ``--json``, and one error line
for a bad schedule. It reads only the configuration: no service is needed."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.acceptance.conftest import ROOT
from tests.acceptance.test_readme_examples import blocks
from worker.config import Config

pytestmark = pytest.mark.acceptance


def run(tmp_path: Path, argv: list[str], **variables: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in Config.model_fields}
    env.update(PYTHONPATH=str(ROOT), **variables)
    return subprocess.run(
        [sys.executable, "-m", "worker", *argv],
        cwd=tmp_path,  # no .env
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def readme_transcript() -> tuple[dict[str, str], list[str], str]:
    """The README's ``schedules`` example: its variables, its arguments, its printed output."""
    for block in blocks("sh"):
        lines = block.splitlines(True)
        if lines and lines[0].startswith("$ ") and "worker schedules" in lines[0]:
            words = shlex.split(lines[0].removeprefix("$ "))
            variables = dict(w.split("=", 1) for w in words if "=" in w and not w.startswith("-"))
            argv = words[words.index("schedules") :]
            return variables, argv, "".join(lines[1:])
    raise AssertionError("README.md has no `python -m worker schedules` example")


def test_the_readme_transcript_is_what_the_command_prints(tmp_path: Path) -> None:
    variables, argv, printed = readme_transcript()
    done = run(tmp_path, argv, **variables)
    assert done.returncode == 0, done.stderr
    assert done.stdout == printed


def test_json_lists_each_schedules_next_runs_in_the_zone_and_in_utc(tmp_path: Path) -> None:
    table = '{"first-or-monday": {"job": "count_users", "cron": "0 0 1 * 1"}}'
    done = run(
        tmp_path,
        ["schedules", "--json", "--count", "2", "--after", "2026-12-31T12:00:00Z"],
        CRON_DEACTIVATE="",
        CRON_SCHEDULES=table,
        CRON_TIMEZONE="America/New_York",
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "timezone": "America/New_York",
        "after": "2026-12-31T12:00:00+00:00",
        "schedules": [
            {
                "name": "first-or-monday",
                "job": "count_users",
                "cron": "0 0 1 * 1",
                "arguments": {},
                "source": "CRON_SCHEDULES",
                "next_runs": [
                    {"local": "2027-01-01T00:00:00-05:00", "utc": "2027-01-01T05:00:00+00:00"},
                    {"local": "2027-01-04T00:00:00-05:00", "utc": "2027-01-04T05:00:00+00:00"},
                ],
            }
        ],
    }


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        (
            {"CRON_SCHEDULES": '{"a": {"job": "get_user", "cron": "0 * * * *"}}'},
            "CRON_SCHEDULES: schedule 'a': the arguments of job 'get_user' do not fit its model",
        ),
        ({"CRON_TIMEZONE": "Mars/Base"}, "CRON_TIMEZONE: 'Mars/Base' is not an IANA time zone"),
    ],
)
def test_a_bad_schedule_is_one_error_line(
    tmp_path: Path, variables: dict[str, str], expected: str
) -> None:
    done = run(tmp_path, ["schedules"], **variables)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and expected in done.stderr, done.stderr
