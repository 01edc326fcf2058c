"""The producer's half of tracing: the W3C trace context of the span active at enqueue, as the
payload's ``traceparent`` (and ``tracestate``) fields (docs/wire-format.md), which the worker's
run of the job continues (worker/runtime/tracing.py).

OpenTelemetry is never imported here: a process that has not imported it has no active span, so
without it (or with no span active) a payload gets no field and the check costs one dict look-up.
"""

from __future__ import annotations

import sys
from typing import Any

_propagator: Any = None


def trace_fields() -> dict[str, str] | None:
    """``{"traceparent": ..., "tracestate": ...}`` (tracestate only when there is one) for the
    span active now, or None when no valid span is active."""
    if "opentelemetry.trace" not in sys.modules:
        return None
    global _propagator
    if _propagator is None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        _propagator = TraceContextTextMapPropagator()
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)  # nothing when the current span's context is not valid
    return carrier or None
