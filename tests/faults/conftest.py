"""Fixtures of the fault suite: worker subprocesses (stopped by PID), proxies, counters."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from tests.faults.jobs import SCHEMA
from tests.faults.proxy import Proxy
from worker.config import Config

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = "tests.faults.settings.FaultSettings"
T = TypeVar("T")

# Short leases, timeouts and backoffs so that every fault resolves within seconds.
FAULT_ENV = {
    "CRON_DEACTIVATE": "",
    "POLL_DELAY": "0.01",
    "WORKER_MAX_JOBS": "10",
    "JOB_LEASE": "2",
    "PG_IDLE_IN_TRANSACTION_TIMEOUT": "1",
    "JOB_TIMEOUT": "10",
    "MAX_TRIES": "5",
    "RETRY_BACKOFF_BASE": "0.1",
    "RETRY_BACKOFF_MAX": "0.5",
    "SHUTDOWN_GRACE": "3",
    "UNKNOWN_JOB_GRACE": "2",
    "REDIS_RETRY_WINDOW": "40",
    "HEALTH_CHECK_INTERVAL": "1",
    "PG_CONNECT_TIMEOUT": "2",
    "LOG_LEVEL": "INFO",
    "METRICS_PORT": "0",
    # The machine's PostgreSQL is shared: when it is busy, a test worker takes a smaller pool
    # rather than refusing to start (the refusal itself is tested in test_budget.py).
    "PG_POOL_OVER_BUDGET": "shrink",
}


async def wait_until(
    probe: Callable[[], Awaitable[T]], timeout: float = 20.0, what: str = "condition"
) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.05)


class WorkerProcess:
    """One `arq tests.faults.settings.FaultSettings` process, with its log in a file."""

    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def alive(self) -> bool:
        return self.proc.poll() is None

    async def ready(self, timeout: float = 20.0) -> None:
        async def started() -> bool:
            if not self.alive():
                raise AssertionError(f"worker exited early:\n{self.log()}")
            return "postgres pool ready" in self.log()

        await wait_until(started, timeout, "the worker to start")


Spawn = Callable[..., Awaitable[WorkerProcess]]


def url_via(url: str, port: int) -> str:
    """``url`` with its host and port replaced by 127.0.0.1:<port> (a proxy)."""
    parts = urlsplit(url)
    auth = parts.netloc.rpartition("@")[0]
    netloc = f"{auth}@127.0.0.1:{port}" if auth else f"127.0.0.1:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def worker_environment(config: Config, **env: str) -> dict[str, str]:
    """The environment of a worker process of this test: its database, Redis and queue, the fault
    suite's short timeouts, then ``env``; none of the caller's own worker variables."""
    environment = {k: v for k, v in os.environ.items() if k.lower() not in Config.model_fields}
    environment.update(
        DATABASE_URL=config.database_url,
        REDIS_URL=config.redis_url,
        QUEUE_NAME=config.queue_name,
        **FAULT_ENV,
    )
    environment.update(env)
    return environment


@pytest.fixture
async def spawn(config: Config, tmp_path: Path) -> AsyncIterator[Spawn]:
    """Start worker processes for this test; each is SIGKILLed by PID at the end if still alive."""
    started: list[WorkerProcess] = []

    async def start(ready: bool = True, settings: str = SETTINGS, **env: str) -> WorkerProcess:
        environment = worker_environment(config, **env)
        log_path = tmp_path / f"worker-{len(started)}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(  # noqa: ASYNC220  (fork+exec, returns at once)
                [sys.executable, "-m", "arq", settings],
                cwd=ROOT,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        worker = WorkerProcess(proc, log_path)
        started.append(worker)
        if ready:
            await worker.ready()
        return worker

    yield start
    for worker in started:
        if worker.alive():
            worker.signal(signal.SIGKILL)
            worker.wait(10)


@pytest.fixture
async def fault_tables(pool: asyncpg.Pool[asyncpg.Record]) -> None:
    """Empty run and effect counters for this test."""
    async with pool.acquire() as conn:
        await conn.execute(SCHEMA)
        await conn.execute(
            "TRUNCATE fault_runs, fault_effects, job_effects, job_claims, dead_letters"
        )


@pytest.fixture
def pg_proxy(config: Config) -> Iterator[Proxy]:
    parts = urlsplit(config.database_url)
    proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 5432).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def redis_proxy(config: Config) -> Iterator[Proxy]:
    parts = urlsplit(config.redis_url)
    proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 6379).start()
    yield proxy
    proxy.stop()


class Counters:
    """Reads the fault jobs' run and effect counters."""

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        self.pool = pool

    async def runs(self, key: str) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            "SELECT job_id, try, at FROM fault_runs WHERE key = $1 ORDER BY id", key
        )

    async def effects(self, key: str) -> int:
        count: int = await self.pool.fetchval(
            "SELECT count(*) FROM fault_effects WHERE key = $1", key
        )
        return count

    async def dead_letters(self) -> list[dict[str, Any]]:
        rows = await self.pool.fetch("SELECT * FROM dead_letters ORDER BY id")
        return [dict(r) for r in rows]


@pytest.fixture
def counters(pool: asyncpg.Pool[asyncpg.Record], fault_tables: None) -> Counters:
    return Counters(pool)
