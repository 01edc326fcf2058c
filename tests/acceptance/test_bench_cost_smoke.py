"""``python -m bench.cost --quick --against HEAD``: the cost-per-job bench measures both trees (light
load, full load at C = 10, 50, 100, bulk enqueue), the raw pool and the floor once, and writes
cost.json and cost.md. Correctness only: no speed is ever asserted here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.acceptance.conftest import run_bench

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(420)]

ROOT = Path(__file__).resolve().parents[2]
PACED = 200  # --rate 200 for --seconds 1
JOBS = 150
BULK = 1_000
CONCURRENCIES = (10, 50, 100)


def test_bench_cost_measures_both_trees_and_every_job_finishes(
    bench_database: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    stdout = run_bench(
        "bench.cost",
        bench_database,
        *("--quick", "--rounds", "1", "--against", "HEAD", "--output", str(out)),
        *("--rate", "200", "--seconds", "1", "--jobs", str(JOBS), "--bulk", str(BULK)),
        timeout=400,
    )
    data = json.loads((out / "cost.json").read_text())
    assert set(data) == {"meta", "options", "targets", "rounds", "median"}
    assert data["options"]["concurrencies"] == list(CONCURRENCIES)
    [found] = data["rounds"]
    assert found["order"] == ["new", "old"]
    for side in ("new", "old"):
        tree = found[side]
        assert tree["paced_completed"] == tree["paced_jobs"] == PACED
        assert tree["paced_cpu_pct"] > 0 and tree["paced_p50_ms"] is not None
        assert tree["idle_cpu_pct"] >= 0
        for c in CONCURRENCIES:
            assert tree[f"full_{c}_completed"] == tree[f"full_{c}_jobs"] == JOBS
            assert tree[f"full_{c}_jobs_per_s"] > 0 and tree[f"full_{c}_us_per_job"] >= 0
            assert data["median"][side][f"ratio_{c}"] > 0
        assert tree["bulk_added"] == tree["bulk_queued"] == tree["bulk_jobs"] == BULK
        assert tree["bulk_duplicates_refused"] is True
        assert tree["bulk_invalid_refused"] is True
    shared = found["shared"]
    for c in CONCURRENCIES:
        assert shared[f"raw_{c}_qps"] > 0 and shared[f"raw_{c}_us_per_query"] > 0
    assert shared["floor_ticks"] == PACED and shared["floor_us_per_tick"] > 0
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert data["meta"]["against"] == {"rev": "HEAD", "commit": head.stdout.strip()}

    header = "| figure | target | this tree | REV (HEAD) | this/REV |"
    assert header in stdout  # the console's table
    markdown = (out / "cost.md").read_text()
    assert markdown.startswith("## Cost per job\n") and header in markdown
    assert "medians of 1 interleaved round(s)" in markdown
    assert "| full load C=50: ours / raw pool without reset | ≥ 0.5 |" in markdown


def test_bench_cost_names_an_unknown_revision_in_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.cost", "--quick", "--against", "no-such-rev-xyz"],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("BENCH_")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == f"bench.cost: --against 'no-such-rev-xyz': not a commit of {ROOT}"
