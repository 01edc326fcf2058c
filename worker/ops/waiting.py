"""Why a queued or deferred job has not run, for ``python -m worker inspect``: a job whose name
this code base's registry does not know, or bytes that are not a job of this queue at all.

The text says what the worker will do with it (``worker/runtime/execution.py``): an unknown name waits
UNKNOWN_JOB_GRACE seconds from its enqueue for a deploy that knows it, then becomes an
``UnknownJobName`` dead letter; a payload that is not a job becomes a ``PoisonPayload`` dead
letter as soon as a worker takes it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from jobs.registry import JOBS_BY_NAME
from worker.queue import codec


def waiting_reason(payload: bytes, unknown_job_grace: float) -> str | None:
    """The reason a job with this payload waits in the queue, or None for a job a worker runs."""
    job = codec.job_decoder(JOBS_BY_NAME)(payload)
    if job["f"] == codec.POISON_JOB:
        return (
            f"its payload is not a job of this queue ({job['k']['problem']}); the next worker "
            "to take it makes it a PoisonPayload dead letter"
        )
    if job["f"] == codec.UNKNOWN_JOB:
        name = job["k"]["function"]
        enqueued = job.get("et")
        at = "its enqueue time is unknown"
        if isinstance(enqueued, int) and not isinstance(enqueued, bool):
            due = datetime.fromtimestamp(enqueued / 1000 + unknown_job_grace, UTC)
            at = "at " + due.isoformat(timespec="seconds")
        return (
            f"no worker knows job {name!r}; it becomes an UnknownJobName dead letter "
            f"UNKNOWN_JOB_GRACE ({unknown_job_grace:g} s) after its enqueue ({at})"
        )
    return None
