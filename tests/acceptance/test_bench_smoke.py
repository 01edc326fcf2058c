"""``python -m bench --quick``: the benchmark harness runs end to end, measures every system and
writes its JSON, markdown and PNG. Correctness only: no speed is ever asserted here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.conftest import run_bench

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
SYSTEMS = ("arq", "ours", "saq")


def _median(data: dict[str, Any], key: str) -> dict[str, Any]:
    entry = data["measurements"][key]
    assert not entry["errors"], f"{key}: {entry['errors']}"
    median: dict[str, Any] = entry["median"]
    return median


def test_quick_bench_writes_every_output(bench_database: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    stdout = run_bench(
        "bench",
        bench_database,
        *("--quick", "--rounds", "1", "--output", str(out)),
        *("--users", "2000", "--jobs", "200", "--concurrency", "10"),
        timeout=220,
    )
    assert "ours / SAQ" in stdout

    data = json.loads((out / "latest.json").read_text())
    concurrencies = data["options"]["concurrencies"]
    assert concurrencies
    for c in concurrencies:
        assert _median(data, f"limit:pool:{c}")["qps"] > 0
        for system in SYSTEMS:
            for kind in ("noop", "db"):
                drain = _median(data, f"drain:{system}:{kind}:{c}")
                assert drain["jobs_per_s"] > 0
                assert drain["completed"] == drain["jobs"] == 200
                assert drain["failed"] == 0
                assert drain["peak_rss_mb"] > 0
        assert all(v is not None and v > 0 for v in data["ratios"][str(c)].values())
    for system in SYSTEMS:
        latency = _median(data, f"latency:{system}")
        assert latency["completed"] == latency["jobs"] > 0 and latency["failed"] == 0
        assert latency["p99_ms"] >= latency["p50_ms"] >= 0
        idle = _median(data, f"idle:{system}")
        assert idle["rss_mb"] > 0 and idle["idle_cpu_pct"] >= 0
        assert idle["pg_backends"] > 0
    for key in data["measurements"]:
        if key.startswith("enqueue:"):
            assert _median(data, key)["jobs_per_s"] > 0
    connect = data["measurements"]["limit:connect:10"]
    assert connect["median"].get("qps", 0) > 0 or connect["errors"][0].startswith("skipped")

    markdown = (out / "performance.md").read_text()
    for heading in ("## Headline", "## Ratios", "## Method", "## Caveats"):
        assert heading in markdown
    for label in ("bare arq", "this worker", "SAQ", "raw asyncpg pool"):
        assert label in markdown
    assert "](performance.png)" in markdown
    png = (out / "performance.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
