"""What the commands of ``python -m worker`` print: JSON on stdout, one ``error:`` line on stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

from worker.core.exit_codes import EXIT_USAGE


def emit(data: Any) -> None:
    """Print ``data`` as indented JSON (UTF-8 kept; other values as their text) on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def fail(message: object) -> int:
    """Print ``message`` as the command's one ``error:`` line on stderr; returns EXIT_USAGE."""
    sys.stderr.write(f"error: {message}\n")
    return EXIT_USAGE
