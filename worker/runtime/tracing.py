"""OpenTelemetry tracing of job runs: off unless the standard ``OTEL_*`` variables switch it on.

``tracing_from_env`` reads them at startup (None: off, and the OpenTelemetry SDK is never
imported). On, the worker continues the trace a producer put in the payload (W3C ``traceparent``
and ``tracestate``, docs/wire-format.md): one span per try of a job (``run <job name>``, a child of
the producer's span), a ``queue wait`` span beside it (from the job's due time to its start), and,
under the job's span, one ``pool.connection`` span per connection a job takes (jobs/context.py), with
``pool.acquire`` (the wait for it) and one span per query (asyncpg's query logger) as children.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

from worker.core.version import package_version
from worker.errors import ConfigError
from worker.runtime.completer import Outcome

if TYPE_CHECKING:
    from asyncpg.connection import LoggedQuery
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span

    from jobs.context import Conn

TRACING_KEY = "tracing"  # ctx: the JobTracing (tests inject one built on their own provider)
SERVICE_NAME = "pgpool-worker"  # service.name unless OTEL_SERVICE_NAME (or the resource) names one
EXPORTERS = ("otlp", "console")
INSTALL = "install the OpenTelemetry SDK: pip install 'pgpool-worker[tracing]'"


def exporters_of(environ: Mapping[str, str]) -> list[str]:
    """The span exporters the environment asks for ([] when tracing is off): OTEL_TRACES_EXPORTER
    (a comma-separated list; "none" is off), else "otlp" when an OTLP endpoint is set. Off when
    OTEL_SDK_DISABLED is true. Raises ConfigError for an exporter this worker does not have."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not named:
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        return ["otlp"] if endpoint else []
    names = [name.strip() for name in named.split(",") if name.strip()]
    if names == ["none"]:
        return []
    unknown = sorted(set(names) - set(EXPORTERS))
    if unknown:
        raise ConfigError(
            details=f"OTEL_TRACES_EXPORTER: {', '.join(unknown)} is not one of "
            f"{', '.join(EXPORTERS)}, none"
        )
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if "otlp" in names and protocol != "http/protobuf":
        raise ConfigError(
            details=f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r}; this worker exports OTLP over "
            "http/protobuf only"
        )
    return names


def tracing_from_env(environ: Mapping[str, str], queue: str) -> JobTracing | None:
    """The worker's tracing as the environment configures it, or None (off). On, it sets the
    global tracer provider too, so that spans a job's own code starts nest under its run."""
    names = exporters_of(environ)
    if not names:
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SpanExporter,
        )
    except ImportError:
        raise ConfigError(details=f"OTEL_TRACES_EXPORTER={','.join(names)}: {INSTALL}") from None
    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    provider = TracerProvider(resource=resource)  # OTEL_TRACES_SAMPLER and its argument
    for name in names:
        exporter: SpanExporter = ConsoleSpanExporter()
        if name == "otlp":
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            except ImportError:
                raise ConfigError(details=f"OTEL_TRACES_EXPORTER=otlp: {INSTALL}") from None
            exporter = OTLPSpanExporter()  # OTEL_EXPORTER_OTLP_* (endpoint, headers, timeout)
        provider.add_span_processor(BatchSpanProcessor(exporter))  # OTEL_BSP_*
    trace.set_tracer_provider(provider)
    return JobTracing(provider, queue, owned=True)


class JobTracing:
    """The spans of job runs and of their connections and queries (see the module docstring)."""

    def __init__(self, provider: TracerProvider, queue: str, owned: bool = False) -> None:
        from opentelemetry.trace import SpanKind, Status, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        self.owned = owned  # shut down with the worker (tracing_from_env's own provider)
        self.queue = queue
        self.tracer = provider.get_tracer("pgpool-worker", package_version())
        self.propagator = TraceContextTextMapPropagator()
        self.kinds, self.error = SpanKind, (Status, StatusCode.ERROR)

    def parent(self, job: Mapping[str, Any]) -> Context | None:
        """The producer's context from the payload's ``traceparent`` and ``tracestate``; None
        when there is none or it is malformed (the run then starts a new trace)."""
        from opentelemetry.context import Context
        from opentelemetry.trace import get_current_span

        carrier = {k: v for k in ("traceparent", "tracestate") if type(v := job.get(k)) is str}
        if "traceparent" not in carrier:
            return None
        try:
            context = self.propagator.extract(carrier, Context())
        except Exception:  # noqa: BLE001  (a producer's bad header never fails the job)
            return None
        return context if get_current_span(context).get_span_context().is_valid else None

    async def traced(
        self, call: Awaitable[Outcome], job: Mapping[str, Any], job_id: str, name: str,
        job_try: int, due_ms: int, start_ms: int, error: Callable[[], BaseException | None],
    ) -> Outcome:  # fmt: skip
        """Await ``call`` (the run of a job's try) inside its span; ``error()`` is the exception
        the run ended with (None when it succeeded)."""
        from opentelemetry.context import Context

        parent = self.parent(job)
        attributes: dict[str, Any] = {
            "messaging.system": "arq",
            "messaging.operation.type": "process",
            "messaging.destination.name": self.queue,
            "messaging.message.id": job_id,
            "pgpool.job.name": name,
            "pgpool.job.try": job_try,
            "pgpool.job.queue_wait_s": max(start_ms - due_ms, 0) / 1000,
        }
        if parent is None:
            parent = Context()  # a root span, whatever context the consumer's task has
        elif start_ms > due_ms > 0:
            wait = self.tracer.start_span(
                "queue wait", parent, attributes=attributes, start_time=due_ms * 1_000_000
            )
            wait.end(end_time=start_ms * 1_000_000)
        with self.tracer.start_as_current_span(
            f"run {name}", parent, kind=self.kinds.CONSUMER, attributes=attributes
        ) as span:
            try:
                outcome = await call
            except asyncio.CancelledError:  # the worker's shutdown: the job is re-queued
                span.set_attribute("pgpool.job.outcome", "requeued")
                raise
            self.outcome(span, outcome, error())
            return outcome

    def outcome(self, span: Span, outcome: Outcome, error: BaseException | None) -> None:
        """How the try ended on its span: ``pgpool.job.outcome``, the exception, the status."""
        kind = outcome.kind
        if kind == "retry":
            status = "retried"
        elif outcome.aborted:
            status = "aborted"
        else:
            status = "succeeded" if outcome.failure is None else "failed"
        span.set_attribute("pgpool.job.outcome", status)
        if kind == "retry" and outcome.new_score is not None:
            span.set_attribute("pgpool.job.retry_at_ms", outcome.new_score)
        if error is not None:
            span.record_exception(error)
        if status in ("failed", "aborted"):
            status_class, code = self.error
            span.set_status(status_class(code, type(error).__name__ if error else status))

    def connection(
        self, pooled: AbstractAsyncContextManager[Conn]
    ) -> AbstractAsyncContextManager[Conn]:
        """``pooled`` (jobs/context.py's acquire and release) inside a ``pool.connection`` span,
        with the acquire and each query as child spans."""
        return self._connection(pooled)

    @asynccontextmanager
    async def _connection(self, pooled: AbstractAsyncContextManager[Conn]) -> AsyncIterator[Conn]:
        from opentelemetry.trace import set_span_in_context

        tracer = self.tracer
        with tracer.start_as_current_span("pool.connection") as span:
            async with AsyncExitStack() as stack:
                with tracer.start_as_current_span("pool.acquire"):
                    conn = await stack.enter_async_context(pooled)
                if not span.is_recording():  # not sampled: no query spans to make
                    yield conn
                    return
                log = self._query_log(set_span_in_context(span))
                conn.add_query_logger(log)
                try:
                    yield conn
                finally:
                    conn.remove_query_logger(log)

    def _query_log(self, parent: Context) -> Any:
        """asyncpg's query logger for one connection: a span per query, timed by asyncpg."""
        tracer, client, error = self.tracer, self.kinds.CLIENT, self.error

        def log(record: LoggedQuery) -> None:
            end = time.time_ns()
            query = record.query
            operation = query.split(None, 1)[0].upper() if query.strip() else "query"
            span = tracer.start_span(
                operation,
                parent,
                kind=client,
                start_time=end - int(record.elapsed * 1e9),
                attributes={
                    "db.system.name": "postgresql",
                    "db.operation.name": operation,
                    "db.query.text": query,  # $n placeholders: never the values
                },
            )
            exc = record.exception
            if exc is not None:
                span.record_exception(exc)
                span.set_status(error[0](error[1], type(exc).__name__))
            span.end(end_time=end)

        return log

    async def shutdown(self) -> None:
        """Export what is pending and stop (only the provider this worker made)."""
        if self.owned:
            await asyncio.to_thread(self.provider.shutdown)
