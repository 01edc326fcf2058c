"""The state of a queue in one round trip: due and scheduled jobs, and the oldest waiting one.

arq keeps a job in the queue's sorted set until it is done. A job this worker runs has its score
moved to its lease's end (worker/runtime/leases.py), so it sits just ahead of now; one a plain arq worker
runs keeps its due time, at the front. The script finds both by their in-progress keys (within the
first ``SAMPLE`` entries of each range; beyond it, this worker's running jobs are estimated from the
sample's share) and counts running jobs as due, as arq's own view does. A job that waits on a
flow-control gate (a limit, a rate, a pause, a tenant's lane: docs/flow-control.md) has the score
``BLOCKED_SCORE`` and is counted as blocked, neither due nor scheduled.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from worker.core.clock import now_ms
from worker.queue.keys import BLOCKED_SCORE, IN_PROGRESS_PREFIX

SAMPLE = 1000
CLOCK_SLACK_MS = 5000  # workers' clocks may be ahead of this one's

QUEUE_STATS_SCRIPT = f"""
local queue, now, sample, horizon = KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3]
local due = redis.call('ZCOUNT', queue, '-inf', now)
local total = redis.call('ZCARD', queue)
local ids = redis.call('ZRANGEBYSCORE', queue, '-inf', now, 'WITHSCORES', 'LIMIT', 0, sample)
local running, oldest = 0, false
for i = 1, #ids, 2 do
  if redis.call('EXISTS', '{IN_PROGRESS_PREFIX}' .. ids[i]) == 1 then
    running = running + 1
  elseif not oldest then
    oldest = ids[i + 1]
  end
end
local ahead = redis.call('ZRANGEBYSCORE', queue, '(' .. now, horizon, 'LIMIT', 0, sample)
local leased = 0
for i = 1, #ahead do
  if redis.call('EXISTS', '{IN_PROGRESS_PREFIX}' .. ahead[i]) == 1 then leased = leased + 1 end
end
if #ahead == sample then  -- more than the sample: the same share of all of them
  leased = math.floor(leased * redis.call('ZCOUNT', queue, '(' .. now, horizon) / sample + 0.5)
end
local blocked = redis.call('ZCOUNT', queue, '{BLOCKED_SCORE}', '{BLOCKED_SCORE}')
return {{due + leased, total - due - leased - blocked, running + leased, oldest, blocked}}
"""


@dataclass(frozen=True, slots=True)
class QueueStats:
    """A queue at one moment; ages in seconds."""

    due: int  # due now: waiting, or running (arq removes a job when it is done)
    scheduled: int  # due later: deferred jobs and retries in backoff
    running: int  # jobs with an in-progress key (within the first SAMPLE of each range)
    oldest_waiting_age: float  # the oldest due job that no worker runs; 0 when none waits
    blocked: int = 0  # waiting on a flow-control gate (score BLOCKED_SCORE), not due by time

    @property
    def waiting(self) -> int:
        return max(self.due - self.running, 0)


async def queue_stats(redis: Redis, queue: str, lease: float) -> QueueStats:
    """Read ``queue``'s state (one EVAL); ``lease`` is the workers' JOB_LEASE in seconds."""
    now = now_ms()
    horizon = now + int(lease * 1000) + CLOCK_SLACK_MS
    due, scheduled, running, oldest, blocked = await redis.eval(  # type: ignore[misc]
        QUEUE_STATS_SCRIPT, 1, queue, str(now), str(SAMPLE), str(horizon)
    )
    age = max(now - float(oldest), 0.0) / 1000 if oldest else 0.0
    return QueueStats(int(due), int(scheduled), int(running), age, int(blocked))
