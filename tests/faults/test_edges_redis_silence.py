"""A Redis peer that goes silent without closing the connection (power loss, a frozen VM, a
failover that moved the address, a load balancer's idle drop): the worker's reads time out after
REDIS_SOCKET_TIMEOUT, it reconnects and resumes; while everything stays silent, SIGTERM still ends
it within a bound."""

from __future__ import annotations

import asyncio
import signal
import socket
import urllib.error
import urllib.request
import uuid

import pytest
from arq.connections import ArqRedis

from tests.faults.conftest import Counters, Spawn, WorkerProcess, url_via, wait_until
from tests.faults.proxy import Proxy
from worker.config import Config

pytestmark = pytest.mark.faults

SOCKET_TIMEOUT = 2.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0  # not listening (yet, or any more)


async def healthz_is(port: int, status: int) -> bool:
    """Whether the worker's ``/healthz`` answers ``status`` now."""
    return await asyncio.to_thread(_status, f"http://127.0.0.1:{port}/healthz") == status


async def silent_worker(spawn: Spawn, config: Config, proxy: Proxy, port: int) -> WorkerProcess:
    return await spawn(
        REDIS_URL=url_via(config.redis_url, proxy.port),
        REDIS_SOCKET_TIMEOUT=str(SOCKET_TIMEOUT),
        METRICS_PORT=str(port),
        METRICS_HOST="127.0.0.1",
    )


async def test_a_worker_resumes_when_its_redis_connections_go_silent(
    config: Config,
    spawn: Spawn,
    arq_redis: ArqRedis,
    counters: Counters,
    redis_proxy: Proxy,
) -> None:
    port = _free_port()
    worker = await silent_worker(spawn, config, redis_proxy, port)
    await wait_until(lambda: healthz_is(port, 200), what="/healthz to answer 200")
    key = f"silence-{uuid.uuid4().hex[:8]}"
    during = await arq_redis.enqueue_job("fault_write", key=key, hold=1.0)
    assert during is not None
    await wait_until(lambda: counters.runs(key), what="the job to start")

    # Every open connection goes silent; a new one reaches Redis (the address moved on).
    redis_proxy.black_hole()

    after = [f"silence-after-{i}-{uuid.uuid4().hex[:8]}" for i in range(3)]
    jobs = [await arq_redis.enqueue_job("fault_write", key=k) for k in after]
    for k, job in zip(after, jobs, strict=True):
        assert job is not None
        assert (await job.result(timeout=10 * SOCKET_TIMEOUT))["key"] == k
        assert await counters.effects(k) == 1
    assert (await during.result(timeout=10 * SOCKET_TIMEOUT))["key"] == key
    assert await counters.effects(key) == 1
    await wait_until(lambda: healthz_is(port, 200), what="/healthz to answer 200 again")
    assert worker.alive()
    assert await counters.dead_letters() == []


async def test_sigterm_ends_a_worker_whose_redis_stays_silent(
    config: Config,
    spawn: Spawn,
    arq_redis: ArqRedis,
    counters: Counters,
    redis_proxy: Proxy,
) -> None:
    port = _free_port()
    worker = await silent_worker(spawn, config, redis_proxy, port)
    key = f"silent-{uuid.uuid4().hex[:8]}"
    running = await arq_redis.enqueue_job("fault_write", key=key, hold=1.0)
    assert running is not None
    await wait_until(lambda: counters.runs(key), what="the job to start")

    # Open connections and new ones alike: accepted, never answered.
    redis_proxy.black_hole(new_connections=True)
    await wait_until(lambda: healthz_is(port, 503), what="/healthz to report the stalled loop")
    await asyncio.sleep(3 * SOCKET_TIMEOUT)  # the silence itself: several socket timeouts
    assert worker.alive(), f"the worker exited during a short silence:\n{worker.log()}"

    worker.signal(signal.SIGTERM)
    code = await asyncio.to_thread(worker.wait, 30)  # raises TimeoutExpired if it hangs
    log = worker.log()
    assert not any(line.startswith("Traceback") for line in log.splitlines()), log
    if code != 0:
        last = log.strip().splitlines()[-1]
        assert "Redis" in last and "did not answer" in last, log
        assert url_via(config.redis_url, redis_proxy.port).split("//")[1] in last
