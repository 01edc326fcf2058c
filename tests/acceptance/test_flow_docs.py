"""docs/flow-control.md's declaration example runs as printed and prints what the doc shows."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.acceptance

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Declaring it on a job"


def blocks(language: str) -> list[str]:
    text = (ROOT / "docs" / "flow-control.md").read_text()
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, re.DOTALL)


def test_the_declaration_example_prints_the_payloads_flow(tmp_path: Path) -> None:
    (code,) = blocks("python")
    (printed,) = blocks("text")
    script = tmp_path / "example.py"
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, str(script)],
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == printed
