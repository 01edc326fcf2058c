"""A worker stopped right after its startup (a failed deploy, a test) leaves no PostgreSQL
connection open: the relay's LISTEN connection is closed or never kept, even when the stop
cancels the relay while it is still setting that connection up."""

from __future__ import annotations

import asyncio
import gc
import warnings
from typing import Any

import pytest
from arq.connections import ArqRedis

from worker.config import Config
from worker.runtime.lifecycle import shutdown, startup

pytestmark = pytest.mark.integration


async def test_a_worker_stopped_right_after_startup_leaves_no_connection_open(
    config: Config, arq_redis: ArqRedis
) -> None:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", ResourceWarning)
        for round_ in range(12):
            ctx: dict[str, Any] = {"config": config, "redis": arq_redis}
            await startup(ctx)
            # Let the relay get to a different point of its LISTEN set-up each round.
            await asyncio.sleep(0.002 * round_)
            await shutdown(ctx)
            gc.collect()
    leaks = [w for w in seen if issubclass(w.category, ResourceWarning)]
    assert not leaks, [str(w.message) for w in leaks]
