"""The arq worker: assembly, lifecycle, configuration, client and CLI.

``arq worker.Settings`` runs it. ``Settings`` is loaded on first access, so importing the client or
the CLI reads no configuration and opens no connection.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Settings"]


def __getattr__(name: str) -> Any:
    if name == "Settings":
        from worker.settings import Settings

        return Settings
    raise AttributeError(f"module 'worker' has no attribute {name!r}")
