"""Spans as the tests read them: the worker's ``run <job>`` span of one job, and the check that it
continues the producer's trace named by a W3C ``traceparent``."""

from __future__ import annotations

from opentelemetry.sdk.trace import ReadableSpan


def run_span(spans: list[ReadableSpan], job_id: object) -> ReadableSpan:
    """The one ``run <job>`` span of ``job_id``."""
    found = [
        s
        for s in spans
        if s.name.startswith("run ") and (s.attributes or {}).get("messaging.message.id") == job_id
    ]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def continues(span: ReadableSpan, traceparent: str, tracestate: str = "") -> None:
    """``span`` is a child of the producer's span that ``traceparent`` names, and succeeded."""
    assert span.parent is not None and span.parent.is_remote
    assert f"{span.context.trace_id:032x}" == traceparent[3:35]
    assert f"{span.parent.span_id:016x}" == traceparent[36:52]
    assert span.context.trace_state.to_header() == tracestate
    assert (span.attributes or {}).get("pgpool.job.outcome") == "succeeded"
