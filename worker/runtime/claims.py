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

import os
import socket
import uuid
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from pgpool_client.dedicated import DedicatedConnection
from worker.core.clock import now_ms
from worker.queue.keys import (
    ABORT_SET,
    BLOCKED_SCORE,
    IN_PROGRESS_PREFIX,
    JOB_PREFIX,
    LANE_HEAD_INFIX,
    RETRY_PREFIX,
    claims_key,
    consumer_stop_key,
    consumer_wake_key,
    wake_key,
)
from worker.runtime.flow_lua import FLOW_LUA, MAX_MOVED

# arq's abort set is shared by every queue on the Redis; entries no worker took are dropped after.
ABORT_MAX_AGE_MS = 3_600_000


# KEYS[1] = the queue, KEYS[2] = the consumer's claims_key (optional: without it no round is kept
# for a re-send), KEYS[3] = its stop key (optional: once set, rounds claim nothing); ARGV: now
# (ms; Redis's clock when the script runs is used if it is later), the free slots, the lease
# (ms), the abort entries' max age (ms), the round's serial.
#
# A round already answered under this serial (a re-send) answers the same claims again: each job
# still held by that claim (its in-progress key there, its try counter unchanged) gets its lease
# and due time renewed and its payload read again. Otherwise, unless the whole queue is paused, it
# first moves jobs waiting on due gates back into the queue (worker/runtime/flow_lua.py), then
# claims up to ARGV[2] due jobs: of priority 9 down to 1 first (but at least one claim in ten, and
# every tenth round when fewer than ten slots are free, goes to the oldest due jobs whatever their
# priority), then the oldest due. Every due id without an in-progress key whose flow lets it start
# gets one (the lease), its try counter incremented, its payload read, and its score moved to the
# lease's end (so claims skip running jobs without reading them, and a crashed worker's job is due
# again when its lease ends; LEASE_RENEW_SCRIPT moves both on). Returns each job's score as it
# was, the gates it holds (JSON, '' for none) and its priority. When it claimed fewer than ARGV[2]
# it returns the next due time (now + 1 when it stopped early, with more jobs due). When arq's abort set is not empty it also returns its ids (entries older than
# ARGV[4] ms are dropped), and a claimed job found there is flagged and taken out of it (such a
# job is claimed whatever its gates: it is recorded aborted, never started). Due jobs
# that do have an in-progress key (a plain arq worker runs them) are stepped over, at most a few
# thousand per call.
CLAIM_SCRIPT = (
    f"""
local queue, now, limit, lease = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local record, serial = KEYS[2], ARGV[5]
do  -- now is when the script runs (Redis's clock), not when the round was sent: every round of
  -- every worker decides on one clock (a rate's tokens above all), and a round sent behind a
  -- wait for a wake-up sees the jobs enqueued meanwhile as due
  local t = redis.call('TIME')
  now = math.max(now, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end
if KEYS[3] and redis.call('EXISTS', KEYS[3]) == 1 then limit = 0 end  -- the consumer stopped
local aborts = false
if redis.call('ZCARD', '{ABORT_SET}') > 0 then
  redis.call('ZREMRANGEBYSCORE', '{ABORT_SET}', '-inf', now - tonumber(ARGV[4]))
  aborts = redis.call('ZRANGE', '{ABORT_SET}', 0, 999)
end
local claimed, skipped, page = {{}}, 0, 200
local lease_end = now + tonumber(lease)
"""
    + FLOW_LUA
    + f"""
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
        claimed[#claimed + 1] = {{id, e[2], e[3], e[4], payload, e[5], e[6]}}
      end
    end
    return {{claimed, false, aborts}}
  end
end
if paused_set['*'] then limit = 0 end
if limit > 0 and redis.call('EXISTS', due_key) == 1 then promote_due() end
local kept = {{}}
local more = false  -- this round stopped early (it moved enough to blocked sets): claim again
-- 1: claimed, 0: stepped over (running), 2: moved to a blocked set, 3: this round moved enough
local function take(id, score)
  local in_progress = '{IN_PROGRESS_PREFIX}' .. id
  if redis.call('EXISTS', in_progress) == 1 then return 0 end
  local payload = redis.call('GET', '{JOB_PREFIX}' .. id)
  local held, rates, fair = false, false, false
  local abort_now = aborts and redis.call('ZSCORE', '{ABORT_SET}', id)
  if payload and not abort_now and (paused_any or string.find(payload, '"flow"', 1, true)) then
    local ok, d = pcall(cjson.decode, payload)
    if ok and type(d) == 'table' then
      if moved >= {MAX_MOVED} then return 3 end
      if paused_any and type(d.f) == 'string' and paused_set[d.f] then
        block(id, score, 'p:' .. d.f, '+inf', false)
        return 2
      end
      if type(d.flow) == 'table' then
        held, rates = pass(id, score, d.flow)
        if not held then return 2 end
        hold(id, held, rates, lease_end)
        if type(d.flow.fair) == 'string' then fair = d.flow.fair end
      end
    end
  end
  redis.call('PSETEX', in_progress, lease, '1')
  redis.call('ZADD', queue, 'XX', lease_end, id)
  local retry = '{RETRY_PREFIX}' .. id
  local try = redis.call('INCR', retry)
  redis.call('EXPIRE', retry, 88400)
  local aborted = 0
  if aborts and redis.call('ZREM', '{ABORT_SET}', id) == 1 then aborted = 1 end
  local gates = ''
  if held and #held > 0 then gates = cjson.encode(held) end
  local p = 0
  if has_prio then
    local s = redis.call('ZSCORE', prio_key, id)
    if s then
      local level = math.floor(tonumber(s) / SPAN)
      p = 9 - level
      redis.call('ZADD', prio_key, 'XX', level * SPAN + lease_end, id)
    end
  end
  if fair and redis.call('GET', queue .. '{LANE_HEAD_INFIX}' .. fair) == id then
    next_in_lane(fair)
  end
  claimed[#claimed + 1] = {{id, score, try, aborted, payload, gates, p}}
  kept[#kept + 1] = {{id, score, try, aborted, gates, p}}
  return 1
end
if has_prio and limit > 0 then
  local oldest = math.floor(limit / 10)
  if oldest == 0 and tonumber(serial) % 10 == 0 then oldest = limit end
  local stop = false
  for p = 9, 1, -1 do
    if stop or #claimed >= limit - oldest then break end
    local base = (9 - p) * SPAN
    local ids = redis.call('ZRANGEBYSCORE', prio_key, base, base + now, 'WITHSCORES',
      'LIMIT', 0, limit - oldest - #claimed)
    for i = 1, #ids, 2 do
      if #claimed < limit - oldest then
        if take(ids[i], tonumber(ids[i + 1]) - base) == 3 then stop, more = true, true break end
      end
    end
  end
end
while #claimed < limit and skipped < 2000 do
  local ids = redis.call('ZRANGEBYSCORE', queue, '-inf', now, 'WITHSCORES', 'LIMIT', skipped, page)
  if #ids == 0 then break end
  local stop = false
  for i = 1, #ids, 2 do
    if #claimed < limit then
      local verdict = take(ids[i], tonumber(ids[i + 1]))
      if verdict == 0 then
        skipped = skipped + 1  -- stays in the due range: the next page starts after it
      elseif verdict == 3 then
        stop, more = true, true
        break
      end
    end
  end
  if stop then break end
end
if record and #kept > 0 then
  redis.call('PSETEX', record, lease, cjson.encode({{serial, kept}}))
end
local next_due = false
if more then
  next_due = tostring(now + 1)
elseif #claimed < limit then
  local later = redis.call('ZRANGEBYSCORE', queue, '(' .. now, '({BLOCKED_SCORE}', 'WITHSCORES',
    'LIMIT', 0, 1)
  if #later > 0 then next_due = tonumber(later[2]) end
  local gate = redis.call('ZRANGE', due_key, 0, 0, 'WITHSCORES')
  if #gate > 0 and gate[2] ~= 'inf' and (not next_due or tonumber(gate[2]) < next_due) then
    next_due = tonumber(gate[2])
  end
  if next_due then next_due = tostring(math.max(math.floor(next_due), now + 1)) end
end
return {{claimed, next_due, aborts}}
"""
)


# What one claim round answers: the claim entries, the next due time or False, the abort set's ids
# or False.
Round = tuple[list[list[Any]], Any, Any]


def consumer_id() -> str:
    """A name for one consumer instance: its host, its process, and a random part (a process may
    run several consumers, and a restarted one must not answer for its predecessor)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Claimer:
    """The claim rounds of one consumer, one at a time (see the module docstring)."""

    def __init__(self, redis: Redis, queue: str, lease_ms: str) -> None:
        self.redis = redis
        self.queue = queue
        self.lease_ms = lease_ms
        self.id = consumer_id()
        self.key = claims_key(queue, self.id)
        self.stop_key = consumer_stop_key(queue, self.id)
        # An idle round waits on the producers' wake-up list and on this consumer's own.
        self.wake_keys = [wake_key(queue), consumer_wake_key(queue, self.id)]
        self.serial = 1  # the round under way, or the last one that got no reply
        self.script = redis.register_script(CLAIM_SCRIPT)
        self.direct = DedicatedConnection(redis)  # the claim loop's own connection

    def _claim(self, now: int, free: int) -> tuple[Any, ...]:
        keys = (self.queue, self.key, self.stop_key)
        args = (now, free, self.lease_ms, ABORT_MAX_AGE_MS, str(self.serial))
        return ("EVALSHA", self.script.sha, len(keys), *keys, *args)

    async def claim(self, now: int, free: int) -> Round:
        """Claim up to ``free`` due jobs: (the claim entries, the next due time or False, the abort
        set's ids or False). Raising (Redis unreachable past the client's retries) leaves the round
        open: the next call sends it again and gets its claims, not new ones."""
        return (await self.round(now, free))[0]

    async def claim_after_wake(self, now: int, free: int, wait: float) -> Round:
        """Wait up to ``wait`` seconds for a wake-up (a producer's, or this consumer's own stop),
        then claim as ``claim`` does, in one round trip: the claim is pipelined behind the BLPOP,
        and Redis runs it the moment the wait ends (an idle worker's wake-up costs one reply)."""
        return (await self.round(now, free, wait))[0]

    async def round(
        self, now: int, free: int, wait: float = 0.0, before: Sequence[tuple[Any, ...]] = ()
    ) -> tuple[Round, list[Any]]:
        """One round on the claim loop's own connection, in one write: the ``before`` commands
        (the completer's outcomes), a wait for a wake-up when ``wait``, then the claim. Returns
        the claim's answer and the replies to ``before`` (an error reply as its exception)."""
        commands = [*before]
        if wait:
            commands.append(("BLPOP", *self.wake_keys, wait))
        commands.append(self._claim(now, free))
        *replies, reply = await self.direct.execute(*commands)
        if isinstance(reply, NoScriptError):  # a restarted Redis: the script is loaded and sent
            await self.direct.execute(("SCRIPT", "LOAD", self.script.script))
            (reply,) = await self.direct.execute(self._claim(now_ms(), free))
        for error in (reply, *replies[len(before) :]):
            if isinstance(error, Exception):  # the round stays open: sent again, claims answered
                raise error
        self.serial += 1  # answered: the next round is a new one
        return (reply[0], reply[1], reply[2]), replies[: len(before)]

    async def close(self) -> None:
        """Give the claim loop's connection back to the pool."""
        await self.direct.close()

    async def stop(self) -> None:
        """Claim nothing more, and end a wait for a wake-up under way (``claim_after_wake``)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self.stop_key, b"1", px=int(self.lease_ms))
            pipe.lpush(self.wake_keys[1], b"1")
            pipe.pexpire(self.wake_keys[1], int(self.lease_ms))
            await pipe.execute()
