"""``arq tests.faults.settings.FaultSettings``: the real worker settings plus the fault jobs."""

from __future__ import annotations

from typing import Any

from jobs.registry import JOBS
from tests.faults.jobs import FAULT_JOBS
from worker.queue import codec
from worker.runtime.functions import arq_function, job_names, secret_fields
from worker.settings import Settings

_functions = [*Settings.functions, *(arq_function(spec) for spec in FAULT_JOBS)]

# A dict, which arq accepts as settings: a subclass would hide the inherited attributes from arq.
FaultSettings: dict[str, Any] = {
    name: value for name, value in vars(Settings).items() if not name.startswith("__")
}
FaultSettings.update(
    functions=_functions,
    job_serializer=codec.job_encoder(secret_fields((*JOBS, *FAULT_JOBS))),
    job_deserializer=codec.job_decoder(job_names(_functions, Settings.cron_jobs or ())),
)
