"""The retry policy's classification and backoff, and the worker's tolerant decoder and redacting
encoder."""

from __future__ import annotations

import base64
import dataclasses
import inspect
import json
import pickle
import random
from typing import Any

import asyncpg
import pytest
from arq.worker import JobExecutionFailed

from jobs.errors import InvalidJobArguments, JobTimeout, PoolAcquireTimeout, StaleLease
from jobs.registry import JOBS_BY_NAME
from worker.core.masking import REDACTED
from worker.queue import codec
from worker.runtime.functions import arq_function
from worker.runtime.retry_policy import RetryPolicy, is_transient

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(),
        ConnectionResetError(),
        TimeoutError(),
        asyncpg.ConnectionDoesNotExistError("closed"),
        asyncpg.AdminShutdownError("terminating"),
        asyncpg.CannotConnectNowError("starting up"),
        asyncpg.TooManyConnectionsError("too many"),
        asyncpg.SerializationError("could not serialize"),
        asyncpg.DeadlockDetectedError("deadlock"),
        asyncpg.QueryCanceledError("statement timeout"),
        PoolAcquireTimeout(timeout=1, max_size=2),
        JobTimeout(job_id="j", function="f", timeout=1),
        # asyncpg's Transaction.__aexit__ replaces a lost connection's error with this one
        asyncpg.InterfaceError(
            "cannot call Transaction.__aexit__(): the underlying connection is closed"
        ),
    ],
)
def test_transient_errors(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bug"),
        KeyError("x"),
        asyncpg.UndefinedTableError("no table"),
        asyncpg.UniqueViolationError("dup"),
        asyncpg.InterfaceError("another operation is in progress"),
        InvalidJobArguments(job="j", details="x"),
        StaleLease(job_id="j", job_try=1, owner=2),
    ],
)
def test_permanent_errors(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_backoff_doubles_with_jitter_and_a_cap() -> None:
    policy = RetryPolicy(max_tries=10, backoff_base=1.0, backoff_max=20.0)
    rng = random.Random(7)
    for job_try, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (6, 20.0), (9, 20.0)]:
        delays = [policy.delay(job_try, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 4  # really jittered


DECODE = codec.job_decoder(["get_user"])


def test_decoder_passes_known_jobs_through() -> None:
    job: dict[str, object] = {"t": None, "f": "get_user", "a": [], "k": {"user_id": 1}, "et": 5}
    assert DECODE(json.dumps(job).encode()) == job


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (pickle.dumps({"f": "get_user"}), "not UTF-8 JSON"),
        (b"[1]", "expected an object"),
        (b'{"f": "get_user", "a": [], "k": {}}', "'et'"),
        (b'{"f": 1, "a": [], "k": {}, "et": 1}', "'f'"),
        (b'{"f": "get_user", "a": {}, "k": {}, "et": 1}', "'a'"),
        (b'{"f": "get_user", "a": [], "k": [], "et": 1}', "'k'"),
        (b'{"f": "get_user", "a": [], "k": {}, "et": true}', "'et'"),
        (b'{"f": "get_user", "a": [], "k": {}, "et": 1, "t": "x"}', "'t'"),
    ],
)
def test_decoder_turns_bad_payloads_into_poison_jobs(data: bytes, problem: str) -> None:
    job = DECODE(data)
    assert job["f"] == codec.POISON_JOB
    assert base64.b64decode(job["k"]["payload"]) == data
    assert problem in job["k"]["problem"]
    assert isinstance(job["et"], int) and job["et"] > 0


def test_decoder_turns_unknown_names_into_unknown_jobs() -> None:
    job = DECODE(b'{"t": null, "f": "later", "a": [1], "k": {"x": 2}, "et": 9}')
    assert job["f"] == codec.UNKNOWN_JOB and job["et"] == 9
    assert job["k"] == {"function": "later", "args": [1], "kwargs": {"x": 2}}


def test_encoder_redacts_secret_arguments_in_results_only() -> None:
    encode = codec.job_encoder({"login": ("token",)})
    result = {
        "f": "login",
        "a": ["s3cret"],
        "k": {"token": "s3cret", "user": 1},
        "s": True,
        "r": {"ok": True},
        "id": "j",
    }
    stored = encode(result)
    assert b"s3cret" not in stored
    assert json.loads(stored)["k"] == {"token": REDACTED, "user": 1}
    payload = {"f": "login", "a": [], "k": {"token": "s3cret"}, "et": 1, "t": None}
    assert b"s3cret" in encode(payload)  # the job itself needs its argument
    other = {**result, "f": "other"}
    assert b"s3cret" in encode(other)


def test_encoder_refuses_to_store_job_expired_over_a_result() -> None:
    encode = codec.job_encoder({})
    expired = {
        "f": "x",
        "a": [],
        "k": {},
        "s": False,
        "r": JobExecutionFailed("job expired"),
        "id": "j9",
    }
    with pytest.raises(codec.ExpiredNotRecorded):
        encode(expired)
    with pytest.raises(codec.ExpiredNotRecorded):  # arq's retry with a placeholder result
        encode({**expired, "r": "unable to serialize result"})
    # Other jobs' placeholders, and failures other than expiry, are stored as usual.
    assert encode({**expired, "id": "other", "r": "unable to serialize result"})
    assert b"boom" in encode({**expired, "r": JobExecutionFailed("boom")})


# A backend terminated while its connection sat idle in the pool (asyncpg's words for it).


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.InternalClientError(
            "cannot switch to state 12; another operation (2) is in progress"
        ),
        asyncpg.InternalClientError(
            "cannot switch to state 11; another operation (2) is in progress"
        ),
        asyncpg.InternalClientError('cannot switch to state 15; protocol is in the "failed" state'),
        asyncpg.InterfaceError("connection was closed in the middle of operation"),
        asyncpg.InterfaceError("cannot perform operation: connection is closed"),
    ],
)
def test_a_connection_broken_under_an_operation_is_transient(exc: BaseException) -> None:
    assert is_transient(exc)


def test_other_internal_client_errors_are_permanent() -> None:
    assert not is_transient(asyncpg.InternalClientError("unknown error in protocol implementation"))


# Payloads a producer must not send: reserved names, times and tries out of range, deep nesting.


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (
            b'{"f": "__poison__", "a": [], "k": {"payload": "", "problem": "x"}, "et": 1}',
            "reserved",
        ),
        (b'{"f": "__unknown__", "a": [], "k": {"function": "get_user"}, "et": 1}', "reserved"),
        (b'{"f": "__anything", "a": [], "k": {}, "et": 1}', "reserved"),
        (b'{"f": "get_user", "a": [], "k": {}, "et": 1' + b"0" * 25 + b"}", "'et'"),
        (b'{"f": "get_user", "a": [], "k": {}, "et": 253402300800000}', "'et'"),
        (b'{"f": "get_user", "a": [], "k": {}, "et": -1}', "'et'"),
        (b'{"f": "get_user", "a": [], "k": {}, "et": 1.5}', "'et'"),
        (b'{"f": "get_user", "a": [], "k": {}, "et": "1"}', "'et'"),
        (b'{"f": "get_user", "a": [], "k": {}, "et": 1, "t": -1}', "'t'"),
        (b'{"f": "get_user", "a": [], "k": {}, "et": 1, "t": 2147483648}', "'t'"),
        (
            b'{"f": "get_user", "a": [], "k": {"x": '
            + b"[" * 100_000
            + b"]" * 100_000
            + b'}, "et": 1}',
            "nested deeper than 500 levels",
        ),
        (
            b'{"f": "get_user", "a": [], "k": {"user_id": ' + b"1" * 5000 + b'}, "et": 1}',
            "4300 digits",
        ),
    ],
    ids=[
        "poison-name",
        "unknown-name",
        "reserved-prefix",
        "et-beyond-64-bits",
        "et-past-year-9999",
        "et-negative",
        "et-float",
        "et-string",
        "t-negative",
        "t-beyond-32-bits",
        "deep-nesting",
        "long-integer",
    ],
)
def test_decoder_makes_poison_of_what_the_consumer_cannot_run(data: bytes, problem: str) -> None:
    job = DECODE(data)
    assert job["f"] == codec.POISON_JOB, job
    assert problem in job["k"]["problem"]
    assert base64.b64decode(job["k"]["payload"]) == data


def test_decoder_keeps_the_edges_of_the_ranges() -> None:
    for et in (0, codec.MAX_ENQUEUE_MS):
        for t in (None, 0, codec.MAX_TRY):
            job: dict[str, Any] = {"t": t, "f": "get_user", "a": [], "k": {}, "et": et}
            assert DECODE(json.dumps(job).encode()) == job


def test_claimed_job_turns_any_decoding_failure_into_a_poison_job() -> None:
    def broken(data: bytes) -> dict[str, object]:
        raise RecursionError("deep")

    def lax(data: bytes) -> object:
        return json.loads(data)

    job: dict[str, Any] = {
        "t": 3,
        "f": "get_user",
        "a": [],
        "k": {"user_id": 1},
        "et": 1_700_000_000_000,
    }
    found, job_try, enqueue_ms, enqueued = codec.claimed_job(DECODE, json.dumps(job).encode())
    assert (found, job_try, enqueue_ms) == (job, 3, job["et"])
    assert enqueued.timestamp() * 1000 == job["et"]
    for deserialize, data, error in [
        (broken, b"{}", "RecursionError"),
        (lax, b"[1]", "PayloadError"),  # not a job
        (lax, json.dumps({**job, "et": 10**20}).encode(), "PayloadError"),  # out of datetime range
        (lax, json.dumps({**job, "t": "2"}).encode(), "PayloadError"),
    ]:
        found, job_try, enqueue_ms, _ = codec.claimed_job(deserialize, data)
        assert found["f"] == codec.POISON_JOB and job_try == 0
        assert found["k"]["problem"] == f"payload cannot be run as a job ({error})"
        assert base64.b64decode(found["k"]["payload"]) == data


def test_encoder_stores_handler_results_without_the_producers_values() -> None:
    encode = codec.job_encoder({})
    unknown = DECODE(
        b'{"t": null, "f": "later", "a": ["s3cret"], "k": {"token": "s3cret"}, "et": 9}'
    )
    stored = json.loads(encode({**unknown, "s": False, "r": ValueError("no"), "id": "j"}))
    assert (stored["f"], stored["a"], stored["k"]) == (
        "later",
        [REDACTED],
        {"token": REDACTED},
    )
    poison = DECODE(b'{"secret": "s3cret"}')
    stored = json.loads(encode({**poison, "s": False, "r": ValueError("no"), "id": "p"}))
    assert (stored["f"], stored["a"], stored["k"]) == (codec.POISON_FUNCTION, [], {})
    assert b"s3cret" not in encode({**poison, "s": False, "r": None, "id": "p"})


def test_the_arq_wrapper_takes_ctx_by_position_only_and_refuses_reserved_names() -> None:
    spec = JOBS_BY_NAME["get_user"]
    run = arq_function(spec).coroutine
    # A job argument named "ctx" lands in **kwargs (and the argument model refuses it).
    assert inspect.signature(run).parameters["ctx"].kind is inspect.Parameter.POSITIONAL_ONLY
    with pytest.raises(ValueError, match="reserved"):
        arq_function(dataclasses.replace(spec, name="__mine__"))
