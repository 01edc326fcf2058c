"""Writing jobs in arq's Redis layout directly: the scripts of docs/wire-format.md, which refuse a
job id that is queued, running or has a kept result, and the wake push that follows each enqueue."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from pgpool_client import codec
from pgpool_client.keys import EXPIRES_EXTRA_MS, JOB_PREFIX, RESULT_PREFIX, wake_key

ENQUEUE_SCRIPT = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
redis.call('PSETEX', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
return 1
"""


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
    async with redis.pipeline(transaction=False) as pipe:
        pipe.eval(ENQUEUE_SCRIPT, 3, *keys, payload, str(expires), str(enqueued + defer_ms), job_id)
        wake(pipe, queue)
        added = (await pipe.execute())[0]
    return bool(added)


def wake(pipe: Pipeline, queue: str) -> None:
    """Queue a wake-up for an idle consumer of ``queue`` (a one-element list, never longer)."""
    key = wake_key(queue)
    pipe.lpush(key, b"1")
    pipe.ltrim(key, 0, 0)


# The same rule for a whole chunk in one call: KEYS[1] = the queue; ARGV[1] = the payloads' TTL in
# ms, ARGV[2] = the score, then a job id and its payload per job. One 1/0 (added/taken) per job.
ENQUEUE_MANY_SCRIPT = f"""
local added = {{}}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('EXISTS', '{JOB_PREFIX}' .. id, '{RESULT_PREFIX}' .. id) > 0 then
    added[#added + 1] = 0
  else
    redis.call('PSETEX', '{JOB_PREFIX}' .. id, ARGV[1], ARGV[i + 1])
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    added[#added + 1] = 1
  end
end
return added
"""


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
        args: list[str | bytes] = [expires, str(enqueued)]
        for job_id, job in jobs[start : start + chunk]:
            args += (job_id, codec.serialize({**job, "t": None, "et": enqueued}))
        async with redis.pipeline(transaction=False) as pipe:
            await script([queue], args, client=pipe)
            wake(pipe, queue)
            answers = (await pipe.execute())[0]
        added.extend(bool(answer) for answer in answers)
    return added
