"""Dead letters, durable in PostgreSQL: jobs that will not run again by themselves.

When PostgreSQL does not take a dead letter (unreachable, a broken pooled connection, any error of
the INSERT), it waits in a Redis list and is moved to PostgreSQL as soon as it takes it. When Redis
refuses it too, it waits in the process's memory (logged as an error) and is retried with the list.
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

from worker.errors import DeadLetterNotFound, NotReplayable
from worker.queue import codec
from worker.queue.enqueue import enqueue_payload
from worker.queue.keys import dead_letters_pending_key

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
        """The INSERT's values: text PostgreSQL can store (no NUL, no lone surrogate) and an attempt
        count in its integer column, so that no letter is refused for its contents."""
        return (
            _text(self.job_id),
            _text(self.queue),
            _text(self.function),
            self.payload,
            _text(self.reason),
            _text(self.error_type),
            _text(self.error_message),
            min(max(self.attempts, 0), MAX_ATTEMPTS),
            self.enqueued_at,
        )

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


MAX_ATTEMPTS = 2**31 - 1  # the attempts column is an integer


def _text(value: str) -> str:
    """``value`` as PostgreSQL text: NUL and unencodable code points written as escapes."""
    return value.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


class DeadLetterStore:
    """Writes dead letters to PostgreSQL, falling back to a Redis list when it does not take them."""

    def __init__(self, pool: Pool, redis: Redis, queue: str) -> None:
        self.pool = pool
        self.redis = redis
        self.pending_key = dead_letters_pending_key(queue)
        # Letters neither store took (both failed at once): retried by run(), lost if the process
        # stops first (each one is logged as an error).
        self.unsaved: list[DeadLetter] = []
        # The worker's metrics: a dead letter added; an error of a store (Redis or PostgreSQL).
        self.on_add: Callable[[DeadLetter], None] | None = None
        self.on_error: Callable[[BaseException], None] | None = None

    async def add(self, letter: DeadLetter) -> None:
        """Store ``letter``; never raises for an error of either store (only for cancellation)."""
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
        except Exception as exc:  # noqa: BLE001  (whatever PostgreSQL's error, Redis keeps it)
            self._error(exc)
            logger.warning(
                "dead letter of job %s not written to PostgreSQL (%s: %s); kept in Redis",
                letter.job_id,
                type(exc).__name__,
                exc,
            )
            try:
                await self._push(letter)
            except Exception as redis_exc:  # noqa: BLE001  (never lose a letter: hold it)
                self._error(redis_exc)
                self.unsaved.append(letter)
                logger.error(
                    "dead letter of job %s (%s, %s) written to neither PostgreSQL nor Redis "
                    "(%s: %s): held in this process's memory (%d letters) and retried every %gs; "
                    "a letter still held when the process stops is lost",
                    letter.job_id,
                    letter.function,
                    letter.reason,
                    type(redis_exc).__name__,
                    redis_exc,
                    len(self.unsaved),
                    FLUSH_INTERVAL,
                )

    async def _push(self, letter: DeadLetter) -> None:
        await self.redis.rpush(self.pending_key, letter.to_json())  # type: ignore[misc]

    def _error(self, exc: BaseException) -> None:
        if self.on_error is not None:
            self.on_error(exc)

    async def flush_pending(self) -> int:
        """Move dead letters held in memory and those that waited in Redis into PostgreSQL (the
        held ones to Redis when PostgreSQL still refuses them); returns how many reached it."""
        moved = 0
        while self.unsaved:
            letter = self.unsaved[0]
            try:
                await self.pool.execute(INSERT, *letter.row())
                moved += 1
            except Exception:  # noqa: BLE001  (Redis keeps it; if Redis fails too, the next round)
                await self._push(letter)
            self.unsaved.pop(0)
        while True:
            raw = await self.redis.lindex(self.pending_key, 0)  # type: ignore[misc]
            if raw is None:
                return moved
            await self.pool.execute(INSERT, *DeadLetter.from_json(raw).row())
            # That entry, not the list's head: another worker of the queue may have moved it
            # meanwhile (then the letter is stored twice, never lost).
            await self.redis.lrem(self.pending_key, 1, raw)  # type: ignore[misc]
            moved += 1

    async def run(self) -> None:
        """Flush waiting dead letters every few seconds until cancelled."""
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            try:
                await self.flush_pending()
            except Exception as exc:  # noqa: BLE001  (the letters wait for the next round)
                self._error(exc)
                logger.warning(
                    "dead letters still waiting in Redis: %s: %s", type(exc).__name__, exc
                )


async def list_letters(conn: Conn, limit: int = 50) -> list[dict[str, Any]]:
    """The newest dead letters first."""
    rows = await conn.fetch(
        f"SELECT {COLUMNS} FROM dead_letters ORDER BY id DESC LIMIT $1",  # noqa: S608  (constant)
        limit,
    )
    return [dict(r) for r in rows]


COUNTS = (
    "SELECT count(*) AS total, count(*) FILTER (WHERE replayed_at IS NULL) AS open"
    " FROM dead_letters"
)


async def count_letters(conn: Conn) -> dict[str, int]:
    """``{"total": n, "not_replayed": m}``: every dead letter, and those not yet replayed."""
    row = await conn.fetchrow(COUNTS)
    assert row is not None
    return {"total": int(row["total"]), "not_replayed": int(row["open"])}


async def letters_of_job(conn: Conn, job_id: str) -> list[dict[str, Any]]:
    """The dead letters of one job id, oldest first (without their payloads)."""
    rows = await conn.fetch(
        "SELECT id, reason, error_type, attempts, failed_at, replay_job_id FROM dead_letters"
        " WHERE job_id = $1 ORDER BY id",
        job_id,
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


async def unreplayed_ids(
    conn: Conn, before: datetime | None = None, limit: int = 1000
) -> list[int]:
    """The dead letters not yet replayed (those failed before ``before``), oldest first: ids."""
    rows = await conn.fetch(
        "SELECT id FROM dead_letters WHERE replayed_at IS NULL"
        " AND ($1::timestamptz IS NULL OR failed_at < $1) ORDER BY id LIMIT $2",
        before,
        limit,
    )
    return [int(r["id"]) for r in rows]


async def purge(conn: Conn, ids: list[int] | None = None, before: datetime | None = None) -> int:
    """Delete dead letters by id, or those failed before a time, or all (neither given)."""
    status = await conn.execute(
        "DELETE FROM dead_letters WHERE ($1::bigint[] IS NULL OR id = ANY($1))"
        " AND ($2::timestamptz IS NULL OR failed_at < $2)",
        ids,
        before,
    )
    return int(status.split()[-1])
