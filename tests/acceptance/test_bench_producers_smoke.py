"""``python -m bench --only producers --quick``: the producers' measurements (transactional
enqueue's commit → start, the outbox relay, the TypeScript client's and the slim Python client's
bulk enqueue) run end to end and land in producers.json and the report's Producers section.
Correctness only: no speed is ever asserted here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.conftest import run_bench

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(300)]

KEYS = (
    "producers:commit-start",
    "producers:relay",
    "producers:node-bulk",
    "producers:python-bulk",
)


def _median(data: dict[str, Any], key: str) -> dict[str, Any]:
    entry = data["measurements"][key]
    assert not entry["errors"], f"{key}: {entry['errors']}"
    median: dict[str, Any] = entry["median"]
    return median


def test_only_producers_measures_and_reports_the_producers(
    bench_database: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    stdout = run_bench(
        "bench",
        bench_database,
        *("--only", "producers", "--quick", "--rounds", "1", "--output", str(out)),
        *("--users", "2000"),
        timeout=280,
    )
    data = json.loads((out / "producers.json").read_text())
    assert sorted(data["measurements"]) == sorted(KEYS)  # nothing but the producers ran

    latency = _median(data, "producers:commit-start")
    assert latency["completed"] == latency["jobs"] > 0 and latency["failed"] == 0
    assert latency["max_ms"] >= latency["p95_ms"] >= latency["p50_ms"]  # ms stamps: may be ~0
    relay = _median(data, "producers:relay")
    assert relay["jobs"] == data["options"]["relay_rows"] and relay["jobs_per_s"] > 0
    node = _median(data, "producers:node-bulk")
    assert node["jobs"] == data["options"]["node_jobs"] and node["jobs_per_s"] > 0
    python = _median(data, "producers:python-bulk")
    assert python["slim_jobs_per_s"] > 0 and python["worker_jobs_per_s"] > 0
    assert python["slim_over_worker"] > 0

    assert "| transactional enqueue: commit → job start p50" in stdout  # the console's table
    markdown = (out / "performance.md").read_text()
    assert "## Producers" in markdown
    assert "TypeScript client enqueueMany" in markdown and "relay throughput" in markdown
    assert not (out / "latest.json").exists()  # the full run's figures are left alone
