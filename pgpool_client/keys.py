"""The Redis keys a producer touches, in arq's layout (docs/wire-format.md), so that arq clients,
this client and the worker all meet: the queue (a sorted set named ``QUEUE_NAME``, score: when the
job may start, ms), ``arq:job:<id>`` (the payload), ``arq:in-progress:<id>``, ``arq:result:<id>``,
the abort set ``arq:abort`` and the queue's wake list. The worker's own keys are in
worker/queue/keys.py; tests/unit/test_client_contracts.py checks these against arq's constants.
"""

from __future__ import annotations

JOB_PREFIX = "arq:job:"  # the payload
IN_PROGRESS_PREFIX = "arq:in-progress:"  # a running job's lease
RETRY_PREFIX = "arq:retry:"  # the try counter
RESULT_PREFIX = "arq:result:"  # the result
ABORT_SET = "arq:abort"  # job ids a producer or an operator asked to abort (every queue's)
# How long a payload outlives its start time (ms): arq's expires_extra_ms, one day.
EXPIRES_EXTRA_MS = 86_400_000


def wake_key(queue: str) -> str:
    """The list a producer pushes to after enqueueing, to wake an idle consumer."""
    return f"{queue}:wake"
