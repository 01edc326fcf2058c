"""``python -m worker limits``: every flow-control limit (those the registry's jobs declare and those
set at run time) with its use now; ``limits set NAME --max N`` or ``--rate L --per S [--burst B]``
and ``limits clear NAME`` change a limit without a deploy (worker/queue/flow_admin.py).

A value set at run time is kept in Redis (``<queue>:flow:limits``) and wins over the declared one
in every worker's next claim round; ``clear`` goes back to the declared value. ``--max 0`` is an
emergency brake: no new job of the limit starts (those running finish). A rate needs at least one
start per period.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pgpool_client.flow import MAX_BURST, MAX_LIMIT
from worker.config import Config
from worker.core.exit_codes import EXIT_OK
from worker.ops.output import emit
from worker.queue import flow_admin, flow_usage
from worker.queue.connect import command_redis


def concurrency_value(max_: int) -> dict[str, Any]:
    """The stored value of ``limits set NAME --max N``: 0 lets no new job start (a brake)."""
    if not 0 <= max_ <= MAX_LIMIT:
        raise ValueError(
            f"--max must be 0..{MAX_LIMIT} (0: no job of the limit starts), got {max_}"
        )
    return {"max": max_}


def rate_value(limit: int, per: float, burst: int | None = None) -> dict[str, Any]:
    """The stored value of ``limits set NAME --rate L --per S [--burst B]`` (burst: declared's)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(
            f"--rate must be 1..{MAX_LIMIT} starts (to stop them: --max 0), got {limit}"
        )
    if not 0.001 <= per <= 86_400:
        raise ValueError(f"--per must be 0.001..86400 seconds, got {per:g}")
    value: dict[str, Any] = {"limit": limit, "per_ms": max(round(per * 1000), 1)}
    if burst is not None:
        if not 1 <= burst <= MAX_BURST:
            raise ValueError(f"--burst must be 1..{MAX_BURST}, got {burst}")
        value["burst"] = burst
    return value


def describe_value(kind: str, value: dict[str, Any] | None) -> str:
    """``max 20``, ``14 per 1s, burst 1``, ``max 0 (none may start)``."""
    if not value:
        return "none"
    if "raw" in value:
        return f"unreadable value {value['raw']!r}"
    if kind == "concurrency" or "max" in value:
        brake = " (none may start)" if value.get("max") == 0 else ""
        return f"max {value.get('max')}{brake}"
    text = f"{value.get('limit')} per {value.get('per_ms', 0) / 1000:g}s"
    return text + (f", burst {value['burst']}" if "burst" in value else "")


def render_limit(limit: dict[str, Any]) -> str:
    """One limit on one line: its value, where it comes from, its use now."""
    declared, override = limit["declared"], limit["override"]
    line = f"{limit['name']}: {limit['kind']} {describe_value(limit['kind'], override or declared)}"
    if override and declared:
        line += f" (set at run time; declared {describe_value(limit['kind'], declared)})"
    elif override:
        line += " (set at run time)"
    elif not declared:
        line = f"{limit['name']}: {limit['kind']}, declared by another producer's jobs"
    if limit["jobs"]:
        line += f"; jobs {', '.join(limit['jobs'])}"
    use = f"{limit['blocked']} blocked"
    if limit["in_use"] is not None:
        use = f"{limit['in_use']} in use, " + use
    keys = limit["keys"]
    return f"{line}: {use}" + (f" over {keys} key{'s' if keys > 1 else ''}" if keys else "")


def render_limits(state: dict[str, Any]) -> str:
    lines = [render_limit(limit) for limit in state["limits"]] or ["no limit is declared or set"]
    if not state["complete"]:
        lines.append("(more gates than were read: the sums cover those read)")
    return "\n".join(lines) + "\n"


def limit_value(args: argparse.Namespace, known: dict[str, str]) -> dict[str, Any]:
    """The value ``limits set`` stores, checked against the limit's kind (``known``: name ->
    "concurrency" or "rate"); ValueError with what to fix."""
    kind = known.get(args.name)
    if kind is None and not args.force:
        names = ", ".join(sorted(known)) or "none"
        raise ValueError(
            f"unknown limit {args.name!r}; known: {names} (--force for a limit that another "
            "producer's jobs declare)"
        )
    if (args.max is None) == (args.rate is None):
        raise ValueError("give either --max N or --rate L --per SECONDS [--burst B]")
    if args.max is not None:
        if args.per is not None or args.burst is not None:
            raise ValueError("--per and --burst go with --rate, not --max")
        if kind == "rate":
            raise ValueError(f"limit {args.name!r} is a rate: set it with --rate L --per SECONDS")
        return concurrency_value(args.max)
    if kind == "concurrency":
        raise ValueError(f"limit {args.name!r} is a concurrency limit: set it with --max N")
    if args.per is None:
        raise ValueError("--rate needs --per SECONDS (the period of L starts)")
    return rate_value(args.rate, args.per, args.burst)


async def cmd_limits(config: Config, args: argparse.Namespace) -> int:
    queue = config.queue_name
    async with command_redis(config) as redis:
        action = getattr(args, "action", None)
        if action is not None:
            flow_admin.check_limit_name(args.name)
            known = {u.name: u.kind for u in flow_usage.declared_limits().values()}
            for name, value in (await flow_admin.overrides(redis, queue)).items():
                known.setdefault(name, "rate" if "limit" in value else "concurrency")
            if action == "set":
                await flow_admin.set_limit(redis, queue, args.name, limit_value(args, known))
            else:
                if args.name not in known and not args.force:
                    raise ValueError(
                        f"unknown limit {args.name!r}; known: {', '.join(sorted(known))}"
                    )
                await flow_admin.clear_limit(redis, queue, args.name)
        state = (await flow_usage.flow_state(redis, queue)).view()
    if action is not None:
        state["limits"] = [u for u in state["limits"] if u["name"] == args.name]
    if args.json:
        emit({"queue": queue, **state})
    elif action is not None and not state["limits"]:
        sys.stdout.write(f"{args.name}: no value set at run time, none declared by these jobs\n")
    else:
        sys.stdout.write(render_limits(state))
    return EXIT_OK
