"""``arq tests.acceptance.bad_flow_settings.BadFlowSettings``: the worker's settings plus one job
whose flow declaration is wrong, chosen by the environment variable BAD_FLOW (the start-up errors
of tests/acceptance/test_flow_declarations.py)."""

from __future__ import annotations

import os

from jobs.registry import JobSpec
from pgpool_client.flow import Concurrency, Flow, Rate
from tests.faults.jobs import FaultWriteArgs, fault_write
from worker.settings import settings_with


def _flow(case: str) -> Flow:
    if case == "unknown-argument":
        return Flow((Concurrency("per-user", max=1, key="user_id"),))
    if case == "zero":
        return Flow((Concurrency("per-user", max=0),))
    if case == "no-period":
        return Flow(rates=(Rate("partner-api", limit=14, per=0),))
    raise AssertionError(f"BAD_FLOW={case!r}")


BAD = JobSpec(
    "bad_flow", fault_write, FaultWriteArgs, writes=True, flow=_flow(os.environ["BAD_FLOW"])
)

BadFlowSettings = settings_with((BAD,), name="BadFlowSettings")
