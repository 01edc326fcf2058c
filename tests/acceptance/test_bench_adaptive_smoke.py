"""``python -m bench.adaptive --quick``: WORKER_MAX_JOBS=auto against the fixed sweep on the DB
job, and auto against a fixed 200 on a slowed database, run end to end and land in adaptive.json
and adaptive.md. Correctness only: no speed, wait or timeout count is ever asserted here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.acceptance.conftest import run_bench

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(300)]


def test_bench_adaptive_measures_auto_and_the_sweep_and_reports_the_figures(
    bench_database: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    stdout = run_bench(
        "bench.adaptive",
        bench_database,
        *("--quick", "--rounds", "1", "--jobs", "100", "--slowed-jobs", "40"),
        *("--output", str(out)),
        timeout=280,
    )
    data = json.loads((out / "adaptive.json").read_text())
    [found] = data["rounds"]
    assert sorted(found["db"]) == sorted(["auto", "10", "20", "50", "100", "200"])
    for drain in found["db"].values():
        assert drain["completed"] == 100 and drain["failed"] == 0 and drain["jobs_per_s"] > 0
    assert sorted(found["slowed"]) == ["200", "auto"]
    for variant, drain in found["slowed"].items():
        assert drain["completed"] == 40 and drain["failed"] == 0
        assert 0 <= drain["timeouts"] <= 40 and 0 <= drain["wait_p99_s"] <= drain["wait_max_s"]
        if variant == "auto":  # the limit each job started under, within the pool's bounds
            assert 1 <= drain["limit_p50"] <= drain["limit_max"] <= 200
        else:
            assert drain["limit_max"] is None  # a fixed WORKER_MAX_JOBS: no adaptive limit
    figures = data["figures"]
    assert figures["ratio"] > 0 and figures["best_fixed"] in {"10", "20", "50", "100", "200"}
    assert figures["wait_bound_s"] == data["options"]["acquire_timeout_s"] / 4
    markdown = (out / "adaptive.md").read_text()
    assert markdown.startswith("## Adaptive concurrency")
    assert (
        f"auto / {figures['best_fixed']} (the best fixed)" in markdown
        and "acquire timeouts (of 40)" in markdown
    )
    assert "| auto |" in stdout  # the console's tables
