"""Unit tests of the scale-out pieces: budget arithmetic, registrations, Sentinel settings, the
supervisor's exit descriptions and the new configuration variables."""

from __future__ import annotations

import signal

import pytest

from worker.config import load_config, parse_sentinels
from worker.db.budget import BudgetCheck, ServerUsage, check
from worker.db.budget_registry import Registration
from worker.errors import ConfigError
from worker.ops.supervisor import Supervisor, describe_exit, per_process_env
from worker.queue.connection import redis_settings

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("clean_env")]


def reg(worker: str, pool_max: int, pool_open: int = 0, pooled: bool = False) -> Registration:
    return Registration(worker, "h", 1, "", pool_max, pool_open, pooled, 0.0)


def test_budget_arithmetic_on_the_server_limit() -> None:
    # 100 max, 3 reserved, 70 client backends of which the fleet holds 4 + 6 + 5 = 15.
    usage = ServerUsage(max_connections=100, reserved=3, in_use=70)
    own = reg("me", pool_max=20, pool_open=4)
    result = check(usage, load_config(), own, [reg("a", 20, 6), reg("b", 10, 5), own])
    assert result.others == 55
    assert result.server_room == 42  # 100 - 3 - 55
    assert result.allowance == 42
    assert (result.fleet, result.fleet_max) == (2, 30)
    assert result.left == 12 and not result.fits
    assert result.limits() == (
        "max_connections=100 - superuser_reserved_connections=3 - 55 used by other clients = 42"
    )
    assert result.as_dict()["left"] == -8


@pytest.mark.parametrize(
    ("budget", "allowance"),
    [(12, 12), (42, 42), (500, 42)],  # an override never gives more than the server has
)
def test_an_explicit_budget_caps_the_allowance(budget: int, allowance: int) -> None:
    usage = ServerUsage(max_connections=100, reserved=3, in_use=55)
    result = check(usage, load_config(pg_connection_budget=budget), reg("me", 4), [])
    assert result.allowance == allowance
    assert result.limits().startswith(f"PG_CONNECTION_BUDGET={budget}; the server has ")


def test_pooled_workers_are_not_counted() -> None:
    usage = ServerUsage(max_connections=100, reserved=3, in_use=10)
    result = check(usage, load_config(), reg("me", 80), [reg("p", 500, 500, pooled=True)])
    assert (result.fleet, result.fleet_max, result.fits) == (0, 0, True)


def test_stale_open_counts_never_make_others_negative() -> None:
    usage = ServerUsage(max_connections=100, reserved=3, in_use=5)
    result = BudgetCheck(usage, None, fleet_open=9, fleet_max=0, fleet=0, pool_max=1)
    assert result.others == 0


def test_registrations_round_trip_and_garbage_is_none() -> None:
    original = Registration.this_process(pool_max=7, pool_open=2, pooled=True)
    assert Registration.from_json(original.to_json()) == original
    assert not original.is_gone()  # this very process
    for raw in (b"not json", b"[]", b'{"worker": "x"}'):
        assert Registration.from_json(raw) is None


def test_sentinels_are_parsed() -> None:
    assert parse_sentinels("s1:26379, s2:26380,[::1]:26381") == [
        ("s1", 26379),
        ("s2", 26380),
        ("::1", 26381),
    ]
    for bad in ("s1", "s1:", ":26379", "s1:port", "s1:70000", "s1:26379,"):
        with pytest.raises(ValueError, match="host:port"):
            parse_sentinels(bad)


def test_sentinel_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_SENTINELS", "sentinel-a:26379,sentinel-b:26379")
    monkeypatch.setenv("REDIS_SENTINEL_MASTER", "jobs")
    monkeypatch.setenv("REDIS_URL", "redis://:s3cret@ignored-host:6379/3")
    settings = redis_settings(load_config())
    assert settings.sentinel is True
    assert settings.host == [("sentinel-a", 26379), ("sentinel-b", 26379)]
    assert settings.sentinel_master == "jobs"
    assert (settings.password, settings.database) == ("s3cret", 3)
    assert settings.retry is not None  # the outage window still applies to the settings


def test_without_sentinels_the_url_host_is_used() -> None:
    settings = redis_settings(load_config(redis_url="redis://cache:6380/1"))
    assert (settings.sentinel, settings.host, settings.port) == (False, "cache", 6380)


def test_bad_scale_out_variables_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in [
        ("REDIS_SENTINELS", "no-port"),
        ("PG_POOL_OVER_BUDGET", "grow"),
        ("PG_STATEMENT_CACHE_SIZE", "-1"),
        ("PG_CONNECTION_BUDGET", "0"),
    ]:
        monkeypatch.setenv(name, value)
        with pytest.raises(ConfigError, match=name):
            load_config()
        monkeypatch.delenv(name)


def test_scale_out_defaults() -> None:
    config = load_config()
    assert config.pg_statement_cache_size == 100
    assert config.pg_transaction_pooling is False
    assert config.pg_connection_budget is None
    assert config.pg_pool_over_budget == "refuse"
    assert (config.redis_sentinels, config.redis_sentinel_master) == (None, "mymaster")


def test_exit_descriptions() -> None:
    assert describe_exit(0) == "exited with status 0"
    assert describe_exit(3) == "exited with status 3"
    assert describe_exit(-signal.SIGKILL).startswith("was killed by SIGKILL (the kernel's OOM")
    assert describe_exit(-signal.SIGSEGV) == "was killed by SIGSEGV"


def test_supervisor_needs_a_process() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Supervisor(0, ["true"])


def test_each_supervised_process_gets_its_own_metrics_port() -> None:
    env = per_process_env(load_config(metrics_port=9180))
    assert [env(i) for i in (1, 2, 3)] == [{"METRICS_PORT": str(p)} for p in (9180, 9181, 9182)]
    assert per_process_env(load_config(metrics_port=0))(2) == {}
