"""Fixtures of the unit tests: a configuration environment free of the developer's settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.config import Config


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Unset every variable Config reads and run in an empty directory (no developer .env)."""
    for name in Config.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path
