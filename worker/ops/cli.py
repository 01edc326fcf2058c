"""Command line: set up the database, seed it, enqueue jobs and read results; watch and control
the workers (health, status, inspect, abort, dashboard: worker/ops/status_cli.py).

Exit codes: 0 success; 1 the job failed (or is not what was asked), or unhealthy; 2 bad usage or
configuration, or a service is unreachable; 3 no result yet (timeout or still running).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from datetime import datetime
from typing import Any

from redis.exceptions import RedisError

from jobs.errors import WorkerError
from jobs.registry import JOBS, JOBS_BY_NAME
from worker.client import EnqueueOptions, JobClient
from worker.config import Config, load_config
from worker.core.masking import mask_url
from worker.db import dead_letters
from worker.db.pool import check_postgres, connect, ensure_database, grant_worker_role, migrate
from worker.errors import JobFailed, ResultTimeout
from worker.ops import status_cli as ops_cli
from worker.ops.seed import seed_users
from worker.queue.codec import REDACTED
from worker.queue.connect import check_redis, redis_unavailable

EXIT_FAILED, EXIT_USAGE, EXIT_PENDING = 1, 2, 3


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


def emit(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


async def cmd_check(config: Config, _: argparse.Namespace) -> int:
    await check_postgres(config, url=_server_url(config))
    await check_redis(config)
    emit(
        {"postgres": mask_url(config.database_url), "redis": mask_url(config.redis_url), "ok": True}
    )
    return 0


def _server_url(config: Config) -> str:
    from worker.db.pool import with_database

    return with_database(config.database_url, "postgres")


async def cmd_setup(config: Config, args: argparse.Namespace) -> int:
    created = await ensure_database(config.database_url, config.pg_connect_timeout)
    conn = await connect(config.database_url, config.pg_connect_timeout)
    try:
        applied = await migrate(conn)
        users = int(await conn.fetchval("SELECT count(*) FROM users"))
        seeded = 0
        if users == 0 and args.seed > 0:
            seeded = await seed_users(conn, args.seed, show=not args.quiet)
        role = None
        if args.worker_role:
            password = os.environ.get(args.worker_role_password_env)
            made = await grant_worker_role(conn, args.worker_role, password)
            role = {"name": args.worker_role, "created": made}
    finally:
        await conn.close()
    emit(
        {
            "database_created": created,
            "migrations_applied": applied,
            "users_before": users,
            "users_seeded": seeded,
            "worker_role": role,
        }
    )
    return 0


async def cmd_seed(config: Config, args: argparse.Namespace) -> int:
    conn = await connect(config.database_url, config.pg_connect_timeout)
    try:
        started = asyncio.get_running_loop().time()
        added = await seed_users(conn, args.users, batch=args.batch, show=not args.quiet)
        seconds = asyncio.get_running_loop().time() - started
        total = int(await conn.fetchval("SELECT count(*) FROM users"))
    finally:
        await conn.close()
    emit({"users_added": added, "users_total": total, "seconds": round(seconds, 2)})
    return 0


JSON_EXAMPLE = """for example --json '{"user_id": 42}'"""


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
            return 0
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
    return 0


async def cmd_dead_letters(config: Config, args: argparse.Namespace) -> int:
    conn = await connect(config.database_url, config.pg_connect_timeout)
    try:
        if args.action == "list":
            emit(await dead_letters.list_letters(conn, args.limit))
        elif args.action == "show":
            emit(redact_letter(await dead_letters.get_letter(conn, args.id)))
        elif args.action == "replay":
            async with JobClient.connect(config) as client:
                new_id = await dead_letters.replay(conn, client.redis, args.id)
            emit({"dead_letter": args.id, "job_id": new_id, "queue": config.queue_name})
        else:
            return await _purge(conn, args)
    finally:
        await conn.close()
    return 0


async def _purge(conn: Any, args: argparse.Namespace) -> int:
    if not (args.ids or args.before or args.all):
        raise WorkerError("purge needs --id N (repeatable), --before ISO8601, or --all")
    before = datetime.fromisoformat(args.before) if args.before else None
    purged = await dead_letters.purge(conn, args.ids or None, before)
    emit({"purged": purged})
    return 0


def redact_letter(letter: dict[str, Any]) -> dict[str, Any]:
    """A dead letter for display: its job's secret arguments replaced by asterisks."""
    payload = letter.get("payload")
    spec = JOBS_BY_NAME.get(str(letter.get("function")))
    if spec and spec.secret_fields and isinstance(payload, dict):
        kwargs = {k: REDACTED if k in spec.secret_fields else v for k, v in payload["k"].items()}
        letter["payload"] = {**payload, "a": [REDACTED] * len(payload["a"]), "k": kwargs}
    return letter


async def cmd_jobs(_config: Config, _: argparse.Namespace) -> int:
    emit(
        {
            spec.name: {
                "doc": (spec.function.__doc__ or "").strip(),
                "arguments": spec.args_model.model_json_schema(),
            }
            for spec in JOBS
        }
    )
    return 0


async def cmd_budget(config: Config, _: argparse.Namespace) -> int:
    from worker.db.budget import fleet_report

    conn = await connect(config.database_url, config.pg_connect_timeout)
    try:
        async with JobClient.connect(config) as client:
            emit(await fleet_report(config, client.redis, conn))
    finally:
        await conn.close()
    return 0


def run_supervisor(config: Config, args: argparse.Namespace) -> int:
    from worker.ops import supervisor

    processes = supervisor.default_processes() if args.processes is None else args.processes
    if processes < 1:
        raise WorkerError("--processes must be at least 1")
    return supervisor.run(processes, args.settings, config)


COMMANDS = {
    "check": cmd_check,
    "setup": cmd_setup,
    "seed": cmd_seed,
    "enqueue": cmd_enqueue,
    "result": cmd_result,
    "jobs": cmd_jobs,
    "dead-letters": cmd_dead_letters,
    "budget": cmd_budget,
}
COMMANDS.update(ops_cli.COMMANDS)  # health, status, inspect, abort, dashboard


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m worker",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="check that PostgreSQL and Redis answer")
    setup = sub.add_parser("setup", help="create the database, apply migrations, seed if empty")
    setup.add_argument(
        "--seed", type=int, default=10_000, help="users to add if the table is empty"
    )
    setup.add_argument("--quiet", action="store_true", help="no progress bar")
    setup.add_argument(
        "--worker-role",
        metavar="NAME",
        help="create or update the worker's least-privilege login role",
    )
    setup.add_argument(
        "--worker-role-password-env",
        metavar="VAR",
        default="WORKER_DB_PASSWORD",
        help="environment variable holding that role's password",
    )
    seed = sub.add_parser("seed", help="add demo users with COPY")
    seed.add_argument("--users", type=int, required=True, help="how many users to add")
    seed.add_argument("--batch", type=int, default=50_000, help="rows per COPY batch")
    seed.add_argument("--quiet", action="store_true", help="no progress bar")
    enqueue = sub.add_parser("enqueue", help="enqueue a job: enqueue get_user user_id=42")
    enqueue.add_argument("job", help="job name (see `python -m worker jobs`)")
    enqueue.add_argument("assignments", nargs="*", metavar="name=value", help="job arguments")
    enqueue.add_argument("--json", help="job arguments as one JSON object")
    enqueue.add_argument("--job-id", help="job id; a second enqueue with the same id is refused")
    enqueue.add_argument(
        "--defer-by", type=float, metavar="SECONDS", help="start no sooner than this"
    )
    enqueue.add_argument("--defer-until", metavar="ISO8601", help="start no sooner than this time")
    enqueue.add_argument(
        "--wait", type=float, metavar="SECONDS", help="wait for and print the result"
    )
    result = sub.add_parser(
        "result", help="print a job's result (or its status if it has none yet)"
    )
    result.add_argument("job_id")
    result.add_argument("--wait", type=float, default=0.0, metavar="SECONDS", help="wait this long")
    sub.add_parser("jobs", help="list the jobs and the JSON schema of their arguments")
    run = sub.add_parser("run", help="run N worker processes under a supervisor (docs/scaling.md)")
    run.add_argument(
        "--processes", type=int, default=None, metavar="N", help="worker processes (default: cores)"
    )
    run.add_argument("--settings", default="worker.Settings", help="the arq settings to run")
    sub.add_parser("budget", help="the fleet's pool registrations and the connection budget")
    ops_cli.add_parsers(sub)
    dead = sub.add_parser("dead-letters", help="list, show, replay or purge dead letters")
    actions = dead.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="the newest dead letters")
    listing.add_argument("--limit", type=int, default=50)
    actions.add_parser("show", help="one dead letter with its payload").add_argument("id", type=int)
    actions.add_parser("replay", help="enqueue its job again (new job id)").add_argument(
        "id", type=int
    )
    purge = actions.add_parser("purge", help="delete dead letters")
    purge.add_argument("--id", dest="ids", type=int, action="append", help="this one (repeatable)")
    purge.add_argument("--before", metavar="ISO8601", help="those that failed before this time")
    purge.add_argument("--all", action="store_true", help="every dead letter")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_config()
        if args.command == "run":  # synchronous: the supervisor owns the signals
            return run_supervisor(config, args)
        return asyncio.run(COMMANDS[args.command](config, args))
    except WorkerError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
    except RedisError as exc:  # Redis stopped answering after the connect (which says so itself)
        sys.stderr.write(f"error: {redis_unavailable(config, exc)}\n")
        return EXIT_USAGE
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
