"""The fast path: how this worker takes jobs off arq's queue.

arq's own poller starts jobs one at a time, with four Redis round trips each before a job can start,
and sleeps ``poll_delay`` between polls. Inside the same ``arq worker.Settings`` process this consumer
replaces it (arq's loop keeps its housekeeping: health records, cron, burst, signals). It has three
parts, as River's are:

* the producer (``worker/runtime/producer.py``) claims up to all free slots with one Lua script
  (the same ``arq:in-progress`` / ``arq:retry`` keys arq uses, so plain arq workers and clients
  still interoperate), each round safe to send twice (``worker/runtime/claims.py``), none while
  PostgreSQL is unreachable (``worker/runtime/breaker.py``); an idle one blocks on ``<queue>:wake``,
  which this project's producers push to, so a job starts within a millisecond or so of its enqueue
  instead of up to ``poll_delay`` later; every round also returns arq's abort set (``arq:abort``,
  only when it is not empty), whose running jobs are cancelled, and refreshes the heartbeat, the
  worker's liveness (``worker/queue/health.py``);
* the job runner (``worker/runtime/executor.py``) runs each claimed job through the same arq
  functions (and so the same policy in ``worker/runtime/execution.py``); its task is registered in
  arq's ``Worker.tasks``, so arq's graceful shutdown waits for and cancels it as usual;
* the completer (``worker/runtime/completer.py``) records finished jobs in arq's result format,
  many per call of one Lua script (atomic).

``Consumer`` starts and stops the three and is what the rest of the worker sees of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from arq.worker import Worker
from redis.exceptions import RedisError

from worker.runtime.claimed import ActiveJob
from worker.runtime.completer import Completer
from worker.runtime.metrics import WorkerMetrics
from worker.runtime.producer import MAX_IDLE_BLOCK, Producer

if TYPE_CHECKING:
    from worker.runtime.adaptive import AdaptiveLimit
    from worker.runtime.breaker import PostgresBreaker

logger = logging.getLogger(__name__)

REPORT_INTERVAL = 10.0
# On shutdown the claim loop's last round ends this fast (its wait for a wake-up is ended, or
# times out within MAX_IDLE_BLOCK); past it (Redis does not answer) the loop is cancelled.
CLAIM_LOOP_END = MAX_IDLE_BLOCK + 1.0


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
        self.breaker = breaker
        self.metrics = metrics or WorkerMetrics()
        self.completer = Completer(worker.pool, worker.queue_name)
        self.producer = Producer(worker, lease, idle_wait, self.metrics, breaker, self.completer)
        self.executor = self.producer.executor
        self.tasks: list[asyncio.Task[None]] = []
        self.limiter: AdaptiveLimit | None = None  # WORKER_MAX_JOBS=auto (runtime/adaptive.py)

    # ---- what the health record, the endpoint and the metrics read ------------------------------

    @property
    def running(self) -> int:
        """Jobs running now."""
        return self.producer.running

    @property
    def max_jobs(self) -> int:
        """The jobs run at once now: WORKER_MAX_JOBS, or the adaptive limit."""
        return self.producer.max_jobs

    @property
    def active(self) -> dict[str, ActiveJob]:
        """The running jobs by id."""
        return self.producer.active

    @property
    def heartbeat(self) -> float:
        """The claim loop's last round (wall clock)."""
        return self.producer.heartbeat

    @property
    def accepting(self) -> bool:
        """False once the worker stopped claiming (it drains)."""
        return self.producer.accepting

    @property
    def jobs_aborted(self) -> int:
        """Jobs aborted by an operator since the start."""
        return self.executor.jobs_aborted

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Take over job pickup from arq's poller and start claiming and recording."""
        self.worker.allow_pick_jobs = False  # arq's loop now only keeps house
        self.tasks = [
            asyncio.create_task(self._supervise(self.producer.claim_loop, "claim")),
            asyncio.create_task(self._supervise(self.completer.write_loop, "record")),
            asyncio.create_task(self._report_loop()),
            asyncio.create_task(self.producer.tick_loop()),
        ]
        self._chain_signals()

    def stop_claiming(self) -> None:
        self.producer.stop_claiming()

    async def close(self, grace: float, flush_timeout: float = 10.0) -> None:
        """Stop claiming; let running jobs finish within ``grace`` seconds, cancel (re-queue) the
        rest; record every outcome still pending, for ``flush_timeout`` seconds at most (a Redis
        that does not answer: their jobs run again when their lease ends); stop the loops. The
        pool closes after this."""
        self.stop_claiming()
        ending = [*self.tasks[:1], *filter(None, [self.producer.stopping])]
        if ending:  # the claim loop's last round may still start jobs: waited for below
            await asyncio.wait(ending, timeout=min(flush_timeout, CLAIM_LOOP_END))
        running = [t for t in self.worker.tasks.values() if not t.done()]
        if running:
            _, late = await asyncio.wait(running, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self.completer.flush(flush_timeout)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.producer.claimer.close()
        await self.completer.close()

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

    async def _supervise(self, loop_fn: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        """Keep a loop alive through Redis outages longer than the client's own retries."""
        while True:
            try:
                await loop_fn()
                return
            except (RedisError, OSError) as exc:
                self.metrics.redis_error(name)
                logger.warning("job %s loop: %s; resuming in 1s", name, exc)
                await asyncio.sleep(1)
            except Exception:  # a defect must not end claiming or recording for good, unseen
                logger.exception("job %s loop failed; resuming in 1s", name)
                await asyncio.sleep(1)

    async def _report_loop(self) -> None:
        """One INFO line every REPORT_INTERVAL seconds with the work done, not one per job."""
        executor = self.executor
        while True:
            await asyncio.sleep(REPORT_INTERVAL)
            if executor.done_since_report:
                w = self.worker
                logger.info(
                    "%d jobs done in the last %gs (%d running; in all %d complete, %d failed, "
                    "%d retried)",
                    executor.done_since_report,
                    REPORT_INTERVAL,
                    self.running,
                    w.jobs_complete,
                    w.jobs_failed,
                    w.jobs_retried,
                )
                executor.done_since_report = 0
