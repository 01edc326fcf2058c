"""deploy/prometheus-alerts.yml: the rules parse, cover what operators must hear about, and name
only metrics, labels and label values that a worker exports: checked against the metric
definitions offline and against a real worker's /metrics, and by ``promtool check rules`` /
``promtool test rules`` (Debian's ``prometheus`` package, which ``make test-deps`` installs)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from arq.connections import ArqRedis
from prometheus_client.parser import text_string_to_metric_families

from tests.acceptance.conftest import free_port, http_get
from tests.acceptance.promql_selectors import Selector, selectors
from tests.acceptance.test_monitoring_files import exported
from tests.faults.conftest import Spawn, wait_until

pytestmark = pytest.mark.acceptance

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus-alerts.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus.yml"
ALERT_TESTS = Path(__file__).parent / "prometheus_alerts_test.yml"
SCALED_OBJECT = ROOT / "deploy" / "kubernetes" / "scaledobject.yaml"
JOB = "pgpool-worker"  # the scrape job of deploy/prometheus.yml and docs/kubernetes.md
# Prometheus' own series, and the labels every scraped series gets from its target.
PROMETHEUS_SERIES = {"up"}
TARGET_LABELS = {"job", "instance"}
# What the issue asks the rules to watch, as the metric each one reads.
WATCHED = {
    "the oldest due job's age": "worker_queue_oldest_due_job_age_seconds",
    "dead letters": "worker_jobs_dead_lettered_total",
    "pool saturation": "worker_pool_connections",
    "a worker down": "up",
    "outbox lag": "worker_outbox_oldest_unrelayed_age_seconds",
    "flow-control blocked jobs growing": "worker_flow_blocked",
}


# The rules of WATCHED that prometheus_alerts_test.yml must see fire.
WATCHED_RULES = (
    "PgpoolWorkerOldestDueJobWaiting",
    "PgpoolWorkerDeadLetters",
    "PgpoolWorkerPoolSaturated",
    "PgpoolWorkerDown",
    "PgpoolWorkerOutboxLag",
    "PgpoolWorkerFlowBlockedGrowing",
)


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def keda_query() -> str:
    scaled = yaml.safe_load(SCALED_OBJECT.read_text(encoding="utf-8"))
    [trigger] = scaled["spec"]["triggers"]
    query: str = trigger["metadata"]["query"]
    return query


def all_selectors() -> list[tuple[str, Selector]]:
    """(where, selector) for every alert's expression and KEDA's query."""
    found = [(rule["alert"], s) for rule in rules() for s in selectors(rule["expr"])]
    return found + [("KEDA ScaledObject", s) for s in selectors(keda_query())]


def test_the_promtool_rule_tests_cover_every_rule() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))
    assert tests["rule_files"] == ["../../deploy/prometheus-alerts.yml"]
    fired = {
        case["alertname"]
        for test in tests["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert fired >= set(WATCHED_RULES), sorted(set(WATCHED_RULES) - fired)


def test_alert_rules_are_well_formed() -> None:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    assert set(document) == {"groups"}
    found = rules()
    names = [rule["alert"] for rule in found]
    assert len(names) == len(set(names)) >= len(WATCHED)
    for rule in found:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert str(rule.get("for", "1m"))[-1] in "smh", rule["alert"]
        # Every selector is of the workers' scrape job: another job's `up` is no worker.
        for selector in selectors(rule["expr"]):
            assert ("job", "=", JOB) in selector.matchers, (rule["alert"], selector)


def test_alert_rules_watch_what_the_issue_lists() -> None:
    used = {s.metric for _, s in all_selectors()}
    missing = {what: metric for what, metric in WATCHED.items() if metric not in used}
    assert not missing, f"no rule watches: {missing}"


def test_alert_rules_and_keda_name_only_exported_metrics() -> None:
    known = exported() | PROMETHEUS_SERIES
    unknown = {(where, s.metric) for where, s in all_selectors() if s.metric not in known}
    assert not unknown, f"not exported by the worker: {sorted(unknown)}"


def test_prometheus_loads_the_alert_rules_compose_mounts() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    [path] = config["rule_files"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    mounts = compose["services"]["prometheus"]["volumes"]
    assert f"./deploy/prometheus-alerts.yml:{path}:ro" in mounts
    assert {job["job_name"] for job in config["scrape_configs"]} == {JOB}


def test_promtool_accepts_the_rules_and_they_fire() -> None:
    """``promtool check rules``, and ``promtool test rules`` with prometheus_alerts_test.yml:
    series as a worker exports them, and the alerts (labels, summaries) they fire, and when."""
    promtool = shutil.which("promtool")
    assert promtool is not None, (
        "promtool is missing: `make test-deps` installs it (Debian: prometheus)"
    )
    for argv in (["check", "rules", str(ALERTS)], ["test", "rules", str(ALERT_TESTS)]):
        done = subprocess.run(
            [promtool, *argv], check=False, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr


def scraped_families(text: str) -> dict[str, set[frozenset[tuple[str, str]]]]:
    """Every sample name of a scrape (and each family's name), with the label sets it has."""
    found: dict[str, set[frozenset[tuple[str, str]]]] = {}
    for family in text_string_to_metric_families(text):
        found.setdefault(family.name, set())
        if family.type == "counter":
            found.setdefault(family.name + "_total", set())
        for sample in family.samples:
            labels = frozenset(sample.labels.items())
            found.setdefault(sample.name, set()).add(labels)
            found.setdefault(family.name, set()).add(labels)
    return found


def unmatched(selector: Selector, families: dict[str, set[frozenset[tuple[str, str]]]]) -> str:
    """Why ``selector`` would select nothing of this scrape ('' when it would)."""
    if selector.metric in PROMETHEUS_SERIES:
        extra = {label for label, _, _ in selector.matchers} - TARGET_LABELS
        return f"labels {sorted(extra)} on Prometheus' {selector.metric}" if extra else ""
    if selector.metric not in families:
        return f"{selector.metric} is not served"
    label_sets = families[selector.metric]
    names = {name for labels in label_sets for name, _ in labels}
    for label, op, value in selector.matchers:
        if label in TARGET_LABELS:
            continue
        if label_sets and label not in names:
            return f"{selector.metric} has no label {label!r} (it has {sorted(names)})"
        values = {v for labels in label_sets for name, v in labels if name == label}
        if op == "=" and values and value not in values:
            return f"{selector.metric}{{{label}}} is never {value!r} (it is {sorted(values)})"
    return ""


async def test_a_real_worker_serves_every_series_the_rules_and_keda_select(
    spawn: Spawn, arq_redis: ArqRedis
) -> None:
    """A real worker, one job deferred: every metric the rules and KEDA's query select is on its
    /metrics, with the labels and label values they match (worker_queue_jobs{state="due"},
    worker_pool_connections{state="in_use"})."""
    port = free_port()
    await spawn(METRICS_PORT=str(port))
    await arq_redis.enqueue_job("count_users", _defer_by=3600)

    async def scrape() -> dict[str, set[frozenset[tuple[str, str]]]] | None:
        status, body = await http_get(f"http://127.0.0.1:{port}/metrics")
        families = scraped_families(body) if status == 200 else {}
        scheduled = frozenset({("state", "scheduled")})
        return families if scheduled in families.get("worker_queue_jobs", set()) else None

    families = await wait_until(scrape, timeout=15, what="the queue gauges on /metrics")
    assert families is not None
    problems = {
        (where, why) for where, s in all_selectors() if (why := unmatched(s, families)) != ""
    }
    assert not problems, sorted(problems)
