"""The claim script's flow control (docs/flow-control.md), in Lua: pauses, concurrency limits, rate
limits, priorities and fairness lanes, decided inside the one claim call.

A due job whose payload names a ``"flow"`` (or whose name is paused) is looked at before it is
claimed. If a gate stops it (a paused name, a full concurrency limit, a rate with no token now) it
leaves the due range: its score in the queue becomes ``BLOCKED_SCORE`` (a plain arq client sees it
deferred), and it waits in the gate's blocked set with its real score and priority. The gate is
entered in the due index with the time to look at it again (a holder's lease end, the rate's next
token, never for a pause); the completer sets that time to 0 when a slot frees, and
``resume``/limit changes do the same. Each claim round first moves the waiting jobs of due gates
back into the queue, as many as may pass, so blocked jobs are never scanned again and again.

Concurrency slots are the members of the gate's sorted set (score: the holder's lease end). A
holder whose score has passed is kept only while its ``arq:in-progress`` key lives (its lease, which
the heartbeat renews), so a SIGKILLed worker's slots free when its leases end.

Rates follow GCRA: the gate's value is the theoretical arrival time (TAT, ms); a start passes when
``TAT - now <= tau`` (tau = emission interval x (burst - 1)) and moves the TAT on by one interval.

The snippet expects the claim script's locals ``queue`` and ``now``; it defines ``moved`` (jobs
blocked this round), ``has_prio``, ``paused_set`` and the functions the claim script calls.
"""

from __future__ import annotations

from pgpool_client.enqueue import LANE_RECHECK_MS
from worker.queue.keys import (
    BLOCKED_INFIX,
    BLOCKED_SCORE,
    FLOW_PREFIX,
    GATE_INFIX,
    IN_PROGRESS_PREFIX,
    JOB_PREFIX,
    LANE_HEAD_INFIX,
    PRIORITY_SPAN,
)

# At most this many jobs are moved to a blocked set, and this many moved back, per claim round.
MAX_MOVED = 1000
MAX_PROMOTED = 1000
# Gates looked at again per claim round.
MAX_DUE_GATES = 32

FLOW_LUA = f"""
local SPAN = {PRIORITY_SPAN}
local due_key, gates_key = queue .. '{FLOW_PREFIX}due', queue .. '{FLOW_PREFIX}gates'
local prio_key, limits_key = queue .. '{FLOW_PREFIX}priority', queue .. '{FLOW_PREFIX}limits'
local moved = 0
local has_prio = redis.call('EXISTS', prio_key) == 1
local paused_set, paused_any = {{}}, false
for _, n in ipairs(redis.call('SMEMBERS', queue .. '{FLOW_PREFIX}paused')) do
  paused_set[n] = true
  paused_any = true
end
local overrides = {{}}
local function override(name)
  if overrides[name] == nil then
    local raw = redis.call('HGET', limits_key, name)
    local ok, value = pcall(cjson.decode, raw or '')
    overrides[name] = (ok and type(value) == 'table') and value or false
  end
  return overrides[name]
end
local function max_of(name, declared)
  local o = override(name)
  if o and type(o.max) == 'number' then return o.max end
  return declared
end
local function rate_of(name, limit, per, burst)
  local o = override(name)
  if o and type(o.limit) == 'number' and o.limit > 0 then
    limit = o.limit
    if type(o.per_ms) == 'number' and o.per_ms > 0 then per = o.per_ms end
    if type(o.burst) == 'number' and o.burst >= 1 then burst = o.burst end
  end
  return limit, per, burst
end
local function gate_key(gate) return queue .. '{GATE_INFIX}' .. gate end
local function blocked_key(gate) return queue .. '{BLOCKED_INFIX}' .. gate end
local function prune(gk)
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', gk, '-inf', now)) do
    local ttl = redis.call('PTTL', '{IN_PROGRESS_PREFIX}' .. m)
    if ttl > 0 then redis.call('ZADD', gk, now + ttl, m) else redis.call('ZREM', gk, m) end
  end
  return redis.call('ZCARD', gk)
end
local function first_end(gk)
  local first = redis.call('ZRANGE', gk, 0, 0, 'WITHSCORES')
  if first[2] then return tonumber(first[2]) end
  return now + 1000
end
local function block(id, score, gate, recheck, meta)
  local level = 9
  if has_prio then
    local s = redis.call('ZSCORE', prio_key, id)
    if s then
      level = math.floor(tonumber(s) / SPAN)
      redis.call('ZREM', prio_key, id)
    end
  end
  redis.call('ZADD', blocked_key(gate), level * SPAN + score, id)
  redis.call('ZADD', queue, 'XX', {BLOCKED_SCORE}, id)
  redis.call('ZADD', due_key, 'LT', recheck, gate)
  if meta then redis.call('HSET', gates_key, gate, meta) end
  moved = moved + 1
end
local function requeue(id, s, at_least)
  local level = math.floor(s / SPAN)
  local due = math.max(s - level * SPAN, at_least)
  if not redis.call('ZSCORE', queue, id) then return false end
  redis.call('ZADD', queue, 'XX', due, id)
  if level < 9 then
    redis.call('ZADD', prio_key, level * SPAN + due, id)
    has_prio = true
  end
  return true
end
local function next_in_lane(fair)
  local gate, head_key = 'l:' .. fair, queue .. '{LANE_HEAD_INFIX}' .. fair
  local bk = blocked_key(gate)
  while true do
    local popped = redis.call('ZPOPMIN', bk)
    if #popped == 0 then
      redis.call('DEL', head_key)
      redis.call('ZREM', due_key, gate)
      return 0
    end
    if requeue(popped[1], tonumber(popped[2]), now) then
      local ttl = redis.call('PTTL', '{JOB_PREFIX}' .. popped[1])
      if ttl > 0 then
        redis.call('SET', head_key, popped[1], 'PX', ttl)
      else
        redis.call('SET', head_key, popped[1])
      end
      if redis.call('EXISTS', bk) == 0 then redis.call('ZREM', due_key, gate) end
      return 1
    end
  end
end
local function release_waiting(gate, n)
  local bk, back = blocked_key(gate), 0
  while back < n do
    local popped = redis.call('ZPOPMIN', bk, n - back)
    if #popped == 0 then break end
    for i = 1, #popped, 2 do
      if requeue(popped[i], tonumber(popped[i + 1]), 0) then back = back + 1 end
    end
  end
  return back
end
local function promote(gate, budget)
  local kind, rest = string.sub(gate, 1, 1), string.sub(gate, 3)
  local free, recheck = 0, now + 1000
  if kind == 'l' then
    local head = redis.call('GET', queue .. '{LANE_HEAD_INFIX}' .. rest)
    if head and redis.call('ZSCORE', queue, head) then
      redis.call('ZADD', due_key, now + {LANE_RECHECK_MS}, gate)
      return 0
    end
    return next_in_lane(rest)
  elseif kind == 'p' then
    if paused_set[rest] then free, recheck = 0, '+inf' else free = budget end
  else
    local ok, m = pcall(cjson.decode, redis.call('HGET', gates_key, gate) or '')
    if not ok or type(m) ~= 'table' then
      free = budget  -- no declaration kept: claims look at each job's own again
    elseif kind == 'c' then
      local gk = gate_key(gate)
      free = max_of(m[2], m[4]) - prune(gk)
      recheck = first_end(gk)
    else
      local limit, per, burst = rate_of(m[2], m[4], m[5], m[6])
      local t = per / limit
      local tau = t * (burst - 1)
      local tat = math.max(tonumber(redis.call('GET', gate_key(gate))) or 0, now)
      if tat - tau <= now then free = math.floor((now + tau - tat) / t) + 1 end
      recheck = math.max(tat - tau, now) + math.max(math.min(free, budget), 0) * t
    end
  end
  local n = 0
  free = math.min(free, budget)
  if free > 0 then n = release_waiting(gate, free) end
  if redis.call('EXISTS', blocked_key(gate)) == 0 then
    redis.call('ZREM', due_key, gate)
  else
    redis.call('ZADD', due_key, recheck, gate)
  end
  return n
end
local function promote_due()
  local budget = {MAX_PROMOTED}
  for _, gate in ipairs(redis.call('ZRANGEBYSCORE', due_key, '-inf', now, 'LIMIT', 0,
      {MAX_DUE_GATES})) do
    if budget <= 0 then break end
    budget = budget - promote(gate, budget)
  end
end
-- The gates of one job's flow: (held concurrency gates, rate updates) when it may start now,
-- nil after blocking it on the first gate that stops it.
local function pass(id, score, flow)
  local held, rates = {{}}, {{}}
  if type(flow.concurrency) == 'table' then
    for _, c in ipairs(flow.concurrency) do
      if type(c) == 'table' and type(c.name) == 'string' and type(c.max) == 'number'
          and c.max >= 1 then  -- a malformed entry: claimed, the worker poisons it
        local key = type(c.key) == 'string' and c.key or ''
        local gate = 'c:' .. c.name .. ':' .. key
        local gk = gate_key(gate)
        local max = max_of(c.name, c.max)
        local n = redis.call('ZCARD', gk)
        if n >= max then n = prune(gk) end
        if n >= max then
          block(id, score, gate, first_end(gk), cjson.encode({{'c', c.name, key, c.max}}))
          return nil
        end
        held[#held + 1] = gate
      end
    end
  end
  if type(flow.rate) == 'table' then
    for _, r in ipairs(flow.rate) do
      if type(r) == 'table' and type(r.name) == 'string' and type(r.limit) == 'number'
          and type(r.per_ms) == 'number' and r.limit > 0 and (tonumber(r.burst) or 1) >= 1 then
        local key = type(r.key) == 'string' and r.key or ''
        local gate = 'r:' .. r.name .. ':' .. key
        local declared_burst = tonumber(r.burst) or 1
        local limit, per, burst = rate_of(r.name, r.limit, r.per_ms, declared_burst)
        local t = per / limit
        local tau = t * (burst - 1)
        local gk = gate_key(gate)
        local tat = math.max(tonumber(redis.call('GET', gk)) or 0, now)
        if tat - now > tau then
          local meta = cjson.encode({{'r', r.name, key, r.limit, r.per_ms, declared_burst}})
          block(id, score, gate, tat - tau, meta)
          return nil
        end
        rates[#rates + 1] = {{gk, tat + t, per}}
      end
    end
  end
  return held, rates
end
local function hold(id, held, rates, lease_end)
  for _, gate in ipairs(held) do redis.call('ZADD', gate_key(gate), lease_end, id) end
  for _, r in ipairs(rates) do
    redis.call('SET', r[1], string.format('%.3f', r[2]), 'PX', math.ceil(r[2] - now + r[3]))
  end
end
"""
