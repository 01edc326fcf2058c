"""``python -m worker pause NAME... | --all`` and ``resume NAME... | --all``: stop and restart the
claims of job names (docs/flow-control.md, Operating it), through worker/queue/flow_admin.py.

A paused job stays queued (the claim script moves it aside, out of the due range, on its first
claim) and a running one finishes; the pause is kept in Redis, so it survives worker restarts and
deploys. ``--all`` pauses the whole queue (nothing is claimed); ``resume --all`` undoes that, and
names paused one by one stay paused. Both are idempotent and print what is paused now.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Collection

from jobs.registry import JOBS_BY_NAME
from worker.config import Config
from worker.core.exit_codes import EXIT_OK
from worker.ops.output import emit
from worker.queue import flow_admin
from worker.queue.connect import command_redis

MAX_NAME = 256


def chosen_names(args: argparse.Namespace, known: Collection[str] = JOBS_BY_NAME) -> list[str]:
    """The names a pause or resume acts on (``"*"`` for ``--all``); ValueError for bad usage."""
    if args.all and args.names:
        raise ValueError("give job names or --all, not both")
    if args.all:
        return [flow_admin.WHOLE_QUEUE]
    if not args.names:
        raise ValueError(f"give the job names to {args.command} (or --all for the whole queue)")
    for name in args.names:
        if not name or len(name) > MAX_NAME or name == flow_admin.WHOLE_QUEUE:
            raise ValueError(f"bad job name {name!r} (for the whole queue: --all)")
        if name not in known and not args.force:
            raise ValueError(
                f"unknown job name {name!r}; known: {', '.join(sorted(known))} (--force for a job "
                "that another producer's workers run)"
            )
    return list(dict.fromkeys(args.names))


def render_paused(paused: list[str], waiting: dict[str, int]) -> str:
    """``paused now: count_users (5 waiting)`` or ``nothing is paused``."""
    if not paused:
        return "nothing is paused"
    shown = [
        "the whole queue (*)"
        if name == flow_admin.WHOLE_QUEUE
        else f"{name} ({waiting.get(name, 0)} waiting)"
        for name in paused
    ]
    return "paused now: " + ", ".join(shown)


async def _act(config: Config, args: argparse.Namespace) -> int:
    names = chosen_names(args)
    queue = config.queue_name
    async with command_redis(config) as redis:
        if args.command == "pause":
            await flow_admin.pause(redis, queue, names)
        else:
            await flow_admin.resume(redis, queue, names)
        paused, waiting = await flow_admin.pauses(redis, queue)
    if args.json:
        emit({"queue": queue, "paused": paused, "paused_waiting": waiting})
    else:
        sys.stdout.write(render_paused(paused, waiting) + "\n")
    return EXIT_OK


async def cmd_pause(config: Config, args: argparse.Namespace) -> int:
    return await _act(config, args)


async def cmd_resume(config: Config, args: argparse.Namespace) -> int:
    return await _act(config, args)
