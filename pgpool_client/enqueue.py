"""Writing jobs in arq's Redis layout directly: the scripts of docs/wire-format.md, which refuse a
job id that is queued, running or has a kept result, and the wake push that follows each enqueue."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError

from pgpool_client import codec
from pgpool_client.dedicated import DedicatedConnection, pack
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
local added, members = {{}}, {{}}
local score, stride = tonumber(ARGV[2]), tonumber(ARGV[3])
local function add_members()  -- plain jobs join the queue in one ZADD per 500
  if #members > 0 then
    redis.call('ZADD', KEYS[1], unpack(members))
    members = {{}}
  end
end
for i = 4, #ARGV, stride do
  local id = ARGV[i]
  if redis.call('EXISTS', '{JOB_PREFIX}' .. id, '{RESULT_PREFIX}' .. id) > 0 then
    added[#added + 1] = 0
  else
    redis.call('PSETEX', '{JOB_PREFIX}' .. id, ARGV[1], ARGV[i + 1])
    if stride == 2 then
      members[#members + 1] = score
      members[#members + 1] = id
      if #members >= 1000 then add_members() end
    else
      place(KEYS[1], id, score, tonumber(ARGV[i + 2]), ARGV[i + 3], ARGV[1], score)
    end
    added[#added + 1] = 1
  end
end
add_members()
return added
"""
)


# Chunks written at once: while Redis runs one window, the client builds the next.
WINDOW = 2
# One chunk, as its builder hands it over just before it is sent: its enqueue time (ms, its jobs'
# score and "et"), its jobs' ids and payloads and, when some may have one, their (priority,
# fairness key) (flow_of; None: every job plain).
Chunk = tuple[int, Sequence[str], Sequence[bytes], Sequence[tuple[int, str]] | None]


async def enqueue_many(
    redis: Redis, queue: str, jobs: Sequence[tuple[str, dict[str, Any]]], chunk: int = 1000
) -> list[bool]:
    """Enqueue many ``(job_id, job)`` pairs, ``chunk`` per script call (``send_chunks``); each
    entry of the answer says whether that job was added (False: its id is taken)."""

    def build(start: int, stop: int) -> Chunk:
        enqueued = now_ms()
        part = jobs[start:stop]
        placed = [flow_of(job) for _, job in part]
        payloads = [codec.serialize({**job, "t": None, "et": enqueued}) for _, job in part]
        return enqueued, [job_id for job_id, _ in part], payloads, placed

    return await send_chunks(redis, queue, len(jobs), chunk, build)


async def send_chunks(
    redis: Redis,
    queue: str,
    count: int,
    chunk: int,
    build: Callable[[int, int], Chunk],
    *,
    script: str = ENQUEUE_MANY_SCRIPT,
) -> list[bool]:
    """Run ``script`` (ENQUEUE_MANY_SCRIPT) once per ``chunk`` of ``count`` jobs, each followed
    by a wake push; ``build(start, stop)`` gives a chunk just before it is sent. On one
    connection of ``redis``'s pool (pgpool_client.dedicated): the first chunk alone, then
    ``WINDOW`` chunks per write, each window built while Redis runs the one before; in order,
    so that of two jobs with one id the later is refused. A script Redis does not have
    (NOSCRIPT) is loaded and its chunks sent again; any other error reply is raised (the
    windows before it stay enqueued). One True/False (added/taken) per job; no round trip for
    no jobs."""
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    if count <= 0:
        return []
    sha = hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()  # its name in Redis
    head = pack([("EVALSHA", sha, 1, queue)])[len(b"*4\r\n") :]
    key = wake_key(queue)
    wake = pack([("LPUSH", key, b"1"), ("LTRIM", key, 0, 0)])
    starts = range(0, count, chunk)
    direct = DedicatedConnection(redis)
    added: list[bool] = []
    sending: asyncio.Future[list[Any]] | None = None
    bounds = [0, *range(1, len(starts), WINDOW), len(starts)]  # the first chunk goes alone
    try:
        for first, last in pairwise(bounds):
            chunks = [
                chunk_command(head, *build(start, min(start + chunk, count)))
                for start in starts[first:last]
            ]
            if sending is not None:
                added += answers(await sending)
            sending = asyncio.ensure_future(_send(direct, chunks, wake, script))
            await asyncio.sleep(0)  # it writes now; the next window is built meanwhile
        if sending is not None:
            added += answers(await sending)
            sending = None
    finally:
        if sending is not None and not sending.done():  # cancelled: its read disconnects
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
        await direct.close()
    return added


def chunk_command(
    head: bytes,
    enqueued: int,
    ids: Sequence[str],
    payloads: Sequence[bytes],
    placed: Sequence[tuple[int, str]] | None = None,
) -> bytes:
    """One chunk's EVALSHA in Redis's protocol, as ``pack`` writes it (``head``: EVALSHA, the
    sha, 1 and the queue, packed). ARGV: the payloads' TTL (ms), the score (``enqueued``), the
    stride, then per job its id and payload (stride 2) or, when some job of ``placed`` has a
    priority or a fairness key, its id, payload, priority and fairness key (stride 4)."""
    plain = placed is None or not any(priority or fair for priority, fair in placed)
    stride = 2 if plain else 4
    top = pack([(EXPIRES, enqueued, stride)])[len(b"*3\r\n") :]
    parts = [b"*%d\r\n" % (7 + stride * len(ids)), head, top]
    encoded = [job_id.encode() for job_id in ids]
    if plain:
        parts += [
            b"$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(job_id), job_id, len(payload), payload)
            for job_id, payload in zip(encoded, payloads, strict=True)
        ]
    else:
        assert placed is not None
        for job_id, payload, (priority, fair) in zip(encoded, payloads, placed, strict=True):
            level, key = b"%d" % priority, fair.encode()
            parts.append(_FOUR % (len(job_id), job_id, len(payload), payload))
            parts.append(_FOUR % (len(level), level, len(key), key))
    return b"".join(parts)


EXPIRES = str(EXPIRES_EXTRA_MS)
_FOUR = b"$%d\r\n%b\r\n$%d\r\n%b\r\n"


async def _send(
    direct: DedicatedConnection, chunks: list[bytes], wake: bytes, script: str
) -> list[Any]:
    """The replies to ``chunks``, each followed by ``wake`` (per chunk: the script's, the wake
    push's, the trim's); the chunks Redis answered NOSCRIPT are sent again, in order, once the
    script is loaded."""
    replies = await direct.execute_packed(b"".join(_each_then(chunks, wake)), 3 * len(chunks))
    again = [n for n in range(len(chunks)) if isinstance(replies[3 * n], NoScriptError)]
    if again:
        (loaded,) = await direct.execute(("SCRIPT", "LOAD", script))
        if isinstance(loaded, Exception):
            raise loaded
        resent = [chunks[n] for n in again]
        replies_again = await direct.execute_packed(
            b"".join(_each_then(resent, wake)), 3 * len(resent)
        )
        for k, n in enumerate(again):
            replies[3 * n : 3 * n + 3] = replies_again[3 * k : 3 * k + 3]
    return replies


def _each_then(chunks: list[bytes], wake: bytes) -> list[bytes]:
    return [part for command in chunks for part in (command, wake)]


def answers(replies: list[Any]) -> list[bool]:
    """Added/taken per job from a window's replies; the first error reply is raised."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    added: list[bool] = []
    for at in range(0, len(replies), 3):
        added += map(bool, replies[at])
    return added
