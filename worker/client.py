"""The worker's side of the typed Python client: ``JobClient`` is the slim client
(pgpool_client.Client: the same enqueue, results, status and abort) connected the worker's way,
from its whole ``Config`` (TLS, Sentinel, the Redis policy of worker/queue/connection.py), and
validating against the live registry. ``python -m worker enqueue`` and ``result`` use it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import cache
from typing import Any, get_type_hints

from arq.connections import ArqRedis

from jobs.registry import JOBS_BY_NAME, JobSpec
from pgpool_client import Client, JobContract
from pgpool_client.handle import EnqueueOptions, JobHandle, defer_ms, failure_of
from worker.config import Config, load_config
from worker.queue import codec
from worker.queue.connect import open_redis
from worker.queue.connection import close_redis

__all__ = ["EnqueueOptions", "JobClient", "JobHandle", "defer_ms", "failure_of"]


@cache
def contract_of(spec: JobSpec[Any, Any]) -> JobContract:
    """A registry entry as the client's contract (with its flow declaration, which the client
    renders into each payload)."""
    return JobContract(
        spec.name, spec.args_model, get_type_hints(spec.function)["return"], flow=spec.flow
    )


class JobClient(Client):
    """Enqueue jobs on the worker's queue. Open it with ``async with JobClient.connect() as client``."""

    redis: ArqRedis

    @classmethod
    @asynccontextmanager
    async def connect(  # type: ignore[override]  # the worker's Config, not the slim client's
        cls, config: Config | None = None
    ) -> AsyncIterator[JobClient]:
        """Connect to REDIS_URL (JSON codec, the worker's queue); closes the connection on exit."""
        config = config or load_config()
        # Within REDIS_CONNECT_TIMEOUT, else RedisUnavailable; then socket timeouts and retries.
        redis = await open_redis(
            config,
            job_serializer=codec.serialize,
            job_deserializer=codec.deserialize,
            default_queue_name=config.queue_name,
        )
        try:
            yield cls(redis, config.queue_name)
        finally:
            await close_redis(redis)

    def contracts(self) -> Mapping[str, JobContract]:
        """The registry's jobs, as the worker runs them (the generated contracts follow it:
        tests/unit/test_client_contracts.py)."""
        return {name: contract_of(spec) for name, spec in JOBS_BY_NAME.items()}
