"""A payload whose "flow" is malformed (docs/wire-format.md) is claimed, never held back by the claim
script: the worker then refuses it as poison, with the reason (tests/faults/test_flow_control.py).
A limit of 0, or a rate with a burst of 0, would otherwise block the job forever, out of sight."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from arq.connections import ArqRedis

from worker.config import Config
from worker.queue.enqueue import enqueue_payload
from worker.runtime.claimed import Claim
from worker.runtime.claims import Claimer

pytestmark = pytest.mark.integration

MALFORMED: dict[str, dict[str, Any]] = {
    "max-0": {"concurrency": [{"name": "per-key", "key": "K", "max": 0}]},
    "max-negative": {"concurrency": [{"name": "per-key", "key": "K", "max": -1}]},
    "burst-0": {"rate": [{"name": "partner", "key": "", "limit": 5, "per_ms": 1000, "burst": 0}]},
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_a_malformed_flow_is_claimed_for_the_worker_to_refuse(
    config: Config, arq_redis: ArqRedis, case: str
) -> None:
    q = config.queue_name
    payload = {"f": "get_user", "a": [], "k": {}, "flow": MALFORMED[case]}
    job_id = f"bad-{case}-{uuid.uuid4().hex[:8]}"
    assert await enqueue_payload(arq_redis, q, job_id, payload)
    claimer = Claimer(arq_redis, q, "60000")
    now = int(time.time() * 1000)
    for later in (0, 2000, 60_000):  # not now, nor once any gate is looked at again
        claimed, _, _ = await claimer.claim(now + later, 5)
        if claimed:
            break
    assert [Claim.from_entry(e).job_id for e in claimed] == [job_id]
