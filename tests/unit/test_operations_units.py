"""Unit tests of the operations helpers: log formats, metrics, records, masking."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import asyncpg
import pytest

from jobs.errors import PoolAcquireTimeout
from worker.core.logs import JsonFormatter, arq_log_config, job_event, use_json
from worker.core.masking import REDACTED
from worker.ops.job_arguments import shown_arguments
from worker.queue.health import assess, record_ttl, throughput
from worker.runtime.metrics import WorkerMetrics

pytestmark = pytest.mark.unit


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_format_is_json_off_a_terminal_and_text_on_one() -> None:
    assert use_json("auto", io.StringIO()) is True
    assert use_json("auto", Tty()) is False
    assert use_json("json", Tty()) is True
    assert use_json("text", io.StringIO()) is False


def test_json_formatter_writes_one_object_with_the_event_fields() -> None:
    record = logging.LogRecord(
        "worker.runtime.consumer", logging.DEBUG, __file__, 1, "job %s", ("a",), None
    )
    fields = job_event("a", "get_user", 2, 0.0123456789, "succeeded", 0.5, None)
    record.__dict__.update(fields)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["msg"] == "job a" and data["level"] == "DEBUG" and data["ts"].endswith("Z")
    assert {k: data[k] for k in fields} == {
        "event": "job",
        "job_id": "a",
        "function": "get_user",
        "try": 2,
        "outcome": "succeeded",
        "duration": 0.012346,
        "queue_wait": 0.5,
    }


def test_job_event_names_the_error_type_only() -> None:
    fields = job_event("a", "f", 1, None, "failed", error=ValueError("password=hunter2"))
    assert fields["error"] == "ValueError" and "duration" not in fields
    assert "hunter2" not in json.dumps(fields)


def test_arq_log_config_follows_the_format() -> None:
    assert "()" in arq_log_config("json", verbose=False)["formatters"]["arq"]
    text = arq_log_config("text", verbose=True)
    assert text["formatters"]["arq"]["format"] == "%(asctime)s: %(message)s"
    assert text["loggers"]["arq"]["level"] == "DEBUG"


def sample(metrics: WorkerMetrics, name: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


def test_each_worker_has_its_own_registry() -> None:
    one, two = WorkerMetrics(), WorkerMetrics()
    one.job("get_user").started.inc()
    assert sample(one, "worker_jobs_started_total", {"function": "get_user"}) == 1
    assert sample(two, "worker_jobs_started_total", {"function": "get_user"}) == 0
    assert one.job("get_user") is one.job("get_user")  # bound once


def test_postgres_errors_are_counted_by_type_and_others_are_not() -> None:
    metrics = WorkerMetrics()
    metrics.postgres_error(asyncpg.DeadlockDetectedError("deadlock"))
    metrics.postgres_error(PoolAcquireTimeout(timeout=1, max_size=2))
    metrics.postgres_error(ValueError("not the database"))
    metrics.postgres_error(ConnectionResetError())
    assert sample(metrics, "worker_postgres_errors_total", {"error": "DeadlockDetectedError"}) == 1
    assert sample(metrics, "worker_postgres_errors_total", {"error": "PoolAcquireTimeout"}) == 1
    assert sample(metrics, "worker_postgres_errors_total", {"error": "ValueError"}) == 0


def test_acquire_hook_observes_waits_and_counts_timeouts() -> None:
    metrics = WorkerMetrics()
    metrics.observe_acquire(0.002, True)
    metrics.observe_acquire(5.0, False)
    assert sample(metrics, "worker_pool_acquire_wait_seconds_count") == 2
    assert sample(metrics, "worker_pool_acquire_wait_seconds_bucket", {"le": "0.0025"}) == 1
    assert sample(metrics, "worker_pool_acquire_timeouts_total") == 1
    assert metrics.last_acquire > 0


def test_exposition_has_no_created_series() -> None:
    metrics = WorkerMetrics()
    metrics.job("get_user").succeeded.inc()
    text = metrics.exposition().decode()
    assert 'worker_jobs_succeeded_total{function="get_user"} 1.0' in text
    assert "_created" not in text


def record(**overrides: Any) -> dict[str, Any]:
    base = {"heartbeat": 100.0, "liveness_window": 3.0, "ready": True, "state": "running"}
    return {**base, **overrides}


def test_a_record_is_live_while_its_heartbeat_is_fresh_or_it_drains() -> None:
    assert assess(record(), now=102.0)["healthy"] is True
    stale = assess(record(), now=104.0)
    assert stale["live"] is False and stale["healthy"] is False and stale["heartbeat_age"] == 4.0
    assert assess(record(state="draining"), now=200.0)["live"] is True
    assert assess(record(ready=False), now=101.0) | {} == {
        **record(ready=False),
        "heartbeat_age": 1.0,
        "live": True,
        "healthy": False,
    }
    assert record_ttl(10) > 3 * 10  # a killed worker stays listed, as not live, for a while


def test_throughput_sums_workers_per_bucket() -> None:
    # [time, complete, failed, running, pool in use]
    one = {"history": [[0, 0, 0, 0, 1], [10, 100, 1, 2, 2], [20, 300, 1, 2, 4]]}
    two = {"history": [[1, 50, 0, 0, 0], [11, 150, 0, 1, 1]]}
    assert throughput([one, two], bucket=10, now=35) == [
        {"t": 10.0, "jobs_per_s": 20.0, "failed_per_s": 0.1, "pool_in_use": 3.0},
        {"t": 20.0, "jobs_per_s": 20.0, "failed_per_s": 0.0, "pool_in_use": 4.0},
    ]
    assert throughput([one, two], bucket=10, now=25) == throughput([one, two], 10, 35)[:1]
    assert throughput([{"history": []}, {}]) == []


def test_a_job_the_registry_does_not_know_has_every_argument_masked() -> None:
    # fault_write is the fault suite's, not the registry's: which of its arguments are secret is
    # not known here, so none is shown (as in its stored result); a known job's are shown.
    shown = shown_arguments("fault_write", ["p"], {"key": "k", "token": "t"})
    assert shown == {"args": [REDACTED], "kwargs": {"key": REDACTED, "token": REDACTED}}
    assert shown_arguments("get_user", [42], {"user_id": 42}) == {
        "args": [42],
        "kwargs": {"user_id": 42},
    }
    assert shown_arguments("get_user", "not a list", None) == {"args": [], "kwargs": {}}
