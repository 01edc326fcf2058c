"""The PostgreSQL circuit breaker (worker/runtime/breaker.py) against the real server, reached through a
proxy that the test cuts off and restores."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import asyncpg
import pytest

from jobs.errors import PoolAcquireTimeout
from tests.faults.conftest import url_via
from tests.faults.proxy import Proxy
from worker.config import Config
from worker.runtime import breaker as breaker_module
from worker.runtime.breaker import PostgresBreaker
from worker.runtime.metrics import WorkerMetrics

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_proxy(config: Config) -> Iterator[Proxy]:
    parts = urlsplit(config.database_url)
    proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 5432).start()
    yield proxy
    proxy.stop()


def gauge(metrics: WorkerMetrics) -> float | None:
    return metrics.registry.get_sample_value("worker_postgres_breaker_open")


async def test_the_jobs_own_errors_leave_the_breaker_closed(config: Config) -> None:
    metrics = WorkerMetrics()
    breaker = PostgresBreaker(config.database_url, 2.0, metrics=metrics)
    assert not await breaker.unreachable(ValueError("not a connection error"))
    assert breaker._probe is None  # not even probed
    # A connection error while the server answers a fresh connection: the job's own, charged.
    assert not await breaker.unreachable(ConnectionResetError("the job's own socket"))
    assert not await breaker.unreachable(PoolAcquireTimeout(timeout=1, max_size=2))
    assert not breaker.open and gauge(metrics) == 0


async def test_it_opens_while_postgres_is_unreachable_and_closes_when_it_answers(
    config: Config,
    pg_proxy: Proxy,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(breaker_module, "PROBE_FIRST", 0.05)
    monkeypatch.setattr(breaker_module, "PROBE_FRESH", 0.0)
    woken = asyncio.Event()
    metrics = WorkerMetrics()
    url = url_via(config.database_url, pg_proxy.port)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    breaker = PostgresBreaker(url, 2.0, pool, metrics)
    breaker.on_close.append(woken.set)
    task = asyncio.create_task(breaker.run())
    try:
        pg_proxy.cut()
        caplog.set_level(logging.INFO, "worker.runtime.breaker")
        # Many jobs failing at once share one probe; the first of them already has its try back.
        answers = await asyncio.gather(
            *(breaker.unreachable(ConnectionRefusedError("refused")) for _ in range(20))
        )
        assert answers == [True] * 20
        assert breaker.open and gauge(metrics) == 1
        assert breaker.state()["open"] and "ConnectionRefusedError" in breaker.state()["reason"]
        assert await breaker.unreachable(asyncpg.CannotConnectNowError("starting up"))
        assert not await breaker.unreachable(ValueError("still the job's own"))
        await asyncio.sleep(0.3)  # probes go on failing: the breaker stays open
        assert breaker.open

        pg_proxy.restore()
        await asyncio.wait_for(woken.wait(), 10)  # the consumer's wake-up
        assert not breaker.open and gauge(metrics) == 0
        assert await pool.fetchval("SELECT 1") == 1  # the pool's connections were replaced
        messages = [r.getMessage() for r in caplog.records if r.name == "worker.runtime.breaker"]
        assert any("unreachable (ConnectionRefusedError" in m for m in messages), messages
        assert any("reachable again" in m for m in messages), messages
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pool.close()


async def test_the_logged_url_is_masked(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    breaker = PostgresBreaker(f"postgresql://postgres:hunter2-secret@127.0.0.1:{port}/x", 1.0)
    caplog.set_level(logging.WARNING, "worker.runtime.breaker")
    assert await breaker.unreachable(OSError("refused"))
    text = " ".join(r.getMessage() for r in caplog.records) + str(breaker.state())
    assert "hunter2-secret" not in text and "***" in text
