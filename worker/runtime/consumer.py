"""The fast path: how this worker takes jobs off arq's queue.

arq's own poller starts jobs one at a time, with four Redis round trips each before a job can start,
and sleeps ``poll_delay`` between polls. Inside the same ``arq worker.Settings`` process this consumer
replaces it (arq's loop keeps its housekeeping: health records, cron, burst, signals):

* one Lua script claims up to all free slots at once (the same ``arq:in-progress`` / ``arq:retry``
  keys arq uses, so plain arq workers and clients still interoperate), each round safe to send
  twice (``worker/runtime/claims.py``), none while PostgreSQL is unreachable (``worker/runtime/breaker.py``);
* finished jobs are recorded in arq's result format, many per call of one Lua script (atomic);
* an idle consumer blocks on ``<queue>:wake``, which this project's producers push to, so a job starts
  within a millisecond or so of its enqueue instead of up to ``poll_delay`` later;
* the claim script also returns arq's abort set (``arq:abort``, only when it is not empty): a running
  job found there is cancelled and recorded as aborted, a claimed one is aborted before it starts;
* every claim round refreshes a heartbeat, the worker's liveness (``worker/queue/health.py``).

Jobs run through the same arq functions (and so the same policy in ``worker/runtime/execution.py``), and are
registered in arq's ``Worker.tasks``, so arq's graceful shutdown waits for and cancels them as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    keep_cronjob_progress,
    result_key_prefix,
    retry_key_prefix,
)
from arq.cron import CronJob
from arq.jobs import serialize_result
from arq.utils import to_ms
from arq.worker import JobExecutionFailed, Retry, Worker
from redis.exceptions import RedisError

from worker.queue.codec import claimed_job
from worker.queue.keys import failures_key, wake_key
from worker.runtime.claims import Claimer

if TYPE_CHECKING:
    from worker.runtime.breaker import PostgresBreaker
from worker.core.logs import job_event
from worker.runtime.leases import LEASE_SET_KEY
from worker.runtime.metrics import JobSeries, WorkerMetrics

logger = logging.getLogger(__name__)


# The claim script (CLAIM_SCRIPT) and its rounds, each safe to re-send: worker/runtime/claims.py.


# Records finished tries, eight arguments each after ARGV[1] (the failures list's length): kind,
# job id, result (arq's format; '' = none), result TTL in ms ('' = forever), new score (retries),
# cron (1/0), aborted (1/0), a recent-failures entry ('' = none). Kinds: "finish" (a result, or
# none when it is not kept; the job's keys deleted), "expired" (the same, never a result),
# "retry" (back in the queue at the new score), "requeue" (shutdown: due again at the new score,
# now).
FINISH_SCRIPT = f"""
local queue, failures, keep_failures = KEYS[1], KEYS[2], tonumber(ARGV[1])
local failed = false
for i = 2, #ARGV, 8 do
  local kind, id, result, keep = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local in_progress = '{in_progress_key_prefix}' .. id
  if ARGV[i + 7] ~= '' then
    redis.call('LPUSH', failures, ARGV[i + 7])
    failed = true
  end
  if kind == 'retry' then
    redis.call('DEL', in_progress)
    redis.call('ZADD', queue, 'XX', ARGV[i + 4], id)
  elseif kind == 'requeue' then  -- due again now (its score was its lease's end)
    redis.call('DEL', in_progress)
    redis.call('ZADD', queue, 'XX', ARGV[i + 4], id)
  else
    if ARGV[i + 6] == '1' then redis.call('ZREM', '{abort_jobs_ss}', id) end
    if result ~= '' then
      if keep == '' then
        redis.call('SET', '{result_key_prefix}' .. id, result)
      else
        redis.call('SET', '{result_key_prefix}' .. id, result, 'PX', keep)
      end
    end
    if ARGV[i + 5] == '1' then  -- as arq: a cron tick stays marked a while, not to run twice
      redis.call('PEXPIRE', in_progress, {keep_cronjob_progress * 1000})
      redis.call('DEL', '{retry_key_prefix}' .. id, '{job_key_prefix}' .. id)
    else
      redis.call('DEL', in_progress, '{retry_key_prefix}' .. id, '{job_key_prefix}' .. id)
    end
    redis.call('ZREM', queue, id)
  end
end
if failed then redis.call('LTRIM', failures, 0, keep_failures - 1) end
return 0
"""


REPORT_INTERVAL = 10.0
# A full consumer still looks at the abort set (and beats its heart) this often, in seconds.
FULL_CHECK = 0.5
# An idle consumer blocks on its wake-up list at most this long, so that its heartbeat stays fresh.
MAX_IDLE_BLOCK = 1.0
ABORTED = "job aborted"


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


def now_ms() -> int:
    return int(time.time() * 1000)


RECENT_FAILURES = 100


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

    def __init__(
        self,
        worker: Worker,
        lease: float,
        idle_wait: float,
        metrics: WorkerMetrics | None = None,
        breaker: PostgresBreaker | None = None,
    ) -> None:
        self.worker = worker
        self.breaker = breaker  # while it is open, claim rounds take no job
        if breaker is not None:
            breaker.on_close.append(self._wake)
        self.metrics = metrics or WorkerMetrics()
        self.redis = worker.pool
        self.queue = worker.queue_name
        self.lease_ms = str(int(lease * 1000))
        self.idle_wait = idle_wait
        self.claimer = Claimer(self.redis, self.queue, self.lease_ms)
        self.finish_script = self.redis.register_script(FINISH_SCRIPT)
        self.running = 0
        self.accepting = True
        self.slot_free = asyncio.Event()
        self.pending: list[Outcome] = []
        self.written = asyncio.Event()
        self.to_write = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.serial = 0
        self.done_since_report = 0
        self.active: dict[str, ActiveJob] = {}
        self.aborting: set[str] = set()
        self.jobs_aborted = 0
        self.heartbeat = time.time()  # the claim loop's last round (wall clock)

    def start(self) -> None:
        """Take over job pickup from arq's poller and start claiming and recording."""
        self.worker.allow_pick_jobs = False  # arq's loop now only keeps house
        self.tasks = [
            asyncio.create_task(self._supervise(self._claim_loop, "claim")),
            asyncio.create_task(self._supervise(self._write_loop, "record")),
            asyncio.create_task(self._report_loop()),
            asyncio.create_task(self._tick_loop()),
        ]
        self._chain_signals()

    def stop_claiming(self) -> None:
        self.accepting = False
        self.slot_free.set()

    async def close(self, grace: float, flush_timeout: float = 10.0) -> None:
        """Stop claiming; let running jobs finish within ``grace`` seconds, cancel (re-queue) the
        rest; record every outcome still pending, for ``flush_timeout`` seconds at most (a Redis
        that does not answer: their jobs run again when their lease ends); stop the loops. The
        pool closes after this."""
        self.stop_claiming()
        running = [t for t in self.worker.tasks.values() if not t.done()]
        if running:
            _, late = await asyncio.wait(running, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        try:
            async with asyncio.timeout(flush_timeout):
                while self.pending:
                    self.to_write.set()
                    self.written.clear()
                    await self.written.wait()
        except TimeoutError:
            logger.warning(
                "Redis did not take the last %d outcome(s) within %gs; their jobs run again when "
                "their lease ends",
                len(self.pending),
                flush_timeout,
            )
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
                self.metrics.redis_error(name)
                logger.warning("job %s loop: %s; resuming in 1s", name, exc)
                await asyncio.sleep(1)

    def _free_slots(self) -> int:
        """Jobs to claim now: the free slots, none while PostgreSQL is unreachable."""
        if self.breaker is not None and self.breaker.open:
            return 0
        return self.worker.max_jobs - self.running

    def _wake(self) -> None:
        self.slot_free.set()

    async def _claim_loop(self) -> None:
        while self.accepting:
            free = self._free_slots()
            if free <= 0:
                self.slot_free.clear()
                await self.slot_free.wait()  # a job ended, the breaker closed, or the tick
                if self._free_slots() > 0 or not self.accepting:
                    continue
                free = 0  # still full: this round only looks at the abort set
            now = now_ms()
            # A round whose reply was lost is sent again (its claims, not new ones): claims.py.
            claimed, next_due, aborts = await self.claimer.claim(now, free)
            self.heartbeat = time.time()
            if aborts:
                self._abort(aborts)
            for entry in claimed:
                self._start(entry)
            if not claimed and free > 0:
                wait = min(self.idle_wait, MAX_IDLE_BLOCK)
                if next_due:
                    wait = min(wait, max((float(next_due) - now) / 1000, 0.001))
                await self._idle(wait)

    async def _tick_loop(self) -> None:
        """Wake a full claim loop now and then, to look at the abort set and beat its heart."""
        while True:
            await asyncio.sleep(FULL_CHECK)
            self.slot_free.set()

    async def _idle(self, seconds: float) -> None:
        """Wait for a producer's wake-up, a due deferred job, or a free slot after a claim."""
        if seconds >= 0.01:
            await self.redis.blpop([wake_key(self.queue)], timeout=seconds)  # type: ignore[misc, arg-type]
        else:
            await asyncio.sleep(seconds)

    def _abort(self, ids: list[bytes]) -> None:
        """Cancel the running jobs whose ids are in arq's abort set (``_execute`` records them)."""
        for raw in ids:
            job_id = raw.decode()
            active = self.active.get(job_id)
            if active is None or not active.started or job_id in self.aborting:
                continue
            assert active.task is not None
            self.aborting.add(job_id)
            active.task.cancel()
            logger.info("job %s:%s: abort requested, cancelling it", job_id, active.name)

    def _start(self, entry: list[Any]) -> None:
        claim = Claim.from_entry(entry)
        self.running += 1
        self.serial += 1
        active = ActiveJob()
        task = asyncio.create_task(self._run(claim, active))
        active.task = task
        self.active[claim.job_id] = active
        # arq's shutdown waits for and cancels the tasks in Worker.tasks; the key only has to be
        # unique (one process may run two tries of a job when its loop was stalled).
        self.worker.tasks[f"{claim.job_id}#{self.serial}"] = task

    def _record(self, outcome: Outcome) -> None:
        self.pending.append(outcome)
        self.to_write.set()

    async def _run(self, claim: Claim, active: ActiveJob) -> None:
        job_id = claim.job_id
        try:
            self._record(await self._execute(claim, active))
        except asyncio.CancelledError:
            self.worker.jobs_retried += 1
            self.metrics.job(active.name or "<unknown>").retried.inc()
            self._record(Outcome(job_id, "requeue"))
        except Exception:  # a bug here must not lose the job: arq's lease expiry re-runs it
            logger.exception("job %s: the consumer failed to run it", job_id)
        finally:
            self.running -= 1
            self.slot_free.set()
            if self.active.get(job_id) is active:
                del self.active[job_id]

    async def _execute(  # noqa: C901  (one job's whole life, kept in one place for speed)
        self, claim: Claim, active: ActiveJob
    ) -> Outcome:
        w = self.worker
        job_id, score, job_try, aborted, payload = (
            claim.job_id,
            claim.score,
            claim.job_try,
            claim.aborted,
            claim.payload,
        )
        if payload is None:
            logger.warning("job %s expired", job_id)
            w.jobs_failed += 1
            self.metrics.job("<expired>").failed.inc()
            return Outcome(job_id, "expired")
        deserialize = w.job_deserializer
        assert deserialize is not None, "the worker's settings give a deserializer"
        # Never raises: a payload that is no job is a poison job (dead-lettered by its handler).
        job, payload_try, enqueue_ms, enqueue_time = claimed_job(deserialize, payload)
        name, args, kwargs = job["f"], job["a"], job["k"]
        job_try = max(job_try, payload_try)
        function = w.functions.get(name)
        start_ms = now_ms()
        started = time.perf_counter()
        queue_wait = max(start_ms - score, 0) / 1000
        cron = isinstance(function, CronJob)
        series = self.metrics.job(name)
        series.started.inc()
        self.metrics.queue_wait.observe(queue_wait)
        active.name, active.job_try, active.started = name, job_try, start_ms / 1000

        def finished(success: bool, result: Any, outcome: str = "failed") -> Outcome:
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
            failure = None if success else self._failure(job_id, name, job_try, outcome, result)
            return Outcome(
                job_id, "finish", data, keep_ms, cron=cron, aborted=aborted, failure=failure
            )

        if aborted:  # in arq's abort set when it was claimed: never started
            return self._aborted(job_id, name, job_try, 0.0, queue_wait, finished, series)
        if function is None:
            w.jobs_failed += 1
            series.failed.inc()
            return finished(False, JobExecutionFailed(f"function {name!r} not found"))
        ctx = {
            **w.ctx,
            "job_id": job_id,
            "job_try": job_try,
            "enqueue_time": enqueue_time,
            "score": score,
            LEASE_SET_KEY: True,
        }
        try:
            # Every function of this worker enforces its own deadline (worker/runtime/execution.py).
            result = await function.coroutine(ctx, *args, **kwargs)
        except Retry as exc:
            took = time.perf_counter() - started
            w.jobs_retried += 1
            series.retried.inc()
            series.duration.observe(took)
            retry = Outcome(job_id, "retry", new_score=now_ms() + (exc.defer_score or 0))
            if exc.__cause__ is not None:  # an error's retry (not a wait for a deploy)
                retry.failure = self._failure(job_id, name, job_try, "retried", exc.__cause__)
            return retry
        except asyncio.CancelledError:
            if job_id not in self.aborting:
                raise  # shutdown: re-queued by _run
            took = time.perf_counter() - started
            aborted = True
            return self._aborted(job_id, name, job_try, took, queue_wait, finished, series)
        except Exception as exc:  # noqa: BLE001  (any error of the job is its outcome)
            took = time.perf_counter() - started
            w.jobs_failed += 1
            series.failed.inc()
            series.duration.observe(took)
            logger.warning(
                "job %s:%s failed, %s: %s",
                job_id,
                name,
                type(exc).__name__,
                exc,
                extra=job_event(job_id, name, job_try, took, "failed", queue_wait, exc),
            )
            return finished(False, exc)
        took = time.perf_counter() - started
        w.jobs_complete += 1
        series.succeeded.inc()
        series.duration.observe(took)
        self.done_since_report += 1
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "job %s:%s done in %.3fs (try %d)",
                job_id,
                name,
                took,
                job_try,
                extra=job_event(job_id, name, job_try, took, "succeeded", queue_wait),
            )
        return finished(True, result)

    def _aborted(
        self,
        job_id: str,
        name: str,
        job_try: int,
        took: float,
        queue_wait: float,
        finished: Callable[..., Outcome],
        series: JobSeries,
    ) -> Outcome:
        """A job aborted by an operator: a failed result (CancelledError), never re-queued."""
        self.aborting.discard(job_id)
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        self.worker.jobs_failed += 1
        self.jobs_aborted += 1
        series.aborted.inc()
        logger.info(
            "job %s:%s aborted%s",
            job_id,
            name,
            f" after {took:.3f}s" if took else " before it started",
            extra=job_event(job_id, name, job_try, took, "aborted", queue_wait),
        )
        return finished(False, asyncio.CancelledError(ABORTED), "aborted")

    def _failure(self, job_id: str, name: str, job_try: int, outcome: str, error: Any) -> bytes:
        """One entry of the recent-failures list (no job arguments)."""
        return json.dumps(
            {
                "job_id": job_id,
                "function": name,
                "try": job_try,
                "outcome": outcome,
                "error": type(error).__name__,
                "message": str(error)[:300],
                "at": round(time.time(), 3),
            }
        ).encode()

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
                    await self.finish_script(
                        keys=[self.queue, failures_key(self.queue)],
                        args=[RECENT_FAILURES, *(a for o in batch for a in self._fields(o))],
                    )
                except BaseException:
                    self.pending[:0] = batch  # written on the next round
                    raise
            self.written.set()

    @staticmethod
    def _fields(outcome: Outcome) -> tuple[str | bytes | int, ...]:
        """One outcome as FINISH_SCRIPT's eight arguments."""
        return (
            outcome.kind,
            outcome.job_id,
            outcome.result_data or b"",
            "" if outcome.keep_ms is None else outcome.keep_ms,
            outcome.new_score or now_ms(),
            int(outcome.cron),
            int(outcome.aborted),
            outcome.failure or b"",
        )
