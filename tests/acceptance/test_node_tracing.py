"""Jobs the TypeScript client (clients/node) enqueued with a trace context are continued by a real
tracing worker: each ``run <job>`` span has the producer's trace id, its parent span id and its
tracestate, whether the context was given as the ``traceparent`` option (``enqueue`` and
``enqueueMany``) or taken from the active span of ``@opentelemetry/api``; and a copy of the client
installed without ``@opentelemetry/api`` (an optional peer dependency) enqueues as before.

Node.js 20 or later with npm is required (see tests/acceptance/test_node_client.py)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import asyncpg
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bench import node_client
from bench.node_client import NODE_DIR
from tests.conftest import RunWorker
from tests.tracing_spans import continues, run_span
from worker.config import Config
from worker.runtime.tracing import TRACING_KEY, JobTracing

pytestmark = pytest.mark.acceptance

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
GIVEN = f"00-{TRACE_ID}-b7ad6b7169203331-01"
MANY = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
SPAN = "00-5bf92f3577b34da6a3ce929d0e0e4736-10f067aa0ba902b7-01"  # the active span's
WITHOUT_OTEL = "00-6bf92f3577b34da6a3ce929d0e0e4736-20f067aa0ba902b7-01"

# Enqueues get_user jobs with a trace context given and from an active span; prints their ids.
ENQUEUE_TRACED = f"""
import {{ AsyncLocalStorage }} from "node:async_hooks";
import {{ ROOT_CONTEXT, context, createTraceState, trace }} from "@opentelemetry/api";
import {{ JobClient }} from "pgpool-worker-client";

const storage = new AsyncLocalStorage(); // what an OpenTelemetry SDK registers
context.setGlobalContextManager({{
  active: () => storage.getStore() ?? ROOT_CONTEXT,
  with: (ctx, fn, thisArg, ...args) => storage.run(ctx, () => fn.call(thisArg, ...args)),
  bind: (_ctx, target) => target,
  enable() {{ return this; }},
  disable() {{ return this; }},
}});
const client = await JobClient.connect();
const given = await client.getUser({{ user_id: 1 }}, {{ traceparent: "{GIVEN}", tracestate: "k=v" }});
const many = await client.enqueueMany("get_user", [{{ user_id: 2 }}, {{ user_id: 3 }}],
  {{ traceparent: "{MANY}" }});
const span = trace.wrapSpanContext({{ traceId: "{SPAN[3:35]}", spanId: "{SPAN[36:52]}",
  traceFlags: 1, traceState: createTraceState("vendor=abc") }});
const active = await context.with(trace.setSpan(context.active(), span),
  () => client.getUser({{ user_id: 4 }}));
await client.close();
console.log(JSON.stringify({{ given: given.id, many: many.map((j) => j.id), active: active.id }}));
"""

# The same client without @opentelemetry/api: the option still works, and no span is looked for.
ENQUEUE_WITHOUT_OTEL = f"""
import {{ JobClient }} from "pgpool-worker-client";
const found = await import("@opentelemetry/api").then(() => true, () => false);
if (found) throw new Error("@opentelemetry/api is installed here");
const client = await JobClient.connect();
const given = await client.getUser({{ user_id: 5 }}, {{ traceparent: "{WITHOUT_OTEL}" }});
const plain = await client.getUser({{ user_id: 6 }});
await client.close();
console.log(JSON.stringify({{ given: given.id, plain: plain.id }}));
"""


@pytest.fixture(scope="module")
def node() -> str:
    try:
        return node_client.built_client()
    except node_client.NodeUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


def without_otel(tmp_path: Path) -> Path:
    """A project with the built client installed in its node_modules, and the client's own
    dependencies but @opentelemetry/api."""
    modules = tmp_path / "node_modules"
    package = modules / "pgpool-worker-client"
    package.mkdir(parents=True)
    shutil.copy(NODE_DIR / "package.json", package / "package.json")
    shutil.copytree(NODE_DIR / "dist", package / "dist")
    for entry in (NODE_DIR / "node_modules").iterdir():
        if entry.name not in ("@opentelemetry", ".package-lock.json"):
            (modules / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    return tmp_path


async def run_node(node: str, script: str, cwd: Path, config: Config) -> dict[str, object]:
    env = {**os.environ, "REDIS_URL": config.redis_url, "QUEUE_NAME": config.queue_name}
    argv = [node, "--input-type=module", "--eval", script]
    done = await asyncio.to_thread(
        subprocess.run,
        argv,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    ids: dict[str, object] = json.loads(done.stdout)
    return ids


@pytest.mark.timeout(300)
async def test_a_tracing_worker_continues_the_node_clients_trace(
    node: str,
    tmp_path: Path,
    config: Config,
    run_worker: RunWorker,
    users: list[asyncpg.Record],
    exporter: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    traced = await run_node(node, ENQUEUE_TRACED, NODE_DIR, config)
    plain = await run_node(node, ENQUEUE_WITHOUT_OTEL, without_otel(tmp_path), config)
    provider, exported = exporter
    await run_worker(ctx={"config": config, TRACING_KEY: JobTracing(provider, config.queue_name)})

    spans = list(exported.get_finished_spans())
    continues(run_span(spans, traced["given"]), GIVEN, "k=v")
    assert isinstance(traced["many"], list) and len(traced["many"]) == 2
    for job_id in traced["many"]:
        continues(run_span(spans, job_id), MANY)
    continues(run_span(spans, traced["active"]), SPAN, "vendor=abc")
    continues(run_span(spans, plain["given"]), WITHOUT_OTEL)
    assert run_span(spans, plain["plain"]).parent is None  # no context: a trace of its own
    outcomes = {
        (s.attributes or {}).get("pgpool.job.outcome") for s in spans if s.name[:4] == "run "
    }
    assert outcomes == {"succeeded"}
