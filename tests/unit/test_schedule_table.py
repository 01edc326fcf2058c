"""Unit tests of the named schedules: CRON_SCHEDULES's JSON, CRON_TIMEZONE, their checks at load
and against the jobs' argument models at start-up, and CRON_DEACTIVATE kept beside them."""

from __future__ import annotations

import json

import pytest

from jobs.registry import JOBS_BY_NAME
from worker.config import load_config
from worker.core.schedule_table import DEACTIVATE_SOURCE, TABLE_SOURCE, schedules
from worker.errors import ConfigError
from worker.runtime.schedules import cron_jobs

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("clean_env")]

TABLE = json.dumps(
    {
        "hourly-count": {"job": "count_users", "cron": "0 * * * *"},
        "user-42": {"job": "get_user", "cron": "0 0 1 * 1", "args": {"user_id": 42}},
    }
)


def test_schedules_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRON_SCHEDULES", TABLE)
    monkeypatch.setenv("CRON_TIMEZONE", "Europe/Berlin")
    config = load_config()
    listed = schedules(config.cron_schedules, config.cron_deactivate, JOBS_BY_NAME)
    assert [(s.name, s.job, s.cron.expression, dict(s.arguments), s.source) for s in listed] == [
        (
            "deactivate_inactive_users",
            "deactivate_inactive_users",
            "15 3 * * *",
            {},
            DEACTIVATE_SOURCE,
        ),
        ("hourly-count", "count_users", "0 * * * *", {}, TABLE_SOURCE),
        ("user-42", "get_user", "0 0 1 * 1", {"user_id": 42}, TABLE_SOURCE),
    ]
    names = [job.name for job in cron_jobs(config)]
    assert names == [
        "arq:queue:cron:deactivate_inactive_users",  # CRON_DEACTIVATE's name is unchanged
        "arq:queue:cron:hourly-count",
        "arq:queue:cron:user-42",
    ]


def test_defaults_are_utc_and_no_named_schedules() -> None:
    config = load_config()
    assert (config.cron_timezone, config.cron_schedules) == ("UTC", "")
    assert [s.name for s in schedules("", config.cron_deactivate, JOBS_BY_NAME)] == [
        "deactivate_inactive_users"
    ]
    assert schedules("  ", "", JOBS_BY_NAME) == []


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ("{", "CRON_SCHEDULES: not valid JSON (Expecting property name"),
        ("[1]", "CRON_SCHEDULES: expected a JSON object of schedule name"),
        (
            '{"a b": {"job": "count_users", "cron": "* * * * *"}}',
            "schedule name 'a b': use 1 to 100",
        ),
        ('{"a": 1}', "schedule 'a': expected an object"),
        ('{"a": {"cron": "* * * * *"}}', """schedule 'a': "job" must name a job"""),
        ('{"a": {"job": "count_users"}}', """schedule 'a': "cron" must be a cron expression"""),
        ('{"a": {"job": "count_users", "cron": "61 * * * *"}}', "schedule 'a': cron minute '61'"),
        (
            '{"a": {"job": "count_users", "cron": "* * * * *", "args": [1]}}',
            """schedule 'a': "args" must be a JSON object""",
        ),
        (
            '{"a": {"job": "count_users", "cron": "* * * * *", "when": 1}}',
            "schedule 'a': unknown key 'when' (keys: job, cron, args)",
        ),
        (
            '{"a": {"job": "count_users", "cron": "* * * * *"}, "a": {"job": "get_user"}}',
            "CRON_SCHEDULES: the name 'a' is given twice",
        ),
    ],
)
def test_a_malformed_table_is_refused_when_the_configuration_loads(
    monkeypatch: pytest.MonkeyPatch, table: str, expected: str
) -> None:
    monkeypatch.setenv("CRON_SCHEDULES", table)
    with pytest.raises(ConfigError) as info:
        load_config()
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        (
            '{"a": {"job": "no_such_job", "cron": "* * * * *"}}',
            "CRON_SCHEDULES: schedule 'a': no job named 'no_such_job' (jobs: count_users, ",
        ),
        (
            '{"a": {"job": "get_user", "cron": "* * * * *"}}',
            "CRON_SCHEDULES: schedule 'a': the arguments of job 'get_user' do not fit its model: "
            + "user_id: Field required",
        ),
        (
            '{"a": {"job": "get_user", "cron": "* * * * *", "args": {"user_id": "42"}}}',
            "the arguments of job 'get_user' do not fit its model: user_id: ",  # JSON, strictly
        ),
        (
            '{"a": {"job": "count_users", "cron": "* * * * *", "args": {"nope": 1}}}',
            "do not fit its model: nope: Extra inputs are not permitted",
        ),
        (
            '{"deactivate_inactive_users": {"job": "count_users", "cron": "* * * * *"}}',
            "CRON_SCHEDULES: the schedule name 'deactivate_inactive_users' is CRON_DEACTIVATE's",
        ),
    ],
)
def test_jobs_and_arguments_are_checked_at_start_up(table: str, expected: str) -> None:
    config = load_config(cron_schedules=table)
    with pytest.raises(ConfigError) as info:
        cron_jobs(config)
    assert expected in str(info.value)
    assert str(info.value).startswith("Invalid configuration: ")


def test_the_deactivate_name_is_free_once_cron_deactivate_is_empty() -> None:
    table = '{"deactivate_inactive_users": {"job": "count_users", "cron": "0 4 * * *"}}'
    (job,) = cron_jobs(load_config(cron_deactivate="", cron_schedules=table))
    assert job.name == "arq:queue:cron:deactivate_inactive_users"


@pytest.mark.parametrize("zone", ["Mars/Base", "utc+2", ""])
def test_a_bad_zone_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch, zone: str) -> None:
    monkeypatch.setenv("CRON_TIMEZONE", zone)
    with pytest.raises(ConfigError) as info:
        load_config()
    assert f"CRON_TIMEZONE: {zone!r} is not an IANA time zone name" in str(info.value)
