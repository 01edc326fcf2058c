"""``python -m bench.profile``: the worker drains real jobs under py-spy and the profile is printed
and written. Correctness only: no speed is ever asserted here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.acceptance.conftest import ROOT
from tests.conftest import REDIS_URL

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(180)]


def test_profile_of_a_short_drain(bench_database: str, tmp_path: Path) -> None:
    raw = tmp_path / "profile.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_")}
    done = subprocess.run(
        [
            *(sys.executable, "-m", "bench.profile", "--jobs", "3000", "--users", "1000"),
            *("--rate", "1000"),
            *("--database-url", bench_database, "--redis-url", REDIS_URL, "--output", str(raw)),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Self time by part of the work" in done.stdout
    assert "## Top frames by self time" in raw.with_suffix(".md").read_text()
    stacks = raw.read_text().splitlines()
    assert stacks and all(line.rpartition(" ")[2].isdigit() for line in stacks)
    assert any("worker/consumer.py" in line for line in stacks)  # sampled while it drained
