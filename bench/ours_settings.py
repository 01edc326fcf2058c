"""``arq bench.ours_settings.BenchSettings``: the real ``worker.Settings`` plus a bench-only
``noop`` job built the way the product builds its jobs (``arq_function`` of a ``JobSpec``).

Everything else is whatever ``worker.Settings`` is when the bench runs, configured by the same
environment variables as in production (DATABASE_URL, REDIS_URL, QUEUE_NAME, ...).
"""

from __future__ import annotations

from jobs.context import JobContext
from jobs.models import JobArgs
from jobs.registry import JobSpec
from worker.settings import settings_with


class NoopArgs(JobArgs):
    user_id: int = 0


async def noop(ctx: JobContext, args: NoopArgs) -> None:
    """Does nothing: measures the worker's own cost per job."""


NOOP: JobSpec[NoopArgs, None] = JobSpec("noop", noop, NoopArgs)
BenchSettings = settings_with([NOOP], name="BenchSettings")
