"""The job runner: runs one claimed job through its arq function and turns how it ended into an
``Outcome`` for the completer (``worker/runtime/completer.py``).

A run goes through named steps: ``_decode`` (the payload as a ``Run``, its start counted),
``_context`` (the job's ctx), the call of the arq function (the same functions, and so the same
policy, as arq's own poller: ``worker/runtime/execution.py``), and one outcome step for each way it
can end (succeeded, failed, retried, aborted, expired, function not found). A job cancelled by the
worker's shutdown is re-queued; one cancelled by an operator's abort is recorded as aborted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from arq.cron import CronJob
from arq.jobs import serialize_result
from arq.utils import to_ms
from arq.worker import Function, JobExecutionFailed, Retry, Worker

from worker.core.clock import now_ms
from worker.core.logs import job_event
from worker.queue.codec import claimed_job
from worker.runtime.claimed import ActiveJob, Claim
from worker.runtime.completer import Outcome
from worker.runtime.leases import LEASE_SET_KEY
from worker.runtime.metrics import JobSeries, WorkerMetrics
from worker.runtime.tracing import JobTracing

logger = logging.getLogger(__name__)

ABORTED = "job aborted"


@dataclass(slots=True)
class Run:
    """One claimed job's decoded call and its start, from ``_decode`` to its outcome."""

    job_id: str
    name: str
    args: Any
    kwargs: Any
    job_try: int
    enqueue_ms: int
    enqueue_time: datetime
    function: Function | CronJob | None  # None: no function of that name here
    cron: bool
    start_ms: int  # wall clock
    started: float  # perf_counter
    queue_wait: float  # seconds from its due time to its start
    series: JobSeries
    job: dict[str, Any]  # the decoded payload (its trace context, when traced)
    error: BaseException | None = None  # what a failed or retried try ended with (its span)


class Executor:
    """Runs claimed jobs, one task each (see the module docstring)."""

    def __init__(
        self,
        worker: Worker,
        metrics: WorkerMetrics,
        aborting: set[str],
        record: Callable[[Outcome], None],
        release: Callable[[str, ActiveJob], None],
    ) -> None:
        self.worker = worker
        self.metrics = metrics
        self.queue = worker.queue_name
        self.aborting = aborting  # ids of running jobs cancelled by an abort (the producer's)
        self.record = record  # the completer's
        self.release = release  # the producer's: the slot is free again
        self.jobs_aborted = 0
        self.done_since_report = 0
        self.tracing: JobTracing | None = None  # OTEL_* (worker/runtime/tracing.py); None: off

    async def run(self, claim: Claim, active: ActiveJob) -> None:
        """One claimed job's task: run it, record its outcome, free its slot."""
        job_id = claim.job_id
        outcome: Outcome | None = None
        try:
            outcome = await self._execute(claim, active)
        except asyncio.CancelledError:
            self.worker.jobs_retried += 1
            self.metrics.job(active.name or "<unknown>").retried.inc()
            outcome = Outcome(job_id, "requeue")
        except Exception:  # a bug here must not lose the job: arq's lease expiry re-runs it
            logger.exception("job %s: the consumer failed to run it", job_id)
        finally:
            # The slot first: a claim loop waiting for one then runs before the completer's write
            # loop, and writes this outcome in its round (worker/runtime/producer.py).
            self.release(job_id, active)
            if outcome is not None:  # it frees the gates the claim gave the job
                outcome.gates, outcome.priority = claim.gates, claim.priority
                self.record(outcome)

    async def _execute(self, claim: Claim, active: ActiveJob) -> Outcome:
        """decode → context → call → outcome."""
        payload = claim.payload
        if payload is None:
            return self._expired(claim.job_id)
        run = self._decode(claim, payload, active)
        if self.tracing is not None:  # the only cost of tracing when it is off
            return await self.tracing.traced(
                self._call(claim, run), run.job, run.job_id, run.name, run.job_try,
                claim.score, run.start_ms, lambda: run.error,
            )  # fmt: skip
        return await self._call(claim, run)

    async def _call(self, claim: Claim, run: Run) -> Outcome:
        """The call of the job's function, and how it ended."""
        if claim.aborted:  # in arq's abort set when it was claimed: never started
            return self._aborted(run, 0.0)
        function = run.function
        if function is None:
            return self._not_found(run)
        ctx = self._context(claim, run)
        try:
            # Every function of this worker enforces its own deadline (worker/runtime/execution.py).
            result = await function.coroutine(ctx, *run.args, **run.kwargs)
        except Retry as exc:
            return self._retried(run, exc)
        except asyncio.CancelledError:
            if run.job_id not in self.aborting:
                raise  # shutdown: re-queued by run()
            return self._aborted(run, time.perf_counter() - run.started)
        except Exception as exc:  # noqa: BLE001  (any error of the job is its outcome)
            return self._failed(run, exc)
        return self._succeeded(run, result)

    # ---- steps before the call ----------------------------------------------------------------

    def _decode(self, claim: Claim, payload: bytes, active: ActiveJob) -> Run:
        """The payload as a run of its function, its start counted (metrics, ``active``)."""
        w = self.worker
        deserialize = w.job_deserializer
        assert deserialize is not None, "the worker's settings give a deserializer"
        # Never raises: a payload that is no job is a poison job (dead-lettered by its handler).
        job, payload_try, enqueue_ms, enqueue_time = claimed_job(deserialize, payload)
        name = job["f"]
        job_try = max(claim.job_try, payload_try)
        function = w.functions.get(name)
        start_ms = now_ms()
        started = time.perf_counter()
        queue_wait = max(start_ms - claim.score, 0) / 1000
        series = self.metrics.job(name)
        series.started.inc()
        self.metrics.queue_wait.observe(queue_wait)
        active.name, active.job_try, active.started = name, job_try, start_ms / 1000
        return Run(
            claim.job_id,
            name,
            job["a"],
            job["k"],
            job_try,
            enqueue_ms,
            enqueue_time,
            function,
            isinstance(function, CronJob),
            start_ms,
            started,
            queue_wait,
            series,
            job,
        )

    def _context(self, claim: Claim, run: Run) -> dict[str, Any]:
        """The ctx the job's function gets: the worker's, and this try's."""
        return {
            **self.worker.ctx,
            "job_id": run.job_id,
            "job_try": run.job_try,
            "enqueue_time": run.enqueue_time,
            "score": claim.score,
            LEASE_SET_KEY: True,
        }

    # ---- outcomes -----------------------------------------------------------------------------

    def _succeeded(self, run: Run, result: Any) -> Outcome:
        took = time.perf_counter() - run.started
        self.worker.jobs_complete += 1
        series = run.series
        series.succeeded.inc()
        series.duration.observe(took)
        self.done_since_report += 1
        if logger.isEnabledFor(logging.DEBUG):
            job_id, name, job_try = run.job_id, run.name, run.job_try
            logger.debug(
                "job %s:%s done in %.3fs (try %d)",
                job_id,
                name,
                took,
                job_try,
                extra=job_event(job_id, name, job_try, took, "succeeded", run.queue_wait),
            )
        return self._finish(run, True, result)

    def _failed(self, run: Run, exc: Exception) -> Outcome:
        took = time.perf_counter() - run.started
        run.error = exc
        self.worker.jobs_failed += 1
        run.series.failed.inc()
        run.series.duration.observe(took)
        job_id, name, job_try = run.job_id, run.name, run.job_try
        logger.warning(
            "job %s:%s failed, %s: %s",
            job_id,
            name,
            type(exc).__name__,
            exc,
            extra=job_event(job_id, name, job_try, took, "failed", run.queue_wait, exc),
        )
        return self._finish(run, False, exc)

    def _retried(self, run: Run, exc: Retry) -> Outcome:
        took = time.perf_counter() - run.started
        run.error = exc.__cause__
        self.worker.jobs_retried += 1
        run.series.retried.inc()
        run.series.duration.observe(took)
        retry = Outcome(run.job_id, "retry", new_score=now_ms() + (exc.defer_score or 0))
        if exc.__cause__ is not None:  # an error's retry (not a wait for a deploy)
            retry.failure = self._failure(
                run.job_id, run.name, run.job_try, "retried", exc.__cause__
            )
        return retry

    def _aborted(self, run: Run, took: float) -> Outcome:
        """A job aborted by an operator: a failed result (CancelledError), never re-queued."""
        job_id = run.job_id
        self.aborting.discard(job_id)
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        self.worker.jobs_failed += 1
        self.jobs_aborted += 1
        run.series.aborted.inc()
        logger.info(
            "job %s:%s aborted%s",
            job_id,
            run.name,
            f" after {took:.3f}s" if took else " before it started",
            extra=job_event(job_id, run.name, run.job_try, took, "aborted", run.queue_wait),
        )
        return self._finish(run, False, asyncio.CancelledError(ABORTED), "aborted", aborted=True)

    def _expired(self, job_id: str) -> Outcome:
        logger.warning("job %s expired", job_id)
        self.worker.jobs_failed += 1
        self.metrics.job("<expired>").failed.inc()
        return Outcome(job_id, "expired")

    def _not_found(self, run: Run) -> Outcome:
        self.worker.jobs_failed += 1
        run.series.failed.inc()
        return self._finish(run, False, JobExecutionFailed(f"function {run.name!r} not found"))

    def _finish(
        self, run: Run, success: bool, result: Any, outcome: str = "failed", aborted: bool = False
    ) -> Outcome:
        """A finished try: its result in arq's format (when kept) and, if it failed, a failure."""
        w, function = self.worker, run.function
        keep_s = w.keep_result_s if function is None else function.keep_result_s
        if keep_s is None:
            keep_s = w.keep_result_s
        forever = w.keep_result_forever
        data = None
        if forever or keep_s > 0:
            data = serialize_result(
                run.name,
                run.args,
                run.kwargs,
                run.job_try,
                run.enqueue_ms,
                success,
                result,
                run.start_ms,
                now_ms(),
                f"{run.job_id}:{run.name}",
                self.queue,
                job_id=run.job_id,
                serializer=w.job_serializer,
            )
        keep_ms = None if forever else to_ms(keep_s)
        failure = None
        if not success:
            failure = self._failure(run.job_id, run.name, run.job_try, outcome, result)
        return Outcome(
            run.job_id, "finish", data, keep_ms, cron=run.cron, aborted=aborted, failure=failure
        )

    @staticmethod
    def _failure(job_id: str, name: str, job_try: int, outcome: str, error: Any) -> bytes:
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
