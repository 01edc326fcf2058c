"""``python -m bench.paired --against HEAD --tracing``: the new tree's workers trace and export
OTLP to the bench's sink, which counts what it got. Correctness only: no speed is asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.acceptance.conftest import run_bench

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(240)]

JOBS = 100


def test_paired_bench_with_tracing_exports_the_new_trees_spans(
    bench_database: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    stdout = run_bench(
        "bench.paired",
        bench_database,
        *("--against", "HEAD", "--rounds", "1", "--warmup", "0", "--output", str(out)),
        *("--users", "2000", "--jobs", str(JOBS), "--concurrency", "10", "--tracing"),
        timeout=220,
    )
    assert "| round | order | new, jobs/s | old, jobs/s | new/old |" in stdout
    data = json.loads((out / "paired.json").read_text())
    for side in ("new", "old"):
        assert data["rounds"][0][side]["completed"] == JOBS
    assert data["tracing"]["otlp_requests"] > 0 and data["tracing"]["otlp_bytes"] > 0
