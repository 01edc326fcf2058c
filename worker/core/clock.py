"""The wall clock as the queue counts it: milliseconds since 1970 (arq's scores and timestamps)."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_ms() -> int:
    """Now, in whole milliseconds since 1970 (UTC), as arq writes enqueue times and scores."""
    return int(time.time() * 1000)


def ms_to_iso(ms: float | None) -> str | None:
    """Milliseconds since 1970 as an ISO-8601 UTC time to the millisecond; None for none (or 0)."""
    if not ms:
        return None
    return datetime.fromtimestamp(float(ms) / 1000, UTC).isoformat(timespec="milliseconds")
