"""The retry policy's classification and backoff, and the worker's tolerant decoder and redacting
encoder."""

from __future__ import annotations

import base64
import json
import pickle
import random

import asyncpg
import pytest
from arq.worker import JobExecutionFailed

from jobs.errors import InvalidJobArguments, JobTimeout, PoolAcquireTimeout, StaleLease
from worker import codec
from worker.retry_policy import RetryPolicy, is_transient

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
    assert json.loads(stored)["k"] == {"token": codec.REDACTED, "user": 1}
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
