"""The queue's wire codec: JSON in UTF-8, never pickle (see docs/wire-format.md).

Job payloads and results are arq's own dictionaries encoded as JSON. Values JSON lacks are encoded as
text: timestamps as ISO-8601, decimals and UUIDs as strings. An exception (a failed job's result) becomes
``{"error": "<type>", "message": "<text>"}``.
"""

from __future__ import annotations

import json
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

from pydantic import BaseModel

MAX_PAYLOAD_BYTES = 1_000_000


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
    return json.dumps(value, default=_default, separators=(",", ":"), ensure_ascii=False).encode()


def deserialize(data: bytes) -> Any:
    """Decode a payload; refuses anything but a JSON object (pickle included) with PayloadError."""
    if len(data) > MAX_PAYLOAD_BYTES:
        raise PayloadError(
            f"payload of {len(data)} bytes is over the {MAX_PAYLOAD_BYTES} byte limit"
        )
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"payload is not UTF-8 JSON ({exc.__class__.__name__})") from None
    if not isinstance(value, dict):
        raise PayloadError(f"payload is a JSON {type(value).__name__}, expected an object")
    return value
