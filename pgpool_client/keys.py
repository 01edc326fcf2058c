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


WAKE_SUFFIX = ":wake"


def wake_key(queue: str) -> str:
    """The list a producer pushes to after enqueueing, to wake an idle consumer."""
    return f"{queue}{WAKE_SUFFIX}"


# Flow control (docs/flow-control.md): every key below starts with "<queue>:flow:". A gate is what
# a job may wait on: "c:<limit>:<key>" (a concurrency limit: a sorted set of the jobs holding it,
# score: their lease's end), "r:<limit>:<key>" (a rate: its GCRA time), "p:<job name>" (a pause),
# "l:<fairness key>" (a tenant's lane: its jobs wait there while one of them is in the queue).
FLOW_PREFIX = ":flow:"
GATE_INFIX = ":flow:gate:"  # <queue>:flow:gate:<gate>: the gate's state
BLOCKED_INFIX = ":flow:blocked:"  # <queue>:flow:blocked:<gate>: the jobs waiting on it
LANE_HEAD_INFIX = ":flow:lane-head:"  # <queue>:flow:lane-head:<fairness key>: its job in the queue
# A blocked job's score in the queue (a plain arq client sees it as deferred); its real score and
# priority are its score in the gate's blocked set.
BLOCKED_SCORE = 2**50
# Priority p (0..9) offsets a score by (9 - p) * PRIORITY_SPAN in the priority set and the blocked
# sets (higher first, then by due time); scores stay exact integers in a double.
PRIORITY_SPAN = 2**41


def priority_key(queue: str) -> str:
    """The queue's jobs of priority 1..9 (score: (9 - p) * PRIORITY_SPAN + due time)."""
    return f"{queue}{FLOW_PREFIX}priority"


def lane_head_key(queue: str, fair: str) -> str:
    """The id of the one job of a fairness key that waits in the queue (the others in its lane)."""
    return f"{queue}{LANE_HEAD_INFIX}{fair}"


def blocked_key(queue: str, gate: str) -> str:
    """The jobs waiting on ``gate`` (score: (9 - p) * PRIORITY_SPAN + their due time)."""
    return f"{queue}{BLOCKED_INFIX}{gate}"


def gate_key(queue: str, gate: str) -> str:
    """A gate's state: the holders of a concurrency limit, the GCRA time of a rate."""
    return f"{queue}{GATE_INFIX}{gate}"


def blocked_index_key(queue: str) -> str:
    """The gates with waiting jobs (score: when the claim script looks at the gate again, ms)."""
    return f"{queue}{FLOW_PREFIX}due"


def gates_key(queue: str) -> str:
    """A hash: gate -> its declaration as last seen ([kind, limit name, key, max | rate...])."""
    return f"{queue}{FLOW_PREFIX}gates"


def limits_key(queue: str) -> str:
    """A hash: limit name -> its value set at run time (JSON), over what the jobs declare."""
    return f"{queue}{FLOW_PREFIX}limits"


def paused_key(queue: str) -> str:
    """The set of paused job names ("*": the whole queue)."""
    return f"{queue}{FLOW_PREFIX}paused"
