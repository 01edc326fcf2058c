"""An enqueued job as a producer holds it: its id, its status, its typed result, and abort; and the
options of an enqueue (``job_id``, ``defer_by``, ``defer_until``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Generic, TypedDict, TypeVar

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pgpool_client import codec
from pgpool_client.contracts import JobContract
from pgpool_client.enqueue import now_ms
from pgpool_client.errors import JobFailed, ResultNotFound, ResultTimeout
from pgpool_client.keys import ABORT_SET, BLOCKED_SCORE, IN_PROGRESS_PREFIX, RESULT_PREFIX

T = TypeVar("T")
R = TypeVar("R")
ABORTED = "CancelledError"  # the error type of an aborted job's stored result
# arq's abort: a deferred job is made due at once (so that a worker claims it and sees the abort),
# then its id goes into the abort set (score: when asked, ms). KEYS: the queue, the abort set.
ABORT_SCRIPT = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) > tonumber(ARGV[2]) then redis.call('ZADD', KEYS[1], 1, ARGV[1]) end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""


class JobStatus(StrEnum):
    """Where a job is (arq's names; equal to arq's ``JobStatus`` members)."""

    deferred = "deferred"
    queued = "queued"
    in_progress = "in_progress"
    complete = "complete"
    not_found = "not_found"


class EnqueueOptions(TypedDict, total=False):
    """How to enqueue: ``job_id`` refuses duplicates; ``defer_by`` / ``defer_until`` delay the start;
    ``priority`` orders due jobs."""

    job_id: str
    defer_by: float | timedelta
    defer_until: datetime
    priority: int  # 0-9, higher first (docs/flow-control.md); default: the job's declared one


def defer_ms(options: EnqueueOptions) -> int:
    """Milliseconds from now until the job may start (0: at once)."""
    defer_by, defer_until = options.get("defer_by"), options.get("defer_until")
    if defer_by is not None and defer_until is not None:
        raise ValueError("use either defer_by or defer_until, not both")
    if defer_until is not None:
        if defer_until.tzinfo is None:
            raise ValueError("defer_until must be timezone-aware (for example datetime.now(UTC))")
        return max(int((defer_until - datetime.now(defer_until.tzinfo)).total_seconds() * 1000), 0)
    if isinstance(defer_by, timedelta):
        return int(defer_by.total_seconds() * 1000)
    return int((defer_by or 0) * 1000)


def failure_of(result: Any) -> tuple[str, str]:
    """The (error type, message) of a failed job's stored result."""
    if isinstance(result, dict) and "error" in result:
        return str(result["error"]), str(result.get("message", ""))
    if isinstance(result, BaseException):
        return type(result).__name__, str(result)
    return "Error", str(result)


async def with_retries(read: Callable[[], Awaitable[R]], retries: int) -> R:
    """Run a read (safe to repeat) again after a lost connection, up to ``retries`` more times."""
    for attempt in range(retries + 1):
        try:
            return await read()
        except (RedisConnectionError, RedisTimeoutError):
            if attempt == retries:
                raise
            await asyncio.sleep(0.1 * 2**attempt)
    raise AssertionError("unreachable")


class JobHandle(Generic[T]):
    """An enqueued job: its id, its status, and its typed result once it has finished."""

    def __init__(
        self,
        redis: Redis,
        job_id: str,
        queue_name: str,
        contract: JobContract | None = None,
        retries: int = 2,
    ) -> None:
        self.redis = redis
        self.job_id = job_id
        self.queue_name = queue_name
        self.contract = contract  # None: a handle by id only (results come back as JSON data)
        self.retries = retries

    def __repr__(self) -> str:
        return f"<JobHandle {self.job_id} on {self.queue_name}>"

    async def status(self) -> JobStatus:
        """deferred, queued, in_progress, complete or not_found. A job waiting on a flow-control
        gate (a limit, a rate, a pause: docs/flow-control.md) is queued: it runs when the gate
        lets it, not at a time (a plain arq client, which reads the score, says deferred)."""

        async def read() -> list[Any]:
            async with self.redis.pipeline(transaction=True) as tr:
                tr.exists(RESULT_PREFIX + self.job_id)
                tr.exists(IN_PROGRESS_PREFIX + self.job_id)
                tr.zscore(self.queue_name, self.job_id)
                return await tr.execute()

        complete, in_progress, score = await with_retries(read, self.retries)
        if complete:
            return JobStatus.complete
        if in_progress:
            return JobStatus.in_progress
        if score:
            if score == BLOCKED_SCORE:
                return JobStatus.queued
            return JobStatus.deferred if score > now_ms() else JobStatus.queued
        return JobStatus.not_found

    async def stored_result(self) -> dict[str, Any] | None:
        """The job's stored result record (arq's: ``s`` success, ``r`` result, ``t`` try, ``f``
        function, ...), or None while it has none."""
        data = await with_retries(lambda: self.redis.get(RESULT_PREFIX + self.job_id), self.retries)
        return None if data is None else codec.deserialize(data)

    async def raw_result(self, timeout: float = 10.0, poll: float = 0.02) -> dict[str, Any]:
        """Wait for the result and return it as JSON data; raises JobFailed if the job failed."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            info = await self.stored_result()
            if info is not None:
                if info.get("s"):
                    return {"result": info.get("r"), "try": info.get("t"), "function": info["f"]}
                error, message = failure_of(info.get("r"))
                raise JobFailed(
                    job_id=self.job_id, function=info.get("f"), error_type=error, message=message
                )
            if await self.status() == JobStatus.not_found:
                raise ResultNotFound(job_id=self.job_id, queue=self.queue_name)
            if asyncio.get_running_loop().time() >= deadline:
                raise ResultTimeout(job_id=self.job_id, timeout=timeout, queue=self.queue_name)
            await asyncio.sleep(poll)
            poll = min(poll * 1.5, 0.5)

    async def result(self, timeout: float = 10.0) -> T:
        """Wait up to ``timeout`` seconds for the job's result, parsed into its model."""
        data = (await self.raw_result(timeout))["result"]
        if self.contract is None:
            return data  # type: ignore[no-any-return]
        return self.contract.result_adapter.validate_python(data)  # type: ignore[no-any-return]

    async def abort(self, timeout: float = 10.0) -> bool:
        """Ask the worker to abort the job (queued, deferred or running), and wait up to
        ``timeout`` seconds for its outcome: True if it was aborted, False if it finished
        otherwise first (or is not known). Raises ResultTimeout if it has no outcome in time."""
        keys = (self.queue_name, ABORT_SET)
        asked = str(now_ms())
        await self.redis.eval(ABORT_SCRIPT, 2, *keys, self.job_id, asked)  # type: ignore[misc]
        try:
            await self.raw_result(timeout)
        except JobFailed as exc:
            return bool(exc.context["error_type"] == ABORTED)
        except ResultNotFound:
            return False
        return False
