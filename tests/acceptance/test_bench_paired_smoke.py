"""``python -m bench.paired --against HEAD``: the paired benchmark exports a commit's tree, drains
jobs through both trees' workers and writes its table (markdown and JSON). Correctness only: no speed
is ever asserted here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.acceptance.conftest import run_bench

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
JOBS = 200


def test_paired_bench_against_head_writes_both_columns(bench_database: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    stdout = run_bench(
        "bench.paired",
        bench_database,
        *("--against", "HEAD", "--rounds", "1", "--warmup", "0", "--output", str(out)),
        *("--users", "2000", "--jobs", str(JOBS), "--concurrency", "10"),
        timeout=220,
    )
    assert "| round | order | new, jobs/s | old, jobs/s | new/old |" in stdout

    data = json.loads((out / "paired.json").read_text())
    assert len(data["rounds"]) == 1
    for side in ("new", "old"):
        drained = data["rounds"][0][side]
        assert drained["completed"] == drained["jobs"] == JOBS
        assert drained["failed"] == 0
        assert drained["jobs_per_s"] > 0
        assert data["median"][side]["jobs_per_s"] > 0
    assert data["ratio"] > 0
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert data["meta"]["old"]["commit"] == head.stdout.strip()

    markdown = (out / "paired.md").read_text()
    assert "new, jobs/s" in markdown and "old, jobs/s" in markdown
    assert "**median**" in markdown and "median of the rounds' ratios" in markdown


def test_paired_bench_names_an_unknown_revision_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.paired", "--against", "no-such-rev-xyz"],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("BENCH_")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert (
        done.stderr.strip() == f"bench.paired: --against 'no-such-rev-xyz': not a commit of {ROOT}"
    )
