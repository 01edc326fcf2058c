"""Unit tests of the queue's JSON wire codec (worker.queue.codec)."""

from __future__ import annotations

import json
import os
import pickle
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from worker.queue.codec import MAX_PAYLOAD_BYTES, PayloadError, deserialize, serialize

pytestmark = pytest.mark.unit


def _job(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """A job payload in arq's own shape."""
    return {"t": 1, "f": "get_user", "a": list(args), "k": kwargs, "et": 1_700_000_000_000}


@pytest.mark.parametrize(
    "payload",
    [
        _job(),
        _job(None, k=None),
        _job("Zoë", emoji="🎉 done ✓", cjk="日本語"),
        _job([1, [2, [3, {"deep": [None, True, False]}]]], nested={"a": {"b": {"c": [1.5, -2]}}}),
        _job(2**63 - 1, -(2**63), 10**40),
        _job(user_id=42, active=True, limit=100, after_id=0, ratio=0.25),
        {"t": 3, "f": "list_users", "a": [], "k": {}, "et": 0, "r": None},
    ],
    ids=["empty", "none", "unicode", "nested", "big-ints", "scalars", "result-shape"],
)
def test_round_trip(payload: dict[str, Any]) -> None:
    data = serialize(payload)
    assert isinstance(data, bytes)
    assert deserialize(data) == payload


def test_unicode_is_written_as_utf8_not_escaped() -> None:
    data = serialize(_job("Zoë 🎉"))
    assert "Zoë 🎉".encode() in data
    assert b"\\u" not in data


def test_output_is_compact_json() -> None:
    assert serialize({"a": [1, 2], "b": None}) == b'{"a":[1,2],"b":null}'


def test_aware_datetime_becomes_iso_8601_with_utc_offset() -> None:
    moment = datetime(2024, 5, 17, 3, 15, 30, 123456, tzinfo=UTC)
    decoded = deserialize(serialize({"when": moment}))
    assert decoded == {"when": "2024-05-17T03:15:30.123456+00:00"}
    assert datetime.fromisoformat(decoded["when"]) == moment


def test_datetime_with_other_offset_keeps_it() -> None:
    moment = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    assert deserialize(serialize({"when": moment})) == {"when": "2024-01-02T03:04:05+02:00"}


def test_naive_datetime_date_and_time_become_iso_strings() -> None:
    value = {"dt": datetime(2024, 2, 29, 12, 0), "d": date(2024, 2, 29), "t": time(23, 59, 1)}
    assert deserialize(serialize(value)) == {
        "dt": "2024-02-29T12:00:00",
        "d": "2024-02-29",
        "t": "23:59:01",
    }


def test_decimal_and_uuid_become_strings() -> None:
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    value = {"amount": Decimal("12345678901234567890.000000001"), "id": ident}
    assert deserialize(serialize(value)) == {
        "amount": "12345678901234567890.000000001",
        "id": "12345678-1234-5678-1234-567812345678",
    }


def test_sets_and_tuples_become_lists() -> None:
    decoded = deserialize(serialize({"s": {3}, "f": frozenset({4}), "t": (1, "x")}))
    assert decoded == {"s": [3], "f": [4], "t": [1, "x"]}


def test_exception_encodes_as_error_and_message() -> None:
    result = {"t": 1, "s": False, "r": LookupError("user 7 missing")}
    assert deserialize(serialize(result))["r"] == {
        "error": "LookupError",
        "message": "user 7 missing",
    }


def test_exception_subclass_uses_its_own_type_name() -> None:
    class QuotaExceeded(RuntimeError):
        pass

    assert json.loads(serialize(QuotaExceeded("slow down"))) == {
        "error": "QuotaExceeded",
        "message": "slow down",
    }


class _Sample(BaseModel):
    id: int
    name: str
    seen: datetime | None
    tags: list[str]


def test_pydantic_model_encodes_via_model_dump_json_mode() -> None:
    model = _Sample(id=1, name="Zoë", seen=datetime(2024, 1, 1, tzinfo=UTC), tags=["a"])
    decoded = deserialize(serialize({"r": model}))
    assert decoded == {"r": model.model_dump(mode="json")}
    assert decoded["r"]["seen"] == "2024-01-01T00:00:00Z"
    assert _Sample.model_validate(decoded["r"]) == model


def test_unserializable_object_raises_type_error_naming_its_type() -> None:
    class Opaque:
        pass

    with pytest.raises(TypeError, match="Opaque is not JSON serializable"):
        serialize({"x": Opaque()})


def test_bytes_are_not_serializable() -> None:
    with pytest.raises(TypeError, match="bytes"):
        serialize({"x": b"raw"})


def test_deserialize_refuses_a_pickle_payload() -> None:
    data = pickle.dumps(_job(1, k=2))
    with pytest.raises(PayloadError, match="not UTF-8 JSON"):
        deserialize(data)


class _Exploit:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_deserialize_never_unpickles(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    data = pickle.dumps(_Exploit(marker), protocol=protocol)
    # The payload is a real exploit: it must not be executed, but it is what pickle would run.
    assert b"system" in data
    with pytest.raises(PayloadError):
        deserialize(data)
    assert not marker.exists()


def test_deserialize_refuses_invalid_utf8() -> None:
    with pytest.raises(PayloadError, match=r"payload is not UTF-8 JSON \(UnicodeDecodeError\)"):
        deserialize(b'{"a": "\xff\xfe\xfa"}')


def test_deserialize_refuses_text_that_is_not_json() -> None:
    with pytest.raises(PayloadError, match=r"payload is not UTF-8 JSON \(JSONDecodeError\)"):
        deserialize(b"{not json")


def test_deserialize_refuses_empty_bytes() -> None:
    with pytest.raises(PayloadError, match="not UTF-8 JSON"):
        deserialize(b"")


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"[1, 2]", "list"),
        (b"42", "int"),
        (b"1.5", "float"),
        (b'"s"', "str"),
        (b"null", "NoneType"),
    ],
)
def test_deserialize_refuses_json_that_is_not_an_object(data: bytes, kind: str) -> None:
    with pytest.raises(PayloadError) as info:
        deserialize(data)
    assert str(info.value) == f"payload is a JSON {kind}, expected an object"


def test_deserialize_refuses_payload_over_the_limit() -> None:
    data = serialize({"blob": "x" * MAX_PAYLOAD_BYTES})
    assert len(data) > MAX_PAYLOAD_BYTES
    with pytest.raises(PayloadError) as info:
        deserialize(data)
    assert str(info.value) == (
        f"payload of {len(data)} bytes is over the {MAX_PAYLOAD_BYTES} byte limit"
    )


def test_deserialize_accepts_payload_exactly_at_the_limit() -> None:
    overhead = len(serialize({"blob": ""}))
    data = serialize({"blob": "x" * (MAX_PAYLOAD_BYTES - overhead)})
    assert len(data) == MAX_PAYLOAD_BYTES
    assert deserialize(data)["blob"] == "x" * (MAX_PAYLOAD_BYTES - overhead)


def test_payload_error_is_a_value_error() -> None:
    assert issubclass(PayloadError, ValueError)


# Payloads that once escaped the decoder as RecursionError, ValueError or a silent UTF-16 read.


def test_deserialize_refuses_deep_nesting_with_a_payload_error() -> None:
    data = b'{"k": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(PayloadError, match="nested deeper than 500 levels"):
        deserialize(data)


@pytest.mark.parametrize("depth", [500, 1000, 1023])
def test_deserialize_refuses_nesting_it_could_not_encode_again(depth: int) -> None:
    # orjson decodes up to 1024 levels; json.dumps (the fallback past orjson's 255) stops at ~990.
    data = b'{"k": ' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(PayloadError, match="nested deeper than 500 levels"):
        deserialize(data)


def test_deserialize_takes_nesting_up_to_the_limit_and_encodes_it_again() -> None:
    value = {"k": json.loads("[" * 499 + "]" * 499)}  # 500 levels with the object
    assert deserialize(serialize(value)) == value


def test_deserialize_refuses_an_integer_over_pythons_digit_limit() -> None:
    data = b'{"k": ' + b"7" * 5000 + b"}"
    with pytest.raises(PayloadError, match=r"integer of more than 4300 digits"):
        deserialize(data)


def test_deserialize_reads_long_integers_under_the_limit_exactly() -> None:
    assert deserialize(b'{"k": ' + b"7" * 4300 + b"}") == {"k": int("7" * 4300)}


def test_deserialize_reads_utf8_only() -> None:
    with pytest.raises(PayloadError, match="not UTF-8 JSON"):
        deserialize('{"f": "get_user"}'.encode("utf-16"))


@pytest.mark.parametrize("protocol", [2, 4, pickle.HIGHEST_PROTOCOL])
def test_a_pickle_gets_a_hint_at_arqs_json_settings(protocol: int) -> None:
    with pytest.raises(PayloadError) as info:
        deserialize(pickle.dumps(_job(1), protocol=protocol))
    message = str(info.value)
    assert message.startswith(
        "payload is not UTF-8 JSON (UnicodeDecodeError); it looks like a pickle"
    )
    for words in ("job_serializer=json.dumps", "job_deserializer=json.loads", "ISO-8601"):
        assert words in message
    assert "docs/wire-format.md" in message


def test_bytes_that_are_not_a_pickle_get_no_hint() -> None:
    with pytest.raises(PayloadError) as info:
        deserialize(b"\xff\xfe not json")
    assert "pickle" not in str(info.value)
