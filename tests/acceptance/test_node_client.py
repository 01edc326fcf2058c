"""The TypeScript client (clients/node) against a real worker (`arq worker.Settings`, this test's
database and queue): its `node --test` suite and its README's example, run as printed; its generated
sources current with the registry; its lock file naming no registry.

Node.js 20 or later with npm is required: without it these tests fail saying what to install (they
are never skipped). The npm dependencies are installed (`npm ci`) when node_modules is missing or
older than the lock file, and the client is built (`tsc`) once per run.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.acceptance.conftest import ROOT
from tests.faults.conftest import Spawn
from worker.config import Config

pytestmark = pytest.mark.acceptance

NODE_DIR = ROOT / "clients" / "node"
GENERATOR = NODE_DIR / "scripts" / "generate_types.py"
GENERATED = ("jobs.ts", "wire.ts")
MIN_NODE = 20
INSTALL = (
    f"install Node.js {MIN_NODE} or later with npm (Debian or Ubuntu: `apt-get install nodejs npm`; "
    "elsewhere the nodejs.org installer)"
)


def node_tools(path: str | None = None) -> tuple[str, str]:
    """The paths of ``node`` and ``npm`` on ``path`` (default: PATH); the test fails, naming what
    to install, when either is missing or node is older than MIN_NODE."""
    node, npm = shutil.which("node", path=path), shutil.which("npm", path=path)
    missing = [name for name, found in (("node", node), ("npm", npm)) if found is None]
    if node is None or npm is None:
        pytest.fail(
            f"{' and '.join(missing)} not found: the TypeScript client's tests need them; {INSTALL}",
            pytrace=False,
        )
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, check=False, timeout=30
    ).stdout.strip()
    major = re.match(r"v(\d+)\.", version)
    if major is None or int(major.group(1)) < MIN_NODE:
        pytest.fail(f"node {version or '(no version)'} is too old; {INSTALL}", pytrace=False)
    return node, npm


def _run(argv: list[str], timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=NODE_DIR, capture_output=True, text=True, check=False, timeout=timeout, **kwargs
    )


def _stale(installed: Path) -> bool:
    lock = NODE_DIR / "package-lock.json"
    return not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime


@pytest.fixture(scope="module")
def node() -> Iterator[str]:
    """``node``, with the client's npm dependencies installed and the client built."""
    node, npm = node_tools()
    if _stale(NODE_DIR / "node_modules" / ".package-lock.json"):
        done = _run([npm, "ci", "--no-audit", "--no-fund"], timeout=600)
        assert done.returncode == 0, f"npm ci failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    done = _run([npm, "run", "build"], timeout=300)
    assert done.returncode == 0, f"the build failed:\n{done.stdout[-4000:]}{done.stderr[-2000:]}"
    yield node


def _client_env(config: Config) -> dict[str, str]:
    return {**os.environ, "REDIS_URL": config.redis_url, "QUEUE_NAME": config.queue_name}


def test_the_node_tools_missing_fail_saying_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception) as failed:
        node_tools(path=str(tmp_path))  # a PATH with neither
    message = str(failed.value)
    assert "node and npm not found" in message
    assert f"Node.js {MIN_NODE} or later" in message
    assert "apt-get install nodejs npm" in message


def test_the_generated_sources_match_the_registry(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(GENERATOR), "--out-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for name in GENERATED:
        fresh = (tmp_path / name).read_text(encoding="utf-8")
        committed = (NODE_DIR / "src" / name).read_text(encoding="utf-8")
        assert fresh == committed, (
            f"clients/node/src/{name} is out of date with the registry: run "
            ".venv/bin/python clients/node/scripts/generate_types.py and commit it"
        )


def _urls(value: Any, where: str = "") -> Iterator[str]:
    """Where, in a JSON document, a string holds a URL: "path: value"."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _urls(item, f"{where}/{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _urls(item, f"{where}/{i}")
    elif isinstance(value, str) and "://" in value:
        yield f"{where}: {value}"


def test_the_lock_file_names_no_registry_and_the_versions_are_exact() -> None:
    lock = json.loads((NODE_DIR / "package-lock.json").read_text(encoding="utf-8"))
    # A package's funding link (its project page) is the one URL npm always records.
    urls = [u for u in _urls(lock) if not re.match(r"/packages/[^:]+/funding(/\d+)?/url: ", u)]
    assert not urls, f"package-lock.json names hosts (see clients/node/.npmrc): {urls}"
    assert all("resolved" not in entry for entry in lock["packages"].values())
    package = json.loads((NODE_DIR / "package.json").read_text(encoding="utf-8"))
    pins = {**package["dependencies"], **package["devDependencies"]}
    loose = {name: v for name, v in pins.items() if not re.fullmatch(r"\d+\.\d+\.\d+", v)}
    assert not loose, f"package.json versions that are not exact: {loose}"


@pytest.mark.timeout(600)
async def test_the_node_client_against_a_real_worker(
    node: str, spawn: Spawn, config: Config, users: list[asyncpg.Record]
) -> None:
    await spawn(settings="worker.Settings")
    done = await asyncio.to_thread(
        _run, [node, "--test", "test/"], timeout=480, env=_client_env(config)
    )
    report = done.stdout[-6000:] + done.stderr[-3000:]
    assert done.returncode == 0, f"node --test failed:\n{report}"
    passed = re.search(r"^# pass (\d+)$", done.stdout, re.MULTILINE)
    assert passed and int(passed.group(1)) >= 17, report
    assert re.search(r"^# fail 0$", done.stdout, re.MULTILINE), report


def _readme_example() -> str:
    text = (NODE_DIR / "README.md").read_text(encoding="utf-8")
    found = re.search(r"^```js\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
    assert found, "clients/node/README.md has no ```js example"
    return found.group(1)


@pytest.mark.timeout(300)
async def test_the_readme_example_runs_as_printed(
    node: str,
    spawn: Spawn,
    config: Config,
    pool: asyncpg.Pool[asyncpg.Record],
    users: list[asyncpg.Record],
) -> None:
    example = _readme_example()
    assert len(example.splitlines()) <= 10, example
    async with pool.acquire() as conn:  # user 42 exists, as in the example
        await conn.execute(
            "INSERT INTO users (email, name, is_active, created_at)"
            " SELECT 'node' || g || '@example.com', 'Ada Lovelace', true, now()"
            " FROM generate_series(1, 20) AS g"
        )
        email = await conn.fetchval("SELECT email FROM users WHERE id = 42")
    await spawn(settings="worker.Settings")
    # --eval resolves "pgpool-worker-client" from the working directory: the package itself.
    done = await asyncio.to_thread(
        _run, [node, "--input-type=module", "--eval", example], 120, env=_client_env(config)
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.strip() == email
