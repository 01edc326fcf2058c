"""Redis unreachable (nothing listens on REDIS_URL's port): the commands and the worker stop within a
bound with one line that names the URL (password masked) and what to do, and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.acceptance.conftest import free_port
from worker.config import Config

pytestmark = pytest.mark.acceptance

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret-redis-pw"


def closed_port_env(config: Config, **extra: str) -> dict[str, str]:
    """The environment of a command whose REDIS_URL points at a port nobody listens on."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in Config.model_fields}
    env.update(
        DATABASE_URL=config.database_url,
        REDIS_URL=f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0",
        QUEUE_NAME=config.queue_name,
        CRON_DEACTIVATE="",
        METRICS_PORT="0",
        LOG_FORMAT="text",
    )
    env.update(extra)
    return env


@pytest.mark.parametrize(
    "argv",
    [
        ("-m", "worker", "enqueue", "get_user", "user_id=1"),
        ("-m", "worker", "result", "x"),
        ("-m", "arq", "worker.Settings"),
    ],
    ids=["enqueue", "result", "arq-worker"],
)
def test_unreachable_redis_is_one_line_and_exit_2(config: Config, argv: tuple[str, ...]) -> None:
    env = closed_port_env(config)
    done = subprocess.run(
        [sys.executable, *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,  # a bound, not a speed claim: it used to hang for about 6 minutes
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    assert PASSWORD not in output
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    masked = env["REDIS_URL"].replace(PASSWORD, "***")
    assert masked in lines[0]
    assert "Redis" in lines[0] and "REDIS_URL" in lines[0]  # what to do: start it or fix the URL
