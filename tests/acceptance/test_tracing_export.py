"""``arq worker.Settings --burst`` with the standard OTEL_* variables: an OTLP endpoint set makes the
worker export its spans there (OTLP over HTTP, protobuf, to a receiver on 127.0.0.1), under
OTEL_SERVICE_NAME and in the trace the payload's ``traceparent`` names; OTEL_TRACES_EXPORTER=console
prints them; without the OpenTelemetry packages the worker runs untraced, and asking for tracing
then fails with one line that says what to install."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import asyncpg
import pytest
from arq.connections import ArqRedis
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.conftest import REDIS_URL
from worker.config import Config
from worker.queue.enqueue import enqueue_many

pytestmark = pytest.mark.acceptance

ROOT = Path(__file__).resolve().parents[2]
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"
# The worker as a machine without the tracing extra runs it: every opentelemetry import fails.
WITHOUT_OTEL = "import sys; sys.modules['opentelemetry'] = None; from arq.cli import cli; cli()"


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[bytes]]]:
    """An OTLP/HTTP receiver on 127.0.0.1: the bodies POSTed to /v1/traces."""
    bodies: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/v1/traces":
                bodies.append(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", bodies
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


async def burst(config: Config, argv: list[str], **extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in Config.model_fields and not k.startswith("OTEL_")
    }
    env.update(
        PYTHONPATH=str(ROOT),
        DATABASE_URL=config.database_url,
        REDIS_URL=REDIS_URL,
        QUEUE_NAME=config.queue_name,
        CRON_DEACTIVATE="",
        METRICS_PORT="0",
        POLL_DELAY="0.01",
        **extra,
    )
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def enqueue_traced(config: Config, arq_redis: ArqRedis) -> str:
    job_id = uuid.uuid4().hex
    job = {"f": "get_user", "a": [], "k": {"user_id": 4}, "traceparent": TRACEPARENT}
    await enqueue_many(arq_redis, config.queue_name, [(job_id, job)])
    return job_id


async def test_an_otlp_endpoint_receives_the_runs_spans(
    config: Config,
    arq_redis: ArqRedis,
    users: list[asyncpg.Record],
    receiver: tuple[str, list[bytes]],
) -> None:
    endpoint, bodies = receiver
    await enqueue_traced(config, arq_redis)
    done = await burst(
        config,
        ["-m", "arq", "worker.Settings", "--burst"],
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_SERVICE_NAME="billing-worker",
    )
    assert done.returncode == 0, done.stderr
    spans, services = [], set()
    for body in bodies:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            for attribute in resource_spans.resource.attributes:
                if attribute.key == "service.name":
                    services.add(attribute.value.string_value)
            for scope in resource_spans.scope_spans:
                spans.extend(scope.spans)
    assert services == {"billing-worker"}
    by_name = {span.name: span for span in spans}
    assert {"run get_user", "pool.connection", "pool.acquire", "SELECT"} <= set(by_name)
    run = by_name["run get_user"]
    assert run.trace_id.hex() == TRACE_ID and run.parent_span_id.hex() == TRACEPARENT[36:52]


async def test_console_prints_the_spans(
    config: Config, arq_redis: ArqRedis, users: list[asyncpg.Record]
) -> None:
    await enqueue_traced(config, arq_redis)
    done = await burst(
        config, ["-m", "arq", "worker.Settings", "--burst"], OTEL_TRACES_EXPORTER="console"
    )
    assert done.returncode == 0, done.stderr
    assert '"name": "run get_user"' in done.stdout
    assert f'"trace_id": "0x{TRACE_ID}"' in done.stdout


async def test_without_the_sdk_the_worker_runs_untraced(
    config: Config, arq_redis: ArqRedis, users: list[asyncpg.Record]
) -> None:
    job_id = await enqueue_traced(config, arq_redis)
    done = await burst(config, ["-c", WITHOUT_OTEL, "worker.Settings", "--burst"])
    assert done.returncode == 0, done.stderr
    assert await arq_redis.exists(f"arq:result:{job_id}")


async def test_without_the_sdk_asking_for_tracing_says_what_to_install(config: Config) -> None:
    done = await burst(
        config, ["-c", WITHOUT_OTEL, "worker.Settings", "--burst"], OTEL_TRACES_EXPORTER="console"
    )
    assert done.returncode != 0
    assert "pip install 'pgpool-worker[tracing]'" in done.stderr
    assert "Traceback" not in done.stderr
