"""The slim Python client of the pgpool worker's queue: enqueue jobs, read their status and
results, abort them, with only redis, pydantic and orjson installed (never the worker).

``async with Client.connect() as client: user = await (await client.get_user(42)).result()``;
see docs/producers.md."""

from __future__ import annotations

from pgpool_client.client import Client, connect_redis
from pgpool_client.config import ClientConfig
from pgpool_client.contracts import JobContract
from pgpool_client.errors import (
    DuplicateJob,
    InvalidClientConfig,
    InvalidJobArguments,
    JobFailed,
    RedisUnavailable,
    ResultNotFound,
    ResultTimeout,
    UnknownJob,
    WorkerError,
)
from pgpool_client.handle import EnqueueOptions, JobHandle, JobStatus
from pgpool_client.jobs import CONTRACTS

__all__ = [
    "CONTRACTS",
    "Client",
    "ClientConfig",
    "DuplicateJob",
    "EnqueueOptions",
    "InvalidClientConfig",
    "InvalidJobArguments",
    "JobContract",
    "JobFailed",
    "JobHandle",
    "JobStatus",
    "RedisUnavailable",
    "ResultNotFound",
    "ResultTimeout",
    "UnknownJob",
    "WorkerError",
    "connect_redis",
]
