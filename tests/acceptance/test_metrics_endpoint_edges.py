"""The worker's metrics endpoint at its edges (a real worker subprocess): where it listens by
default, and requests over its bounds; and every log record of the process, whichever logger made
it (asyncpg's included), as one JSON line."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import textwrap

import pytest
import yaml

from tests.acceptance.conftest import ROOT, free_port, http_get
from tests.acceptance.test_compose import (
    COMPOSE_FILE,
    dockerfile_instructions,
    environment_of,
)
from tests.faults.conftest import Counters, Spawn, WorkerProcess, wait_until
from worker.config import load_config

pytestmark = pytest.mark.acceptance


def _exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` to 127.0.0.1:port and read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


async def exchange(port: int, request: bytes) -> bytes:
    return await asyncio.to_thread(_exchange, port, request)


def json_lines(log: str) -> list[dict[str, object]]:
    """Every line of a JSON log, parsed (fails the test on a line that is not one JSON object)."""
    parsed = []
    for line in log.splitlines():
        if line.strip():
            try:
                parsed.append(json.loads(line))
            except json.JSONDecodeError:
                raise AssertionError(f"not a JSON log line: {line!r}\n--- log:\n{log}") from None
    return parsed


async def listening_worker(spawn: Spawn) -> tuple[WorkerProcess, int]:
    port = free_port()
    worker = await spawn(METRICS_PORT=str(port), LOG_FORMAT="json")

    async def serving() -> bool:
        return "/readyz on http://" in worker.log()

    await wait_until(serving, timeout=20, what="the metrics endpoint")
    return worker, port


def test_the_endpoint_defaults_to_loopback_and_containers_set_every_interface() -> None:
    assert load_config(_env_file=None).metrics_host == "127.0.0.1"
    env = dict(
        pair.partition("=")[::2]
        for keyword, rest in dockerfile_instructions()
        if keyword == "ENV"
        for pair in rest.split()
    )
    assert env.get("METRICS_HOST") == "0.0.0.0", "the image sets the container's address"
    services = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["services"]
    assert environment_of(services["worker"])["METRICS_HOST"] == "0.0.0.0"
    assert "ports" not in services["worker"], "the worker's endpoint is never published"


async def test_a_worker_without_metrics_host_listens_on_loopback_only(
    spawn: Spawn, counters: Counters
) -> None:
    worker, port = await listening_worker(spawn)
    assert f"/readyz on http://127.0.0.1:{port}" in worker.log()
    listening = await asyncio.to_thread(
        subprocess.run, ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True
    )
    addresses = {line.split()[3] for line in listening.stdout.splitlines() if line.strip()}
    assert addresses == {f"127.0.0.1:{port}"}, listening.stdout


async def test_an_oversized_request_is_refused_without_a_traceback(
    spawn: Spawn, counters: Counters
) -> None:
    worker, port = await listening_worker(spawn)
    line = b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n"
    for _ in range(3):
        answer = await exchange(port, line)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    many = b"GET /healthz HTTP/1.1\r\n" + b"X-A: b\r\n" * 500 + b"\r\n"
    assert (await exchange(port, many)).startswith(b"HTTP/1.1 431 ")
    assert (await exchange(port, b"\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
    status, _ = await http_get(f"http://127.0.0.1:{port}/healthz")
    assert status == 200, "the endpoint still answers"
    log = worker.log()
    assert "Traceback" not in log and "ValueError" not in log, log
    assert "exc" not in {key for entry in json_lines(log) for key in entry}, log


# What the worker process does (worker/core/logs.py under arq's own configuration, as `arq
# worker.Settings` runs it), then a record of asyncpg's pool logger with a traceback, as asyncpg
# writes one when a pool connection is lost.
ASYNCPG_RECORD = textwrap.dedent(
    """
    import logging, logging.config
    from worker.core.logs import arq_log_config, configure_logging
    logging.config.dictConfig(arq_log_config("json", False))
    configure_logging("INFO", "json")
    try:
        raise ConnectionResetError("connection lost\\nsecond line")
    except ConnectionResetError:
        logging.getLogger("asyncpg.pool").warning(
            "A connection was lost:\\n  reconnecting", exc_info=True
        )
    logging.getLogger("arq.worker").info("an arq line")
    logging.getLogger("worker.runtime.consumer").info("a worker line")
    logging.getLogger("asyncio").error("an asyncio error")
    """
)


def test_a_record_of_any_logger_is_one_json_line() -> None:
    done = subprocess.run(
        [sys.executable, "-c", ASYNCPG_RECORD],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    entries = json_lines(done.stderr)
    assert [e["logger"] for e in entries] == [
        "asyncpg.pool",
        "arq.worker",
        "worker.runtime.consumer",
        "asyncio",
    ]
    lost = entries[0]
    assert lost["level"] == "WARNING" and lost["msg"] == "A connection was lost:\n  reconnecting"
    assert isinstance(lost["exc"], str) and "ConnectionResetError: connection lost" in lost["exc"]
