"""Writing jobs in arq's Redis layout directly (replays, bulk enqueue): the script of
docs/wire-format.md, which refuses a job id that is queued, running or has a kept result.

The scripts and the functions are the slim client's (pgpool_client/enqueue.py): one copy, which
producers, ``python -m worker enqueue``, replays and the worker's own code all run."""

from __future__ import annotations

from pgpool_client.enqueue import (
    ENQUEUE_MANY_SCRIPT,
    ENQUEUE_SCRIPT,
    enqueue_many,
    enqueue_payload,
    wake,
)

__all__ = ["ENQUEUE_MANY_SCRIPT", "ENQUEUE_SCRIPT", "enqueue_many", "enqueue_payload", "wake"]
