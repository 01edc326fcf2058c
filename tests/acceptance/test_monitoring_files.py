"""The dashboard service, the `monitoring` compose profile (Prometheus, Grafana) and the Grafana
dashboard, checked without a Docker engine: every metric a panel queries is one the worker exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.acceptance.test_compose import as_argv, defaults_in, environment_of
from worker.config import Config
from worker.runtime.flow_metrics import FlowGauges
from worker.runtime.metrics import WorkerMetrics

pytestmark = pytest.mark.acceptance

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "docs" / "grafana-dashboard.json"
PROMETHEUS = ROOT / "deploy" / "prometheus.yml"
METRIC = re.compile(r"\b(worker_[a-z_]+)\b")


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    found: dict[str, Any] = document["services"]
    return found


def exported() -> set[str]:
    """Every sample name a worker's registry exposes (counters with ``_total``, histograms with
    their ``_bucket``, ``_count`` and ``_sum``), the flow-control gauges included (the endpoint
    registers them on the same registry: worker/runtime/operations.py)."""
    metrics = WorkerMetrics()
    metrics.job("get_user")
    FlowGauges(metrics.registry)
    names = set()
    for family in metrics.registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_count", "_sum"))
    return names


def test_dashboard_service_serves_the_dashboard_read_only(services: dict[str, Any]) -> None:
    dashboard = services["dashboard"]
    argv = as_argv(dashboard["command"])
    assert argv[:4] == ["python", "-m", "worker", "dashboard"]
    port = argv[argv.index("--port") + 1]
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert dashboard["healthcheck"]["test"] == [
        "CMD",
        *["python", "-m", "worker", "health", "--url", f"http://127.0.0.1:{port}/healthz"],
    ]
    assert dashboard["ports"] == [f"127.0.0.1:${{DASHBOARD_PORT:-8080}}:{port}"]
    assert dashboard["build"] == services["worker"]["build"]
    worker_env, env = environment_of(services["worker"]), environment_of(dashboard)
    shared = set(worker_env) - {"DATABASE_URL"}
    assert {k: env.get(k) for k in shared} == {
        k: worker_env[k] for k in shared
    }  # same queue, Redis
    # It reads the dead letters as the worker's least-privilege role, straight from PostgreSQL.
    assert (env["DATABASE_URL"] or "").startswith("postgresql://${WORKER_DB_ROLE:-worker_app}:")


def test_monitoring_profile_runs_prometheus_and_grafana(services: dict[str, Any]) -> None:
    profiled = {name for name, s in services.items() if "monitoring" in s.get("profiles", [])}
    assert profiled == {"prometheus", "grafana"}
    assert not services["worker"].get("profiles"), "the worker runs without the profile"
    prometheus = services["prometheus"]
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    assert prometheus["depends_on"] == {"worker": {"condition": "service_healthy"}}
    grafana = services["grafana"]
    assert any(v.startswith("./docs/grafana-dashboard.json:") for v in grafana["volumes"])
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    for name in ("prometheus", "grafana"):
        for mount in services[name]["volumes"]:
            source = mount.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_prometheus_scrapes_every_worker_replica_on_the_metrics_port(
    services: dict[str, Any],
) -> None:
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    [job] = config["scrape_configs"]
    [sd] = job["dns_sd_configs"]
    assert sd["names"] == ["worker"] and sd["type"] == "A"
    [(variable, _, default)] = defaults_in(environment_of(services["worker"])["METRICS_PORT"] or "")
    assert variable == "METRICS_PORT"
    assert sd["port"] == int(default) == Config.model_fields["metrics_port"].default


def test_grafana_dashboard_queries_only_exported_metrics() -> None:
    dashboard = json.loads(GRAFANA.read_text(encoding="utf-8"))
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(exprs) >= 20
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    known = exported()
    assert used <= known, f"not exported by the worker: {sorted(used - known)}"
    # The list: every one of these is on the dashboard.
    for wanted in (
        "worker_jobs_started_total",
        "worker_jobs_succeeded_total",
        "worker_jobs_failed_total",
        "worker_jobs_retried_total",
        "worker_jobs_dead_lettered_total",
        "worker_job_duration_seconds_bucket",
        "worker_queue_jobs",
        "worker_queue_oldest_due_job_age_seconds",
        "worker_jobs_in_progress",
        "worker_pool_connections",
        "worker_pool_max_size",
        "worker_pool_acquire_wait_seconds_bucket",
        "worker_redis_errors_total",
        "worker_postgres_errors_total",
    ):
        assert wanted in used, f"{wanted} is on no panel"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "job"}
