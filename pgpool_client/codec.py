"""The queue's wire codec: JSON in UTF-8, never pickle (see docs/wire-format.md); the producer's
half (encode a payload, decode a result) and the limits every decoder applies.

Job payloads and results are arq's own dictionaries encoded as JSON. Values JSON lacks are encoded as
text: timestamps as ISO-8601, decimals and UUIDs as strings. An exception (a failed job's result) becomes
``{"error": "<type>", "message": "<text>"}``.

orjson does the work (it is several times faster than the standard library, and every job pays for
one decode and one encode); the standard library takes what orjson would refuse or change (integers
beyond 64 bits, non-string keys, ``NaN``), so both read and write the same values the same way.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson
from pydantic import BaseModel

MAX_PAYLOAD_BYTES = 1_000_000
MAX_NESTING = 500  # arrays and objects; Python's json encodes ~990 levels at most, orjson 255
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


def deserialize(data: bytes) -> Any:
    """Decode a payload; refuses anything but a JSON object (pickle included) with PayloadError,
    and raises nothing else, whatever the bytes."""
    if len(data) > MAX_PAYLOAD_BYTES:
        raise PayloadError(
            f"payload of {len(data)} bytes is over the {MAX_PAYLOAD_BYTES} byte limit"
        )
    try:
        value = _loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(
            f"payload is not UTF-8 JSON ({exc.__class__.__name__}){_pickle_hint(data)}"
        ) from None
    except RecursionError:
        raise PayloadError(f"payload is nested deeper than {MAX_NESTING} levels") from None
    except ValueError:  # Python's limit on the digits of an integer (sys.get_int_max_str_digits)
        raise PayloadError(
            f"payload has an integer of more than {sys.get_int_max_str_digits()} digits"
        ) from None
    if not isinstance(value, dict):
        raise PayloadError(f"payload is a JSON {type(value).__name__}, expected an object")
    # Deeper values decode but do not encode again (a result or dead letter repeats them).
    if data.count(b"[") + data.count(b"{") > MAX_NESTING and _depth(value) > MAX_NESTING:
        raise PayloadError(f"payload is nested deeper than {MAX_NESTING} levels")
    return value


def _depth(value: Any) -> int:
    """How many arrays and objects deep ``value`` is (without recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in children)
    return deepest


def _loads(data: bytes) -> Any:
    # orjson reads integers beyond 64 bits (20 digits and more) as floats; json keeps them.
    if not _LONG_NUMBER.search(data):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # NaN and Infinity (not JSON, but Python's json and so arq write them): json says
    return json.loads(data.decode("utf-8"))  # UTF-8 only (json.loads of bytes also takes UTF-16)


PICKLE_HINT = (
    "; it looks like a pickle (arq's default serializer): an arq client must pass "
    "job_serializer=json.dumps and job_deserializer=json.loads to create_pool, with timestamps "
    "as ISO-8601 strings (docs/wire-format.md)"
)


def _pickle_hint(data: bytes) -> str:
    """PICKLE_HINT for bytes that start like a pickle of protocol 2 or later, else nothing."""
    return PICKLE_HINT if data[:1] == b"\x80" else ""
