"""``arq tests.faults.settings.FaultSettings``: the real worker settings plus the fault jobs."""

from __future__ import annotations

from tests.faults.jobs import FAULT_JOBS
from worker.settings import settings_with

FaultSettings = settings_with(FAULT_JOBS, name="FaultSettings")
