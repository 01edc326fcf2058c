"""The producer: the claim side of the consumer. Its loop claims up to all free slots in one round
(``worker/runtime/claims.py``), none while PostgreSQL is unreachable (``worker/runtime/breaker.py``),
and starts one task per claimed job on its job runner (``worker/runtime/executor.py``).

A round that took fewer jobs than there are free slots found no more due: the next one first
blocks on ``<queue>:wake`` (which this project's producers of jobs push to) until a wake-up or the
next deferred job is due, with its claim pipelined behind the wait, so that an idle worker's
wake-up costs one reply (``Claimer.claim_after_wake``). While jobs run, that round first lingers
up to ``LINGER`` for one of them to end, and carries its outcome ahead of its wait (the completer's
write loop leaves it to the round). A full producer still looks at arq's abort
set every ``FULL_CHECK`` seconds. Every round refreshes the heartbeat, the worker's liveness
(``worker/queue/health.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from arq.worker import Worker
from redis.exceptions import RedisError

from worker.core.clock import now_ms
from worker.runtime.claimed import ActiveJob, Claim
from worker.runtime.claims import Claimer
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
# A shorter wait (the next deferred job is due within it) is a sleep, then a plain round.
MIN_WAIT = 0.01
# Before a round that waits for a wake-up while jobs run, the claim loop waits this long at most
# for one of them to end, so that the round carries its outcome: at light load a job then costs
# two round trips to Redis (the claim, the outcome with the next wait) instead of three. A job
# enqueued meanwhile starts at most this much later.
LINGER = 0.005


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
        self.waiting = False  # a round waits for a wake-up now (Claimer.claim_after_wake)
        self.stopping: asyncio.Future[None] | None = None
        self.slot_free = asyncio.Event()
        self.serial = 0
        self.active: dict[str, ActiveJob] = {}
        self.aborting: set[str] = set()
        self.heartbeat = time.time()  # the claim loop's last round (wall clock)
        self.completer = completer
        self.executor = Executor(worker, metrics, self.aborting, completer.record, self.release)
        self.run = self.executor.run

    def stop_claiming(self) -> None:
        self.accepting = False
        self.slot_free.set()
        if self.waiting and self.stopping is None:  # end the round's wait now, with no claim
            self.stopping = asyncio.ensure_future(self._stop_round())

    async def _stop_round(self) -> None:
        try:
            await self.claimer.stop()
        except (RedisError, OSError) as exc:  # the wait ends by itself within MAX_IDLE_BLOCK
            logger.warning("could not end the claim round's wait: %s", exc)

    def _free_slots(self) -> int:
        """Jobs to claim now: the free slots, none while PostgreSQL is unreachable."""
        if self.breaker is not None and self.breaker.open:
            return 0
        return self.max_jobs - self.running

    def _wake(self) -> None:
        self.slot_free.set()

    async def claim_loop(self) -> None:
        wait = 0.0  # how long the next round first waits for a wake-up
        while self.accepting:
            free = self._free_slots()
            if free <= 0:
                wait = 0.0
                self.slot_free.clear()
                await self.slot_free.wait()  # a job ended, the breaker closed, or the tick
                if self._free_slots() > 0 or not self.accepting:
                    continue
                free = 0  # still full: this round only looks at the abort set
            # A round whose reply was lost is sent again (its claims, not new ones): claims.py.
            # The outcomes recorded since the last write go in the same round trip.
            batch = self.completer.take()
            before = (self.completer.finish_command(batch),) if batch else ()
            self.waiting = bool(wait)
            try:
                (claimed, next_due, aborts), written = await self.claimer.round(
                    now_ms(), free, wait, before
                )
            except BaseException as exc:
                if batch:  # the write loop writes them
                    self.completer.settle(batch, exc)
                raise
            finally:
                self.waiting = False
            if batch:
                self.completer.settle(batch, written[0])
            self.heartbeat = time.time()
            if aborts:
                self._abort(aborts)
            for entry in claimed:
                self._start(entry)
            wait = await self._before_next(self._idle_wait(free, len(claimed), next_due))

    async def _before_next(self, wait: float) -> float:
        """Linger first when jobs run, sleep through a wait too short to block on; returns what
        is left of ``wait`` for the next round."""
        if wait and self.running and not self.completer.pending and self.accepting:
            wait = await self._linger(wait)
        if 0 < wait < MIN_WAIT:
            await asyncio.sleep(wait)
            wait = 0.0
        return wait

    async def _linger(self, wait: float) -> float:
        """Up to LINGER (``wait`` at most) until a running job ends, its outcome left to the next
        round (the completer's ``carried``); returns what is left of ``wait``."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.completer.carried = True
        self.slot_free.clear()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(LINGER, wait)):
                    await self.slot_free.wait()
        finally:
            self.completer.linger_ended()
        return max(wait - (loop.time() - started), 0.0)

    def _idle_wait(self, free: int, claimed: int, next_due: Any) -> float:
        """How long the next round waits for a wake-up first: none after a round that took every
        free slot (more may be due), else until the next due job, MAX_IDLE_BLOCK at most."""
        if free <= 0 or claimed >= free:
            return 0.0
        wait = min(self.idle_wait, MAX_IDLE_BLOCK)
        if next_due:
            wait = min(wait, max((float(next_due) - now_ms()) / 1000, 0.001))
        return wait

    async def tick_loop(self) -> None:
        """Wake a full claim loop now and then, to look at the abort set and beat its heart."""
        while True:
            await asyncio.sleep(FULL_CHECK)
            self.slot_free.set()

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
