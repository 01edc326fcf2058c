"""The parts of the fast bulk enqueue (pgpool_client: Client.enqueue_many, enqueue.send_chunks),
each against what it replaces: job ids in uuid4().hex's format, the NUL check's answers, a chunk's
packed command byte for byte redis-py's, and the bulk validation and dump the same models and
dictionaries as parse_arguments and wire_arguments."""

from __future__ import annotations

import os
import re
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import IntEnum, StrEnum
from typing import Any

import pytest
from pydantic import BaseModel, SecretBytes, SecretStr
from redis.asyncio.connection import Connection

from pgpool_client.client import new_job_ids
from pgpool_client.contracts import parse_arguments, parse_many, wire_arguments, wire_dump
from pgpool_client.enqueue import EXPIRES, chunk_command
from pgpool_client.errors import InvalidJobArguments
from pgpool_client.jobs import CONTRACTS
from pgpool_client.models import GetUserArgs, JobArgs, _holds_nul

pytestmark = pytest.mark.unit

HEX32 = re.compile(r"[0-9a-f]{32}")


def test_job_ids_are_uuid4_hex() -> None:
    ids = new_job_ids(2000)
    assert len(set(ids)) == 2000
    for job_id in ids:
        assert HEX32.fullmatch(job_id)
        parsed = uuid.UUID(hex=job_id)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert parsed.hex == job_id


def test_job_ids_are_uuid4_of_the_same_random_bytes() -> None:
    raw = os.urandom(16 * 300) + bytes(16) + b"\xff" * 16  # also all bits clear, all bits set
    ids = new_job_ids(302, lambda size: raw[:size])
    expected = [uuid.UUID(bytes=raw[at : at + 16], version=4).hex for at in range(0, 16 * 302, 16)]
    assert ids == expected
    assert new_job_ids(0) == []


class Colour(StrEnum):
    NUL = "re\x00d"
    PLAIN = "red"


class Level(IntEnum):
    ONE = 1


class Text(str):
    pass


VALUES: list[Any] = [
    "",
    "plain",
    "a\x00b",
    "\x00",
    Text("sub"),
    Text("s\x00ub"),
    Colour.NUL,
    Colour.PLAIN,
    b"raw",
    b"r\x00aw",
    SecretStr("s3cret"),
    SecretStr("s\x00"),
    SecretBytes(b"\x00"),
    {"k": "v"},
    {"k\x00": "v"},
    {"k": ["a", ("b", "c\x00")]},
    ["a", "b"],
    ("x\x00",),
    {"a", "b\x00"},
    frozenset({"a"}),
    0,
    7,
    True,
    Level.ONE,
    1.5,
    None,
    datetime(2025, 1, 31, tzinfo=UTC),
    date(2025, 1, 31),
    Decimal("1.5"),
    uuid.UUID(int=0),
]


class Anything(JobArgs):
    value: Any = None


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_the_nul_check_refuses_what_holds_nul_says(value: Any) -> None:
    if _holds_nul(value):
        with pytest.raises(
            ValueError, match=r"text must not contain the NUL character \(\\u0000\)"
        ):
            Anything(value=value)
    else:
        assert Anything(value=value).value is value


def test_a_nul_is_refused_with_its_field_named() -> None:
    contract = CONTRACTS["search_users"]
    with pytest.raises(InvalidJobArguments) as caught:
        contract.parse((), {"prefix": "ad\x00a"})
    assert "prefix: Value error, text must not contain the NUL character" in str(caught.value)
    with pytest.raises(InvalidJobArguments) as bulk:
        list(parse_many(contract.name, contract.args_model, [{"prefix": "ok"}, {"prefix": "\x00"}]))
    assert str(bulk.value) == str(caught.value)  # neither echoes the value


ARGUMENTS: list[tuple[str, dict[str, Any]]] = [
    ("get_user", {"user_id": 7}),
    ("get_user", {"user_id": "7"}),
    ("list_users", {}),
    ("list_users", {"active": True, "created_from": "2024-01-01T00:00:00Z", "limit": 5}),
    ("search_users", {"prefix": "zé", "field": "name"}),
    ("count_users", {"active": "true"}),
    ("deactivate_inactive_users", {"seen_before": datetime(2024, 1, 1, tzinfo=UTC)}),
]


@pytest.mark.parametrize(("job", "kwargs"), ARGUMENTS)
def test_bulk_validation_and_dump_are_parse_and_wire_arguments(
    job: str, kwargs: dict[str, Any]
) -> None:
    model = CONTRACTS[job].args_model
    (bulk,) = parse_many(job, model, [kwargs])
    one = parse_arguments(job, model, (), kwargs)
    assert bulk == one and type(bulk) is type(one)
    assert wire_dump(model)(bulk) == wire_arguments(one)


@pytest.mark.parametrize("bad", [{"user_id": 0}, {"user_id": "x"}, {"nope": 1}, {}])
def test_bulk_validation_raises_what_parse_arguments_raises(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidJobArguments) as one:
        parse_arguments("get_user", GetUserArgs, (), bad)
    with pytest.raises(InvalidJobArguments) as bulk:
        list(parse_many("get_user", GetUserArgs, [{"user_id": 1}, bad]))
    assert str(bulk.value) == str(one.value)


class Token(JobArgs):
    token: SecretStr
    note: str = ""


class Sub(GetUserArgs):
    extra_note: str = "x"


def test_the_bulk_dump_writes_secrets_in_clear_and_a_subclass_its_own_way() -> None:
    token = Token(token=SecretStr("s3cret"), note="n")
    assert wire_dump(Token)(token) == {"token": "s3cret", "note": "n"} == wire_arguments(token)
    sub = Sub(user_id=3, extra_note="y")
    assert wire_dump(GetUserArgs)(sub) == wire_arguments(sub) == {"user_id": 3, "extra_note": "y"}
    assert isinstance(sub, BaseModel)


def redis_py(*commands: tuple[Any, ...]) -> bytes:
    return b"".join(Connection().pack_commands(commands))


def test_a_plain_chunk_is_packed_as_redis_py_packs_it() -> None:
    head = redis_py(("EVALSHA", "ab" * 20, 1, "q:é"))[len(b"*4\r\n") :]
    ids = ["a" * 32, "id-é", ""]
    payloads = [b'{"f":"x"}', "é".encode() * 4000, b""]  # also one redis-py sends apart
    argv: list[str | bytes] = [EXPIRES, "1700000000000", "2"]
    for job_id, payload in zip(ids, payloads, strict=True):
        argv += (job_id, payload)
    expected = redis_py(("EVALSHA", "ab" * 20, 1, "q:é", *argv))
    assert chunk_command(head, 1700000000000, ids, payloads) == expected
    assert chunk_command(head, 1700000000000, ids, payloads, [(0, "")] * 3) == expected


def test_a_chunk_with_priorities_or_fairness_keys_has_stride_four() -> None:
    head = redis_py(("EVALSHA", "cd" * 20, 1, "q"))[len(b"*4\r\n") :]
    ids, payloads = ["j1", "j2"], [b"{}", b'{"k":1}']
    placed = [(0, ""), (9, "tenant-ü")]
    argv = [EXPIRES, "5", "4", "j1", b"{}", "0", "", "j2", b'{"k":1}', "9", "tenant-ü"]
    expected = redis_py(("EVALSHA", "cd" * 20, 1, "q", *argv))
    assert chunk_command(head, 5, ids, payloads, placed) == expected
