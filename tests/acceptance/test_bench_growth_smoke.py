"""``python -m bench.growth --quick``: the growth sweep runs end to end and writes its JSON, markdown
section and PNG. Correctness only: no speed is ever asserted here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.acceptance.conftest import run_bench

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(300)]


def test_quick_growth_sweep_writes_every_output(bench_database: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ("--quick", "--rounds", "1", "--output", str(out))
    assert "How cost grows" in run_bench("bench.growth", bench_database, *args, timeout=280)

    data = json.loads((out / "growth.json").read_text())
    plan, entries = data["plan"], data["measurements"]
    keys = [
        *(f"max_jobs:{m}" for m in plan["max_jobs"]),
        *(f"pool:{p}" for p in plan["pools"]),
        *(f"processes:{k}" for k in plan["processes"]),
        *(f"depth:{d}" for d in plan["depths"]),
        *(f"users:{u}" for u in plan["table_sizes"]),
    ]
    for key in keys:
        entry = entries[key]
        assert not entry["errors"], f"{key}: {entry['errors']}"
        median = entry["median"]
        assert median["completed"] == median["jobs"] > 0 and median["failed"] == 0, key
        assert median["jobs_per_s"] > 0 and median["peak_rss_mb"] > 0, key
        assert median["pg_backends_max"] > 0, key
    for size in plan["table_sizes"]:
        assert entries[f"limit:{size}"]["median"]["qps"] > 0
    # A deep queue's filler costs Redis memory; a queue only of measured jobs has none.
    deep = entries[f"depth:{plan['depths'][-1]}"]["median"]
    assert deep["redis_bytes_per_waiting_job"] > 0
    section = (out / "growth.md").read_text()
    for heading in ("## How cost grows", "### Against worker processes", "### Against table size"):
        assert heading in section
    assert "](performance-growth.png)" in section
    png = (out / "performance-growth.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
