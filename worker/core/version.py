"""The version of pgpool-worker: the installed distribution's, or the checkout's pyproject.toml."""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

DISTRIBUTION = "pgpool-worker"
# Beside the worker package in a checkout; absent from an installed wheel, which has metadata.
_PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def package_version() -> str:
    """The installed distribution's version; from a checkout that is not installed, its
    pyproject.toml's; ``unknown`` when neither says."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        pass
    try:
        project = tomllib.loads(_PYPROJECT.read_text(encoding="utf-8"))["project"]
    except (OSError, tomllib.TOMLDecodeError, KeyError):
        return "unknown"
    return str(project.get("version", "unknown"))
