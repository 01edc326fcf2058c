"""Job leases: a running job's ``arq:in-progress`` key lives ``JOB_LEASE`` seconds and a heartbeat
renews it, so a crashed worker's job runs again within the lease instead of ``job_timeout + 10 s``.

The claim (``worker/runtime/claims.py``) also moves a running job's score in the queue to its lease's end,
and the heartbeat moves it on with the key: a crashed worker's job is due again exactly when its
lease ends, and claims never have to step over running jobs."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from worker.core.clock import now_ms
from worker.queue.keys import FLOW_PREFIX, IN_PROGRESS_PREFIX, PRIORITY_SPAN

logger = logging.getLogger(__name__)

LEASE_SET_KEY = "lease_set"  # in a job's ctx: the claim already gave the job its lease

# KEYS[1] = the queue; ARGV[1] = the lease in ms, ARGV[2] = now in ms, then the job ids. A job whose
# in-progress key still exists (PEXPIRE never re-creates one arq already deleted) keeps its lease
# and is due again at the lease's end.
# A job of priority 1..9 has its entry in the priority set moved on too.
LEASE_RENEW_SCRIPT = f"""
local lease_end = tonumber(ARGV[2]) + tonumber(ARGV[1])
local prio_key = KEYS[1] .. '{FLOW_PREFIX}priority'
local has_prio = redis.call('EXISTS', prio_key) == 1
for i = 3, #ARGV do
  if redis.call('PEXPIRE', '{IN_PROGRESS_PREFIX}' .. ARGV[i], ARGV[1]) == 1 then
    redis.call('ZADD', KEYS[1], 'XX', lease_end, ARGV[i])
    local s = has_prio and redis.call('ZSCORE', prio_key, ARGV[i])
    if s then
      local base = math.floor(tonumber(s) / {PRIORITY_SPAN}) * {PRIORITY_SPAN}
      redis.call('ZADD', prio_key, 'XX', base + lease_end, ARGV[i])
    end
  end
end
return 0
"""


class LeaseKeeper:
    """Holds the leases of this worker's running jobs and renews them all in one round trip."""

    def __init__(self, redis: Redis, lease: float, queue: str) -> None:
        self.redis = redis
        self.queue = queue
        self.renew_script = redis.register_script(LEASE_RENEW_SCRIPT)
        self.lease_ms = int(lease * 1000)
        self.interval = lease / 3
        # A count per job: a stalled worker may run two tries of one job at once.
        self.held: Counter[str] = Counter()
        self.on_error: Callable[[], None] | None = None  # the worker's Redis error counter

    async def hold(self, job_id: str, lease_set: bool = False) -> None:
        """Start holding a job's lease: shorten arq's in-progress TTL to the lease, unless the
        claim already set it (``lease_set``)."""
        self.held[job_id] += 1
        if not lease_set:
            await self.redis.pexpire(IN_PROGRESS_PREFIX + job_id, self.lease_ms)

    def release(self, job_id: str) -> None:
        """Stop renewing; arq deletes the in-progress key when it records the outcome."""
        self.held[job_id] -= 1
        if self.held[job_id] <= 0:
            del self.held[job_id]

    async def renew(self) -> None:
        """Extend every held lease, and the due time of its job with it (one script call)."""
        if not self.held:
            return
        await self.renew_script([self.queue], [self.lease_ms, now_ms(), *self.held])

    async def run(self) -> None:
        """Renew leases every third of the lease until cancelled; Redis errors are logged, not fatal."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.renew()
            except (RedisError, OSError) as exc:
                if self.on_error is not None:
                    self.on_error()
                logger.warning("could not renew %d job leases: %s", len(self.held), exc)
