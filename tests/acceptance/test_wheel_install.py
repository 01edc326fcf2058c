"""The project installed from its wheel, not run from the checkout: the wheel is built, installed
with ``pip install --no-deps`` into a fresh venv outside the repository (which sees the dev venv's
dependencies through a .pth file, so no network is needed), and used from a directory outside the
repository: ``pgpool-worker --version``, ``pgpool-worker setup`` on a database of the test's own
(its migrations are package data), and a real job through the installed ``arq worker.Settings``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import uuid
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from pathlib import Path

import asyncpg
import pytest

from tests.acceptance.conftest import run_checked
from tests.conftest import ADMIN_URL, REDIS_URL
from worker.db.pool import with_database

pytestmark = pytest.mark.acceptance

ROOT = Path(__file__).resolve().parents[2]
# Every migration of the checkout, in order: what `setup` from the wheel must apply.
MIGRATIONS = sorted(p.stem for p in (ROOT / "worker" / "db" / "migrations").glob("*.sql"))
# What the build reads: pyproject.toml names README.md and LICENSE; the packages are worker*, jobs*
# and pgpool_client* (the slim client, which the worker uses).
PACKAGES = ("worker", "jobs", "pgpool_client")
SOURCES = ("pyproject.toml", "README.md", "LICENSE", *PACKAGES)
TIMEOUT = 120


def run(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command to completion; its stdout (a failure shows its output)."""
    return run_checked(*argv, cwd=cwd, env=env, timeout=TIMEOUT)


class Installed:
    """The wheel and the fresh venv it is installed in."""

    def __init__(self, wheel: Path, venv: Path, outside: Path) -> None:
        self.wheel = wheel
        self.bin = venv / "bin"
        self.outside = outside  # a working directory outside the repository

    def env(self, **extra: str) -> dict[str, str]:
        """No PYTHONPATH (the checkout must not be importable), no worker variable but ``extra``."""
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith(("PG_", "WORKER_"))
        }
        for name in ("DATABASE_URL", "REDIS_URL", "QUEUE_NAME", "METRICS_PORT", "CRON_DEACTIVATE"):
            env.pop(name, None)
        env.update(extra)
        return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    tmp = tmp_path_factory.mktemp("wheel")
    # A copy of the checkout's build inputs, so that the build's build/ and *.egg-info land there,
    # not in the working tree; no build isolation: the dev venv's setuptools, no network.
    source = tmp / "source"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    dist = tmp / "dist"
    pip = (sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input")
    run(*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", dist, source, cwd=tmp)
    [wheel] = dist.glob("pgpool_worker-*.whl")

    venv = tmp / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp)
    python = venv / "bin" / "python"
    site = Path(
        run(
            python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp
        ).strip()
    )
    dev_site = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "dev-venv-dependencies.pth").write_text("\n".join(sorted(dev_site)) + "\n")
    run(*pip, "--python", python, "install", "--no-deps", "--no-index", wheel, cwd=tmp)
    outside = tmp / "elsewhere"
    outside.mkdir()
    return Installed(wheel, venv, outside)


def test_the_wheel_holds_every_module_and_its_data(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    checkout = {
        path.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for path in (ROOT / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    missing = sorted(checkout - names)
    assert not missing, f"the wheel lacks files of the checkout (a package or its data): {missing}"
    assert {"worker/db/migrations/0001_users.sql", "worker/ops/dashboard.html"} <= names
    [info] = {n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")}
    assert f"{info}/licenses/LICENSE" in names
    with zipfile.ZipFile(installed.wheel) as whl:
        metadata = Parser().parsestr(whl.read(f"{info}/METADATA").decode())
        scripts = whl.read(f"{info}/entry_points.txt").decode()
    assert "pgpool-worker = worker.ops.cli:main" in scripts
    assert metadata["Requires-Python"] == ">=3.11"
    assert metadata["License-Expression"] == "MIT"
    classifiers = metadata.get_all("Classifier") or []
    for minor in ("3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {minor}" in classifiers
    assert {"dashboard", "bench", "dev"} <= set(metadata.get_all("Provides-Extra") or [])
    requires = metadata.get_all("Requires-Dist") or []
    base = [r for r in requires if "extra ==" not in r]
    assert not [r for r in base if r.startswith(("starlette", "uvicorn", "saq", "matplotlib"))]
    assert any(r.startswith("starlette") and 'extra == "dashboard"' in r for r in requires)


def test_version_comes_from_the_installed_distribution(installed: Installed) -> None:
    where = run(
        installed.bin / "python",
        "-c",
        "import worker; print(worker.__file__)",
        cwd=installed.outside,
        env=installed.env(),
    )
    assert Path(where.strip()).is_relative_to(installed.bin.parent), "not the installed package"
    version = installed.wheel.name.split("-")[1]
    out = run(
        installed.bin / "pgpool-worker", "--version", cwd=installed.outside, env=installed.env()
    )
    assert out.strip() == f"pgpool-worker {version}"


@pytest.fixture
def database_url() -> Iterator[str]:
    """A database name of this test's own, which ``setup`` creates; dropped at the end."""
    name = f"worker_wheel_{uuid.uuid4().hex[:10]}"
    yield with_database(ADMIN_URL, name)

    async def drop() -> None:
        conn = await asyncpg.connect(ADMIN_URL, timeout=10)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


def test_setup_and_a_job_from_the_installed_wheel(installed: Installed, database_url: str) -> None:
    env = installed.env(
        DATABASE_URL=database_url,
        REDIS_URL=REDIS_URL,
        QUEUE_NAME=f"test:wheel:{uuid.uuid4().hex[:12]}",
        METRICS_PORT="0",
        CRON_DEACTIVATE="",
        POLL_DELAY="0.05",
    )
    cli = installed.bin / "pgpool-worker"
    setup = json.loads(run(cli, "setup", "--seed", "10", "--quiet", cwd=installed.outside, env=env))
    assert setup["migrations_applied"] == MIGRATIONS, setup

    log = (installed.outside / "worker.log").open("wb")
    worker = subprocess.Popen(
        [str(installed.bin / "python"), "-m", "arq", "worker.Settings"],
        cwd=installed.outside,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        out = run(
            cli, "enqueue", "get_user", "user_id=1", "--wait", "30", cwd=installed.outside, env=env
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=10)
        log.close()
    result = json.loads(out)
    assert result["success"] is True, result
    assert result["result"]["id"] == 1
    worker_log = (installed.outside / "worker.log").read_text()
    assert "Traceback" not in worker_log, worker_log
    assert worker.returncode == 0, worker_log


def test_the_dashboard_without_its_extra_says_how_to_install_it(installed: Installed) -> None:
    # As if starlette and uvicorn were not installed (None in sys.modules: their import fails).
    probe = (
        "import sys; sys.modules['starlette'] = sys.modules['uvicorn'] = None\n"
        "from worker.ops.cli import main\n"
        "raise SystemExit(main(['dashboard']))"
    )
    done = subprocess.run(
        [str(installed.bin / "python"), "-c", probe],
        cwd=installed.outside,
        env=installed.env(REDIS_URL=REDIS_URL),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "pip install 'pgpool-worker[dashboard]'" in lines[0], done.stderr
