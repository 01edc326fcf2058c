"""``arq bench.ours_settings.BenchSettings``: the real ``worker.Settings`` plus a bench-only
``noop`` job built the way the product builds its jobs (``arq_function`` of a ``JobSpec``).

Everything else is whatever ``worker.Settings`` is when the bench runs, configured by the same
environment variables as in production (DATABASE_URL, REDIS_URL, QUEUE_NAME, ...).
"""

from __future__ import annotations

from typing import Any

from jobs.context import JobContext
from jobs.models import JobArgs
from jobs.registry import JOBS, JobSpec
from worker.queue import codec
from worker.runtime.functions import arq_function, job_names, secret_fields
from worker.settings import Settings


class NoopArgs(JobArgs):
    user_id: int = 0


async def noop(ctx: JobContext, args: NoopArgs) -> None:
    """Does nothing: measures the worker's own cost per job."""


NOOP: JobSpec[NoopArgs, None] = JobSpec("noop", noop, NoopArgs)
_functions = [*Settings.functions, arq_function(NOOP)]

# A dict, which arq accepts as settings (a subclass would hide inherited attributes from arq).
BenchSettings: dict[str, Any] = {
    name: getattr(Settings, name) for name in dir(Settings) if not name.startswith("_")
}
BenchSettings.update(
    functions=_functions,
    job_serializer=codec.job_encoder(secret_fields((*JOBS, NOOP))),
    job_deserializer=codec.job_decoder(job_names(_functions, Settings.cron_jobs or ())),
)
