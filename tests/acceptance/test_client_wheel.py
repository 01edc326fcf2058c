"""The slim client as another service installs it: its wheel (clients/python/build_wheel.py) in a
fresh venv that sees nothing of the dev venv, with only redis, pydantic and orjson (downloaded at
the dev venv's versions into the test's own directory, then installed with ``--no-index``); none of
the worker's packages. From a directory outside the repository it runs docs/producers.md's example
against a real worker, and fails fast with the URL masked on a Redis that does not answer."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from pathlib import Path

import asyncpg
import pytest

from tests.acceptance.conftest import run_checked
from tests.conftest import REDIS_URL
from worker.config import Config

pytestmark = pytest.mark.acceptance

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 120
WORKER_PACKAGES = (
    "asyncpg",
    "uvicorn",
    "starlette",
    "prometheus-client",
    "arq",
    "pydantic-settings",
)


def run(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command to completion; its stdout (a failure shows its output)."""
    return run_checked(*argv, cwd=cwd, env=env, timeout=TIMEOUT)


class Slim:
    """The built wheel and the venv it is installed in."""

    def __init__(self, wheel: Path, venv: Path, outside: Path) -> None:
        self.wheel = wheel
        self.python = venv / "bin" / "python"
        self.outside = outside

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env.pop("REDIS_URL", None)
        env.pop("QUEUE_NAME", None)
        return {**env, **extra}


@pytest.fixture(scope="module")
def slim(tmp_path_factory: pytest.TempPathFactory) -> Slim:
    tmp = tmp_path_factory.mktemp("client-wheel")
    built = run(sys.executable, ROOT / "clients/python/build_wheel.py", tmp / "dist", cwd=tmp)
    wheel = Path(built.strip().splitlines()[-1])
    pip = (sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q")
    pins = [
        f"{name}=={importlib.metadata.version(name)}" for name in ("redis", "pydantic", "orjson")
    ]
    run(*pip, "download", "--only-binary=:all:", "-d", tmp / "deps", *pins, cwd=tmp)
    venv = tmp / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp)
    python = venv / "bin" / "python"
    run(
        *pip,
        "--python",
        python,
        "install",
        "--no-index",
        "--find-links",
        tmp / "deps",
        wheel,
        cwd=tmp,
    )
    outside = tmp / "elsewhere"
    outside.mkdir()
    return Slim(wheel, venv, outside)


def test_the_wheel_needs_only_what_enqueueing_needs(slim: Slim) -> None:
    with zipfile.ZipFile(slim.wheel) as whl:
        names = whl.namelist()
        [meta] = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(whl.read(meta).decode())
    checkout = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "pgpool_client").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert checkout <= set(names), sorted(checkout - set(names))
    assert not [n for n in names if n.startswith(("worker/", "jobs/"))]
    base = [r for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r]
    assert sorted(re.split(r"[<>=\[ ;]", r)[0] for r in base) == ["orjson", "pydantic", "redis"]
    listed = json.loads(
        run(
            sys.executable,
            "-m",
            "pip",
            "--python",
            slim.python,
            "list",
            "--format=json",
            cwd=slim.outside,
        )
    )
    installed = {p["name"].lower().replace("_", "-") for p in listed}
    assert "pgpool-client" in installed
    assert not installed & set(WORKER_PACKAGES), installed & set(WORKER_PACKAGES)
    probe = (
        "import pgpool_client, importlib.util as u; "
        "print(pgpool_client.__file__, u.find_spec('worker'), u.find_spec('jobs'))"
    )
    out = run(slim.python, "-c", probe, cwd=slim.outside, env=slim.env()).split()
    assert Path(out[0]).is_relative_to(slim.python.parents[1]) and out[1:] == ["None", "None"]


def example() -> str:
    """The code of docs/producers.md's "Python (slim client)" section."""
    text = (ROOT / "docs/producers.md").read_text(encoding="utf-8")
    section = text.split("## Python (slim client)", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert found, "docs/producers.md's Python section has no example"
    return found.group(1)


@pytest.fixture
def worker(config: Config, users: list[asyncpg.Record], tmp_path: Path) -> Iterator[None]:
    """A real worker (``arq worker.Settings`` from the checkout) on the test's queue."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in Config.model_fields}
    env.update(
        DATABASE_URL=config.database_url,
        REDIS_URL=REDIS_URL,
        QUEUE_NAME=config.queue_name,
        METRICS_PORT="0",
        CRON_DEACTIVATE="",
        POLL_DELAY="0.05",
    )
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "arq", "worker.Settings"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
    assert "Traceback" not in (tmp_path / "worker.log").read_text()


def test_the_documented_example_runs_against_a_real_worker(
    slim: Slim, config: Config, worker: None, users: list[asyncpg.Record]
) -> None:
    (slim.outside / "example.py").write_text(example(), encoding="utf-8")
    env = slim.env(REDIS_URL=REDIS_URL, QUEUE_NAME=config.queue_name, LOG_LEVEL="info")
    out = run(slim.python, "example.py", cwd=slim.outside, env=env).splitlines()
    active = sum(r["is_active"] for r in users)
    assert out == [
        "user 1 complete",
        f"active users {active}",
        "duplicate refused",
        "pages [5, 5]",
    ], out


def test_an_unanswering_redis_fails_within_the_connect_timeout(slim: Slim) -> None:
    probe = """
import asyncio, socket, time
from pgpool_client import Client, ClientConfig, RedisUnavailable

async def main() -> None:
    async def swallow(reader, writer):
        await reader.read()
    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    silent = server.sockets[0].getsockname()[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    for port in (closed, silent):
        started = time.monotonic()
        try:
            async with Client.connect(redis_url=f"redis://app:pa55word@127.0.0.1:{port}/0"):
                pass
        except RedisUnavailable as exc:
            print(round(time.monotonic() - started, 1), exc)
    server.close()

asyncio.run(main())
"""
    out = run(slim.python, "-c", probe, cwd=slim.outside, env=slim.env()).splitlines()
    assert len(out) == 2, out
    for line in out:
        took, message = line.split(" ", 1)
        assert float(took) < 5 + 10, line  # the default connect timeout, 5 s, and slack
        assert "pa55word" not in message and "redis://app:***@127.0.0.1:" in message, line
    assert "no answer within 5 s" in out[1]
