"""The typed client: validates a job's arguments against its contract, enqueues it in the queue's
wire format (one round trip), and hands back a ``JobHandle`` for its status, result and abort."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any
from uuid import uuid4

from pydantic import BaseModel
from redis.asyncio import Redis
from redis.exceptions import RedisError

from pgpool_client import codec
from pgpool_client.config import ClientConfig
from pgpool_client.contracts import JobContract, parse_many, wire_arguments, wire_dump
from pgpool_client.enqueue import Chunk, enqueue_payload, flow_of, now_ms, send_chunks
from pgpool_client.errors import DuplicateJob, RedisUnavailable, UnknownJob
from pgpool_client.flow import render
from pgpool_client.handle import EnqueueOptions, JobHandle, defer_ms
from pgpool_client.jobs import CONTRACTS, JobMethods
from pgpool_client.masking import mask_url
from pgpool_client.tracing import trace_fields

ADVICE = "Check that Redis runs there, or fix REDIS_URL (or the client's redis_url argument)."


class Client(JobMethods):
    """Enqueue jobs on the worker's queue: ``async with Client.connect() as client``; one typed
    method per job (``await client.get_user(42)``), or ``enqueue("get_user", user_id=42)``."""

    def __init__(self, redis: Redis, queue_name: str, read_retries: int = 2) -> None:
        self.redis = redis
        self.queue_name = queue_name
        self.read_retries = read_retries

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        config: ClientConfig | None = None,
        *,
        redis_url: str | None = None,
        queue_name: str | None = None,
    ) -> AsyncIterator[Client]:
        """Connect (``config``, else ``redis_url`` / ``queue_name``, else REDIS_URL / QUEUE_NAME,
        else the defaults); raises RedisUnavailable when Redis has not answered a PING within the
        connect timeout. The connection is closed on exit."""
        config = config or ClientConfig.resolve(redis_url, queue_name)
        redis = await connect_redis(config)
        try:
            yield cls(redis, config.queue_name, config.read_retries)
        finally:
            await redis.aclose()

    def contracts(self) -> Mapping[str, JobContract]:
        """The jobs this client enqueues, by name (generated from the worker's registry)."""
        return CONTRACTS

    def _contract(self, name: str) -> JobContract:
        contracts = self.contracts()
        contract = contracts.get(name)
        if contract is None:
            raise UnknownJob(name=name, known=", ".join(sorted(contracts)))
        return contract

    async def enqueue(
        self, name: str, /, *args: Any, options: EnqueueOptions | None = None, **kwargs: Any
    ) -> JobHandle[Any]:
        """Validate the arguments against the job's model, then enqueue it; returns its handle.
        Raises DuplicateJob when ``options["job_id"]`` is queued, running or has a kept result.
        Not retried: a lost reply would make a retry refuse the job it had just enqueued."""
        contract = self._contract(name)
        parsed = contract.parse(args, kwargs)
        opts = options or {}
        unknown = set(opts) - set(EnqueueOptions.__annotations__)
        if unknown:
            raise ValueError(
                f"unknown enqueue option(s) {sorted(unknown)}; options are "
                f"{sorted(EnqueueOptions.__annotations__)} (job arguments go by name)"
            )
        job_id = opts.get("job_id") or uuid4().hex
        job = payload_of(contract, parsed, opts.get("priority"))
        if not await enqueue_payload(self.redis, self.queue_name, job_id, job, defer_ms(opts)):
            raise DuplicateJob(job_id=job_id)
        return self._handle(job_id, contract)

    async def enqueue_many(
        self,
        name: str,
        arguments: Iterable[Mapping[str, Any]],
        *,
        job_ids: Sequence[str] | None = None,
        chunk: int = 1000,
        priority: int | None = None,
    ) -> list[JobHandle[Any] | None]:
        """Enqueue many jobs of one kind, ``chunk`` per script call (a window of them per round
        trip, pgpool_client.enqueue.send_chunks).

        Every argument set is validated before anything is sent, so bad input enqueues nothing.
        Duplicate job ids are refused as with ``enqueue``: their entry in the answer is None.
        ``priority`` (0-9) overrides the job's declared one for all of them.
        """
        contract = self._contract(name)
        wire = wire_dump(contract.args_model)
        rendered = contract.flow is not None or bool(priority)
        wires: list[dict[str, Any]] = []
        flows: list[dict[str, Any]] = []
        for params in parse_many(contract.name, contract.args_model, arguments):
            wires.append(wire(params))
            if rendered:
                flows.append(render(contract.flow, params, priority))
        if job_ids is not None and len(job_ids) != len(wires):
            raise ValueError(f"{len(job_ids)} job ids for {len(wires)} jobs")
        placed = [flow_of({"flow": flow}) for flow in flows] if rendered else None
        trace = trace_fields()  # the span active at the call, for every job of it
        handles: list[JobHandle[Any]] = []
        handle, name, serialize = self._handle, contract.name, codec.serialize

        def build(start: int, stop: int) -> Chunk:
            enqueued = now_ms()
            ids = job_ids[start:stop] if job_ids is not None else new_job_ids(stop - start)
            handles.extend([handle(job_id, contract) for job_id in ids])
            if rendered or trace:
                payloads = [
                    serialize(
                        job_payload(name, wires[at], flows[at] if rendered else None, trace)
                        | {"t": None, "et": enqueued}
                    )
                    for at in range(start, stop)
                ]
            else:  # each job's dict freed as soon as it is written: no work for the collector
                payloads = [
                    serialize({"f": name, "a": (), "k": k, "t": None, "et": enqueued})
                    for k in wires[start:stop]
                ]
            return enqueued, ids, payloads, placed and placed[start:stop]

        added = await send_chunks(self.redis, self.queue_name, len(wires), chunk, build)
        return [h if ok else None for h, ok in zip(handles, added, strict=True)]

    def _handle(self, job_id: str, contract: JobContract | None) -> JobHandle[Any]:
        return JobHandle(self.redis, job_id, self.queue_name, contract, self.read_retries)

    def handle(self, job_id: str, name: str | None = None) -> JobHandle[Any]:
        """A handle on a job enqueued earlier (by anyone), to read its status and result; with
        the job's ``name``, its result is parsed into the job's result model."""
        return self._handle(job_id, None if name is None else self._contract(name))


def new_job_ids(count: int, random: Callable[[int], bytes] = os.urandom) -> list[str]:
    """``count`` fresh job ids, each as ``uuid4().hex`` writes one (32 lowercase hex digits of a
    random RFC 4122 UUID, version 4), from one read of ``random`` (the system's randomness)."""
    raw = bytearray(random(16 * count))
    raw[6::16] = raw[6::16].translate(_VERSION_4)
    raw[8::16] = raw[8::16].translate(_RFC_4122)
    text = raw.hex()
    return [text[at : at + 32] for at in range(0, 32 * count, 32)]


# Byte 6 of a version 4 UUID is 0x4?, byte 8 is 0b10?????? (the variant): uuid.UUID(version=4).
_VERSION_4 = bytes(0x40 | (b & 0x0F) for b in range(256))
_RFC_4122 = bytes(0x80 | (b & 0x3F) for b in range(256))


def payload_of(contract: JobContract, params: BaseModel, priority: int | None) -> dict[str, Any]:
    """A job's payload (before its enqueue time): its name, its arguments as JSON and, when it
    declares any or ``priority`` is given, its flow control rendered from the arguments; inside
    an OpenTelemetry span, that span's W3C ``traceparent`` (and ``tracestate``)."""
    arguments = wire_arguments(params)
    return job_payload(
        contract.name, arguments, render(contract.flow, params, priority), trace_fields()
    )


def job_payload(
    name: str,
    arguments: dict[str, Any],
    flow: dict[str, Any] | None,
    trace: dict[str, str] | None,
) -> dict[str, Any]:
    """``payload_of`` from its parts: ``flow`` ("flow", when not empty), ``trace`` (its fields)."""
    job: dict[str, Any] = {"f": name, "a": [], "k": arguments}
    if flow:
        job["flow"] = flow
    if trace:
        job.update(trace)
    return job


async def connect_redis(config: ClientConfig) -> Redis:
    """A Redis client for ``config`` that has answered a PING within the connect timeout; raises
    RedisUnavailable (the URL's password masked) when it has not."""
    redis: Redis = Redis.from_url(
        config.redis_url,
        socket_connect_timeout=config.connect_timeout,
        socket_timeout=config.command_timeout,
        socket_keepalive=True,
        health_check_interval=30,
    )
    try:
        async with asyncio.timeout(config.connect_timeout):
            await redis.ping()
    except (OSError, RedisError, TimeoutError) as exc:
        await redis.aclose()
        text = str(exc).rstrip(".") or f"no answer within {config.connect_timeout:g} s"
        raise RedisUnavailable(
            url=mask_url(config.redis_url), reason=f"{type(exc).__name__}: {text}.", advice=ADVICE
        ) from None
    return redis
