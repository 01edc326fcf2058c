"""Acceptance fixtures: the fault suite's worker subprocesses (``spawn``), proxies and counters,
shared with the operations tests, plus helpers to reach a worker's HTTP endpoint."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as redis_py

from tests.conftest import ADMIN_URL, REDIS_URL
from tests.faults.conftest import FAULT_ENV, counters, fault_tables, pg_proxy, redis_proxy, spawn
from worker.config import Config
from worker.db.pool import with_database

__all__ = ["counters", "fault_tables", "pg_proxy", "redis_proxy", "spawn"]

ROOT = Path(__file__).resolve().parents[2]


def worker_env(config: Config, **extra: str) -> dict[str, str]:
    """The environment of the fault suite's workers (``spawn``), for commands run beside them."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in Config.model_fields}
    env.update(
        DATABASE_URL=config.database_url,
        REDIS_URL=config.redis_url,
        QUEUE_NAME=config.queue_name,
        **FAULT_ENV,
    )
    env.update(extra)
    return env


async def run_command(config: Config, *argv: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (off the event loop) in the workers' environment; output captured as text."""
    return await asyncio.to_thread(
        subprocess.run,
        list(argv),
        cwd=ROOT,
        env=worker_env(config, **extra),
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )


async def worker_cli(config: Config, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """``python -m worker ARGS`` in the workers' environment."""
    return await run_command(config, sys.executable, "-m", "worker", *args, **extra)


def free_port() -> int:
    """A TCP port free on loopback now (the worker binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get(url: str, timeout: float) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


async def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """GET ``url`` (off the event loop): ``(status, body)``."""
    return await asyncio.to_thread(_get, url, timeout)


async def http_json(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    status, body = await http_get(url, timeout)
    return status, json.loads(body)


@pytest.fixture
async def raw(config: Config) -> AsyncIterator[redis_py.Redis]:
    """A plain Redis client on the test's database."""
    client = redis_py.Redis.from_url(config.redis_url)
    yield client
    await client.aclose()


async def _drop_databases(prefix: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        names = await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname = $1 OR datname LIKE $2",
            prefix,
            prefix + "\\_%",
        )
        for row in names:
            await conn.execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')
    finally:
        await conn.close()


def run_bench(module: str, database_url: str, *args: str, timeout: float) -> str:
    """``python -m <module> <args>`` on ``database_url`` and the tests' Redis; its standard output
    (fails the test, with the end of its standard error, when it exits non-zero)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_")}
    done = subprocess.run(
        [
            *(sys.executable, "-m", module, *args),
            *("--database-url", database_url, "--redis-url", REDIS_URL),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


@pytest.fixture
def bench_database() -> Iterator[str]:
    """A database of its own for a bench smoke run, which the bench creates and seeds (the growth
    sweep also ``<name>_growth_*``); all of them dropped afterwards."""
    name = f"bench_smoke_{uuid.uuid4().hex[:10]}"
    yield with_database(ADMIN_URL, name)
    asyncio.run(_drop_databases(name))


def run_checked(
    *argv: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> str:
    """Run a command to completion within ``timeout`` s; its stdout, or a failure that shows its
    output (wheel builds and installs, commands of an installed package)."""
    done = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout
