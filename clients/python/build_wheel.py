"""Build the slim client's wheel (``make client-wheel``): copy clients/python's pyproject.toml and
README.md and the checkout's pgpool_client/ into a temporary directory (setuptools packages only
what is under its project directory) and build there, without build isolation (the running
Python's setuptools, no network). Usage: ``python clients/python/build_wheel.py [OUT_DIR]``
(default dist/); prints the wheel's path."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def build(out: Path) -> Path:
    """Build the wheel into ``out``; returns its path."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pgpool-client-") as tmp:
        source = Path(tmp) / "source"
        shutil.copytree(
            ROOT / "pgpool_client",
            source / "pgpool_client",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(HERE / name, source / name)
        shutil.copy2(ROOT / "LICENSE", source / "LICENSE")
        pip = (sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input")
        subprocess.run(
            [*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), source],
            check=True,
            cwd=tmp,
        )
    [wheel] = sorted(out.glob("pgpool_client-*.whl"), key=lambda p: p.stat().st_mtime)[-1:]
    return wheel


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "dist"))  # noqa: T201
