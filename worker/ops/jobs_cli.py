"""``python -m worker enqueue``, ``result`` and ``jobs``: enqueue a job with its arguments (as
``name=value`` pairs or ``--json``), print a job's result, list the jobs, their arguments and their
flow-control declarations."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

from jobs.errors import WorkerError
from jobs.registry import JOBS
from pgpool_client.flow import Flow
from worker.client import EnqueueOptions, JobClient
from worker.config import Config
from worker.core.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_PENDING
from worker.errors import JobFailed, ResultTimeout
from worker.ops.output import emit

JSON_EXAMPLE = """for example --json '{"user_id": 42}'"""


def parse_assignments(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; a value that is valid JSON (42, true, null, "x", [1]) is taken as JSON."""
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise WorkerError(f"argument {pair!r} is not of the form name=value")
        try:
            kwargs[key] = json.loads(text)
        except json.JSONDecodeError:
            kwargs[key] = text
    return kwargs


def parse_json_option(text: str | None) -> dict[str, Any]:
    """The job arguments given with ``--json`` (none: an empty dict)."""
    if not text:
        return {}
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkerError(
            f"--json is not valid JSON ({exc}): give the job's arguments as one JSON object, "
            f"{JSON_EXAMPLE}"
        ) from None
    if not isinstance(kwargs, dict):
        raise WorkerError(f"--json must be a JSON object of the job's arguments, {JSON_EXAMPLE}")
    return kwargs


async def cmd_enqueue(config: Config, args: argparse.Namespace) -> int:
    kwargs = parse_json_option(args.json)
    kwargs.update(parse_assignments(args.assignments))
    options: EnqueueOptions = {}
    if args.job_id:
        options["job_id"] = args.job_id
    if args.defer_by is not None:
        options["defer_by"] = args.defer_by
    if args.defer_until:
        options["defer_until"] = datetime.fromisoformat(args.defer_until)
    async with JobClient.connect(config) as client:
        handle = await client.enqueue(args.job, options=options, **kwargs)
        if args.wait is None:
            emit({"job_id": handle.job_id, "queue": handle.queue_name})
            return EXIT_OK
        return await _print_result(client, handle.job_id, args.wait)


async def cmd_result(config: Config, args: argparse.Namespace) -> int:
    async with JobClient.connect(config) as client:
        return await _print_result(client, args.job_id, args.wait)


async def _print_result(client: JobClient, job_id: str, wait: float) -> int:
    handle = client.handle(job_id)
    try:
        outcome = await handle.raw_result(timeout=wait)
    except JobFailed as exc:
        emit(
            {
                "job_id": job_id,
                "success": False,
                "error": exc.context["error_type"],
                "message": exc.context["message"],
            }
        )
        return EXIT_FAILED
    except ResultTimeout:
        emit({"job_id": job_id, "status": (await handle.status()).value})
        return EXIT_PENDING
    emit({"job_id": job_id, "success": True, **outcome})
    return EXIT_OK


def flow_declaration(flow: Flow | None) -> dict[str, Any] | None:
    """A job's flow-control declaration as JSON (None for none): its concurrency limits (name, max,
    the argument whose value is the key, null for one limit across every job that declares it), its
    rates (name, limit per ``per`` seconds, burst, key argument), its fairness argument and its
    default priority. The TypeScript client renders payloads from it (clients/node)."""
    if flow is None:
        return None
    return {
        "concurrency": [{"name": c.name, "max": c.max, "key": c.key} for c in flow.concurrency],
        "rates": [
            {"name": r.name, "limit": r.limit, "per": r.per, "burst": r.burst, "key": r.key}
            for r in flow.rates
        ],
        "fair": flow.fair,
        "priority": flow.priority,
    }


def jobs_listing() -> dict[str, Any]:
    """What ``python -m worker jobs`` prints: per job, its doc, its arguments' JSON schema and its
    flow-control declaration (docs/wire-format.md, Flow control)."""
    return {
        spec.name: {
            "doc": (spec.function.__doc__ or "").strip(),
            "arguments": spec.args_model.model_json_schema(),
            "flow": flow_declaration(spec.flow),
        }
        for spec in JOBS
    }


async def cmd_jobs(_config: Config, _: argparse.Namespace) -> int:
    emit(jobs_listing())
    return EXIT_OK
