"""The project's exception hierarchy: one base class, typed subclasses, docstring as message."""

from __future__ import annotations

from typing import Any


class WorkerError(Exception):
    """The job worker failed."""

    def __init__(self, text: str | None = None, /, **context: Any) -> None:
        # ``text`` is positional-only, so that a context field may be called ``message``.
        self.context = context
        template = " ".join((self.__doc__ or "").split())
        super().__init__(text if text is not None else template.format(**context))


class InvalidJobArguments(WorkerError):
    """Invalid arguments for job {job!r}: {details}. Fix the arguments and enqueue the job again."""

    retryable = False


class PoolAcquireTimeout(WorkerError):
    """No database connection became free within {timeout:g} s (pool max size {max_size}). The job will
    be retried; if this repeats, raise PG_POOL_MAX_SIZE or lower WORKER_MAX_JOBS."""

    retryable = True


class StaleLease(WorkerError):
    """Job {job_id} try {job_try} lost its lease: try {owner} now owns the job, so this run's writes
    were not committed."""

    retryable = False


class JobTimeout(WorkerError):
    """Job {job_id} ({function}) ran out of its {timeout:g} s; its query was cancelled and its
    transaction rolled back."""

    retryable = True
