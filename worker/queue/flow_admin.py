"""Flow control as an operator changes it (docs/flow-control.md): pauses of job names or the
whole queue, and limits set at run time over what the registry's jobs declare. The CLI (``pause``,
``resume``, ``limits``) writes through these functions; worker/queue/flow_usage.py reads each
limit's use for ``status``, ``/metrics`` and the dashboard.

Changes are the claim script's own keys (worker/runtime/flow_lua.py reads them every round): a
pause is a member of ``<q>:flow:paused`` (``"*"``: the whole queue); a limit set at run time is a
field of ``<q>:flow:limits``. A change that may let waiting jobs go (a resume, a limit set or
cleared) also sets the affected gates' time in ``<q>:flow:due`` to 0, so that the next claim round
looks at them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from pgpool_client.flow import NAME
from worker.queue.keys import (
    blocked_index_key,
    blocked_key,
    gate_key,
    limits_key,
    paused_key,
)

WHOLE_QUEUE = "*"  # the member of the paused set that pauses every job name
SCAN_COUNT = 1000
BATCH = 500  # gates per usage script call

# SREM the names, then ask the claim script to look again at every pause gate whose name is no
# longer paused (the given ones at once; the others, "+inf" until now, after a whole-queue resume).
# KEYS: the paused set, the due index. ARGV: names. Returns the names still paused.
RESUME_SCRIPT = """
local paused, due = KEYS[1], KEYS[2]
for _, name in ipairs(ARGV) do
  redis.call('SREM', paused, name)
  redis.call('ZADD', due, 'XX', 0, 'p:' .. name)
end
for _, gate in ipairs(redis.call('ZRANGEBYSCORE', due, '+inf', '+inf')) do
  if string.sub(gate, 1, 2) == 'p:' and redis.call('SISMEMBER', paused, string.sub(gate, 3)) == 0
  then redis.call('ZADD', due, 'XX', 0, gate) end
end
return redis.call('SMEMBERS', paused)
"""


def check_limit_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise ValueError(f"limit name {name!r} must be 1-64 letters, digits, '_', '.' or '-'")
    return name


async def paused_names(redis: Redis, queue: str) -> list[str]:
    """The paused job names, sorted ("*": the whole queue)."""
    return sorted(m.decode() for m in await redis.smembers(paused_key(queue)))  # type: ignore[misc]


async def pauses(redis: Redis, queue: str) -> tuple[list[str], dict[str, int]]:
    """The paused names and, for each but ``"*"``, the jobs waiting on its pause."""
    paused = await paused_names(redis, queue)
    names = [name for name in paused if name != WHOLE_QUEUE]
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.zcard(blocked_key(queue, "p:" + name))
        counts = await pipe.execute() if names else []
    return paused, dict(zip(names, map(int, counts), strict=True))


async def pause(redis: Redis, queue: str, names: Sequence[str]) -> list[str]:
    """Pause ``names`` (``"*"``: the whole queue); running jobs finish. Returns those paused now."""
    await redis.sadd(paused_key(queue), *names)  # type: ignore[misc]
    return await paused_names(redis, queue)


async def resume(redis: Redis, queue: str, names: Sequence[str]) -> list[str]:
    """Resume ``names`` (``"*"``: undo a whole-queue pause; names paused one by one stay paused);
    their waiting jobs go back to the queue at the next claim. Returns those still paused."""
    still = await redis.eval(  # type: ignore[misc]
        RESUME_SCRIPT, 2, paused_key(queue), blocked_index_key(queue), *names
    )
    return sorted(m.decode() for m in still)


async def _recheck(redis: Redis, queue: str, name: str) -> int:
    """Have the claim script look again at every waiting gate of limit ``name``; how many."""
    due, count = blocked_index_key(queue), 0
    for kind in ("c", "r"):
        batch: list[bytes] = []
        async for gate, _ in redis.zscan_iter(due, match=f"{kind}:{name}:*", count=SCAN_COUNT):
            batch.append(gate)
            if len(batch) >= BATCH:
                count += await _due_now(redis, due, batch)
                batch = []
        count += await _due_now(redis, due, batch)
    return count


async def _due_now(redis: Redis, due: str, gates: list[bytes]) -> int:
    if gates:
        await redis.zadd(due, {g: 0 for g in gates}, xx=True)
    return len(gates)


async def _restart_rate(redis: Redis, queue: str, name: str) -> None:
    """Forget the GCRA times of rate ``name``'s keys, so that a new rate holds from now on (kept,
    a time set by the old rate would hold the next start back by the old interval)."""
    match = glob(gate_key(queue, f"r:{name}:")) + "*"
    batch: list[bytes] = []
    async for key in redis.scan_iter(match=match, count=SCAN_COUNT):
        batch.append(key)
        if len(batch) >= BATCH:
            await redis.unlink(*batch)
            batch = []
    if batch:
        await redis.unlink(*batch)


async def set_limit(redis: Redis, queue: str, name: str, value: dict[str, Any]) -> int:
    """Set limit ``name`` at run time (over what the jobs declare); returns the gates re-checked.
    A rate starts afresh (at most its burst at once, then the new rate)."""
    await redis.hset(limits_key(queue), check_limit_name(name), json.dumps(value))  # type: ignore[misc]
    if "limit" in value:
        await _restart_rate(redis, queue, name)
    return await _recheck(redis, queue, name)


async def clear_limit(redis: Redis, queue: str, name: str) -> int:
    """Drop the run-time value of ``name``: the declared one holds again (a rate afresh). Gates
    re-checked."""
    await redis.hdel(limits_key(queue), check_limit_name(name))  # type: ignore[misc]
    await _restart_rate(redis, queue, name)
    return await _recheck(redis, queue, name)


async def overrides(redis: Redis, queue: str) -> dict[str, dict[str, Any]]:
    """The limits set at run time (values that are not JSON objects are shown as ``{"raw": ...}``)."""
    found: dict[str, dict[str, Any]] = {}
    for name, raw in (await redis.hgetall(limits_key(queue))).items():  # type: ignore[misc]
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        found[name.decode()] = value if isinstance(value, dict) else {"raw": raw.decode("replace")}
    return found


def glob(text: str) -> str:
    """``text`` as a SCAN pattern that matches it literally."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)
