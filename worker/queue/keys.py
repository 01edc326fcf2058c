"""Every Redis key this worker reads or writes, named in one place.

arq's own keys keep arq's layout (so plain arq clients and workers interoperate): the queue (a sorted
set, ``QUEUE_NAME``), ``arq:job:<id>``, ``arq:in-progress:<id>``, ``arq:retry:<id>``,
``arq:result:<id>`` and the abort set ``arq:abort``. The worker's own keys all start with the queue's
name, so two queues on one Redis never meet. The Lua scripts take their prefixes from here.
"""

from __future__ import annotations

# arq's keys, the wake list and the flow-control keys (a producer writes priorities and lanes)
# are the slim client's (pgpool_client/keys.py): one copy.
from pgpool_client.keys import (
    ABORT_SET,
    BLOCKED_INFIX,
    BLOCKED_SCORE,
    FLOW_PREFIX,
    GATE_INFIX,
    IN_PROGRESS_PREFIX,
    JOB_PREFIX,
    LANE_HEAD_INFIX,
    PRIORITY_SPAN,
    RESULT_PREFIX,
    RETRY_PREFIX,
    WAKE_SUFFIX,
    blocked_index_key,
    blocked_key,
    gate_key,
    gates_key,
    lane_head_key,
    limits_key,
    paused_key,
    priority_key,
    wake_key,
)

__all__ = [
    "ABORT_SET",
    "BLOCKED_INFIX",
    "BLOCKED_SCORE",
    "FLOW_PREFIX",
    "GATE_INFIX",
    "IN_PROGRESS_PREFIX",
    "JOB_PREFIX",
    "LANE_HEAD_INFIX",
    "PRIORITY_SPAN",
    "RESULT_PREFIX",
    "RETRY_PREFIX",
    "WAKE_SUFFIX",
    "arq_health_key",
    "blocked_index_key",
    "blocked_key",
    "claims_key",
    "consumer_stop_key",
    "consumer_wake_key",
    "dead_letters_pending_key",
    "failures_key",
    "gate_key",
    "gates_key",
    "lane_head_key",
    "limits_key",
    "paused_key",
    "priority_key",
    "registration_key",
    "registry_key",
    "wake_key",
    "worker_key",
    "workers_index_key",
]


def arq_health_key(queue: str) -> str:
    """arq's own health line of the queue's workers."""
    return f"{queue}:health-check"


def failures_key(queue: str) -> str:
    """The list of the queue's most recent failed, retried and aborted tries (newest first)."""
    return f"{queue}:failures"


def claims_key(queue: str, consumer_id: str) -> str:
    """One consumer's last claim round, kept so that a re-sent claim answers the same claims."""
    return f"{queue}:claims:{consumer_id}"


def consumer_wake_key(queue: str, consumer_id: str) -> str:
    """One consumer's own wake-up list: its shutdown ends the wait of its claim round at once."""
    return f"{queue}:claims:{consumer_id}:wake"


def consumer_stop_key(queue: str, consumer_id: str) -> str:
    """Set when one consumer stops claiming: a claim round of its still under way claims nothing."""
    return f"{queue}:claims:{consumer_id}:stop"


def workers_index_key(queue: str) -> str:
    """The sorted set of the queue's worker health records (score: written at, ms)."""
    return f"{queue}:workers"


def worker_key(queue: str, host: str, pid: int) -> str:
    """One worker process's health record."""
    return f"{queue}:workers:{host}:{pid}"


def registry_key(queue: str) -> str:
    """The set of the queue's workers that registered a pool with the connection budget."""
    return f"{queue}:pools"


def registration_key(queue: str, worker: str) -> str:
    """One worker's pool registration (the budget's view of it)."""
    return f"{queue}:pool:{worker}"


def dead_letters_pending_key(queue: str) -> str:
    """Dead letters waiting in Redis while PostgreSQL refuses them."""
    return f"{queue}:dead-letters:pending"
