"""Command line: set up the database, seed it, enqueue jobs and read results; watch and control
the workers (health, status, inspect, abort, dashboard); list the schedules; pause and resume
job names and change flow-control limits (pause, resume, limits).

Exit codes: 0 success; 1 the job failed (or is not what was asked), or unhealthy; 2 bad usage or
configuration, or a service is unreachable; 3 no result yet (timeout or still running).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from redis.exceptions import RedisError

from jobs.errors import WorkerError
from worker.config import Config, load_config
from worker.ops.abort_cli import cmd_abort
from worker.ops.budget_report import cmd_budget
from worker.ops.cli_parser import build_parser
from worker.ops.dashboard_cli import cmd_dashboard, cmd_dashboard_hash
from worker.ops.dead_letters_cli import cmd_dead_letters
from worker.ops.health_cli import cmd_health
from worker.ops.inspect_cli import cmd_inspect
from worker.ops.jobs_cli import cmd_enqueue, cmd_jobs, cmd_result
from worker.ops.limits_cli import cmd_limits
from worker.ops.output import fail
from worker.ops.pause_cli import cmd_pause, cmd_resume
from worker.ops.schedules_cli import cmd_schedules
from worker.ops.setup_cli import cmd_check, cmd_seed, cmd_setup
from worker.ops.status_cli import cmd_status
from worker.queue.connect import redis_unavailable

Command = Callable[[Config, argparse.Namespace], Coroutine[Any, Any, int]]

COMMANDS: dict[str, Command] = {
    "check": cmd_check,
    "setup": cmd_setup,
    "seed": cmd_seed,
    "enqueue": cmd_enqueue,
    "result": cmd_result,
    "jobs": cmd_jobs,
    "schedules": cmd_schedules,
    "dead-letters": cmd_dead_letters,
    "budget": cmd_budget,
    "health": cmd_health,
    "status": cmd_status,
    "inspect": cmd_inspect,
    "abort": cmd_abort,
    "dashboard": cmd_dashboard,
    "dashboard-hash": cmd_dashboard_hash,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "limits": cmd_limits,
}


def run_supervisor(config: Config, args: argparse.Namespace) -> int:
    from worker.ops import supervisor

    processes = supervisor.default_processes() if args.processes is None else args.processes
    if processes < 1:
        raise WorkerError("--processes must be at least 1")
    return supervisor.run(processes, args.settings, config)


def main(argv: list[str] | None = None) -> int:
    args = build_parser(__doc__).parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_config()
        if args.command == "run":  # synchronous: the supervisor owns the signals
            return run_supervisor(config, args)
        return asyncio.run(COMMANDS[args.command](config, args))
    except WorkerError as exc:
        return fail(exc)
    except RedisError as exc:  # Redis stopped answering after the connect (which says so itself)
        return fail(redis_unavailable(config, exc))
    except ValueError as exc:
        return fail(exc)
