"""README.md's examples, run as printed against a real worker (`arq worker.Settings`, this test's
database and queue): the Python snippet as a script outside the repository, every `sh` command
with the environment pointed at the test's services. And no file of the repository links outside
it (to the steering repository's shared notes, which a clone does not have).

Not run: `make` lines (they install, start the services' worker in the foreground, or run this
suite; CI runs them). The example ids in the commands (`JOB_ID`, dead letter `17`) stand for real
ones, and the seed line runs with 1,000 users instead of a million.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as redis_py

from tests.acceptance.conftest import ROOT, worker_env
from tests.faults.conftest import Spawn, wait_until
from worker.config import Config

pytestmark = pytest.mark.acceptance

README = ROOT / "README.md"
FENCE = re.compile(
    r"^(?P<indent> *)```(?P<lang>\w*)\n(?P<body>.*?)^(?P=indent)```", re.MULTILINE | re.DOTALL
)
PARENT_LINK = "../" + "shared"  # spelled so that this file does not contain it


def blocks(lang: str) -> list[str]:
    """The README's fenced blocks of ``lang``, their indentation removed."""
    found = []
    for match in FENCE.finditer(README.read_text(encoding="utf-8")):
        if match.group("lang") == lang:
            indent = len(match.group("indent"))
            found.append("".join(line[indent:] for line in match.group("body").splitlines(True)))
    return found


def commands() -> list[str]:
    """Every command of the README's sh blocks (a transcript's ``$`` lines), comments dropped."""
    found = []
    for block in blocks("sh"):
        lines = block.splitlines()
        transcript = any(line.startswith("$ ") for line in lines)
        for line in lines:
            if transcript and not line.startswith("$ "):
                continue  # printed output
            command = line.removeprefix("$ ").split("  #")[0].strip()
            if command and not command.startswith("#"):
                found.append(command)
    return found


def run_shell(config: Config, command: str) -> subprocess.CompletedProcess[str]:
    env = worker_env(config, UNKNOWN_JOB_GRACE="300")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        ["bash", "-c", command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_no_file_links_outside_the_repository() -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    linking = []
    for name in listed:
        path = ROOT / name
        if not path.is_file() or path.stat().st_size > 5_000_000:
            continue
        if PARENT_LINK.encode() in path.read_bytes():
            linking.append(name)
    assert not linking, f"files that link to {PARENT_LINK}: {linking}"


async def test_the_readme_examples_run_as_printed(
    spawn: Spawn,
    config: Config,
    raw: redis_py.Redis,
    pool: asyncpg.Pool[asyncpg.Record],
    users: list[asyncpg.Record],
    tmp_path: Path,
) -> None:
    async with pool.acquire() as conn:  # user 42 exists, as in the README's transcript
        await conn.execute(
            "INSERT INTO users (email, name, is_active, created_at)"
            " SELECT 'readme' || g || '@example.com', 'Grace Hopper', true, now()"
            " FROM generate_series(1, 20) AS g"
        )
    worker = await spawn(settings="worker.Settings", CRON_DEACTIVATE="15 3 * * *")
    sample = next(b for b in blocks("") if "Starting worker for" in b)
    start = sample.splitlines()[0].split(": ", 1)[1].removesuffix("...")
    assert start in worker.log(), f"the worker does not log {start!r}:\n{worker.log()}"

    for pattern in ("arq:job:nightly-*", "arq:result:nightly-*", "arq:*:count-1"):
        for key in await raw.keys(pattern):  # this test's own fixed ids, from an earlier run
            await raw.delete(key)

    script = tmp_path / "readme_client.py"  # outside the repository
    script.write_text(blocks("python")[0], encoding="utf-8")
    env = worker_env(config, PYTHONPATH=str(ROOT))
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "id=42" in done.stdout, done.stdout

    deferred = uuid.uuid4().hex  # JOB_ID: a job that is still waiting, to inspect and abort
    await raw.psetex(
        f"arq:job:{deferred}",
        86_400_000,
        json.dumps({"t": None, "f": "count_users", "a": [], "k": {}, "et": 1}),
    )
    await raw.zadd(config.queue_name, {deferred: 4_000_000_000_000})
    letter_id = await pool.fetchval(
        "INSERT INTO dead_letters (job_id, queue, function, payload, reason, error_type,"
        " error_message, attempts) VALUES ($1, $2, 'get_user', $3, 'permanent-error',"
        " 'InvalidJobArguments', 'user_id: Input should be greater than 0', 1) RETURNING id",
        uuid.uuid4().hex,
        config.queue_name,
        json.dumps({"t": None, "f": "get_user", "a": [], "k": {"user_id": 1}, "et": 1}).encode(),
    )

    async def healthy() -> bool:
        return (
            await asyncio.to_thread(run_shell, config, "python -m worker status")
        ).returncode == 0

    await wait_until(healthy, timeout=30, what="the worker's health record")
    ran = []
    for command in commands():
        if command.startswith("make "):
            continue
        concrete = command.replace("JOB_ID", deferred).replace("--users 1000000", "--users 1000")
        concrete = re.sub(r"(dead-letters (?:show|replay)) 17\b", rf"\1 {letter_id}", concrete)
        result = await asyncio.to_thread(run_shell, config, concrete)
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        assert "Traceback" not in result.stderr, f"{command}\n{result.stderr}"
        ran.append(command)
    assert any("enqueue get_user user_id=42 --wait 10" in c for c in ran), ran
    assert any(c.startswith("python -m worker abort") for c in ran), ran
