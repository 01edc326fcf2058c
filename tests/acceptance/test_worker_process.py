"""The worker as operators run it (`arq worker.Settings`, configured by environment variables) and
the command line as scripts use it (`python -m worker ...`), as real subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from worker.config import Config

pytestmark = pytest.mark.acceptance

ROOT = Path(__file__).resolve().parents[2]


def env_for(config: Config, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "WORKER_", "REDIS"))}
    env.update(
        DATABASE_URL=config.database_url,
        REDIS_URL=config.redis_url,
        QUEUE_NAME=config.queue_name,
        CRON_DEACTIVATE="",
        POLL_DELAY="0.01",
        WORKER_MAX_JOBS="8",
        LOG_LEVEL="INFO",
        PG_POOL_OVER_BUDGET="shrink",  # the shared server may be busy (see tests/faults/conftest.py)
        METRICS_PORT="0",
    )
    env.update(extra)
    return env


def cli(config: Config, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        cwd=ROOT,
        env=env_for(config, **extra),
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )


@pytest.fixture
def worker_process(config: Config, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """`arq worker.Settings` in the background; stopped with SIGTERM (by its PID) afterwards."""
    log = (tmp_path / "worker.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "arq", "worker.Settings"],
        cwd=ROOT,
        env=env_for(config, LOG_LEVEL="DEBUG"),  # one line per job: arguments must not show
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    yield proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log.close()


def test_cli_enqueues_and_worker_answers(
    config: Config,
    worker_process: subprocess.Popen[str],
    users: list[asyncpg.Record],
    tmp_path: Path,
) -> None:
    done = cli(config, "enqueue", "get_user", "user_id=2", "--wait", "30")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["success"] is True and out["result"]["email"] == users[1]["email"]

    queued = cli(config, "enqueue", "search_users", "prefix=hunter2-secret", "field=name")
    assert queued.returncode == 0, queued.stderr
    job_id = json.loads(queued.stdout)["job_id"]
    again = cli(config, "result", job_id, "--wait", "30")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["result"] == {"users": []}

    worker_process.send_signal(signal.SIGTERM)
    assert worker_process.wait(timeout=20) == 0
    log = (tmp_path / "worker.log").read_text()
    assert (
        ":get_user done in" in log and ":search_users done in" in log
    )  # the fast consumer ran them
    assert "hunter2" not in log, "job arguments leaked into the worker's log"
    assert "postgres pool ready" in log


def test_cli_reports_bad_input_clearly(config: Config, users: list[asyncpg.Record]) -> None:
    bad = cli(config, "enqueue", "get_user", "user_id=abc")
    assert bad.returncode == 2
    assert "Invalid arguments for job 'get_user': user_id" in bad.stderr
    unknown = cli(config, "enqueue", "get_users")
    assert unknown.returncode == 2 and "Unknown job 'get_users'" in unknown.stderr
    malformed = cli(config, "enqueue", "get_user", "user_id")
    assert malformed.returncode == 2 and "name=value" in malformed.stderr
    missing = cli(config, "result", "no-such-job")
    assert missing.returncode == 2 and "No job with id 'no-such-job'" in missing.stderr
    pending = cli(config, "enqueue", "count_users", "--defer-by", "3600", "--wait", "0.1")
    assert pending.returncode == 3 and json.loads(pending.stdout)["status"] == "deferred"


def test_bad_configuration_names_the_variable(config: Config) -> None:
    done = cli(config, "jobs", WORKER_MAX_JOBS="lots")
    assert done.returncode == 2
    assert "WORKER_MAX_JOBS" in done.stderr and "Traceback" not in done.stderr


def test_unreachable_services_say_how_to_start_them(config: Config) -> None:
    pg = cli(config, "check", DATABASE_URL="postgresql://app:s3cret@127.0.0.1:1/db")
    assert pg.returncode == 2
    assert "Cannot connect to PostgreSQL at postgresql://app:***@127.0.0.1:1" in pg.stderr
    assert "s3cret" not in pg.stderr + pg.stdout
    rd = cli(config, "check", REDIS_URL="redis://:s3cret@127.0.0.1:1/0")
    assert rd.returncode == 2
    assert "Cannot connect to Redis at redis://:***@127.0.0.1:1/0" in rd.stderr
    assert "docker compose up -d redis" in rd.stderr and "s3cret" not in rd.stderr


def test_worker_with_unreachable_database_exits_with_a_clear_error(config: Config) -> None:
    bad = env_for(config, DATABASE_URL="postgresql://app:s3cret@127.0.0.1:1/db")
    done = subprocess.run(
        [sys.executable, "-m", "arq", "worker.Settings"],
        cwd=ROOT,
        env=bad,
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "Cannot connect to PostgreSQL at postgresql://app:***@127.0.0.1:1/db" in done.stderr
    assert "s3cret" not in done.stderr + done.stdout


async def test_dead_letters_cli(config: Config, pool: asyncpg.Pool) -> None:
    await pool.execute("TRUNCATE dead_letters")
    letter_id = await pool.fetchval(
        "INSERT INTO dead_letters (job_id, queue, function, payload, reason, error_type,"
        " error_message, attempts) VALUES ('j-1', $1, 'get_user', $2, 'permanent-error',"
        " 'InvalidJobArguments', 'user_id: bad', 1) RETURNING id",
        config.queue_name,
        b'{"t":null,"f":"get_user","a":[],"k":{"user_id":"x"},"et":1}',
    )
    listed = cli(config, "dead-letters", "list")
    assert listed.returncode == 0, listed.stderr
    assert [row["id"] for row in json.loads(listed.stdout)] == [letter_id]
    shown = cli(config, "dead-letters", "show", str(letter_id))
    assert json.loads(shown.stdout)["payload"]["k"] == {"user_id": "x"}
    replayed = cli(config, "dead-letters", "replay", str(letter_id))
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout)["job_id"] == f"j-1:replay:{letter_id}"
    assert cli(config, "dead-letters", "purge").returncode == 2  # refuses without a selection
    purged = cli(config, "dead-letters", "purge", "--id", str(letter_id))
    assert json.loads(purged.stdout) == {"purged": 1}
    missing = cli(config, "dead-letters", "show", str(letter_id))
    assert missing.returncode == 2 and f"No dead letter with id {letter_id}" in missing.stderr
