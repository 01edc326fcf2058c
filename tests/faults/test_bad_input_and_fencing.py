"""F10 to F16: fencing of a stale owner; poison payloads, pickle and unknown job names; one effect per
business key; hostile strings as data; secrets kept out of logs, results and error messages."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import shlex
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis.asyncio as redis_py
from arq.connections import ArqRedis
from arq.jobs import Job, JobResult

from tests.conftest import REDIS_URL
from tests.faults.conftest import Counters, Spawn, wait_until
from worker.config import Config
from worker.core.masking import REDACTED
from worker.queue.codec import MAX_PAYLOAD_BYTES

pytestmark = pytest.mark.faults

LEASE = 2.0  # JOB_LEASE of FAULT_ENV


@pytest.fixture
async def raw() -> AsyncIterator[redis_py.Redis]:
    """A plain Redis client (no arq codec): what another service, or an attacker, would write."""
    client = redis_py.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


async def put_raw(raw: redis_py.Redis, queue: str, job_id: str, payload: bytes) -> int:
    """Write a payload and its queue entry as docs/wire-format.md does; returns the score (ms)."""
    now = int(time.time() * 1000)
    await raw.psetex(f"arq:job:{job_id}", 60_000, payload)
    await raw.zadd(queue, {job_id: now})
    return now


async def stored_result(raw: redis_py.Redis, job_id: str, timeout: float = 20.0) -> bytes:
    """The raw bytes of a job's stored result, once there is one."""

    async def probe() -> bytes | None:
        data: bytes | None = await raw.get(f"arq:result:{job_id}")
        return data

    data = await wait_until(probe, timeout, f"the result of job {job_id}")
    assert data is not None
    return data


async def outcome(job: Job, timeout: float = 20.0) -> JobResult:
    found = await wait_until(job.result_info, timeout, f"the result of job {job.job_id}")
    assert found is not None
    return found


async def letters_of(counters: Counters, job_id: str) -> list[dict[str, Any]]:
    return [d for d in await counters.dead_letters() if d["job_id"] == job_id]


async def still_runs_jobs(arq_redis: ArqRedis, counters: Counters) -> None:
    """The worker takes and completes an ordinary job (it survived what came before)."""
    key = f"alive-{uuid.uuid4().hex[:8]}"
    job = await arq_redis.enqueue_job("fault_write", key=key)
    assert job is not None
    result = await job.result(timeout=20)
    assert result["key"] == key and result["job_try"] == 1
    assert await counters.effects(key) == 1


# F10: a blocked event loop outlives the lease ------------------------------------------------------


async def test_f10_stale_owner_cannot_commit_after_a_takeover(
    spawn: Spawn,
    arq_redis: ArqRedis,
    raw: redis_py.Redis,
    counters: Counters,
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    """Try 1 blocks its loop for 3 s (lease 2 s): the other worker takes over as try 2; try 1 wakes
    first (while try 2 still holds the job), is fenced out, and try 2 commits the only effect."""
    key = f"f10-{uuid.uuid4().hex[:8]}"
    await spawn()
    await spawn()
    job = await arq_redis.enqueue_job("fault_write", key=key, block=3.0)
    assert job is not None

    async def committed() -> bool:
        return await counters.effects(key) >= 1

    # Both tries block for the same 3 s, so try 1 wakes (and tries to write) before try 2 commits.
    await wait_until(committed, timeout=20, what="the new owner's commit")

    async def final() -> dict[str, Any] | None:
        # Both tries record the same answer (the fenced-out one returns the new owner's result),
        # whichever of them is stored last.
        data = await raw.get(f"arq:result:{job.job_id}")
        result: dict[str, Any] | None = json.loads(data) if data else None
        return result if result and result["r"].get("job_try") == 2 else None

    result = await wait_until(final, timeout=10, what="try 2's result")
    assert result is not None
    runs = await counters.runs(key)
    assert [(r["job_id"], r["try"]) for r in runs] == [(job.job_id, 1), (job.job_id, 2)]
    takeover = (runs[1]["at"] - runs[0]["at"]).total_seconds()
    # The run rows are written after each claim, each with its own delay (a busy machine delays the
    # first): the takeover is the lease, give or take those delays.
    assert LEASE - 0.25 <= takeover < LEASE + 1.5, f"takeover after {takeover:.2f}s"
    effects = await pool.fetch("SELECT job_id, try FROM fault_effects WHERE key = $1", key)
    assert [(e["job_id"], e["try"]) for e in effects] == [(job.job_id, 2)]
    assert await pool.fetchval("SELECT try FROM job_claims WHERE job_id = $1", job.job_id) == 2
    ledger = await pool.fetch("SELECT job_id FROM job_effects WHERE idempotency_key = $1", key)
    assert [r["job_id"] for r in ledger] == [job.job_id]
    assert result["s"] is True and result["r"] == {"key": key, "job_try": 2, "token_seen": False}


async def test_f10_repeated_takeovers_leave_one_effect_from_the_newest_try(
    spawn: Spawn,
    arq_redis: ArqRedis,
    raw: redis_py.Redis,
    counters: Counters,
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    """block=5 s is more than two leases: the new owner's lease lapses too, so the job may change
    hands again. Whatever the number of tries, only the newest claim commits, once."""
    key = f"f10b-{uuid.uuid4().hex[:8]}"
    await spawn()
    await spawn()
    job = await arq_redis.enqueue_job("fault_write", key=key, block=5.0)
    assert job is not None

    async def settled() -> bool:
        running = await raw.exists(f"arq:job:{job.job_id}", f"arq:in-progress:{job.job_id}")
        return running == 0 and await counters.effects(key) >= 1

    # Every try blocks for the same 5 s, so the newest (the committing) one is the last to wake.
    await wait_until(settled, timeout=40, what="the job to settle")
    tries = [r["try"] for r in await counters.runs(key)]
    assert tries[:2] == [1, 2] and tries == sorted(set(tries)), tries
    effects = await pool.fetch("SELECT try FROM fault_effects WHERE key = $1", key)
    assert [e["try"] for e in effects] == [tries[-1]]
    assert (
        await pool.fetchval("SELECT try FROM job_claims WHERE job_id = $1", job.job_id)
        == (tries[-1])
    )


async def test_f10_stale_owner_leaves_no_failure_behind(
    spawn: Spawn, arq_redis: ArqRedis, raw: redis_py.Redis, counters: Counters
) -> None:
    key = f"f10c-{uuid.uuid4().hex[:8]}"
    await spawn()
    await spawn()
    job = await arq_redis.enqueue_job("fault_write", key=key, block=3.0)
    assert job is not None
    first = json.loads(await stored_result(raw, job.job_id))  # the first result a client can read

    async def committed() -> bool:
        return await counters.effects(key) >= 1

    await wait_until(committed, timeout=20, what="the new owner's commit")
    assert await letters_of(counters, job.job_id) == []
    assert first["s"] is True, first["r"]


# F11, F12: payloads that are not jobs --------------------------------------------------------------


async def test_f11_garbage_and_oversized_payloads_are_dead_lettered_byte_for_byte(
    spawn: Spawn, arq_redis: ArqRedis, raw: redis_py.Redis, counters: Counters, config: Config
) -> None:
    worker = await spawn()
    tag = uuid.uuid4().hex[:8]
    garbage_id, oversized_id, oversized_key = f"f11-garbage-{tag}", f"f11-big-{tag}", f"f11-{tag}"
    # A well-formed fault_write job but for its size (1.2 MB in UTF-8).
    kwargs = {"key": oversized_key, "pad": "\u00e9" * 600_000}
    job: dict[str, Any] = {
        "t": None,
        "f": "fault_write",
        "a": [],
        "k": kwargs,
        "et": int(time.time() * 1000),
    }
    payloads = {
        garbage_id: b"\xff\xfe\x00garbage\x80{not: json}\r\n" + bytes(range(256)),
        oversized_id: json.dumps(job, ensure_ascii=False).encode(),
    }
    assert len(payloads[oversized_id]) > MAX_PAYLOAD_BYTES
    for job_id, payload in payloads.items():
        await put_raw(raw, config.queue_name, job_id, payload)

    async def both() -> bool:
        return len(await counters.dead_letters()) >= 2

    await wait_until(both, timeout=20, what="two dead letters")
    letters = {d["job_id"]: d for d in await counters.dead_letters()}
    assert set(letters) == set(payloads)
    for job_id, payload in payloads.items():
        letter = letters[job_id]
        assert (letter["reason"], letter["error_type"]) == ("poison", "PoisonPayload")
        assert letter["function"] == "<poison>" and letter["attempts"] == 1
        assert bytes(letter["payload"]) == payload
    assert len(letters[oversized_id]["payload"]) == len(payloads[oversized_id])
    assert "byte limit" in letters[oversized_id]["error_message"]
    assert await counters.runs(oversized_key) == []  # refused, never executed
    for job_id in payloads:
        result = json.loads(await stored_result(raw, job_id))
        assert result["s"] is False and result["r"]["error"] == "PoisonPayload"
    assert worker.alive()
    await still_runs_jobs(arq_redis, counters)


class _Touch:
    """Unpickling this runs ``touch <marker>`` (what a pickle-decoding worker would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def _pickled_job(marker: Path, key: str) -> bytes:
    job: dict[str, Any] = {
        "t": None,
        "f": "fault_write",
        "a": [],
        "k": {"key": key},
        "et": 1,
        "x": _Touch(marker),
    }
    return pickle.dumps(job)


async def test_f12_pickle_payload_runs_no_code_and_is_dead_lettered(
    spawn: Spawn,
    arq_redis: ArqRedis,
    raw: redis_py.Redis,
    counters: Counters,
    config: Config,
    tmp_path: Path,
) -> None:
    control = tmp_path / "control"
    pickle.loads(_pickled_job(control, "control"))  # proves the payload is live
    assert control.exists()
    worker = await spawn()
    marker, key, job_id = tmp_path / "pwned", f"f12-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    payload = _pickled_job(marker, key)
    await put_raw(raw, config.queue_name, job_id, payload)

    async def dead() -> list[dict[str, Any]]:
        assert not marker.exists(), "the pickle payload ran code in the worker"
        return await letters_of(counters, job_id)

    [letter] = await wait_until(dead, timeout=20, what="the dead letter")
    assert not marker.exists(), "the pickle payload ran code in the worker"
    assert (letter["reason"], letter["error_type"]) == ("poison", "PoisonPayload")
    assert bytes(letter["payload"]) == payload
    assert await counters.runs(key) == []
    assert worker.alive()
    await still_runs_jobs(arq_redis, counters)
    assert not marker.exists()


# F13: jobs no running worker knows ---------------------------------------------------------------


async def test_f13_unknown_job_waits_the_grace_window_uncharged_then_dead_letters(
    spawn: Spawn, raw: redis_py.Redis, counters: Counters, config: Config
) -> None:
    await spawn()  # UNKNOWN_JOB_GRACE=2
    job_id = uuid.uuid4().hex
    kwargs = {"what": "new feature", "n": 3}
    job: dict[str, Any] = {
        "t": None,
        "f": "not_deployed_yet",
        "a": [],
        "k": kwargs,
        "et": int(time.time() * 1000),
    }
    enqueued = time.monotonic()
    score = await put_raw(raw, config.queue_name, job_id, json.dumps(job).encode())

    async def looked_twice() -> bool:  # each look defers the job by about 0.2 s
        now_score = await raw.zscore(config.queue_name, job_id)
        running = await raw.exists(f"arq:in-progress:{job_id}")  # its score is the lease's end
        return not running and now_score is not None and now_score > score + 400

    await wait_until(looked_twice, timeout=10, what="the worker to defer the job")
    assert time.monotonic() - enqueued < 2.0, "the check came too late for the grace window"
    assert await letters_of(counters, job_id) == []
    assert await raw.exists(f"arq:result:{job_id}") == 0
    # The try counter is given back after each look: 0 (1 only in the midst of a look).
    assert int(await raw.get(f"arq:retry:{job_id}") or 0) <= 1

    async def dead() -> list[dict[str, Any]]:
        return await letters_of(counters, job_id)

    [letter] = await wait_until(dead, timeout=15, what="the dead letter")
    waited = (letter["failed_at"] - letter["enqueued_at"]).total_seconds()
    assert 2.0 <= waited < 2.0 + 3, f"dead-lettered after {waited:.2f}s"
    assert (letter["reason"], letter["error_type"]) == ("unknown-job", "UnknownJobName")
    assert letter["function"] == "not_deployed_yet"
    assert letter["attempts"] == 1  # the looks in the grace window were not charged
    replayable = json.loads(letter["payload"])
    assert (replayable["f"], replayable["k"]) == ("not_deployed_yet", kwargs)
    result = json.loads(await stored_result(raw, job_id))
    assert result["s"] is False and result["r"]["error"] == "UnknownJobName"


async def test_f13_job_unknown_to_old_workers_runs_once_a_new_one_is_deployed(
    spawn: Spawn, arq_redis: ArqRedis, raw: redis_py.Redis, counters: Counters, config: Config
) -> None:
    # The plain worker.Settings has no fault_write; it polls slowly so the new worker wins the race
    # for the job once it is due (the old one would only defer it again).
    await spawn(settings="worker.Settings", UNKNOWN_JOB_GRACE="15", POLL_DELAY="0.5")
    key = f"f13-{uuid.uuid4().hex[:8]}"
    job = await arq_redis.enqueue_job("fault_write", key=key)
    assert job is not None
    enqueued = time.monotonic()
    score = await raw.zscore(config.queue_name, job.job_id)
    assert score is not None

    async def deferred() -> bool:
        now_score = await raw.zscore(config.queue_name, job.job_id)
        running = await raw.exists(f"arq:in-progress:{job.job_id}")  # its score is the lease's end
        return not running and now_score is not None and now_score > score

    await wait_until(deferred, timeout=10, what="the old worker to defer the job")
    await spawn(UNKNOWN_JOB_GRACE="15")  # the deploy
    result = await job.result(timeout=20)
    ran_after = time.monotonic() - enqueued
    assert ran_after < 15, f"ran {ran_after:.1f}s after enqueue, past the grace window"
    assert result == {"key": key, "job_try": 1, "token_seen": False}  # the waiting was not charged
    assert [r["try"] for r in await counters.runs(key)] == [1]
    assert await counters.effects(key) == 1
    assert await counters.dead_letters() == []


# F14: one effect per business key ----------------------------------------------------------------


async def test_f14_same_business_key_twice_and_a_rerun_apply_once(
    spawn: Spawn, arq_redis: ArqRedis, counters: Counters, pool: asyncpg.Pool[asyncpg.Record]
) -> None:
    await spawn()
    key = f"f14-{uuid.uuid4().hex[:8]}"
    # The first job holds its write transaction (key recorded, not committed) for 2 s.
    first = await arq_redis.enqueue_job("fault_write", key=key, hold=2.0, token="first-run")
    assert first is not None

    async def holding() -> bool:
        count: int = await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND state = 'active' AND query LIKE 'SELECT pg_sleep%'"
        )
        return count == 1

    await wait_until(holding, timeout=20, what="the first job's open write")
    concurrent = await arq_redis.enqueue_job("fault_write", key=key)  # another job id, same key
    assert concurrent is not None
    expected = {"key": key, "job_try": 1, "token_seen": True}  # only the first job had a token
    assert await first.result(timeout=20) == expected
    assert await concurrent.result(timeout=20) == expected
    later = await arq_redis.enqueue_job("fault_write", key=key)  # after the first one's result
    assert later is not None
    assert await later.result(timeout=20) == expected
    runs = await counters.runs(key)
    assert [r["job_id"] for r in runs] == [first.job_id, concurrent.job_id, later.job_id]
    assert await counters.effects(key) == 1
    ledger = await pool.fetch("SELECT job_id FROM job_effects WHERE idempotency_key = $1", key)
    assert [r["job_id"] for r in ledger] == [first.job_id]
    assert await counters.dead_letters() == []


# F15: hostile strings are data -------------------------------------------------------------------

HOSTILE = [
    "' OR 1=1 --",
    "Robert'); DROP TABLE users;--",
    "$1",
    "\\",
    "back\\slash\\'quote",
    "%",
    "_",
    "'; SELECT pg_sleep(10); --",
    "Zoë Ünicode ключ 🔑 \u202e",
]


async def test_f15_sql_injection_strings_are_treated_as_data(
    spawn: Spawn,
    arq_redis: ArqRedis,
    counters: Counters,
    pool: asyncpg.Pool[asyncpg.Record],
    users: list[asyncpg.Record],
) -> None:
    await spawn()
    robert = next(u for u in users if u["name"].startswith("Robert'"))
    searches: dict[tuple[str, str], list[int]] = {
        (p, f): [] for p in HOSTILE for f in ("email", "name")
    }
    zoe = sorted((u for u in users if u["name"].startswith("Zoë")), key=lambda u: u["name"].lower())
    searches |= {
        ("Robert'); DROP TABLE users;--", "name"): [robert["id"]],
        ("o'brien_100%", "email"): [robert["id"]],
        ("O'BRIEN_100%@", "email"): [robert["id"]],
        ("zoë", "name"): [u["id"] for u in zoe],
    }
    jobs: dict[tuple[str, str], Job] = {}
    for prefix, field in searches:
        job = await arq_redis.enqueue_job("search_users", prefix=prefix, field=field, limit=100)
        assert job is not None
        jobs[prefix, field] = job
    by_id = await arq_redis.enqueue_job("get_user", user_id=robert["id"])
    injected_id = await arq_redis.enqueue_job("get_user", user_id="1 OR 1=1")
    writes = [await arq_redis.enqueue_job("fault_write", key=k) for k in HOSTILE]
    assert by_id is not None and injected_id is not None and None not in writes

    for (prefix, field), expected in searches.items():
        found = await outcome(jobs[prefix, field])
        assert found.success, (prefix, field, found.result)
        assert sorted(u["id"] for u in found.result["users"]) == sorted(expected), (prefix, field)
    user = await by_id.result(timeout=20)
    assert (user["name"], user["email"]) == (robert["name"], robert["email"])
    refused = await outcome(injected_id)
    assert not refused.success and refused.result["error"] == "InvalidJobArguments"
    for job in writes:
        assert job is not None
        assert (await outcome(job)).success
    stored = await pool.fetch("SELECT key FROM fault_effects ORDER BY id")
    assert sorted(r["key"] for r in stored) == sorted(HOSTILE)  # verbatim, one each
    ledger = await pool.fetch("SELECT idempotency_key FROM job_effects")
    assert sorted(r["idempotency_key"] for r in ledger) == sorted(HOSTILE)
    assert await pool.fetchval("SELECT count(*) FROM users") == len(users)  # intact
    assert await pool.fetchval("SELECT to_regclass('users') IS NOT NULL") is True
    assert [d["error_type"] for d in await counters.dead_letters()] == ["InvalidJobArguments"]


# F16: secrets ------------------------------------------------------------------------------------

DB_PASSWORD = "pw-SECRET-9"


def with_password(url: str, password: str, database: str | None = None) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username or 'postgres'}:{password}@{parts.hostname}:{parts.port or 5432}"
    path = f"/{database}" if database else parts.path
    return urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment))


async def test_f16_secrets_never_reach_logs_results_or_error_messages(
    spawn: Spawn, arq_redis: ArqRedis, raw: redis_py.Redis, counters: Counters, config: Config
) -> None:
    # PostgreSQL on loopback trusts the connection, so the password is carried but not needed.
    worker = await spawn(
        DATABASE_URL=with_password(config.database_url, DB_PASSWORD), LOG_LEVEL="DEBUG"
    )
    tag = uuid.uuid4().hex[:8]
    secrets = {name: f"tok-SECRET-{name}-{tag}" for name in ("ok", "fails", "invalid", "retried")}
    arguments: dict[str, dict[str, Any]] = {
        "ok": {"key": f"f16-ok-{tag}"},
        "fails": {"key": f"f16-fails-{tag}", "fail_permanently": True},
        "invalid": {"key": "", "hold": "not a number"},
        "retried": {"key": f"f16-retried-{tag}", "fail_tries": 1},
    }
    jobs: dict[str, Job] = {}
    for name, kwargs in arguments.items():
        job = await arq_redis.enqueue_job("fault_write", token=secrets[name], **kwargs)
        assert job is not None
        jobs[name] = job
    results = {name: json.loads(await stored_result(raw, job.job_id)) for name, job in jobs.items()}

    assert results["ok"]["s"] is True and results["ok"]["r"]["token_seen"] is True
    assert results["retried"]["s"] is True and results["retried"]["t"] == 2
    assert results["retried"]["r"]["token_seen"] is True
    assert results["fails"]["r"] == {"error": "ValueError", "message": "injected permanent fault"}
    assert results["invalid"]["r"]["error"] == "InvalidJobArguments"
    for name, job in jobs.items():
        data = await raw.get(f"arq:result:{job.job_id}")
        assert data is not None and secrets[name].encode() not in data, name
        assert json.loads(data)["k"]["token"] == REDACTED, name

    async def both_dead() -> bool:
        return len(await counters.dead_letters()) >= 2

    await wait_until(both_dead, timeout=10, what="two dead letters")
    letters = await counters.dead_letters()
    assert sorted(d["job_id"] for d in letters) == sorted(
        (jobs["fails"].job_id, jobs["invalid"].job_id)
    )
    for letter in letters:
        assert not any(s in letter["error_message"] for s in secrets.values())
    log = worker.log()
    assert f"{jobs['fails'].job_id}:fault_write failed, ValueError" in log  # the log is complete
    for name, secret in secrets.items():
        assert secret not in log, f"the {name} job's token is in the worker log"
    assert DB_PASSWORD not in log

    # A worker that cannot start names its database URL in the error: masked.
    missing = f"missing_{tag}"
    broken = await spawn(
        ready=False, DATABASE_URL=with_password(config.database_url, DB_PASSWORD, missing)
    )
    await asyncio.to_thread(broken.wait, 30)
    log = broken.log()
    assert missing in log and "postgres:***@" in log, log
    assert DB_PASSWORD not in log
