"""Writing jobs in arq's Redis layout directly: the scripts of docs/wire-format.md, which refuse a
job id that is queued, running or has a kept result, and the wake push that follows each enqueue."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from pgpool_client import codec
from pgpool_client.flow import MAX_PRIORITY
from pgpool_client.keys import (
    BLOCKED_INFIX,
    BLOCKED_SCORE,
    EXPIRES_EXTRA_MS,
    FLOW_PREFIX,
    JOB_PREFIX,
    LANE_HEAD_INFIX,
    PRIORITY_SPAN,
    RESULT_PREFIX,
    wake_key,
)

# A lane whose head left the queue without a claim (a plain arq worker ran it) is looked at again
# after this long (ms): its next job then joins the queue.
LANE_RECHECK_MS = 5000

# Puts a new job in the queue at its score: a job of priority 1..9 also in the priority set; a job
# with a fairness key whose lane already has a job in the queue waits in the lane instead (docs/
# flow-control.md). ARGV: the payload's TTL (ms), now (ms).
PLACE = f"""
local function place(queue, id, score, p, fair, ttl, now)
  if fair ~= '' then
    local head_key = queue .. '{LANE_HEAD_INFIX}' .. fair
    local head = redis.call('GET', head_key)
    if head and head ~= id and redis.call('ZSCORE', queue, head) then
      redis.call('ZADD', queue .. '{BLOCKED_INFIX}l:' .. fair, (9 - p) * {PRIORITY_SPAN} + score, id)
      redis.call('ZADD', queue, {BLOCKED_SCORE}, id)
      redis.call('ZADD', queue .. '{FLOW_PREFIX}due', 'NX', now + {LANE_RECHECK_MS}, 'l:' .. fair)
      return
    end
    redis.call('SET', head_key, id, 'PX', ttl)
  end
  redis.call('ZADD', queue, score, id)
  if p > 0 then
    redis.call('ZADD', queue .. '{FLOW_PREFIX}priority', (9 - p) * {PRIORITY_SPAN} + score, id)
  end
end
"""

# KEYS: the payload, the result, the queue; ARGV: payload, TTL, score, id, priority, fairness key
# ('' for none), now. 0 when the id is taken.
ENQUEUE_SCRIPT = (
    PLACE
    + """
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
redis.call('PSETEX', KEYS[1], ARGV[2], ARGV[1])
place(KEYS[3], ARGV[4], tonumber(ARGV[3]), tonumber(ARGV[5]), ARGV[6], ARGV[2], tonumber(ARGV[7]))
return 1
"""
)


def flow_of(job: dict[str, Any]) -> tuple[int, str]:
    """The (priority, fairness key) a job's payload names in its ``"flow"`` (0, '' for none)."""
    flow = job.get("flow")
    if not isinstance(flow, dict):
        return 0, ""
    priority, fair = flow.get("priority", 0), flow.get("fair", "")
    # Anything else the worker refuses as poison at its claim: placed as a plain job until then.
    valid = type(priority) is int and 0 <= priority <= MAX_PRIORITY
    return (priority if valid else 0), (fair if isinstance(fair, str) else "")


def now_ms() -> int:
    """Now, in whole milliseconds since 1970 (UTC), as arq writes enqueue times and scores."""
    return int(time.time() * 1000)


async def enqueue_payload(
    redis: Redis, queue: str, job_id: str, job: dict[str, Any], defer_ms: int = 0
) -> bool:
    """Enqueue ``job`` ({"f", "a", "k", ...}) as a new job; False if ``job_id`` is taken."""
    enqueued = now_ms()
    payload = codec.serialize({**job, "t": None, "et": enqueued}).decode()
    keys = (JOB_PREFIX + job_id, RESULT_PREFIX + job_id, queue)
    expires = defer_ms + EXPIRES_EXTRA_MS
    priority, fair = flow_of(job)
    args = [payload, str(expires), str(enqueued + defer_ms), job_id, str(priority), fair]
    args.append(str(enqueued))
    async with redis.pipeline(transaction=False) as pipe:
        pipe.eval(ENQUEUE_SCRIPT, 3, *keys, *args)
        wake(pipe, queue)
        added = (await pipe.execute())[0]
    return bool(added)


def wake(pipe: Pipeline, queue: str) -> None:
    """Queue a wake-up for an idle consumer of ``queue`` (a one-element list, never longer)."""
    key = wake_key(queue)
    pipe.lpush(key, b"1")
    pipe.ltrim(key, 0, 0)


# The same rule for a whole chunk in one call: KEYS[1] = the queue; ARGV[1] = the payloads' TTL in
# ms, ARGV[2] = the score (now), ARGV[3] = the stride: 2 for a chunk of plain jobs (per job its id
# and payload), 4 when some job has a priority or a fairness key (per job its id, payload,
# priority and fairness key, '' for none). One 1/0 (added/taken) per job.
ENQUEUE_MANY_SCRIPT = (
    PLACE
    + f"""
local added = {{}}
local score, stride = tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 4, #ARGV, stride do
  local id = ARGV[i]
  if redis.call('EXISTS', '{JOB_PREFIX}' .. id, '{RESULT_PREFIX}' .. id) > 0 then
    added[#added + 1] = 0
  else
    redis.call('PSETEX', '{JOB_PREFIX}' .. id, ARGV[1], ARGV[i + 1])
    if stride == 2 then
      redis.call('ZADD', KEYS[1], score, id)
    else
      place(KEYS[1], id, score, tonumber(ARGV[i + 2]), ARGV[i + 3], ARGV[1], score)
    end
    added[#added + 1] = 1
  end
end
return added
"""
)


async def enqueue_many(
    redis: Redis, queue: str, jobs: Sequence[tuple[str, dict[str, Any]]], chunk: int = 1000
) -> list[bool]:
    """Enqueue many ``(job_id, job)`` pairs, ``chunk`` per script call (one round trip each);
    each entry of the answer says whether that job was added (False: its id is taken)."""
    script = redis.register_script(ENQUEUE_MANY_SCRIPT)
    expires = str(EXPIRES_EXTRA_MS)
    added: list[bool] = []
    for start in range(0, len(jobs), chunk):
        enqueued = now_ms()
        part = jobs[start : start + chunk]
        placed = [flow_of(job) for _, job in part]
        plain = not any(priority or fair for priority, fair in placed)
        args: list[str | bytes] = [expires, str(enqueued), "2" if plain else "4"]
        for (job_id, job), (priority, fair) in zip(part, placed, strict=True):
            payload = codec.serialize({**job, "t": None, "et": enqueued})
            args += (job_id, payload) if plain else (job_id, payload, str(priority), fair)
        async with redis.pipeline(transaction=False) as pipe:
            await script([queue], args, client=pipe)
            wake(pipe, queue)
            answers = (await pipe.execute())[0]
        added.extend(bool(answer) for answer in answers)
    return added
