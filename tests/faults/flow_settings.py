"""``arq tests.faults.flow_settings.FlowSettings``: the fault suite's settings plus a second name of
the fault job (``fault_write_b``), so that one name can be paused while the other keeps running."""

from __future__ import annotations

from dataclasses import replace

from tests.faults.jobs import FAULT_JOBS
from worker.settings import settings_with

FAULT_B = replace(FAULT_JOBS[0], name="fault_write_b")

FlowSettings = settings_with((*FAULT_JOBS, FAULT_B), name="FlowSettings")
