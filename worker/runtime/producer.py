"""The producer: the claim side of the consumer. Its loop claims up to all free slots in one round
(``worker/runtime/claims.py``), none while PostgreSQL is unreachable (``worker/runtime/breaker.py``),
and starts one task per claimed job on its job runner (``worker/runtime/executor.py``).

An idle producer blocks on ``<queue>:wake`` (which this project's producers of jobs push to) or
until the next deferred job is due; a full one still looks at arq's abort set every ``FULL_CHECK``
seconds. Every round refreshes the heartbeat, the worker's liveness (``worker/queue/health.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from arq.worker import Worker

from worker.core.clock import now_ms
from worker.queue.keys import wake_key
from worker.runtime.claims import ActiveJob, Claim, Claimer
from worker.runtime.executor import Executor

if TYPE_CHECKING:
    from worker.runtime.breaker import PostgresBreaker
    from worker.runtime.completer import Completer
    from worker.runtime.metrics import WorkerMetrics

logger = logging.getLogger(__name__)

# A full consumer still looks at the abort set (and beats its heart) this often, in seconds.
FULL_CHECK = 0.5
# An idle consumer blocks on its wake-up list at most this long, so that its heartbeat stays fresh.
MAX_IDLE_BLOCK = 1.0


class Producer:
    """Claims jobs for one arq Worker and hands them to its executor (see the module docstring)."""

    def __init__(
        self,
        worker: Worker,
        lease: float,
        idle_wait: float,
        metrics: WorkerMetrics,
        breaker: PostgresBreaker | None,
        completer: Completer,
    ) -> None:
        self.worker = worker
        self.breaker = breaker  # while it is open, claim rounds take no job
        if breaker is not None:
            breaker.on_close.append(self._wake)
        self.redis = worker.pool
        self.queue = worker.queue_name
        self.lease_ms = str(int(lease * 1000))
        self.idle_wait = idle_wait
        self.claimer = Claimer(self.redis, self.queue, self.lease_ms)
        self.running = 0
        self.max_jobs = worker.max_jobs  # or the adaptive limit's (worker/runtime/adaptive.py)
        self.accepting = True
        self.slot_free = asyncio.Event()
        self.serial = 0
        self.active: dict[str, ActiveJob] = {}
        self.aborting: set[str] = set()
        self.heartbeat = time.time()  # the claim loop's last round (wall clock)
        self.executor = Executor(worker, metrics, self.aborting, completer.record, self.release)
        self.run = self.executor.run

    def stop_claiming(self) -> None:
        self.accepting = False
        self.slot_free.set()

    def _free_slots(self) -> int:
        """Jobs to claim now: the free slots, none while PostgreSQL is unreachable."""
        if self.breaker is not None and self.breaker.open:
            return 0
        return self.max_jobs - self.running

    def _wake(self) -> None:
        self.slot_free.set()

    async def claim_loop(self) -> None:
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

    async def tick_loop(self) -> None:
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
        """Cancel the running jobs whose ids are in arq's abort set (the executor records them)."""
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
        task = asyncio.create_task(self.run(claim, active))
        active.task = task
        self.active[claim.job_id] = active
        # arq's shutdown waits for and cancels the tasks in Worker.tasks; the key only has to be
        # unique (one process may run two tries of a job when its loop was stalled).
        self.worker.tasks[f"{claim.job_id}#{self.serial}"] = task

    def release(self, job_id: str, active: ActiveJob) -> None:
        """A job's run ended (the executor's last step): its slot is free."""
        self.running -= 1
        self.slot_free.set()
        if self.active.get(job_id) is active:
            del self.active[job_id]
