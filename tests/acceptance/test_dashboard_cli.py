"""``python -m worker dashboard-hash`` and the dashboard's refusal to start without its sign-in
(worker/ops/dashboard_cli.py, worker/ops/dashboard_auth.py): one ``error:`` line, exit 2."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from tests.acceptance.conftest import ROOT, free_port, worker_cli, worker_env
from worker.config import Config
from worker.ops.dashboard_auth import parse_users, verify_password

pytestmark = pytest.mark.acceptance


async def test_dashboard_hash_prints_an_entry_the_dashboard_accepts(config: Config) -> None:
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "worker", "dashboard-hash", "--user", "ann", "--role", "operator"],
        cwd=ROOT,
        env=worker_env(config),
        input="a long password\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    entry = done.stdout.strip()
    assert entry.startswith("ann:operator:scrypt:") and "$" not in entry
    [user] = parse_users(entry).values()
    assert verify_password("a long password", user.hash)
    assert not verify_password("a long passwore", user.hash)
    short = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "worker", "dashboard-hash"],
        cwd=ROOT,
        env=worker_env(config),
        input="short\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert short.returncode == 2 and short.stderr.count("\n") == 1
    assert "at least 8 characters" in short.stderr


@pytest.mark.parametrize(
    ("env", "host", "message"),
    [
        ({}, "127.0.0.1", "DASHBOARD_AUTH=basic needs DASHBOARD_USERS"),
        ({"DASHBOARD_AUTH": "none"}, "0.0.0.0", "listens only on a loopback address"),
        ({"DASHBOARD_AUTH": "header"}, "0.0.0.0", "needs DASHBOARD_TRUSTED_HEADER"),
        ({"DASHBOARD_AUTH": "open"}, "127.0.0.1", "DASHBOARD_AUTH: Input should be"),
    ],
)
async def test_the_dashboard_does_not_start_without_its_sign_in(
    config: Config, env: dict[str, str], host: str, message: str
) -> None:
    port = str(free_port())
    done = await worker_cli(config, "dashboard", "--host", host, "--port", port, **env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: Invalid configuration: ") and message in done.stderr
    assert done.stderr.count("\n") == 1  # one line, no traceback
