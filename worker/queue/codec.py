"""The queue's wire codec: JSON in UTF-8, never pickle (see docs/wire-format.md).

``serialize``, ``deserialize`` and their limits are the slim client's (pgpool_client/codec.py, one
copy: producers and the worker encode the same bytes); this module adds the worker's half: the
serializer that redacts secret arguments in stored results, and the deserializer that never raises
(bad payloads become ``__poison__`` jobs, unknown names ``__unknown__`` jobs).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from arq.utils import ms_to_datetime

from pgpool_client.codec import (
    MAX_NESTING,
    MAX_PAYLOAD_BYTES,
    PICKLE_HINT,
    PayloadError,
    deserialize,
    serialize,
)
from pgpool_client.flow import flow_problem
from worker.core.clock import now_ms
from worker.core.masking import mask_arguments

__all__ = [
    "MAX_NESTING",
    "MAX_PAYLOAD_BYTES",
    "PICKLE_HINT",
    "PayloadError",
    "claimed_job",
    "deserialize",
    "job_decoder",
    "job_encoder",
    "poison",
    "serialize",
]


def job_encoder(secrets: Mapping[str, Sequence[str]]) -> Callable[[Any], bytes]:
    """The worker's serializer: like ``serialize``, but a stored result (arq copies the job's
    arguments into it) carries ``REDACTED`` instead of the job's secret arguments.
    ``secrets`` maps a job name to its secret fields; positional arguments of such a job are all
    redacted. The result of a job no worker knows names the producer's function and carries
    every argument as ``REDACTED`` (which are secret is not known); a poison payload's names
    ``POISON_FUNCTION`` with no arguments (never its bytes)."""

    expired: set[str] = set()

    def encode(value: Any) -> bytes:
        is_result = isinstance(value, dict) and "s" in value
        if is_result and _overwrites_a_result(value, expired):
            raise ExpiredNotRecorded(str(value.get("id")))
        if is_result and value.get("f") in (POISON_JOB, UNKNOWN_JOB):
            value = _handler_result(value)
        fields = secrets.get(str(value.get("f")), ()) if is_result else ()
        if fields:
            args, kwargs = mask_arguments(fields, value["a"], dict(value["k"]))
            value = {**value, "a": args, "k": kwargs}
        return serialize(value)

    return encode


def _handler_result(value: dict[str, Any]) -> dict[str, Any]:
    """The stored result of a poison or unknown job: what the producer sent, its values redacted."""
    if value["f"] == POISON_JOB:
        return {**value, "f": POISON_FUNCTION, "a": [], "k": {}}
    sent = value.get("k")
    sent = sent if isinstance(sent, dict) else {}
    args, kwargs = sent.get("args"), sent.get("kwargs")
    masked_args, masked_kwargs = mask_arguments(  # no worker knows its fields: all masked
        None, args if isinstance(args, list) else [], kwargs if isinstance(kwargs, dict) else {}
    )
    return {**value, "f": str(sent.get("function")), "a": masked_args, "k": masked_kwargs}


class ExpiredNotRecorded(ValueError):
    """arq's "job expired" outcome, which is not stored (see ``_overwrites_a_result``)."""


def _overwrites_a_result(value: dict[str, Any], expired: set[str]) -> bool:
    """True for arq's "job expired" failure, and for arq's second attempt at storing it.

    After a Redis outage longer than the lease, a worker may start a job again while its first run
    is being recorded; the second start then finds the payload gone and arq would store "job
    expired" over the first run's real result. Refusing to encode it makes arq store nothing.
    """
    job_id = str(value.get("id"))
    result = value.get("r")
    if isinstance(result, Exception) and str(result) == "job expired":
        expired.add(job_id)
        return True
    if job_id in expired and result == "unable to serialize result":
        expired.discard(job_id)
        return True
    return False


# The worker's own handlers; a producer's job name starting with RESERVED_PREFIX is poison.
POISON_JOB = "__poison__"
UNKNOWN_JOB = "__unknown__"
RESERVED_PREFIX = "__"
POISON_FUNCTION = "<poison>"  # the function of a poison payload's dead letter and stored result
PAYLOAD_FIELDS: dict[str, type] = {"f": str, "a": list, "k": dict, "et": int}
MAX_ENQUEUE_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last time Python can hold
MAX_TRY = 2**31 - 1


def poison(data: bytes, problem: str) -> dict[str, Any]:
    """The ``__poison__`` job that stands for ``data``: its handler dead-letters the bytes."""
    kwargs = {"payload": base64.b64encode(data).decode(), "problem": problem}
    return {"f": POISON_JOB, "a": [], "k": kwargs, "t": None, "et": now_ms()}


def job_decoder(known: Collection[str]) -> Callable[[bytes], dict[str, Any]]:
    """The worker's deserializer: never raises, so that bad jobs reach a handler instead of arq's
    silent failure. Undecodable or malformed payloads, and job names reserved for the worker's
    handlers, become a ``__poison__`` job carrying the raw bytes (base64); a job whose name is not
    in ``known`` becomes an ``__unknown__`` job."""

    def decode(data: bytes) -> dict[str, Any]:
        try:
            job = deserialize(data)
            problem = _shape_problem(job)
        except PayloadError as exc:
            problem = str(exc)
        except Exception as exc:  # noqa: BLE001  (never raise: whatever it is, it is poison)
            problem = f"payload cannot be decoded ({type(exc).__name__})"
        if problem:
            return poison(data, problem)
        if job["f"] not in known:
            kwargs = {"function": job["f"], "args": job["a"], "kwargs": job["k"]}
            return {**job, "f": UNKNOWN_JOB, "a": [], "k": kwargs}
        return job  # type: ignore[no-any-return]

    return decode


def claimed_job(
    deserialize: Callable[[bytes], Any], data: bytes
) -> tuple[dict[str, Any], int, int, datetime]:
    """A claimed payload as the consumer runs it: the job, the try its payload names (``t``, 0 for
    none), its enqueue time in ms and as a datetime. Whatever ``deserialize`` raises, or returns
    that is not such a job, becomes a ``poison`` job instead, so that every payload ends with a
    result and a dead letter rather than an error before the worker's policy."""
    try:
        job = deserialize(data)
        if not isinstance(job, dict) or _shape_problem(job, reserved=False):
            raise PayloadError("the deserializer returned no job")
        enqueue_ms = job["et"]
        return job, job.get("t") or 0, enqueue_ms, ms_to_datetime(enqueue_ms)
    except Exception as exc:  # noqa: BLE001  (any payload: a poison job, never a crash)
        job = poison(data, f"payload cannot be run as a job ({type(exc).__name__})")
        return job, 0, job["et"], ms_to_datetime(job["et"])


def _shape_problem(job: dict[str, Any], reserved: bool = True) -> str:
    """What makes ``job`` no job of this queue ("" for a job); ``reserved``: refuse the names of
    the worker's own handlers (a producer's job must not call them)."""
    f, et, t = job.get("f"), job.get("et"), job.get("t")
    if (  # the usual case, in one test (every job pays for it); exact types, so no bool for int
        type(f) is str
        and type(job.get("a")) is list
        and type(job.get("k")) is dict
        and type(et) is int
        and 0 <= et <= MAX_ENQUEUE_MS
        and (t is None or (type(t) is int and 0 <= t <= MAX_TRY))
        and not (reserved and f.startswith(RESERVED_PREFIX))
        and "flow" not in job
    ):
        return ""
    for name, kind in PAYLOAD_FIELDS.items():
        if not isinstance(job.get(name), kind) or isinstance(job.get(name), bool):
            return f"field {name!r} must be a JSON {kind.__name__.replace('dict', 'object')}"
    if not 0 <= job["et"] <= MAX_ENQUEUE_MS:
        return f"field 'et' must be milliseconds since 1970, from 0 to {MAX_ENQUEUE_MS}"
    if t is not None and (not isinstance(t, int) or isinstance(t, bool) or not 0 <= t <= MAX_TRY):
        return f"field 't' must be an integer from 0 to {MAX_TRY}, or null"
    if reserved and job["f"].startswith(RESERVED_PREFIX):
        return (
            f"job name {job['f']!r} is reserved: names starting with {RESERVED_PREFIX!r} are the "
            "worker's own handlers"
        )
    if "flow" in job:
        return flow_problem(job["flow"])
    return ""  # a subclass of str, list, dict or int (not from JSON): a job all the same
