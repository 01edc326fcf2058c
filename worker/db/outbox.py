"""The job outbox in PostgreSQL (migrations 0003_outbox.sql and 0005_outbox_trace.sql): enqueueing
inside the caller's own transaction, and the SQL of the relay (``worker/runtime/relay.py``) that moves committed rows to
Redis: claims with ``FOR UPDATE SKIP LOCKED``, marks, pruning and the outbox's depth."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from jobs.registry import JOBS_BY_NAME, JobSpec
from pgpool_client.contracts import wire_arguments
from pgpool_client.tracing import trace_fields
from worker.errors import DuplicateJob, UnknownJob

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Conn = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]

# The queue enqueue_job() uses when none is given: QUEUE_NAME's default.
DEFAULT_QUEUE = "arq:queue"
# The channel enqueue_job() notifies at commit, with the queue's name as the payload.
CHANNEL = "job_outbox"

ENQUEUE = "SELECT enqueue_job($1::text, $2::text::jsonb, $3::text, $4::timestamptz, $5::text)"
# ... with the producer's W3C traceparent and tracestate (migration 0005_outbox_trace.sql).
ENQUEUE_TRACED = (
    "SELECT enqueue_job($1::text, $2::text::jsonb, $3::text, $4::timestamptz, $5::text,"
    " $6::text, $7::text)"
)
MAX_TRACESTATE = 512  # enqueue_job() refuses a longer one (W3C's limit)


def validated_arguments(spec: JobSpec[Any, Any], args: Mapping[str, Any]) -> dict[str, Any]:
    """``args`` validated leniently against the job's model, as the typed client does ("7" → 7),
    then as the JSON the worker reads strictly (pgpool_client's one rule: secrets in clear)."""
    return wire_arguments(spec.parse((), args))


async def enqueue_in_transaction(
    conn: Conn,
    name: str,
    /,
    *,
    job_id: str | None = None,
    run_at: datetime | None = None,
    queue: str | None = None,
    specs: Mapping[str, JobSpec[Any, Any]] = JOBS_BY_NAME,
    **args: Any,
) -> str:
    """Enqueue job ``name`` with keyword ``args`` on the caller's connection, in its transaction:
    the job reaches the queue once that transaction commits, never if it rolls back. Returns the
    job id. Raises UnknownJob or InvalidJobArguments before anything is written, DuplicateJob when
    ``job_id`` is already in the outbox (which aborts the caller's transaction, as any SQL error).
    Inside an OpenTelemetry span, the row carries that span's ``traceparent`` (and ``tracestate``),
    as the client's payloads do; else enqueue_job() reads the ``pgpool.traceparent`` setting."""
    spec = specs.get(name)
    if spec is None:
        raise UnknownJob(name=name, known=", ".join(sorted(specs)))
    if run_at is not None and run_at.tzinfo is None:
        raise ValueError("run_at must be timezone-aware (for example datetime.now(UTC))")
    if job_id is not None and not job_id:
        raise ValueError("job_id must not be empty (None: a new id)")
    payload = json.dumps(validated_arguments(spec, args), ensure_ascii=False)
    row = (name, payload, job_id, run_at, queue or DEFAULT_QUEUE)
    trace = trace_fields()
    try:
        if trace is None:
            new_id: str = await conn.fetchval(ENQUEUE, *row)
        else:
            state = trace.get("tracestate")
            state = state if state is not None and len(state) <= MAX_TRACESTATE else None
            new_id = await conn.fetchval(ENQUEUE_TRACED, *row, trace["traceparent"], state)
    except asyncpg.UniqueViolationError:
        raise DuplicateJob(job_id=job_id) from None
    return new_id


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A committed outbox row the relay has claimed: a job to move to Redis."""

    id: str
    function: str
    args: Any  # the stored JSON: an object, checked against the job's model before it is relayed
    run_at: datetime | None
    created_at: datetime
    traceparent: str | None = None  # the producer's W3C trace context, copied into the payload
    tracestate: str | None = None

    def trace(self) -> dict[str, str]:
        """The payload's trace fields: ``traceparent`` and ``tracestate``, those the row has."""
        fields = {"traceparent": self.traceparent, "tracestate": self.tracestate}
        return {k: v for k, v in fields.items() if v is not None}


CLAIM = """
SELECT id, function, args::text AS args, run_at, created_at, traceparent, tracestate
FROM job_outbox
WHERE relayed_at IS NULL AND queue = $1
ORDER BY created_at LIMIT $2
FOR UPDATE SKIP LOCKED
"""


async def claim_batch(conn: Conn, queue: str, limit: int) -> list[OutboxRow]:
    """Lock up to ``limit`` unrelayed rows of ``queue``, oldest first, skipping rows another relay
    holds; call it inside a transaction, which holds them until it ends."""
    rows = await conn.fetch(CLAIM, queue, limit)
    return [
        OutboxRow(
            r["id"],
            r["function"],
            json.loads(r["args"]),
            r["run_at"],
            r["created_at"],
            r["traceparent"],
            r["tracestate"],
        )
        for r in rows
    ]


async def mark_relayed(conn: Conn, ids: Sequence[str]) -> None:
    """Mark rows as moved to Redis (in the claim's transaction)."""
    if ids:
        await conn.execute(
            "UPDATE job_outbox SET relayed_at = clock_timestamp() WHERE id = ANY($1::text[])",
            list(ids),
        )


async def mark_invalid(conn: Conn, row_id: str, error: str) -> None:
    """Mark a row that is no job to run (it became a dead letter), with the reason."""
    await conn.execute(
        "UPDATE job_outbox SET relayed_at = clock_timestamp(), error = $2 WHERE id = $1",
        row_id,
        error,
    )


PRUNE = """
DELETE FROM job_outbox WHERE id IN (
    SELECT id FROM job_outbox
    WHERE relayed_at IS NOT NULL AND relayed_at < clock_timestamp() - make_interval(secs => $1)
    LIMIT $2)
"""


async def prune(conn: Conn, retention: float, limit: int = 10_000) -> int:
    """Delete up to ``limit`` rows relayed more than ``retention`` seconds ago; how many."""
    status = await conn.execute(PRUNE, float(retention), limit)
    return int(status.split()[-1])


@dataclass(frozen=True, slots=True)
class OutboxDepth:
    """The rows of a queue not yet relayed, and how long the oldest of them has waited."""

    unrelayed: int
    oldest_age: float  # seconds; 0 when there is none


DEPTH = """
SELECT count(*) AS unrelayed,
       coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0)::float8 AS oldest
FROM job_outbox WHERE relayed_at IS NULL AND queue = $1
"""


async def outbox_depth(conn: Conn, queue: str) -> OutboxDepth:
    """The outbox's depth for ``queue`` (what ``status`` and the metrics show)."""
    row = await conn.fetchrow(DEPTH, queue)
    assert row is not None
    return OutboxDepth(int(row["unrelayed"]), max(float(row["oldest"]), 0.0))


LAG_WINDOW = 300.0  # seconds: the relay lag that status and the dashboard show is of these rows
LAG_ROWS = 1000  # ... at most this many, the most recently relayed

RELAY_LAG = """
SELECT count(*) AS relayed,
       coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY lag), 0)::float8 AS p50,
       coalesce(max(lag), 0)::float8 AS max
FROM (SELECT extract(epoch FROM relayed_at - created_at)::float8 AS lag FROM job_outbox
      WHERE relayed_at > clock_timestamp() - make_interval(secs => $2)
        AND queue = $1 AND error IS NULL
      ORDER BY relayed_at DESC LIMIT $3) AS recent
"""


async def outbox_summary(conn: Conn, queue: str) -> dict[str, Any]:
    """What ``status`` and the dashboard show of ``queue``'s outbox: the rows not yet relayed, the
    oldest one's age, and the relay lag (insert → relayed to Redis, median and max) of the rows
    relayed in the last LAG_WINDOW seconds (at most LAG_ROWS, the latest)."""
    depth = await outbox_depth(conn, queue)
    lag = await conn.fetchrow(RELAY_LAG, queue, LAG_WINDOW, LAG_ROWS)
    assert lag is not None
    return {
        "unrelayed": depth.unrelayed,
        "oldest_unrelayed_age_s": round(depth.oldest_age, 3),
        "recently_relayed": int(lag["relayed"]),
        "relay_lag_p50_s": round(max(float(lag["p50"]), 0.0), 3),
        "relay_lag_max_s": round(max(float(lag["max"]), 0.0), 3),
        "lag_window_s": LAG_WINDOW,
    }
