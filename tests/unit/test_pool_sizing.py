"""Unit tests of the warning about more concurrent jobs than pool connections."""

from __future__ import annotations

import logging

import pytest

from worker.config import load_config
from worker.runtime.lifecycle import report_pool_sizing

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("clean_env")]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "worker.runtime.lifecycle" and r.levelno == logging.WARNING
    ]


def test_warns_when_jobs_exceed_the_pool(caplog: pytest.LogCaptureFixture) -> None:
    config = load_config(worker_max_jobs=50, pg_pool_max_size=10, pg_acquire_timeout=5)
    with caplog.at_level(logging.WARNING, logger="worker.runtime.lifecycle"):
        report_pool_sizing(config)
    [message] = _warnings(caplog)
    assert message.startswith("WORKER_MAX_JOBS=50 > PG_POOL_MAX_SIZE=10: up to 40 jobs wait")
    assert "about 4 connection hold times" in message
    assert "longer than 1.250s will hit PG_ACQUIRE_TIMEOUT=5s" in message


@pytest.mark.parametrize(
    ("jobs", "pool", "timeout", "rounds", "budget"),
    [
        (11, 10, 5.0, 1, "5.000"),  # one waiting job: served after one hold time
        (20, 10, 5.0, 1, "5.000"),
        (21, 10, 5.0, 2, "2.500"),  # ceil(11 / 10) rounds
        (3, 1, 0.5, 2, "0.250"),
        (100, 7, 2.0, 14, "0.143"),  # ceil(93 / 7) = 14
    ],
)
def test_hold_time_budget(
    caplog: pytest.LogCaptureFixture,
    jobs: int,
    pool: int,
    timeout: float,
    rounds: int,
    budget: str,
) -> None:
    config = load_config(worker_max_jobs=jobs, pg_pool_max_size=pool, pg_acquire_timeout=timeout)
    with caplog.at_level(logging.WARNING, logger="worker.runtime.lifecycle"):
        report_pool_sizing(config)
    [message] = _warnings(caplog)
    assert f"up to {jobs - pool} jobs wait" in message
    assert f"about {rounds} connection hold times" in message
    assert f"longer than {budget}s will hit PG_ACQUIRE_TIMEOUT={timeout:g}s" in message


@pytest.mark.parametrize(
    "overrides",
    [
        {"worker_max_jobs": 10, "pg_pool_max_size": 10},
        {"worker_max_jobs": 5, "pg_pool_max_size": 10},
        {"worker_max_jobs": 50},  # the pool defaults to one connection per job
    ],
)
def test_no_warning_when_the_pool_is_large_enough(
    caplog: pytest.LogCaptureFixture, overrides: dict[str, int]
) -> None:
    config = load_config(pg_acquire_timeout=5, **overrides)
    with caplog.at_level(logging.DEBUG, logger="worker.runtime.lifecycle"):
        report_pool_sizing(config)
    assert _warnings(caplog) == []
