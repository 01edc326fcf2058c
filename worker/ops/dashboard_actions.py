"""What an operator may do from the dashboard, each through the operation the CLI uses: abort a job
(``request_abort``), retry a failed job and replay or purge dead letters (worker/db/dead_letters.py),
pause and resume job names, set and clear limits (worker/queue/flow_admin.py).

Each action is idempotent: asked again, it changes nothing more (a replayed dead letter is not
enqueued twice; it answers with the job id of its replay). ``retry`` of a job is the replay of its
newest dead letter: a job that failed for good has one; a job still being retried runs again by
itself. The HTTP side (roles, cross-site checks, the audit log) is worker/ops/dashboard_routes.py.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from arq.connections import ArqRedis

from jobs.errors import WorkerError
from worker.config import Config
from worker.db import dead_letters
from worker.ops.abort_cli import request_abort
from worker.ops.limits_cli import limit_value
from worker.ops.pause_cli import chosen_names
from worker.queue import flow_admin, flow_usage

# The request fields an action reads: the rest is ignored and not written to the audit log.
FIELDS = ("job_id", "id", "before", "all", "names", "force", "name", "max", "rate", "per", "burst")
FIELD_MAX = 200


class ActionError(ValueError):
    """An action that cannot be done as asked (answered 400, written ``failed``)."""


@dataclass
class Operations:
    """What the actions act on: the dashboard's Redis and PostgreSQL pool, its queue."""

    config: Config
    redis: ArqRedis
    postgres: Callable[[], Awaitable[asyncpg.Pool[asyncpg.Record]]]

    @property
    def queue(self) -> str:
        return self.config.queue_name


Result = tuple[str, dict[str, Any]]  # the target (shown in the audit log) and what came of it
Handler = Callable[[Operations, dict[str, Any]], Awaitable[Result]]


def parameters(body: object) -> dict[str, Any]:
    """The fields of a request's JSON body that actions read (long strings cut)."""
    if not isinstance(body, dict):
        return {}
    kept = {k: body[k] for k in FIELDS if k in body}
    for key, value in kept.items():
        if isinstance(value, str):
            kept[key] = value[:FIELD_MAX]
        elif isinstance(value, list):
            kept[key] = [str(v)[:FIELD_MAX] for v in value[:50]]
    return kept


def target_of(fields: dict[str, Any]) -> str:
    """What a request acts on, for the audit log: a job id, dead letter, job names or limit."""
    if fields.get("job_id") or fields.get("name"):
        return str(fields.get("job_id") or fields.get("name"))
    if fields.get("id") is not None:
        return f"dead letter {fields['id']}"
    if isinstance(fields.get("names"), list) and fields["names"]:
        return ", ".join(map(str, fields["names"]))
    if fields.get("before"):
        return f"failed before {fields['before']}"
    return "all" if fields.get("all") is True else ""


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ActionError(f"{key} is required (a non-empty string)")
    return value.strip()


def _int(body: dict[str, Any], key: str, required: bool = True) -> int | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ActionError(f"{key} must be a whole number")
    return value


def _before(body: dict[str, Any]) -> datetime | None:
    if body.get("before") in (None, ""):
        return None
    try:
        return datetime.fromisoformat(str(body["before"]))
    except ValueError:
        raise ActionError("before must be an ISO 8601 time (2026-12-01T12:00:00+00:00)") from None


async def abort(ops: Operations, body: dict[str, Any]) -> Result:
    job_id = _text(body, "job_id")
    was = await request_abort(ops.redis, ops.queue, job_id)
    if was == "not_found":
        raise ActionError(f"no job {job_id!r} is queued, running or has a result on this queue")
    if was == "complete":
        return job_id, {"aborted": False, "status": "complete (nothing to abort)"}
    return job_id, {"abort_requested": True, "was": was}


async def _replay_letter(ops: Operations, conn: Any, letter: dict[str, Any]) -> dict[str, Any]:
    if letter["replay_job_id"]:
        return {"dead_letter": letter["id"], "job_id": letter["replay_job_id"], "already": True}
    new_id = await dead_letters.replay(conn, ops.redis, int(letter["id"]))
    return {"dead_letter": letter["id"], "job_id": new_id, "already": False}


async def retry(ops: Operations, body: dict[str, Any]) -> Result:
    job_id = _text(body, "job_id")
    async with (await ops.postgres()).acquire() as conn:
        letters = await dead_letters.letters_of_job(conn, job_id)
        if not letters:
            raise ActionError(
                f"job {job_id!r} has no dead letter: only a job that failed for good can be "
                "retried (one still being retried runs again by itself)"
            )
        return job_id, await _replay_letter(ops, conn, letters[-1])


async def replay(ops: Operations, body: dict[str, Any]) -> Result:
    """One dead letter (``id``), or every one not yet replayed that failed before ``before``
    (or ``all``)."""
    async with (await ops.postgres()).acquire() as conn:
        if body.get("id") is not None:
            letter = await dead_letters.get_letter(conn, _int(body, "id") or 0)
            return f"dead letter {letter['id']}", await _replay_letter(ops, conn, letter)
        before = _before(body)
        if before is None and body.get("all") is not True:
            raise ActionError("replay needs id, before (ISO 8601) or all: true")
        replayed, skipped = [], []
        for letter_id in await dead_letters.unreplayed_ids(conn, before):
            try:
                replayed.append(await dead_letters.replay(conn, ops.redis, letter_id))
            except WorkerError:  # poison or not a job: it stays, to be purged
                skipped.append(letter_id)
        target = f"failed before {before.isoformat()}" if before else "all not replayed"
        return target, {"replayed": len(replayed), "job_ids": replayed[:50], "skipped": skipped}


async def purge(ops: Operations, body: dict[str, Any]) -> Result:
    """One dead letter (``id``), those failed before ``before``, or ``all``."""
    letter_id = _int(body, "id", required=False)
    before = _before(body)
    if letter_id is None and before is None and body.get("all") is not True:
        raise ActionError("purge needs id, before (ISO 8601) or all: true")
    async with (await ops.postgres()).acquire() as conn:
        purged = await dead_letters.purge(conn, None if letter_id is None else [letter_id], before)
    target = (
        f"dead letter {letter_id}"
        if letter_id is not None
        else f"failed before {before.isoformat()}"
        if before
        else "all"
    )
    return target, {"purged": purged}


def _names(body: dict[str, Any], command: str) -> list[str]:
    names = body.get("names") or []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ActionError("names must be a list of job names")
    args = argparse.Namespace(
        names=names, all=body.get("all") is True, force=body.get("force") is True, command=command
    )
    return chosen_names(args)


async def pause(ops: Operations, body: dict[str, Any]) -> Result:
    names = _names(body, "pause")
    paused = await flow_admin.pause(ops.redis, ops.queue, names)
    return ", ".join(names), {"paused": paused}


async def resume(ops: Operations, body: dict[str, Any]) -> Result:
    names = _names(body, "resume")
    paused = await flow_admin.resume(ops.redis, ops.queue, names)
    return ", ".join(names), {"paused": paused}


async def _known_limits(ops: Operations) -> dict[str, str]:
    """Limit name -> kind, as ``limits set`` checks them (declared, then set at run time)."""
    known = {u.name: u.kind for u in flow_usage.declared_limits().values()}
    for name, value in (await flow_admin.overrides(ops.redis, ops.queue)).items():
        known.setdefault(name, "rate" if "limit" in value else "concurrency")
    return known


async def limit_set(ops: Operations, body: dict[str, Any]) -> Result:
    name = flow_admin.check_limit_name(_text(body, "name"))
    per = body.get("per")
    if per is not None and (isinstance(per, bool) or not isinstance(per, int | float)):
        raise ActionError("per must be a number of seconds")
    args = argparse.Namespace(
        name=name,
        max=_int(body, "max", required=False),
        rate=_int(body, "rate", required=False),
        per=per,
        burst=_int(body, "burst", required=False),
        force=body.get("force") is True,
    )
    value = limit_value(args, await _known_limits(ops))
    await flow_admin.set_limit(ops.redis, ops.queue, name, value)
    return name, {"value": value}


async def limit_clear(ops: Operations, body: dict[str, Any]) -> Result:
    name = flow_admin.check_limit_name(_text(body, "name"))
    if name not in await _known_limits(ops) and body.get("force") is not True:
        raise ActionError(f"unknown limit {name!r} (force: true for another producer's limit)")
    await flow_admin.clear_limit(ops.redis, ops.queue, name)
    return name, {"cleared": True}


ACTIONS: dict[str, Handler] = {
    "abort": abort,
    "retry": retry,
    "replay": replay,
    "purge": purge,
    "pause": pause,
    "resume": resume,
    "limit-set": limit_set,
    "limit-clear": limit_clear,
}
