"""Unit tests of the worker's configuration (worker.config)."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.config import load_config
from worker.errors import ConfigError

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("clean_env")]


def test_defaults() -> None:
    config = load_config()
    assert config.database_url == "postgresql://postgres@127.0.0.1:5432/jobs_worker"
    assert config.redis_url == "redis://127.0.0.1:6379/0"
    assert config.queue_name == "arq:queue"
    assert config.worker_max_jobs == 20
    assert config.log_level == "INFO"
    assert config.cron_deactivate == "15 3 * * *"


def test_pool_sizes_follow_worker_max_jobs_by_default() -> None:
    config = load_config(worker_max_jobs=12)
    assert config.pool_max_size == 12
    assert config.pool_min_size == 4


def test_pool_min_size_defaults_to_max_when_max_is_below_four() -> None:
    config = load_config(worker_max_jobs=2)
    assert config.pool_max_size == 2
    assert config.pool_min_size == 2


def test_explicit_pool_max_size() -> None:
    config = load_config(worker_max_jobs=50, pg_pool_max_size=10)
    assert config.pool_max_size == 10
    assert config.pool_min_size == 4


def test_explicit_pool_min_size() -> None:
    config = load_config(pg_pool_min_size=0, pg_pool_max_size=3)
    assert config.pool_min_size == 0
    assert config.pool_max_size == 3


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_MAX_JOBS", "7")
    monkeypatch.setenv("PG_POOL_MAX_SIZE", "5")
    monkeypatch.setenv("POLL_DELAY", "0.5")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("QUEUE_NAME", "jobs:high")
    monkeypatch.setenv("CRON_DEACTIVATE", "0 4 * * 1")
    monkeypatch.setenv("REDIS_URL", "rediss://:pw@cache.internal:6380/2")
    config = load_config()
    assert config.worker_max_jobs == 7
    assert config.pool_max_size == 5
    assert config.poll_delay == 0.5
    assert config.log_level == "DEBUG"
    assert config.queue_name == "jobs:high"
    assert config.cron_deactivate == "0 4 * * 1"
    assert config.redis_url == "rediss://:pw@cache.internal:6380/2"


def test_explicit_overrides_beat_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_MAX_JOBS", "7")
    assert load_config(worker_max_jobs=9).worker_max_jobs == 9


def test_dotenv_in_working_directory_is_read(clean_env: Path) -> None:
    (clean_env / ".env").write_text(
        "WORKER_MAX_JOBS=33\nDATABASE_URL=postgresql://app:pw@db.example:6543/app\n",
        encoding="utf-8",
    )
    config = load_config()
    assert config.worker_max_jobs == 33
    assert config.database_url == "postgresql://app:pw@db.example:6543/app"


def test_environment_beats_dotenv(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clean_env / ".env").write_text("WORKER_MAX_JOBS=33\n", encoding="utf-8")
    monkeypatch.setenv("WORKER_MAX_JOBS", "44")
    assert load_config().worker_max_jobs == 44


def test_dotenv_bad_value_is_refused(clean_env: Path) -> None:
    (clean_env / ".env").write_text("WORKER_MAX_JOBS=many\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="WORKER_MAX_JOBS"):
        load_config()


def test_config_is_frozen() -> None:
    config = load_config()
    with pytest.raises(ValueError, match="frozen"):
        config.worker_max_jobs = 3


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("WORKER_MAX_JOBS", "abc", "WORKER_MAX_JOBS: expected a number of jobs from 1 to 1"),
        ("WORKER_MAX_JOBS", "0", "WORKER_MAX_JOBS: expected a number of jobs from 1 to 10000, or"),
        ("POLL_DELAY", "-1", "POLL_DELAY: Input should be greater than 0"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL: Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
        ("CRON_DEACTIVATE", "61 * * * *", "CRON_DEACTIVATE: cron minute '61'"),
        ("CRON_DEACTIVATE", "* * *", "CRON_DEACTIVATE: cron schedule '* * *' needs 5"),
        ("PG_POOL_MAX_SIZE", "0", "PG_POOL_MAX_SIZE: Input should be greater than or equal to 1"),
        ("MAX_TRIES", "101", "MAX_TRIES: Input should be less than or equal to 100"),
        ("DATABASE_URL", "mysql://root@db:3306/app", "DATABASE_URL: expected a URL of the form"),
        ("REDIS_URL", "http://cache:6379", "REDIS_URL: expected a URL of the form redis://"),
        ("REDIS_URL", "redis://cache:port/0", "REDIS_URL: not a valid URL"),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_config()
    message = str(info.value)
    assert message.startswith("Invalid configuration: ")
    assert expected in message
    assert ".env.example" in message


def test_bad_value_shows_what_was_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "LOUD")
    with pytest.raises(ConfigError, match=r"\(got 'LOUD'\)"):
        load_config()


def test_several_bad_values_are_all_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_MAX_JOBS", "abc")
    monkeypatch.setenv("POLL_DELAY", "-1")
    with pytest.raises(ConfigError) as info:
        load_config()
    assert "WORKER_MAX_JOBS: " in str(info.value)
    assert "; POLL_DELAY: " in str(info.value)


@pytest.mark.parametrize(
    ("variable", "url"),
    [
        ("DATABASE_URL", "mysql://admin:Sup3rS3cretPw@db.example:3306/app"),
        ("DATABASE_URL", "postgresql://admin:Sup3rS3cretPw@db.example:notaport/app"),
        ("DATABASE_URL", "postgresql://admin:Sup3rS3cretPw@:5432/app"),
        ("REDIS_URL", "memcached://:Sup3rS3cretPw@cache:11211"),
        ("REDIS_URL", "redis://:Sup3rS3cretPw@[::1/0"),
    ],
)
def test_url_errors_never_echo_the_password(
    monkeypatch: pytest.MonkeyPatch, variable: str, url: str
) -> None:
    monkeypatch.setenv(variable, url)
    with pytest.raises(ConfigError) as info:
        load_config()
    message = str(info.value)
    assert f"{variable}: " in message
    assert "Sup3rS3cretPw" not in message
    assert "admin" not in message


def test_url_error_from_override_never_echoes_the_password() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(database_url="mysql://admin:Sup3rS3cretPw@db/app")
    assert "DATABASE_URL: " in str(info.value)
    assert "Sup3rS3cretPw" not in str(info.value)


def test_pool_min_larger_than_max_is_refused_with_both_numbers() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(pg_pool_min_size=8, pg_pool_max_size=5)
    assert "PG_POOL_MIN_SIZE=8 is larger than the pool's max size 5" in str(info.value)


def test_pool_min_larger_than_default_max_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_MAX_JOBS", "3")
    monkeypatch.setenv("PG_POOL_MIN_SIZE", "4")
    with pytest.raises(
        ConfigError, match="PG_POOL_MIN_SIZE=4 is larger than the pool's max size 3"
    ):
        load_config()


def test_pool_min_equal_to_max_is_accepted() -> None:
    config = load_config(pg_pool_min_size=5, pg_pool_max_size=5)
    assert (config.pool_min_size, config.pool_max_size) == (5, 5)


def test_empty_cron_disables_the_schedule_and_is_accepted() -> None:
    assert load_config(cron_deactivate="").cron_deactivate == ""


def test_postgres_scheme_alias_and_rediss_are_accepted() -> None:
    config = load_config(
        database_url="postgres://u:p@[::1]:5432/db", redis_url="rediss://:p@cache:6380/1"
    )
    assert config.database_url == "postgres://u:p@[::1]:5432/db"
    assert config.redis_url == "rediss://:p@cache:6380/1"
