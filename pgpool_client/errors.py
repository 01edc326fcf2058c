"""The client's errors: one base class (``WorkerError``, which the worker's errors also subclass),
typed subclasses, each docstring its message (filled in from the keyword arguments)."""

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


class InvalidFlowDeclaration(WorkerError, ValueError):
    """Invalid flow-control declaration: {details}."""


class InvalidClientConfig(WorkerError):
    """Invalid client configuration: {details}."""


class RedisUnavailable(WorkerError):
    """Cannot connect to Redis at {url}: {reason} {advice}"""


class UnknownJob(WorkerError):
    """Unknown job {name!r}. Known jobs: {known}."""


class DuplicateJob(WorkerError):
    """A job with id {job_id!r} is already queued, running, or has a kept result; it was not enqueued
    again. Use another job id to run it anew."""


class JobFailed(WorkerError):
    """Job {job_id} ({function}) failed: {error_type}: {message}"""


class ResultTimeout(WorkerError):
    """Job {job_id} has no result after {timeout:g} s. Is a worker running on queue {queue!r}?"""


class ResultNotFound(WorkerError):
    """No job with id {job_id!r} is queued, running or has a kept result on queue {queue!r}."""
