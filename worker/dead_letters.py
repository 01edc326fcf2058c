"""Dead letters, durable in PostgreSQL: jobs that will not run again by themselves.

When PostgreSQL is unreachable, a dead letter waits in a Redis list and is moved to PostgreSQL as
soon as it answers again, so none is lost.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from worker import codec
from worker.errors import DeadLetterNotFound, NotReplayable
from worker.retry_policy import is_transient
from worker.wire import enqueue_payload

if TYPE_CHECKING:
    Pool = asyncpg.Pool[asyncpg.Record]
    from asyncpg.pool import PoolConnectionProxy

    Conn = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]

logger = logging.getLogger(__name__)

PERMANENT, EXHAUSTED, POISON, UNKNOWN = (
    "permanent-error",
    "tries-exhausted",
    "poison",
    "unknown-job",
)
FLUSH_INTERVAL = 5.0

INSERT = """
INSERT INTO dead_letters (job_id, queue, function, payload, reason, error_type, error_message,
                          attempts, enqueued_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""
COLUMNS = (
    "id, job_id, queue, function, reason, error_type, error_message, attempts, enqueued_at,"
    " failed_at, replayed_at, replay_job_id"
)


@dataclass(frozen=True)
class DeadLetter:
    """A job that failed for good, with the payload needed to replay it."""

    job_id: str
    queue: str
    function: str
    payload: bytes
    reason: str
    error_type: str
    error_message: str
    attempts: int
    enqueued_at: datetime | None

    def row(self) -> tuple[Any, ...]:
        return tuple(asdict(self).values())

    def to_json(self) -> str:
        data = asdict(self)
        data["payload"] = base64.b64encode(self.payload).decode()
        data["enqueued_at"] = self.enqueued_at.isoformat() if self.enqueued_at else None
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str | bytes) -> DeadLetter:
        data = json.loads(text)
        data["payload"] = base64.b64decode(data["payload"])
        at = data["enqueued_at"]
        data["enqueued_at"] = datetime.fromisoformat(at) if at else None
        return cls(**data)


class DeadLetterStore:
    """Writes dead letters to PostgreSQL, falling back to a Redis list while it is unreachable."""

    def __init__(self, pool: Pool, redis: Redis, queue: str) -> None:
        self.pool = pool
        self.redis = redis
        self.pending_key = f"{queue}:dead-letters:pending"
        # The worker's metrics: a dead letter added; an error of the flush (Redis or PostgreSQL).
        self.on_add: Callable[[DeadLetter], None] | None = None
        self.on_error: Callable[[BaseException], None] | None = None

    async def add(self, letter: DeadLetter) -> None:
        """Store ``letter``; never raises for an outage of one of the two stores."""
        logger.warning(
            "dead letter: job %s (%s) %s after %d tries: %s",
            letter.job_id,
            letter.function,
            letter.reason,
            letter.attempts,
            letter.error_type,
        )
        if self.on_add is not None:
            self.on_add(letter)
        try:
            await self.pool.execute(INSERT, *letter.row())
        except Exception as exc:
            if not is_transient(exc):
                raise
            logger.warning("PostgreSQL unavailable (%s); dead letter kept in Redis", exc)
            await self.redis.rpush(self.pending_key, letter.to_json())  # type: ignore[misc]

    async def flush_pending(self) -> int:
        """Move dead letters that waited in Redis into PostgreSQL; returns how many moved."""
        moved = 0
        while True:
            raw = await self.redis.lindex(self.pending_key, 0)  # type: ignore[misc]
            if raw is None:
                return moved
            await self.pool.execute(INSERT, *DeadLetter.from_json(raw).row())
            await self.redis.lpop(self.pending_key)  # type: ignore[misc]
            moved += 1

    async def run(self) -> None:
        """Flush waiting dead letters every few seconds until cancelled."""
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            try:
                await self.flush_pending()
            except (RedisError, OSError, asyncpg.PostgresError) as exc:
                if self.on_error is not None:
                    self.on_error(exc)
                logger.warning("dead letters still waiting in Redis: %s", exc)


async def list_letters(conn: Conn, limit: int = 50) -> list[dict[str, Any]]:
    """The newest dead letters first."""
    rows = await conn.fetch(
        f"SELECT {COLUMNS} FROM dead_letters ORDER BY id DESC LIMIT $1",  # noqa: S608  (constant)
        limit,
    )
    return [dict(r) for r in rows]


async def get_letter(conn: Conn, letter_id: int) -> dict[str, Any]:
    """One dead letter with its payload (decoded when it is JSON)."""
    row = await conn.fetchrow(
        f"SELECT {COLUMNS}, payload FROM dead_letters WHERE id = $1",  # noqa: S608  (constant)
        letter_id,
    )
    if row is None:
        raise DeadLetterNotFound(letter_id=letter_id)
    letter = dict(row)
    try:
        letter["payload"] = codec.deserialize(bytes(row["payload"]))
    except codec.PayloadError:
        letter["payload"] = {"base64": base64.b64encode(row["payload"]).decode()}
    return letter


async def replay(conn: Conn, redis: Redis, letter_id: int, queue: str | None = None) -> str:
    """Enqueue a dead letter's job again under a new job id; returns that id."""
    letter = await get_letter(conn, letter_id)
    job = letter["payload"]
    if letter["reason"] == POISON or "f" not in job:
        raise NotReplayable(letter_id=letter_id, reason=letter["reason"])
    new_id = f"{letter['job_id']}:replay:{letter_id}"
    if letter["replay_job_id"]:
        new_id = f"{new_id}:{int(datetime.now().timestamp())}"
    await enqueue_payload(redis, queue or letter["queue"], new_id, job)
    await conn.execute(
        "UPDATE dead_letters SET replayed_at = now(), replay_job_id = $2 WHERE id = $1",
        letter_id,
        new_id,
    )
    return new_id


async def purge(conn: Conn, ids: list[int] | None = None, before: datetime | None = None) -> int:
    """Delete dead letters by id, or those failed before a time, or all (neither given)."""
    status = await conn.execute(
        "DELETE FROM dead_letters WHERE ($1::bigint[] IS NULL OR id = ANY($1))"
        " AND ($2::timestamptz IS NULL OR failed_at < $2)",
        ids,
        before,
    )
    return int(status.split()[-1])
