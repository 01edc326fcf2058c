"""The arguments of ``python -m worker``: one sub-parser per command (the commands themselves:
worker/ops/cli.py)."""

from __future__ import annotations

import argparse
from typing import Any

from worker.core.version import DISTRIBUTION, package_version


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; ``description``: the text of ``--help``."""
    parser = argparse.ArgumentParser(
        prog="python -m worker",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"{DISTRIBUTION} {package_version()}"
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
    sub.add_parser("jobs", help="list the jobs, their arguments' JSON schema and flow declarations")
    schedules = sub.add_parser(
        "schedules", help="the schedules (CRON_SCHEDULES, CRON_DEACTIVATE) and their next runs"
    )
    schedules.add_argument("--count", type=int, default=3, help="next runs of each (default 3)")
    schedules.add_argument("--after", metavar="ISO8601", help="runs after this time (default now)")
    schedules.add_argument("--json", action="store_true", help="print JSON instead of text")
    run = sub.add_parser("run", help="run N worker processes under a supervisor (docs/scaling.md)")
    run.add_argument(
        "--processes", type=int, default=None, metavar="N", help="worker processes (default: cores)"
    )
    run.add_argument("--settings", default="worker.Settings", help="the arq settings to run")
    sub.add_parser("budget", help="the fleet's pool registrations and the connection budget")
    _add_operator_parsers(sub)
    _add_flow_parsers(sub)
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


def _add_operator_parsers(sub: Any) -> None:
    """health, status, inspect, abort, dashboard."""
    health = sub.add_parser(
        "health",
        help="is this machine's worker live and ready? (exit 0 yes, 1 no)",
        description="Probes http://127.0.0.1:METRICS_PORT/healthz and /readyz, or with "
        "METRICS_PORT=0 (or --records) the health records in Redis of this host's workers.",
    )
    health.add_argument("--live", action="store_true", help="liveness only (not readiness)")
    health.add_argument("--url", help="probe this URL instead (200 is healthy)")
    health.add_argument("--records", action="store_true", help="read the records in Redis")
    health.add_argument("--all", action="store_true", help="with records: every worker, any host")
    status = sub.add_parser(
        "status", help="queue, jobs in progress, dead letters, workers and their health"
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect = sub.add_parser("inspect", help="a job's status, payload (secrets masked), result")
    inspect.add_argument("job_id")
    abort = sub.add_parser("abort", help="abort a queued or running job (arq's abort)")
    abort.add_argument("job_id")
    abort.add_argument(
        "--wait", type=float, default=10.0, metavar="SECONDS", help="wait for the worker to confirm"
    )
    dashboard = sub.add_parser("dashboard", help="serve the web dashboard (sign-in: DASHBOARD_*)")
    dashboard.add_argument("--host", default="127.0.0.1", help="address to listen on")
    dashboard.add_argument("--port", type=int, default=8080, help="port to listen on")
    hashing = sub.add_parser(
        "dashboard-hash", help="print a password's hash for DASHBOARD_USERS (password on stdin)"
    )
    hashing.add_argument("--user", help="print the whole user:role:hash entry for this user")
    hashing.add_argument("--role", default="viewer", help="that user's role: viewer or operator")


def _add_flow_parsers(sub: Any) -> None:
    """pause, resume, limits (flow control: docs/flow-control.md, Operating it)."""
    for command, what in (("pause", "stop claiming"), ("resume", "claim again")):
        parser = sub.add_parser(
            command, help=f"{what} jobs of these names (--all: the whole queue)"
        )
        parser.add_argument("names", nargs="*", metavar="NAME", help="job names")
        parser.add_argument("--all", action="store_true", help="the whole queue")
        parser.add_argument("--force", action="store_true", help="names this registry lacks")
        parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    limits = sub.add_parser("limits", help="flow-control limits and their use; set or clear one")
    limits.add_argument("--json", action="store_true", help="print JSON instead of text")
    actions = limits.add_subparsers(dest="action")
    change = actions.add_parser("set", help="set a limit at run time (over the declared one)")
    change.add_argument("--max", type=int, metavar="N", help="at most N running (0: none start)")
    change.add_argument("--rate", type=int, metavar="L", help="at most L starts per --per")
    change.add_argument("--per", type=float, metavar="SECONDS", help="the rate's period")
    change.add_argument("--burst", type=int, metavar="B", help="starts at once after a pause")
    clear = actions.add_parser("clear", help="drop a limit's run-time value (the declared holds)")
    for parser in (change, clear):
        parser.add_argument("name", metavar="NAME", help="the limit's name")
        parser.add_argument("--force", action="store_true", help="a name this registry lacks")
        parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
