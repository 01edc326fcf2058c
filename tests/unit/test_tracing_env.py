"""Which OTEL_* variables switch tracing on (worker/runtime/tracing.py), and that the wire codec
takes a payload's trace context as an ordinary field (docs/wire-format.md)."""

from __future__ import annotations

import pytest

from worker.errors import ConfigError
from worker.queue.codec import POISON_JOB, job_decoder, serialize
from worker.runtime.tracing import exporters_of, tracing_from_env

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("environ", "exporters"),
    [
        ({}, []),
        ({"OTEL_SERVICE_NAME": "billing"}, []),
        ({"OTEL_TRACES_EXPORTER": "none"}, []),
        ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
        ({"OTEL_TRACES_EXPORTER": "otlp, console"}, ["otlp", "console"]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_TRACES_EXPORTER": "none"}, []),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, []),
    ],
)
def test_the_standard_variables_switch_tracing_on(
    environ: dict[str, str], exporters: list[str]
) -> None:
    assert exporters_of(environ) == exporters


def test_off_by_default_without_touching_the_sdk() -> None:
    assert tracing_from_env({}, "arq:queue") is None


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER: zipkin is not one of"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "http/protobuf only",
        ),
    ],
)
def test_an_exporter_this_worker_lacks_is_a_config_error(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        exporters_of(environ)


@pytest.mark.parametrize(
    "fields",
    [
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        {
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "tracestate": "a=1",
        },
        {"traceparent": "garbage"},
        {"traceparent": 42},
    ],
)
def test_a_trace_context_in_the_payload_is_no_poison(fields: dict[str, object]) -> None:
    job = {"f": "get_user", "a": [], "k": {"user_id": 1}, "et": 1764057600123, "t": None, **fields}
    decoded = job_decoder(["get_user"])(serialize(job))
    assert decoded["f"] != POISON_JOB and decoded == job
