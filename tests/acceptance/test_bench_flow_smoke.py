"""``python -m bench.flow --quick``: flow control's cost (a limit never binding, blocked jobs beside
the measured ones, priorities, each against plain jobs in the same round) runs end to end and lands
in flow.json and flow.md. Correctness only: no speed is ever asserted here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.acceptance.conftest import run_bench

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(300)]


def test_bench_flow_measures_every_variant_and_reports_the_ratios(
    bench_database: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    stdout = run_bench(
        "bench.flow",
        bench_database,
        *("--quick", "--rounds", "1", "--jobs", "100", "--blocked", "1500", "--output", str(out)),
        timeout=280,
    )
    data = json.loads((out / "flow.json").read_text())
    [found] = data["rounds"]
    assert sorted(found) == ["blocked", "limit", "none", "priority"]
    for variant in found.values():
        assert variant["jobs"] == 100 and variant["jobs_per_s"] > 0
    assert found["blocked"]["still_blocked"] == 1500  # they stayed blocked while the others ran
    assert set(data["ratios"]) == {"blocked", "limit", "priority"}
    assert all(r is not None and r > 0 for r in data["ratios"].values())
    markdown = (out / "flow.md").read_text()
    assert markdown.startswith("## Flow control")
    assert "1,500 blocked jobs in the queue" in markdown and "never binding" in markdown
    assert "| plain jobs (none) |" in stdout  # the console's table
