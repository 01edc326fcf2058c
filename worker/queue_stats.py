"""The state of a queue in one round trip: due and scheduled jobs, and the oldest waiting one.

arq keeps a job in the queue's sorted set (scored by its due time) until it is done, so "due" counts
the jobs running as well as those waiting; the script tells them apart by their in-progress keys,
within the first ``SAMPLE`` due jobs (running jobs are the oldest, so they come first).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from redis.asyncio import Redis

SAMPLE = 1000

QUEUE_STATS_SCRIPT = """
local queue, now, sample = KEYS[1], ARGV[1], tonumber(ARGV[2])
local due = redis.call('ZCOUNT', queue, '-inf', now)
local total = redis.call('ZCARD', queue)
local ids = redis.call('ZRANGEBYSCORE', queue, '-inf', now, 'WITHSCORES', 'LIMIT', 0, sample)
local running, oldest = 0, false
for i = 1, #ids, 2 do
  if redis.call('EXISTS', 'arq:in-progress:' .. ids[i]) == 1 then
    running = running + 1
  elseif not oldest then
    oldest = ids[i + 1]
  end
end
return {due, total - due, running, oldest}
"""


@dataclass(frozen=True, slots=True)
class QueueStats:
    """A queue at one moment; ages in seconds."""

    due: int  # due now: waiting, or running (arq removes a job when it is done)
    scheduled: int  # due later: deferred jobs and retries in backoff
    running: int  # due jobs with an in-progress key (within the first SAMPLE due jobs)
    oldest_waiting_age: float  # the oldest due job that no worker runs; 0 when none waits

    @property
    def waiting(self) -> int:
        return max(self.due - self.running, 0)


async def queue_stats(redis: Redis, queue: str) -> QueueStats:
    """Read ``queue``'s state (one EVAL)."""
    now_ms = int(time.time() * 1000)
    due, scheduled, running, oldest = await redis.eval(  # type: ignore[misc]
        QUEUE_STATS_SCRIPT, 1, queue, str(now_ms), str(SAMPLE)
    )
    age = max(now_ms - float(oldest), 0.0) / 1000 if oldest else 0.0
    return QueueStats(int(due), int(scheduled), int(running), age)
