"""The project's exception hierarchy: one base class, typed subclasses, docstring as message."""

from __future__ import annotations

# The base class and the argument error are the slim client's (pgpool_client), which raises them
# too: one class each, whoever catches them.
from pgpool_client.errors import InvalidJobArguments, WorkerError

__all__ = ["InvalidJobArguments", "JobTimeout", "PoolAcquireTimeout", "StaleLease", "WorkerError"]


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
