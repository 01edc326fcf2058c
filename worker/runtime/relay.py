"""The outbox relay of each worker process: moves committed ``job_outbox`` rows of its queue to
Redis (worker/db/outbox.py has the SQL).

A round claims a batch with ``FOR UPDATE SKIP LOCKED`` (so relays of several workers take disjoint
rows), pushes the batch with the enqueue scripts under each row's id as the arq job id (a row's
``traceparent`` and ``tracestate`` go into its payload), marks the rows relayed and commits. A crash between the push and the commit leaves the rows unrelayed; the
next round pushes them again and Redis refuses the ids it holds (queued, running or with a kept
result) as duplicates, which count as relayed: nothing runs twice. A row that is no job this
worker knows, or whose arguments its model refuses, becomes a dead letter (``outbox-invalid``) in
the same transaction and the rest of the batch goes on. The relay wakes on ``NOTIFY job_outbox``
over a direct connection of its own, and polls every OUTBOX_POLL_INTERVAL; behind a transaction
pooler (PG_TRANSACTION_POOLING, no LISTEN) it only polls. A lost LISTEN connection is opened again
at once (then, while that fails, every BACKOFF_MAX at the relay's next round). An error of either
service is logged, backed off and retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg
from redis.asyncio import Redis

from jobs.errors import InvalidJobArguments
from jobs.registry import JobSpec
from pgpool_client.flow import render
from worker.config import Config
from worker.db import outbox
from worker.db.dead_letters import INSERT as INSERT_DEAD_LETTER
from worker.db.dead_letters import DeadLetter
from worker.db.pool import APPLICATION_NAME
from worker.errors import UnknownJob
from worker.queue import codec
from worker.queue.enqueue import enqueue_many, enqueue_payload
from worker.runtime.metrics import WorkerMetrics

logger = logging.getLogger(__name__)

OUTBOX_INVALID = "outbox-invalid"  # the dead letters' reason for a row that is no valid job
BATCH_SIZE = 1000  # one enqueue script call per batch (the client's chunk)
BACKOFF_FIRST, BACKOFF_MAX = 0.2, 5.0
PRUNE_INTERVAL = 60.0
DEPTH_INTERVAL = 1.0  # the depth gauges are refreshed at most this often


class OutboxRelay:
    """Relays one queue's outbox rows to Redis until cancelled (``run``)."""

    def __init__(
        self,
        config: Config,
        pool: asyncpg.Pool[asyncpg.Record],
        redis: Redis,
        specs: Mapping[str, JobSpec[Any, Any]],
        metrics: WorkerMetrics,
    ) -> None:
        self.config = config
        self.queue = config.queue_name
        self.pool = pool
        self.redis = redis
        self.specs = specs
        self.metrics = metrics
        self.batch_size = BATCH_SIZE
        self._wake = asyncio.Event()
        self._listener: asyncpg.Connection[asyncpg.Record] | None = None
        self._next_listen = 0.0
        self._next_prune = 0.0
        self._next_depth = 0.0

    async def run(self) -> None:
        """Relay batches while there are rows; then wait for a notification or the poll interval."""
        backoff = BACKOFF_FIRST
        try:
            while True:
                try:
                    await self._listen()
                    moved = await self.relay_batch()
                    await self._housekeeping()
                    backoff = BACKOFF_FIRST
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001  (an outage: log, back off, go on)
                    self.metrics.outbox_relay_errors.inc()
                    logger.warning(
                        "outbox relay of %s: %s: %s; retrying in %.1fs",
                        self.queue,
                        type(exc).__name__,
                        exc,
                        backoff,
                    )
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
                    continue
                if moved < self.batch_size:
                    await self._wait()
        finally:
            await self._close_listener()

    async def relay_batch(self) -> int:
        """Claim, push and mark one batch in one transaction; returns how many rows it claimed."""
        acquire = self.pool.acquire(timeout=self.config.pg_acquire_timeout)
        async with acquire as conn, conn.transaction():
            rows = await outbox.claim_batch(conn, self.queue, self.batch_size)
            if not rows:
                return 0
            valid: list[tuple[outbox.OutboxRow, dict[str, Any]]] = []
            invalid = 0
            for row in rows:
                job = {"f": row.function, "a": [], "k": row.args, **row.trace()}
                problem = self._problem(row)
                if problem is None:
                    valid.append((row, self._with_flow(row, job)))
                    continue
                invalid += 1
                await self._dead_letter(conn, row, job, problem)
            added = await self._push(valid)
            await outbox.mark_relayed(conn, [row.id for row, _ in valid])
        self._observe(valid, added, invalid)
        return len(rows)

    def _problem(self, row: outbox.OutboxRow) -> tuple[str, str] | None:
        """Why ``row`` cannot run here (error type, message), or None. The arguments are read as
        the worker reads the queue's JSON (strictly)."""
        spec = self.specs.get(row.function)
        if spec is None:
            exc: Exception = UnknownJob(name=row.function, known=", ".join(sorted(self.specs)))
            return type(exc).__name__, str(exc)
        if not isinstance(row.args, dict):
            return InvalidJobArguments.__name__, "arguments must be a JSON object"
        try:
            spec.parse((), row.args, strict=True)
        except InvalidJobArguments as exc:
            return type(exc).__name__, str(exc)
        return None

    def _with_flow(self, row: outbox.OutboxRow, job: dict[str, Any]) -> dict[str, Any]:
        """``job`` with the flow control its job declares (its payload's ``"flow"``), rendered from
        the row's arguments as the Python client renders it."""
        spec = self.specs[row.function]
        if spec.flow is None:
            return job
        flow = render(spec.flow, spec.parse((), row.args, strict=True))
        return {**job, "flow": flow} if flow else job

    async def _dead_letter(
        self, conn: Any, row: outbox.OutboxRow, job: dict[str, Any], problem: tuple[str, str]
    ) -> None:
        """Store ``row`` as a dead letter and mark it, in the claim's transaction: both or neither."""
        error_type, message = problem
        letter = DeadLetter(
            job_id=row.id,
            queue=self.queue,
            function=row.function,
            payload=codec.serialize(job),
            reason=OUTBOX_INVALID,
            error_type=error_type,
            error_message=message,
            attempts=0,
            enqueued_at=row.created_at,
        )
        await conn.execute(INSERT_DEAD_LETTER, *letter.row())
        await outbox.mark_invalid(conn, row.id, f"{error_type}: {message}")
        logger.warning(
            "outbox row %s (%s) is a dead letter (%s): %s",
            row.id,
            row.function,
            OUTBOX_INVALID,
            error_type,
        )
        self.metrics.dead_lettered.labels(row.function, OUTBOX_INVALID).inc()

    async def _push(self, valid: list[tuple[outbox.OutboxRow, dict[str, Any]]]) -> int:
        """Enqueue the valid rows (due ones in bulk, later ones each at its time); how many were
        added, the rest being ids Redis already holds (a relay that crashed before its commit)."""
        now = datetime.now(UTC)
        due = [(row.id, job) for row, job in valid if row.run_at is None or row.run_at <= now]
        added = sum(await enqueue_many(self.redis, self.queue, due)) if due else 0
        for row, job in valid:
            if row.run_at is not None and row.run_at > now:
                defer = int((row.run_at - now).total_seconds() * 1000)
                added += await enqueue_payload(self.redis, self.queue, row.id, job, defer)
        return added

    def _observe(
        self, valid: list[tuple[outbox.OutboxRow, dict[str, Any]]], added: int, invalid: int
    ) -> None:
        now = time.time()
        self.metrics.outbox_relayed.inc(len(valid))
        for row, _ in valid:
            self.metrics.outbox_relay_lag.observe(max(now - row.created_at.timestamp(), 0.0))
        if added < len(valid):
            logger.info(
                "outbox relay of %s: %d of %d rows were already in Redis (counted as relayed)",
                self.queue,
                len(valid) - added,
                len(valid),
            )
        logger.debug("outbox relay of %s: %d relayed, %d dead", self.queue, len(valid), invalid)

    async def _housekeeping(self) -> None:
        """Refresh the depth gauges, and prune relayed rows past OUTBOX_RETENTION, now and then."""
        now = time.monotonic()
        if now >= self._next_depth:
            self._next_depth = now + DEPTH_INTERVAL
            async with self.pool.acquire(timeout=self.config.pg_acquire_timeout) as conn:
                depth = await outbox.outbox_depth(conn, self.queue)
            self.metrics.set_outbox(depth.unrelayed, depth.oldest_age)
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_INTERVAL
            async with self.pool.acquire(timeout=self.config.pg_acquire_timeout) as conn:
                pruned = await outbox.prune(conn, self.config.outbox_retention)
            if pruned:
                logger.info("outbox: pruned %d relayed rows", pruned)

    async def _wait(self) -> None:
        """Until a notification for this queue, or OUTBOX_POLL_INTERVAL."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self.config.outbox_poll_interval)
        self._wake.clear()

    async def _listen(self) -> None:
        """Keep a direct connection listening on the outbox channel (not behind a transaction
        pooler, which cannot LISTEN); without one the relay polls, and tries again later."""
        if self.config.pg_transaction_pooling or self._listener is not None:
            return
        if time.monotonic() < self._next_listen:
            return
        self._next_listen = time.monotonic() + BACKOFF_MAX
        try:
            conn = await asyncpg.connect(
                self.config.database_url,
                timeout=self.config.pg_connect_timeout,
                statement_cache_size=0,
                server_settings={"application_name": f"{APPLICATION_NAME}-relay"},
            )
        except Exception as exc:  # noqa: BLE001  (polling goes on meanwhile)
            logger.warning("outbox relay cannot LISTEN (%s); polling", type(exc).__name__)
            return
        try:
            conn.add_termination_listener(self._listener_lost)
            await conn.add_listener(outbox.CHANNEL, self._notified)
        except BaseException:  # cancelled (shutdown) or refused: never leave it open
            conn.terminate()
            raise
        self._listener = conn

    def _notified(self, conn: object, pid: int, channel: str, payload: object) -> None:
        if payload == self.queue:
            self._wake.set()

    def _listener_lost(self, conn: object) -> None:
        self._listener = None
        # Listen again at once (one attempt, then the usual backoff), not after the poll: the
        # backoff of the last attempt may still run if this connection was young.
        self._next_listen = 0.0
        self._wake.set()  # a notification may have been lost with it: look now

    async def _close_listener(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2.0)
