"""``python -m bench.profile``: the worker drains real jobs under py-spy and the profile is printed
and written. Correctness only: no speed is ever asserted here."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.acceptance.conftest import run_bench

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(180)]


def test_profile_of_a_short_drain(bench_database: str, tmp_path: Path) -> None:
    raw = tmp_path / "profile.txt"
    stdout = run_bench(
        "bench.profile",
        bench_database,
        *("--jobs", "3000", "--users", "1000", "--rate", "1000", "--output", str(raw)),
        timeout=170,
    )
    assert "Self time by part of the work" in stdout
    assert "## Top frames by self time" in raw.with_suffix(".md").read_text()
    stacks = raw.read_text().splitlines()
    assert stacks and all(line.rpartition(" ")[2].isdigit() for line in stacks)
    assert any("worker/runtime/executor.py" in line for line in stacks)  # sampled while it drained


def test_profile_at_light_load(bench_database: str, tmp_path: Path) -> None:
    """``--paced``: jobs enqueued one by one at a rate while py-spy samples the running worker."""
    raw = tmp_path / "profile-paced.txt"
    stdout = run_bench(
        "bench.profile",
        bench_database,
        *("--paced", "100", "--seconds", "2", "--users", "1000", "--rate", "500"),
        *("--output", str(raw)),
        timeout=170,
    )
    assert "enqueued one by one at 100/s" in stdout
    stacks = raw.read_text().splitlines()
    assert stacks and all(line.rpartition(" ")[2].isdigit() for line in stacks)
    assert any("worker/runtime/producer.py" in line for line in stacks)  # its claim loop ran
