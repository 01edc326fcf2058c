"""The fast path: how this worker takes jobs off arq's queue.

arq's own poller starts jobs one at a time, with four Redis round trips each before a job can start,
and sleeps ``poll_delay`` between polls. Inside the same ``arq worker.Settings`` process this consumer
replaces it (arq's loop keeps its housekeeping: health records, cron, burst, signals):

* one Lua script claims up to all free slots at once (the same ``arq:in-progress`` / ``arq:retry``
  keys arq uses, so plain arq workers and clients still interoperate);
* finished jobs are recorded in arq's result format, many per pipelined transaction;
* an idle consumer blocks on ``<queue>:wake``, which this project's producers push to, so a job starts
  within a millisecond or so of its enqueue instead of up to ``poll_delay`` later.

Jobs run through the same arq functions (and so the same policy in ``worker/execution.py``), and are
registered in arq's ``Worker.tasks``, so arq's graceful shutdown waits for and cancels them as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import time
from dataclasses import dataclass
from typing import Any

from arq.constants import (
    in_progress_key_prefix,
    job_key_prefix,
    keep_cronjob_progress,
    result_key_prefix,
    retry_key_prefix,
)
from arq.cron import CronJob
from arq.jobs import serialize_result
from arq.utils import ms_to_datetime, to_ms
from arq.worker import JobExecutionFailed, Retry, Worker
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from worker.leases import LEASE_SET_KEY

logger = logging.getLogger(__name__)


# Claims up to ARGV[2] due jobs: every due id without an in-progress key gets one (the lease), its
# try counter incremented, and its payload read. With nothing to claim it returns the next due time.
CLAIM_SCRIPT = """
local queue, now, limit, lease = KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3]
local claimed, offset, page = {}, 0, 200
while #claimed < limit and offset < 2000 do
  local ids = redis.call('ZRANGEBYSCORE', queue, '-inf', now, 'WITHSCORES', 'LIMIT', offset, page)
  if #ids == 0 then break end
  for i = 1, #ids, 2 do
    local id = ids[i]
    local in_progress = 'arq:in-progress:' .. id
    if redis.call('EXISTS', in_progress) == 0 then
      redis.call('PSETEX', in_progress, lease, '1')
      local retry = 'arq:retry:' .. id
      local try = redis.call('INCR', retry)
      redis.call('EXPIRE', retry, 88400)
      claimed[#claimed + 1] = {id, ids[i + 1], try, redis.call('GET', 'arq:job:' .. id)}
      if #claimed >= limit then break end
    end
  end
  offset = offset + page
end
local next_due = false
if #claimed == 0 then
  local later = redis.call('ZRANGEBYSCORE', queue, '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #later > 0 then next_due = later[2] end
end
return {claimed, next_due}
"""


REPORT_INTERVAL = 10.0


def wake_key(queue: str) -> str:
    """The list a producer pushes to after enqueueing, to wake an idle consumer."""
    return f"{queue}:wake"


@dataclass
class Outcome:
    """How one run ended, to be written to Redis in arq's format."""

    job_id: str
    kind: str  # "finish" (success or failure), "retry", "requeue" (shutdown), "expired"
    result_data: bytes | None = None
    keep_ms: int | None = None  # None: keep forever; 0: do not keep
    new_score: int | None = None
    cron: bool = False


def now_ms() -> int:
    return int(time.time() * 1000)


def running_worker(ctx: dict[str, Any]) -> Worker | None:
    """The arq Worker whose startup is running (the one whose ``ctx`` this is), or None.

    arq passes ``on_startup`` only its ctx; the worker is the ``self`` of the frame that awaits it.
    """
    frame = inspect.currentframe()
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, Worker) and candidate.ctx is ctx:
            return candidate
        frame = frame.f_back
    return None


class Consumer:
    """Claims, runs and records jobs for one arq Worker (see the module docstring)."""

    def __init__(self, worker: Worker, lease: float, idle_wait: float) -> None:
        self.worker = worker
        self.redis = worker.pool
        self.queue = worker.queue_name
        self.lease_ms = str(int(lease * 1000))
        self.idle_wait = idle_wait
        self.claim_script = self.redis.register_script(CLAIM_SCRIPT)
        self.running = 0
        self.accepting = True
        self.slot_free = asyncio.Event()
        self.pending: list[Outcome] = []
        self.written = asyncio.Event()
        self.to_write = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.serial = 0
        self.done_since_report = 0

    def start(self) -> None:
        """Take over job pickup from arq's poller and start claiming and recording."""
        self.worker.allow_pick_jobs = False  # arq's loop now only keeps house
        self.tasks = [
            asyncio.create_task(self._supervise(self._claim_loop, "claim")),
            asyncio.create_task(self._supervise(self._write_loop, "record")),
            asyncio.create_task(self._report_loop()),
        ]
        self._chain_signals()

    def stop_claiming(self) -> None:
        self.accepting = False
        self.slot_free.set()

    async def close(self, grace: float) -> None:
        """Stop claiming; let running jobs finish within ``grace`` seconds, cancel (re-queue) the
        rest; record every outcome still pending; stop the loops. The pool closes after this."""
        self.stop_claiming()
        running = [t for t in self.worker.tasks.values() if not t.done()]
        if running:
            _, late = await asyncio.wait(running, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        while self.pending:
            self.to_write.set()
            self.written.clear()
            await self.written.wait()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def _chain_signals(self) -> None:
        """Stop claiming on SIGTERM/SIGINT before arq's own handler drains the running jobs."""
        if not self.worker._handle_signals:
            return
        arq_handler = (
            self.worker.handle_sig_wait_for_completion
            if self.worker._job_completion_wait
            else self.worker.handle_sig
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, self._on_signal, sig, arq_handler)

    def _on_signal(self, sig: signal.Signals, arq_handler: Any) -> None:
        self.stop_claiming()
        arq_handler(sig)

    async def _supervise(self, loop_fn: Any, name: str) -> None:
        """Keep a loop alive through Redis outages longer than the client's own retries."""
        while True:
            try:
                await loop_fn()
                return
            except (RedisError, OSError) as exc:
                logger.warning("job %s loop: %s; resuming in 1s", name, exc)
                await asyncio.sleep(1)

    async def _claim_loop(self) -> None:
        while self.accepting:
            free = self.worker.max_jobs - self.running
            if free <= 0:
                self.slot_free.clear()
                await self.slot_free.wait()
                continue
            now = now_ms()
            claimed, next_due = await self.claim_script(
                keys=[self.queue], args=[now, free, self.lease_ms]
            )
            for entry in claimed:
                self._start(entry)
            if not claimed:
                wait = self.idle_wait
                if next_due:
                    wait = min(wait, max((float(next_due) - now) / 1000, 0.001))
                await self._idle(wait)

    async def _idle(self, seconds: float) -> None:
        """Wait for a producer's wake-up, a due deferred job, or a free slot after a claim."""
        if seconds >= 0.01:
            await self.redis.blpop([wake_key(self.queue)], timeout=seconds)  # type: ignore[misc, arg-type]
        else:
            await asyncio.sleep(seconds)

    def _start(self, entry: list[Any]) -> None:
        job_id = entry[0].decode()
        score, job_try = int(float(entry[1])), int(entry[2])
        payload = entry[3] if len(entry) > 3 else None
        self.running += 1
        self.serial += 1
        task = asyncio.create_task(self._run(job_id, score, job_try, payload))
        # arq's shutdown waits for and cancels the tasks in Worker.tasks; the key only has to be
        # unique (one process may run two tries of a job when its loop was stalled).
        self.worker.tasks[f"{job_id}#{self.serial}"] = task

    def _record(self, outcome: Outcome) -> None:
        self.pending.append(outcome)
        self.to_write.set()

    async def _run(self, job_id: str, score: int, job_try: int, payload: bytes | None) -> None:
        try:
            self._record(await self._execute(job_id, score, job_try, payload))
        except asyncio.CancelledError:
            self.worker.jobs_retried += 1
            self._record(Outcome(job_id, "requeue"))
        except Exception:  # a bug here must not lose the job: arq's lease expiry re-runs it
            logger.exception("job %s: the consumer failed to run it", job_id)
        finally:
            self.running -= 1
            self.slot_free.set()

    async def _execute(
        self, job_id: str, score: int, job_try: int, payload: bytes | None
    ) -> Outcome:
        w = self.worker
        if payload is None:
            logger.warning("job %s expired", job_id)
            w.jobs_failed += 1
            return Outcome(job_id, "expired")
        deserialize = w.job_deserializer
        assert deserialize is not None, "the worker's settings give a deserializer"
        job = deserialize(payload)
        name, args, kwargs = job["f"], job["a"], job["k"]
        enqueue_ms = int(job["et"])
        job_try = max(job_try, int(job.get("t") or 0))
        function = w.functions.get(name)
        start_ms = now_ms()
        cron = isinstance(function, CronJob)

        def finished(success: bool, result: Any) -> Outcome:
            keep_s = w.keep_result_s if function is None else function.keep_result_s
            if keep_s is None:
                keep_s = w.keep_result_s
            forever = w.keep_result_forever
            data = None
            if forever or keep_s > 0:
                data = serialize_result(
                    name,
                    args,
                    kwargs,
                    job_try,
                    enqueue_ms,
                    success,
                    result,
                    start_ms,
                    now_ms(),
                    f"{job_id}:{name}",
                    self.queue,
                    job_id=job_id,
                    serializer=w.job_serializer,
                )
            keep_ms = None if forever else to_ms(keep_s)
            return Outcome(job_id, "finish", data, keep_ms, cron=cron)

        if function is None:
            w.jobs_failed += 1
            return finished(False, JobExecutionFailed(f"function {name!r} not found"))
        ctx = {
            **w.ctx,
            "job_id": job_id,
            "job_try": job_try,
            "enqueue_time": ms_to_datetime(enqueue_ms),
            "score": score,
            LEASE_SET_KEY: True,
        }
        try:
            # Every function of this worker enforces its own deadline (worker/execution.py).
            result = await function.coroutine(ctx, *args, **kwargs)
        except Retry as exc:
            w.jobs_retried += 1
            return Outcome(job_id, "retry", new_score=now_ms() + (exc.defer_score or 0))
        except Exception as exc:  # noqa: BLE001  (any error of the job is its outcome)
            w.jobs_failed += 1
            logger.warning("job %s:%s failed, %s: %s", job_id, name, type(exc).__name__, exc)
            return finished(False, exc)
        w.jobs_complete += 1
        self.done_since_report += 1
        if logger.isEnabledFor(logging.DEBUG):
            took = (now_ms() - start_ms) / 1000
            logger.debug("job %s:%s done in %.3fs (try %d)", job_id, name, took, job_try)
        return finished(True, result)

    async def _report_loop(self) -> None:
        """One INFO line every REPORT_INTERVAL seconds with the work done, not one per job."""
        while True:
            await asyncio.sleep(REPORT_INTERVAL)
            if self.done_since_report:
                w = self.worker
                logger.info(
                    "%d jobs done in the last %gs (%d running; in all %d complete, %d failed, "
                    "%d retried)",
                    self.done_since_report,
                    REPORT_INTERVAL,
                    self.running,
                    w.jobs_complete,
                    w.jobs_failed,
                    w.jobs_retried,
                )
                self.done_since_report = 0

    async def _write_loop(self) -> None:
        while True:
            await self.to_write.wait()
            self.to_write.clear()
            batch, self.pending = self.pending, []
            if batch:
                try:
                    async with self.redis.pipeline(transaction=True) as pipe:
                        for outcome in batch:
                            self._apply(pipe, outcome)
                        await pipe.execute()
                except BaseException:
                    self.pending[:0] = batch  # written on the next round
                    raise
            self.written.set()

    def _apply(self, pipe: Pipeline, outcome: Outcome) -> None:
        job_id = outcome.job_id
        in_progress = in_progress_key_prefix + job_id
        if outcome.kind == "retry":
            pipe.delete(in_progress)
            pipe.zadd(self.queue, {job_id: outcome.new_score or now_ms()}, xx=True)
            return
        if outcome.kind == "requeue":
            pipe.delete(in_progress)
            return
        if outcome.result_data is not None:
            pipe.set(result_key_prefix + job_id, outcome.result_data, px=outcome.keep_ms)
        if outcome.cron:  # as arq: the tick stays marked a while, so it is not run twice
            pipe.pexpire(in_progress, to_ms(keep_cronjob_progress) or 0)
            pipe.delete(retry_key_prefix + job_id, job_key_prefix + job_id)
        else:
            pipe.delete(in_progress, retry_key_prefix + job_id, job_key_prefix + job_id)
        pipe.zrem(self.queue, job_id)
