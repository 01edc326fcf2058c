"""The completer: records how claimed jobs ended, in arq's result format, many per call of one Lua
script (atomic), and the last ones on shutdown (``Completer.flush``).

The job runner (``worker/runtime/executor.py``) hands every run's ``Outcome`` to ``Completer.record``;
the write loop sends all pending outcomes in one script call, and puts a batch back when Redis did
not take it (written on the next round).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from arq.constants import keep_cronjob_progress
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from pgpool_client.dedicated import DedicatedConnection
from worker.core.clock import now_ms
from worker.queue.keys import (
    ABORT_SET,
    FLOW_PREFIX,
    GATE_INFIX,
    IN_PROGRESS_PREFIX,
    JOB_PREFIX,
    PRIORITY_SPAN,
    RESULT_PREFIX,
    RETRY_PREFIX,
    WAKE_SUFFIX,
    failures_key,
)

logger = logging.getLogger(__name__)

# Records finished tries, ten arguments each after ARGV[1] (the failures list's length): kind,
# job id, result (arq's format; '' = none), result TTL in ms ('' = forever), new score (retries),
# cron (1/0), aborted (1/0), a recent-failures entry ('' = none), the concurrency gates the job
# held (JSON, '' = none) and its priority. Kinds: "finish" (a result, or none when it is not
# kept; the job's keys deleted), "expired" (the same, never a result), "retry" (back in the queue
# at the new score), "requeue" (shutdown: due again at the new score, now). Every kind frees the
# job's gates; a gate with waiting jobs is looked at again by the next claim (flow_lua.py), and
# an idle consumer is woken for it.
FINISH_SCRIPT = f"""
local queue, failures, keep_failures = KEYS[1], KEYS[2], tonumber(ARGV[1])
local due_key, prio_key = queue .. '{FLOW_PREFIX}due', queue .. '{FLOW_PREFIX}priority'
local failed, wake = false, false
for i = 2, #ARGV, 10 do
  local kind, id, result, keep = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local in_progress = '{IN_PROGRESS_PREFIX}' .. id
  if ARGV[i + 7] ~= '' then
    redis.call('LPUSH', failures, ARGV[i + 7])
    failed = true
  end
  if ARGV[i + 8] ~= '' then
    for _, gate in ipairs(cjson.decode(ARGV[i + 8])) do
      local gk = queue .. '{GATE_INFIX}' .. gate
      redis.call('ZREM', gk, id)
      if redis.call('ZSCORE', due_key, gate) then  -- jobs wait on it: the next claim moves one
        redis.call('ZADD', due_key, 0, gate)
        wake = true
      elseif redis.call('EXISTS', gk) == 0 then
        redis.call('HDEL', queue .. '{FLOW_PREFIX}gates', gate)  -- nothing left of the gate
      end
    end
  end
  local p = tonumber(ARGV[i + 9])
  if kind == 'retry' or kind == 'requeue' then  -- requeue: due again now (shutdown)
    redis.call('DEL', in_progress)
    redis.call('ZADD', queue, 'XX', ARGV[i + 4], id)
    if p > 0 then
      redis.call('ZADD', prio_key, 'XX', (9 - p) * {PRIORITY_SPAN} + tonumber(ARGV[i + 4]), id)
    end
  else
    if p > 0 then redis.call('ZREM', prio_key, id) end
    if ARGV[i + 6] == '1' then redis.call('ZREM', '{ABORT_SET}', id) end
    if result ~= '' then
      if keep == '' then
        redis.call('SET', '{RESULT_PREFIX}' .. id, result)
      else
        redis.call('SET', '{RESULT_PREFIX}' .. id, result, 'PX', keep)
      end
    end
    if ARGV[i + 5] == '1' then  -- as arq: a cron tick stays marked a while, not to run twice
      redis.call('PEXPIRE', in_progress, {keep_cronjob_progress * 1000})
      redis.call('DEL', '{RETRY_PREFIX}' .. id, '{JOB_PREFIX}' .. id)
    else
      redis.call('DEL', in_progress, '{RETRY_PREFIX}' .. id, '{JOB_PREFIX}' .. id)
    end
    redis.call('ZREM', queue, id)
  end
end
if failed then redis.call('LTRIM', failures, 0, keep_failures - 1) end
if wake then  -- an idle consumer claims the freed slot's next job now, not at its next tick
  redis.call('LPUSH', queue .. '{WAKE_SUFFIX}', '1')
  redis.call('LTRIM', queue .. '{WAKE_SUFFIX}', 0, 0)
end
return 0
"""

RECENT_FAILURES = 100


@dataclass
class Outcome:
    """How one run ended, to be written to Redis in arq's format."""

    job_id: str
    kind: str  # "finish" (success or failure), "retry", "requeue" (shutdown), "expired"
    result_data: bytes | None = None
    keep_ms: int | None = None  # None: keep forever; 0: do not keep
    new_score: int | None = None
    cron: bool = False
    aborted: bool = False
    failure: bytes | None = None  # a line for the recent-failures list (worker/queue/health.py)
    gates: bytes = b""  # the concurrency gates the claim gave it (JSON): freed by this outcome
    priority: int = 0


class Completer:
    """The outcomes of one consumer's runs, pending until the write loop records them."""

    def __init__(self, redis: Redis, queue: str) -> None:
        self.queue = queue
        self.keys = (queue, failures_key(queue))
        self.finish_script = redis.register_script(FINISH_SCRIPT)
        self.direct = DedicatedConnection(redis)  # the write loop's own connection
        self.pending: list[Outcome] = []
        # Outcomes a claim round failed to write (a Redis that lost the finish script answers
        # NOSCRIPT): the write loop's alone, which loads the script; never taken by a round again.
        self.handed_back: list[Outcome] = []
        self.written = asyncio.Event()
        self.to_write = asyncio.Event()
        # The claim loop lingers (producer.py): its next round carries the outcomes recorded now,
        # and the write loop leaves them (``linger_ended`` hands back what that round did not take).
        self.carried = False

    def record(self, outcome: Outcome) -> None:
        """Queue one outcome for the next write."""
        self.pending.append(outcome)
        self.to_write.set()

    async def write_loop(self) -> None:
        """Write every pending outcome in one script call, each time there are some."""
        while True:
            await self.to_write.wait()
            self.to_write.clear()
            batch, self.handed_back = self.handed_back, []
            if not self.carried:  # else a lingering claim round takes the pending ones
                batch += self.pending
                self.pending = []
            if batch:
                try:
                    await self._write(batch)
                except BaseException:
                    self.handed_back[:0] = batch  # written on the next round
                    raise
            if not self.pending:
                self.written.set()

    def take(self) -> list[Outcome]:
        """The pending outcomes, for a claim round to write in the same round trip (their
        ``finish_command``); the round gives them back with ``settle``."""
        batch, self.pending = self.pending, []
        return batch

    def linger_ended(self) -> None:
        """The claim loop stopped lingering: the write loop writes what its round does not take."""
        self.carried = False
        if self.pending:
            self.to_write.set()

    def settle(self, batch: list[Outcome], reply: Any) -> None:
        """A claim round wrote ``batch`` (``reply``: the finish script's), or failed to (``reply``
        an exception: the write loop writes them, loading the script if Redis lost it)."""
        if isinstance(reply, BaseException):
            self.handed_back[:0] = batch
            self.to_write.set()
        else:
            self.written.set()

    def finish_command(self, batch: list[Outcome]) -> tuple[Any, ...]:
        """The finish script's call for ``batch``."""
        sha, keys = self.finish_script.sha, self.keys
        fields = (a for o in batch for a in self._fields(o))
        return ("EVALSHA", sha, len(keys), *keys, RECENT_FAILURES, *fields)

    async def _write(self, batch: list[Outcome]) -> None:
        """One call of the finish script on the write loop's own connection."""
        finish = self.finish_command(batch)
        (reply,) = await self.direct.execute(finish)
        if isinstance(reply, NoScriptError):  # a restarted Redis: the script is loaded and sent
            await self.direct.execute(("SCRIPT", "LOAD", self.finish_script.script))
            (reply,) = await self.direct.execute(finish)
        if isinstance(reply, Exception):
            raise reply

    async def close(self) -> None:
        """Give the write loop's connection back to the pool."""
        await self.direct.close()

    async def flush(self, timeout: float) -> None:
        """Wait until the write loop recorded every pending outcome, for ``timeout`` seconds at most
        (a Redis that does not answer: their jobs run again when their lease ends)."""
        try:
            async with asyncio.timeout(timeout):
                while self.pending or self.handed_back:
                    self.to_write.set()
                    self.written.clear()
                    await self.written.wait()
        except TimeoutError:
            logger.warning(
                "Redis did not take the last %d outcome(s) within %gs; their jobs run again when "
                "their lease ends",
                len(self.pending) + len(self.handed_back),
                timeout,
            )

    @staticmethod
    def _fields(outcome: Outcome) -> tuple[str | bytes | int, ...]:
        """One outcome as FINISH_SCRIPT's ten arguments."""
        return (
            outcome.kind,
            outcome.job_id,
            outcome.result_data or b"",
            "" if outcome.keep_ms is None else outcome.keep_ms,
            outcome.new_score or now_ms(),
            int(outcome.cron),
            int(outcome.aborted),
            outcome.failure or b"",
            outcome.gates,
            outcome.priority,
        )
