"""A job as a claim round hands it over (``Claim``), and a job a consumer is running (``ActiveJob``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Claim:
    """One job as the claim script handed it over."""

    job_id: str
    score: int  # its score in the queue when it was claimed (its due time)
    job_try: int
    aborted: bool  # in arq's abort set when claimed: recorded as aborted, never started
    payload: bytes | None  # None: the payload had expired
    gates: bytes = b""  # the concurrency gates it holds (JSON), released with its outcome
    priority: int = 0

    @classmethod
    def from_entry(cls, entry: list[Any]) -> Claim:
        payload = entry[4] if len(entry) > 4 else None
        gates = entry[5] if len(entry) > 5 and entry[5] else b""
        priority = int(entry[6]) if len(entry) > 6 and entry[6] else 0
        return cls(
            entry[0].decode(),
            int(float(entry[1])),
            int(entry[2]),
            entry[3] == 1,
            payload,
            gates,
            priority,
        )


@dataclass(slots=True)
class ActiveJob:
    """A job this consumer is running: what ``status`` and the dashboard list, what abort cancels."""

    task: asyncio.Task[None] | None = None
    name: str = ""
    job_try: int = 0
    started: float = 0.0  # wall clock; 0 until the job's function is called
