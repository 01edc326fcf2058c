"""Claiming due jobs off arq's queue: the claim script, and the claim rounds of one consumer, each
safe to send twice.

redis-py re-sends a command whose reply was lost (a connection reset after the script ran), and
the consumer's supervised loop starts the round again when its retries run out. A claim that ran
but whose reply never arrived would leave its jobs "running" with no runner for a whole lease, and
charge them a try they never used. So every round carries a token, the consumer's id and the
round's serial: the script stores what it claimed under ``claims_key`` (one key per consumer, with
the lease as its expiry) and, sent again with the same serial, answers the same claims again instead
of claiming more. The serial moves on only once a reply arrived (``Claimer.claim``).
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from worker.queue.keys import ABORT_SET, IN_PROGRESS_PREFIX, JOB_PREFIX, RETRY_PREFIX, claims_key

# arq's abort set is shared by every queue on the Redis; entries no worker took are dropped after.
ABORT_MAX_AGE_MS = 3_600_000


# KEYS[1] = the queue, KEYS[2] = the consumer's claims_key (optional: without it no round is kept
# for a re-send); ARGV: now (ms), the free slots, the lease (ms), the abort entries' max age (ms),
# the round's serial.
#
# A round already answered under this serial (a re-send) answers the same claims again: each job
# still held by that claim (its in-progress key there, its try counter unchanged) gets its lease
# and due time renewed and its payload read again. Otherwise it claims up to ARGV[2] due jobs: every
# due id without an in-progress key gets one (the lease), its try counter incremented, its payload
# read, and its score moved to the lease's end (so claims skip running jobs without reading them,
# and a crashed worker's job is due again when its lease ends; LEASE_RENEW_SCRIPT moves both on).
# Returns each job's score as it was. With nothing to claim it returns the next due time. When
# arq's abort set is not empty it also returns its ids (entries older than ARGV[4] ms are dropped),
# and a claimed job found there is flagged and taken out of it. Due jobs that do have an
# in-progress key (a plain arq worker runs them) are stepped over, at most a few thousand per call.
CLAIM_SCRIPT = f"""
local queue, now, limit, lease = KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3]
local record, serial = KEYS[2], ARGV[5]
local aborts = false
if redis.call('ZCARD', '{ABORT_SET}') > 0 then
  redis.call('ZREMRANGEBYSCORE', '{ABORT_SET}', '-inf', tonumber(now) - tonumber(ARGV[4]))
  aborts = redis.call('ZRANGE', '{ABORT_SET}', 0, 999)
end
local claimed, skipped, page = {{}}, 0, 200
local lease_end = tonumber(now) + tonumber(lease)
local saved = record and redis.call('GET', record)
if saved then
  saved = cjson.decode(saved)
  if saved[1] == serial then  -- a re-send of a round whose reply was lost
    for _, e in ipairs(saved[2]) do
      local id = e[1]
      local in_progress = '{IN_PROGRESS_PREFIX}' .. id
      if redis.call('EXISTS', in_progress) == 1
          and tonumber(redis.call('GET', '{RETRY_PREFIX}' .. id)) == e[3] then
        redis.call('PSETEX', in_progress, lease, '1')
        redis.call('ZADD', queue, 'XX', lease_end, id)
        local payload = redis.call('GET', '{JOB_PREFIX}' .. id)
        claimed[#claimed + 1] = {{id, e[2], e[3], e[4], payload}}
      end
    end
    return {{claimed, false, aborts}}
  end
end
local kept = {{}}
while #claimed < limit and skipped < 2000 do
  local ids = redis.call('ZRANGEBYSCORE', queue, '-inf', now, 'WITHSCORES', 'LIMIT', skipped, page)
  if #ids == 0 then break end
  for i = 1, #ids, 2 do
    local id = ids[i]
    local in_progress = '{IN_PROGRESS_PREFIX}' .. id
    if #claimed < limit and redis.call('EXISTS', in_progress) == 0 then
      redis.call('PSETEX', in_progress, lease, '1')
      redis.call('ZADD', queue, 'XX', lease_end, id)
      local retry = '{RETRY_PREFIX}' .. id
      local try = redis.call('INCR', retry)
      redis.call('EXPIRE', retry, 88400)
      local aborted = 0
      if aborts and redis.call('ZREM', '{ABORT_SET}', id) == 1 then aborted = 1 end
      local payload = redis.call('GET', '{JOB_PREFIX}' .. id)
      claimed[#claimed + 1] = {{id, ids[i + 1], try, aborted, payload}}
      kept[#kept + 1] = {{id, ids[i + 1], try, aborted}}
    elseif #claimed < limit then
      skipped = skipped + 1  -- stays in the due range: the next page starts after it
    end
  end
end
if record and #kept > 0 then
  redis.call('PSETEX', record, lease, cjson.encode({{serial, kept}}))
end
local next_due = false
if #claimed == 0 and limit > 0 then
  local later = redis.call('ZRANGEBYSCORE', queue, '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #later > 0 then next_due = later[2] end
end
return {{claimed, next_due, aborts}}
"""


@dataclass(frozen=True, slots=True)
class Claim:
    """One job as the claim script handed it over."""

    job_id: str
    score: int  # its score in the queue when it was claimed (its due time)
    job_try: int
    aborted: bool  # in arq's abort set when claimed: recorded as aborted, never started
    payload: bytes | None  # None: the payload had expired

    @classmethod
    def from_entry(cls, entry: list[Any]) -> Claim:
        payload = entry[4] if len(entry) > 4 else None
        return cls(entry[0].decode(), int(float(entry[1])), int(entry[2]), entry[3] == 1, payload)


@dataclass(slots=True)
class ActiveJob:
    """A job this consumer is running: what ``status`` and the dashboard list, what abort cancels."""

    task: asyncio.Task[None] | None = None
    name: str = ""
    job_try: int = 0
    started: float = 0.0  # wall clock; 0 until the job's function is called


def consumer_id() -> str:
    """A name for one consumer instance: its host, its process, and a random part (a process may
    run several consumers, and a restarted one must not answer for its predecessor)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Claimer:
    """The claim rounds of one consumer, one at a time (see the module docstring)."""

    def __init__(self, redis: Redis, queue: str, lease_ms: str) -> None:
        self.queue = queue
        self.lease_ms = lease_ms
        self.id = consumer_id()
        self.key = claims_key(queue, self.id)
        self.serial = 1  # the round under way, or the last one that got no reply
        self.script = redis.register_script(CLAIM_SCRIPT)

    async def claim(self, now: int, free: int) -> tuple[list[list[Any]], Any, Any]:
        """Claim up to ``free`` due jobs: (the claim entries, the next due time or False, the abort
        set's ids or False). Raising (Redis unreachable past the client's retries) leaves the round
        open: the next call sends it again and gets its claims, not new ones."""
        claimed, next_due, aborts = await self.script(
            keys=[self.queue, self.key],
            args=[now, free, self.lease_ms, ABORT_MAX_AGE_MS, str(self.serial)],
        )
        self.serial += 1  # answered: the next round is a new one
        return claimed, next_due, aborts
