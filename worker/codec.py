"""The queue's wire codec: JSON in UTF-8, never pickle (see docs/wire-format.md).

Job payloads and results are arq's own dictionaries encoded as JSON. Values JSON lacks are encoded as
text: timestamps as ISO-8601, decimals and UUIDs as strings. An exception (a failed job's result) becomes
``{"error": "<type>", "message": "<text>"}``.

orjson does the work (it is several times faster than the standard library, and every job pays for
one decode and one encode); the standard library takes what orjson would refuse or change (integers
beyond 64 bits, non-string keys, ``NaN``), so both read and write the same values the same way.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson
from pydantic import BaseModel

MAX_PAYLOAD_BYTES = 1_000_000
_LONG_NUMBER = re.compile(rb"\d{20}")


class PayloadError(ValueError):
    """Raised for bytes that are not a JSON payload of this queue."""


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, BaseException):
        return {"error": type(value).__name__, "message": str(value)}
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def serialize(value: Any) -> bytes:
    """Encode a job payload or result as compact UTF-8 JSON."""
    try:
        return orjson.dumps(value, default=_default)
    except orjson.JSONEncodeError:  # a big integer, a non-string key: the standard library's way
        return json.dumps(
            value, default=_default, separators=(",", ":"), ensure_ascii=False
        ).encode()


REDACTED = "**********"


def job_encoder(secrets: Mapping[str, Sequence[str]]) -> Callable[[Any], bytes]:
    """The worker's serializer: like ``serialize``, but a stored result (arq copies the job's
    arguments into it) carries ``REDACTED`` instead of the job's secret arguments.
    ``secrets`` maps a job name to its secret fields; positional arguments of such a job are all
    redacted."""

    expired: set[str] = set()

    def encode(value: Any) -> bytes:
        is_result = isinstance(value, dict) and "s" in value
        if is_result and _overwrites_a_result(value, expired):
            raise ExpiredNotRecorded(str(value.get("id")))
        fields = secrets.get(str(value.get("f")), ()) if is_result else ()
        if fields:
            kwargs = {k: REDACTED if k in fields else v for k, v in dict(value["k"]).items()}
            value = {**value, "a": [REDACTED] * len(value["a"]), "k": kwargs}
        return serialize(value)

    return encode


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


def deserialize(data: bytes) -> Any:
    """Decode a payload; refuses anything but a JSON object (pickle included) with PayloadError."""
    if len(data) > MAX_PAYLOAD_BYTES:
        raise PayloadError(
            f"payload of {len(data)} bytes is over the {MAX_PAYLOAD_BYTES} byte limit"
        )
    try:
        # orjson reads integers beyond 64 bits (20 digits and more) as floats; json keeps them.
        value = json.loads(data) if _LONG_NUMBER.search(data) else orjson.loads(data)
    except orjson.JSONDecodeError:
        try:  # NaN and Infinity, which are not JSON but Python's json (and so arq) writes
            value = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PayloadError(f"payload is not UTF-8 JSON ({exc.__class__.__name__})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"payload is not UTF-8 JSON ({exc.__class__.__name__})") from None
    if not isinstance(value, dict):
        raise PayloadError(f"payload is a JSON {type(value).__name__}, expected an object")
    return value


POISON_JOB = "__poison__"
UNKNOWN_JOB = "__unknown__"
PAYLOAD_FIELDS: dict[str, type] = {"f": str, "a": list, "k": dict, "et": int}


def job_decoder(known: Collection[str]) -> Callable[[bytes], dict[str, Any]]:
    """The worker's deserializer: never raises, so that bad jobs reach a handler instead of arq's
    silent failure. Undecodable or malformed payloads become a ``__poison__`` job carrying the raw
    bytes (base64); a job whose name is not in ``known`` becomes an ``__unknown__`` job."""

    def decode(data: bytes) -> dict[str, Any]:
        try:
            job = deserialize(data)
            problem = _shape_problem(job)
        except PayloadError as exc:
            problem = str(exc)
        if problem:
            kwargs = {"payload": base64.b64encode(data).decode(), "problem": problem}
            return {"f": POISON_JOB, "a": [], "k": kwargs, "t": None, "et": _now_ms()}
        if job["f"] not in known:
            kwargs = {"function": job["f"], "args": job["a"], "kwargs": job["k"]}
            return {**job, "f": UNKNOWN_JOB, "a": [], "k": kwargs}
        return job  # type: ignore[no-any-return]

    return decode


def _shape_problem(job: dict[str, Any]) -> str:
    for name, kind in PAYLOAD_FIELDS.items():
        if not isinstance(job.get(name), kind) or isinstance(job.get(name), bool):
            return f"field {name!r} must be a JSON {kind.__name__.replace('dict', 'object')}"
    if job.get("t") is not None and not isinstance(job["t"], int):
        return "field 't' must be an integer or null"
    return ""


def _now_ms() -> int:
    return int(datetime.now().timestamp() * 1000)
